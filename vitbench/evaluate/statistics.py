"""How far a measured accuracy can be trusted, from per-item outcomes (`outcomes`): intervals
on one run and on several seeds, and tests of two runs on the same items.

The methods (tested against statsmodels and scipy, and on worked examples, in
tests/test_statistics.py):

- one run: the Wilson score interval on its test items (scipy's);
- several seeds on the same items (seeds crossed with items): mean ± t x SE with
  SE^2 = s^2/k + v_item/n, `s` the seeds' sample std (ddof 1) and `v_item` the variance over
  items of the seed-averaged correctness, with Welch-Satterthwaite degrees of freedom;
  resampling items separately per seed would understate the shared item variance;
- two runs on the same items: the exact McNemar test on the discordant counts b and c
  (a binomial test at 1/2, scipy's), its mid-p, and Holm's step-down or Benjamini-Hochberg
  adjustment over a suite's tasks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def wilson(correct: int, examples: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of `correct` hits out of `examples` (no continuity
    correction)."""
    if examples < 1:
        raise ValueError(f"an interval needs at least one item, not {examples}")
    interval = stats.binomtest(int(correct), int(examples)).proportion_ci(
        confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An accuracy over seeds and test items, with its interval and where its width comes
    from (`se_seed`, `se_item`; `df` of the t quantile, None for a one-run Wilson interval)."""

    mean: float
    low: float
    high: float
    seeds: int
    examples: int
    se_seed: float
    se_item: float
    df: float | None
    method: str  # "wilson" (one run) or "seed+item t" (several)


def accuracy_estimate(correct, confidence: float = CONFIDENCE) -> Estimate:
    """The mean accuracy of runs scored on the same items, with an interval that covers both
    seed-to-seed and test-item variation.

    Args:
        correct: [seeds, items] (or [items] for one run) of 0/1 (or booleans): whether each
            run got each item right.
        confidence: the interval's coverage.

    Returns:
        An `Estimate`: one run gets the Wilson interval; k > 1 runs the mean ± t x SE with
        SE^2 = s^2/k + v_item/n and Welch-Satterthwaite degrees of freedom.
    """
    correct = np.atleast_2d(np.asarray(correct, np.float64))
    seeds, examples = correct.shape
    item_variance = float(correct.mean(axis=0).var(ddof=1)) if examples > 1 else 0.0
    if seeds == 1:
        low, high = wilson(int(round(correct.sum())), examples, confidence)
        return Estimate(float(correct.mean()), low, high, 1, examples, 0.0,
                        np.sqrt(item_variance / examples), None, "wilson")
    return seeds_and_items(correct.mean(axis=1), item_variance, examples, "seed+item t",
                           confidence)


def seeds_and_items(per_seed, item_variance: float, examples: int, method: str,
                    confidence: float = CONFIDENCE) -> Estimate:
    """Mean ± t x SE of several seeds' accuracies `per_seed` on the same `examples` items,
    SE^2 = s^2/k + `item_variance`/n, with Welch-Satterthwaite degrees of freedom; `method`
    names how `item_variance` was had."""
    per_seed = np.asarray(per_seed, np.float64)
    seeds, mean = len(per_seed), float(per_seed.mean())
    seed_part = float(per_seed.var(ddof=1)) / seeds
    item_part = item_variance / examples
    se, df = satterthwaite([(seed_part, seeds - 1), (item_part, examples - 1)])
    half = quantile(0.5 + confidence / 2, df) * se
    return Estimate(mean, mean - half, mean + half, seeds, examples, np.sqrt(seed_part),
                    np.sqrt(item_part), df, method)


def satterthwaite(parts) -> tuple[float, float]:
    """(SE, Welch-Satterthwaite degrees of freedom) of a sum of independent variance
    estimates `parts`, each (variance, its degrees of freedom); inf degrees of freedom where
    every part with variance is known exactly (df inf) or none has variance."""
    variance = sum(v for v, _ in parts)
    terms = sum(v ** 2 / df for v, df in parts if v > 0 and 0 < df < np.inf)
    return float(np.sqrt(variance)), float(variance ** 2 / terms) if terms > 0 else np.inf


def quantile(level: float, df: float) -> float:
    """The `level` quantile of Student's t with `df` degrees of freedom (normal at inf)."""
    return float(stats.norm.ppf(level) if np.isinf(df) else stats.t.ppf(level, df))


@dataclasses.dataclass(frozen=True)
class Paired:
    """Two runs on the same items: b items only A got right, c only B; the exact McNemar
    p-value and its mid-p; the difference A - B in accuracy with its Wald interval."""

    examples: int
    b: int
    c: int
    p_value: float
    mid_p: float
    delta: float
    low: float
    high: float


def paired(correct_a, correct_b, confidence: float = CONFIDENCE) -> Paired:
    """The exact McNemar test of two runs scored on the same ordered items.

    Raises:
        ValueError: the two runs scored different numbers of items.
    """
    a, b_right = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_right.shape:
        raise ValueError(f"paired runs must score the same items: {a.shape} and "
                         f"{b_right.shape}")
    examples = a.size
    b, c = int(np.sum(a & ~b_right)), int(np.sum(~a & b_right))
    discordant = b + c
    if discordant:
        p_value = float(stats.binomtest(min(b, c), discordant, 0.5).pvalue)
        mid_p = p_value - float(stats.binom.pmf(min(b, c), discordant, 0.5))
    else:
        p_value, mid_p = 1.0, 1.0
    delta = (b - c) / examples
    se = np.sqrt(max(discordant - (b - c) ** 2 / examples, 0.0)) / examples
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * se
    return Paired(examples, b, c, min(p_value, 1.0), mid_p, delta, delta - half, delta + half)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input's order."""
    p = np.asarray(p_values, np.float64)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input's order."""
    return stats.false_discovery_control(np.asarray(p_values, np.float64), method="bh")


def reproduction_margin(ours, reported_std: float, reported_runs: int = 3,
                        confidence: float = CONFIDENCE) -> float:
    """How far our mean may lie from a reported mean ± std over `reported_runs` runs and still
    be what the same pipeline gives (items are shared, so only training randomness counts).

    Args:
        ours: our value of each run (seed), in the reported unit.
        reported_std: the reported std, taken as a sample std (ddof 1: the ViT paper does not
            say; ddof 0 would make the margin sqrt(3/2) times wider at 3 runs).
        reported_runs: how many runs it is over.
        confidence: the coverage.

    Returns:
        One run of ours: the half-width of the prediction interval of one more run,
        t_{runs-1} x std x sqrt(1 + 1/runs) (72.72 ± 0.21 over 3 runs: ± 1.04). Several: the
        half-width of the Welch interval of the difference of the means.
    """
    ours = np.asarray(ours, np.float64)
    level = 0.5 + confidence / 2
    if len(ours) == 1:
        return quantile(level, reported_runs - 1) * reported_std * np.sqrt(1 + 1 / reported_runs)
    se, df = satterthwaite([(float(ours.var(ddof=1)) / len(ours), len(ours) - 1),
                            (reported_std ** 2 / reported_runs, reported_runs - 1)])
    return quantile(level, df) * se
