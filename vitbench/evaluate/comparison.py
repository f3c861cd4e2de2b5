"""Two rows (checkpoints, or one checkpoint under two settings) compared on the same test
items: per task the difference A - B in accuracy, its test and the smallest difference the
task could have shown; over tasks, weighted means of those differences with a task-stratified
paired bootstrap interval. Formulas: `../shared/spec/statistics.md` sections 4.3 to 4.6;
tested against statsmodels and scipy in tests/test_comparison.py.

Per task, by what was run:
- one run a side: the exact McNemar test on the discordant counts b and c, the paired Wald
  interval, and the minimum detectable effect of a McNemar test (Connor's formula) at the
  observed discordance psi = (b + c)/n;
- several independent fine-tuning seeds: Delta ± t x SE with SE^2 = s_A^2/k_A + s_B^2/k_B +
  var(d)/n (d: an item's seed-averaged A minus B), Welch-Satterthwaite degrees of freedom; a
  side with one run borrows the other side's seed variance;
- paired seeds (a few-shot probe's seed draws the same shots for every checkpoint): SE^2 =
  var_s(Delta_s)/k + var(d)/n.
McNemar compares two trained models; the seed tests also cover training randomness.

Means over tasks: items are resampled within each task, A and B of an item together. An
item's difference takes few values (-1, 0, 1 for one run a side), so a task's resample is a
multinomial draw of how often each value comes up: 10,000 replicates of 19 tasks take
milliseconds and no item arrays. One set of replicates serves every weighting (the 19-task
mean, the mean of group means).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize, stats

from vitbench.evaluate import statistics
from vitbench.evaluate.statistics import CONFIDENCE, quantile

ALPHA = 0.05  # the test level of verdicts and of the minimum detectable effect
POWER = 0.8
REPLICATES = 10_000
BOOTSTRAP_SEED = 0

MCNEMAR = "exact McNemar"
SEEDS_T = "seed+item t"
PAIRED_SEEDS_T = "paired-seed t"


@dataclasses.dataclass(frozen=True)
class TaskDifference:
    """A vs B on one task's items. `b`, `c`: items only A (only B) got right, averaged over
    pairs of seeds where there are several; `psi` = mean squared item difference ((b + c)/n
    with one run a side); `mde`: the smallest |Delta| the test detects with power 0.8 at
    level 0.05 (None where the runs never disagree); `levels` and `counts`: the values an
    item's difference takes and how often (for the bootstrap of means)."""

    examples: int
    seeds_a: int
    seeds_b: int
    accuracy_a: float
    accuracy_b: float
    b: float
    c: float
    delta: float
    low: float
    high: float
    p_value: float
    mid_p: float | None
    test: str
    mde: float | None
    psi: float
    seed_variance: float  # the seed part of var(Delta)
    seed_df: float
    levels: np.ndarray = dataclasses.field(repr=False)
    counts: np.ndarray = dataclasses.field(repr=False)


def task_difference(correct_a, correct_b, paired_seeds: bool = False,
                    confidence: float = CONFIDENCE) -> TaskDifference:
    """A vs B on one task.

    Args:
        correct_a, correct_b: [seeds, items] (or [items]) booleans, each side's runs on the
            same ordered items.
        paired_seeds: row s of A and of B share their randomness (a few-shot probe's shot
            draw), so they are compared seed by seed.
        confidence: the interval's coverage.

    Raises:
        ValueError: the sides scored different numbers of items, or paired seeds differ in
            number.
    """
    a = np.atleast_2d(np.asarray(correct_a, bool))
    b = np.atleast_2d(np.asarray(correct_b, bool))
    (seeds_a, examples), seeds_b = a.shape, b.shape[0]
    if b.shape[1] != examples:
        raise ValueError(f"compared runs must score the same items: {examples} and "
                         f"{b.shape[1]}")
    if paired_seeds and seeds_a != seeds_b:
        raise ValueError(f"seed-by-seed comparison needs the same seeds on both sides: "
                         f"{seeds_a} and {seeds_b}")
    keys = a.sum(0) * seeds_b - b.sum(0) * seeds_a  # an item's difference x k_A k_B
    keys, counts = np.unique(keys, return_counts=True)
    levels = keys / (seeds_a * seeds_b)
    psi = float(counts @ levels ** 2) / examples
    common = dict(examples=examples, seeds_a=seeds_a, seeds_b=seeds_b,
                  accuracy_a=float(a.mean()), accuracy_b=float(b.mean()), psi=psi,
                  levels=levels, counts=counts)
    if seeds_a == seeds_b == 1:
        test = statistics.paired(a[0], b[0], confidence)
        return TaskDifference(**common, b=test.b, c=test.c, delta=test.delta, low=test.low,
                              high=test.high, p_value=test.p_value, mid_p=test.mid_p,
                              test=MCNEMAR, mde=mcnemar_mde(examples, psi), seed_variance=0.0,
                              seed_df=np.inf)
    mean_a, mean_b = a.mean(0), b.mean(0)
    if paired_seeds:
        per_seed = a.mean(1) - b.mean(1)
        seed_parts = [(float(per_seed.var(ddof=1)) / seeds_a, seeds_a - 1)]
        b_count = float(np.mean((a & ~b).sum(1)))
        c_count = float(np.mean((~a & b).sum(1)))
        test = PAIRED_SEEDS_T
    else:
        seed_parts = _independent_seed_parts(a.mean(1), b.mean(1))
        b_count = float(mean_a @ (1 - mean_b))
        c_count = float((1 - mean_a) @ mean_b)
        test = SEEDS_T
    item_part = float(np.var(mean_a - mean_b, ddof=1)) / examples
    seed_variance, seed_df = _seed_sum(seed_parts)
    se, df = statistics.satterthwaite(seed_parts + [(item_part, examples - 1)])
    delta = float(mean_a.mean() - mean_b.mean())
    half = quantile(0.5 + confidence / 2, df) * se
    return TaskDifference(**common, b=b_count, c=c_count, delta=delta, low=delta - half,
                          high=delta + half, p_value=_two_sided_p(delta, se, df), mid_p=None,
                          test=test, mde=detectable(se, df), seed_variance=seed_variance,
                          seed_df=seed_df)


def _independent_seed_parts(per_seed_a, per_seed_b) -> list[tuple[float, float]]:
    """(s^2/k, k - 1) of each side; a side with one run takes the other side's s^2."""
    spread = {side: float(np.var(x, ddof=1)) for side, x in (("a", per_seed_a),
                                                              ("b", per_seed_b)) if len(x) > 1}
    parts = []
    for side, per_seed in (("a", per_seed_a), ("b", per_seed_b)):
        other = "b" if side == "a" else "a"
        variance = spread.get(side, spread.get(other, 0.0))
        df = len(per_seed) - 1 or max(len(per_seed_a), len(per_seed_b)) - 1
        parts.append((variance / len(per_seed), df))
    return parts


def _seed_sum(parts) -> tuple[float, float]:
    se, df = statistics.satterthwaite(parts)
    return se ** 2, df


def _two_sided_p(delta: float, se: float, df: float) -> float:
    if se == 0:
        return 1.0 if delta == 0 else 0.0
    return float(min(1.0, 2 * (1 - _cdf(abs(delta) / se, df))))


def _cdf(x: float, df: float) -> float:
    return float(stats.norm.cdf(x) if np.isinf(df) else stats.t.cdf(x, df))


def detectable(se: float, df: float = np.inf) -> float:
    """The minimum detectable effect of a two-sided test at level ALPHA with power POWER of
    an estimate with standard error `se`: (q_{1-alpha/2} + q_power) x se."""
    return (quantile(1 - ALPHA / 2, df) + quantile(POWER, df)) * se


def mcnemar_mde(examples: int, psi: float) -> float | None:
    """The smallest |Delta| an exact McNemar test on `examples` items with discordance `psi`
    detects with power POWER at level ALPHA, by Connor's (1987) sample size
    n = [z_{1-alpha/2} sqrt(psi) + z_power sqrt(psi - delta^2)]^2 / delta^2, solved for delta;
    None where the runs never disagree."""
    if psi <= 0:
        return None
    z, z_power = quantile(1 - ALPHA / 2, np.inf), quantile(POWER, np.inf)

    def excess(delta):
        spread = np.sqrt(max(psi - delta ** 2, 0.0))
        return np.sqrt(examples) * delta - z * np.sqrt(psi) - z_power * spread

    top = np.sqrt(psi)
    return float(optimize.brentq(excess, 0.0, top)) if excess(top) > 0 else float(top)


def bootstrap_tasks(tasks: list[TaskDifference], replicates: int = REPLICATES,
                    seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """[replicates, tasks]: each task's Delta on its items resampled with replacement (A and B
    of an item together), drawn as multinomial counts of the item differences' values."""
    rng = np.random.default_rng(seed)
    columns = [rng.multinomial(t.examples, t.counts / t.examples, size=replicates) @ t.levels
               / t.examples for t in tasks]
    return np.stack(columns, axis=1)


@dataclasses.dataclass(frozen=True)
class MeanDifference:
    """A weighted mean of per-task differences, A - B, with its interval and test."""

    delta: float
    low: float
    high: float
    p_value: float
    se_item: float
    se_seed: float
    mde: float
    method: str


BOOTSTRAP = "stratified paired bootstrap"
BOOTSTRAP_AND_SEEDS = "stratified paired bootstrap + seed t"


def mean_difference(tasks: list[TaskDifference], weights, replicates: np.ndarray,
                    confidence: float = CONFIDENCE) -> MeanDifference:
    """The difference of the weighted means sum_t w_t Delta_t.

    With one run a side on every task: the percentile interval of the bootstrap
    `replicates` (`bootstrap_tasks`) and p = 2 min(P*(<= 0), P*(>= 0)), each count + 1 over
    replicates + 1 so that it is never 0. With seeds: Delta ± t x SE, SE^2 = the bootstrap's
    variance + sum_t w_t^2 (seed part of var Delta_t), Welch-Satterthwaite degrees of freedom.
    The minimum detectable effect uses sum_t w_t^2 psi_t / n_t as the item part.
    """
    weights = np.asarray(weights, np.float64)
    delta = float(weights @ [t.delta for t in tasks])
    drawn = replicates @ weights
    se_item = float(drawn.std(ddof=1))
    seed_parts = [(w ** 2 * t.seed_variance, t.seed_df) for t, w in zip(tasks, weights)
                  if t.seed_variance > 0]
    null_item = float(np.sqrt(sum(w ** 2 * t.psi / t.examples for t, w in zip(tasks, weights))))
    if not seed_parts:
        tail = (1 - confidence) / 2
        low, high = np.quantile(drawn, [tail, 1 - tail])
        extreme = min(np.sum(drawn <= 0), np.sum(drawn >= 0))
        p_value = min(1.0, 2 * (extreme + 1) / (len(drawn) + 1))
        return MeanDifference(delta, float(low), float(high), p_value, se_item, 0.0,
                              detectable(null_item), BOOTSTRAP)
    se_seed, _ = statistics.satterthwaite(seed_parts)
    se, df = statistics.satterthwaite(seed_parts + [(se_item ** 2, np.inf)])
    half = quantile(0.5 + confidence / 2, df) * se
    _, null_df = statistics.satterthwaite(seed_parts + [(null_item ** 2, np.inf)])
    return MeanDifference(delta, delta - half, delta + half, _two_sided_p(delta, se, df),
                          se_item, se_seed, detectable(np.hypot(null_item, se_seed), null_df),
                          BOOTSTRAP_AND_SEEDS)


A_BETTER, B_BETTER, NO_DIFFERENCE = "A better", "B better", "no detectable difference"


def verdict(delta: float, p_value: float, alpha: float = ALPHA) -> str:
    """A better / B better where the (adjusted) p-value is below `alpha`, else no detectable
    difference."""
    if p_value >= alpha:
        return NO_DIFFERENCE
    return A_BETTER if delta > 0 else B_BETTER
