"""The 95% interval of a board cell: from its runs' per-item outcomes (`evaluate.outcomes`),
or, for records written before those were kept, from the accuracies and the test size alone
(`APPROXIMATE`, marked on the board).

One run: the Wilson interval on its test items. Several seeds (or a few-shot probe's shot
draws, scored on the same items): mean ± t x SE with the seed and the item parts together
(`statistics.accuracy_estimate`). Without outcomes the item part takes the binomial variance
p(1 - p), its upper bound.

A mean over tasks (`mean_estimate`) sums its tasks' variances with the mean's weights: each
task is trained and scored apart, so their seed and item errors are independent. Its interval
is mean ± t x SE with Welch-Satterthwaite degrees of freedom.
"""

from __future__ import annotations

import numpy as np

from vitbench.evaluate import comparison, outcomes, statistics

APPROXIMATE = "from accuracy and test size"
APPROXIMATE_MARK = "‡"
# The metric's item count in a record's metrics.
EXAMPLES_KEY = {"accuracy": "examples", "real_accuracy": "real_examples"}


def _scores(record: dict, metric: str) -> list[str]:
    """The outcomes scores a cell's metric averages in one record: "test" (a linear probe:
    "test/seed<s>" per head seed); a few-shot metric's "<k>shot/seed<s>" per shot draw."""
    if metric == "accuracy":
        kept = record["outcomes"].get("scores", ["test"])
        return [name for name in kept if name == "test" or name.startswith("test/")]
    if metric in EXAMPLES_KEY:
        return []
    return [f"{metric}/seed{seed}" for seed in range(record["config"].get("seeds", 1))]


def _accuracies(record: dict, metric: str) -> list[float]:
    metrics = record["metrics"]
    return list(metrics.get("seeds", {}).get(metric) or [metrics[metric]])


def cell_estimate(runs: list[dict], metric: str, results_dir) -> statistics.Estimate | None:
    """The interval of a cell whose finished runs are `runs` (records), on `metric`; None
    where the records do not say how many items were scored."""
    try:
        return statistics.accuracy_estimate(correct_rows(runs, metric, results_dir))
    except outcomes.OutcomesError:
        return _approximate(runs, metric)


def cell_difference(runs_a: list[dict], runs_b: list[dict], metric: str, results_dir,
                    paired_seeds: bool) -> comparison.TaskDifference:
    """Two cells' runs compared on the same items (`comparison.task_difference`), from their
    outcomes files.

    Raises:
        OutcomesError: a run keeps no outcomes of the metric, or the cells scored other items.
        ValueError: paired seeds that differ in number.
    """
    correct_a = correct_rows(runs_a, metric, results_dir)
    correct_b = correct_rows(runs_b, metric, results_dir)
    outcomes.check_same_items(runs_a[0]["outcomes"], runs_b[0]["outcomes"])
    return comparison.task_difference(correct_a, correct_b, paired_seeds)


def correct_rows(runs: list[dict], metric: str, results_dir) -> np.ndarray:
    """[runs x seeds, items]: whether each run (each sampling seed of a few-shot probe) got
    each item right, from the outcomes files of `runs` (records), in their order.

    Raises:
        OutcomesError: a record keeps no outcomes (written before they were kept) or not of
            this metric, a file is missing or altered, or the runs scored different items.
    """
    rows = []
    for record in runs:
        entry = record.get("outcomes")
        if entry is None:
            raise outcomes.OutcomesError(
                f"run {record['config_hash'][:8]} keeps no per-item outcomes (recorded "
                "before they were kept: run it again with --force)")
        outcomes.check_same_items(runs[0]["outcomes"], entry)
        correct = outcomes.read_correct(results_dir, entry)
        try:
            rows += [correct[score] for score in _scores(record, metric)]
        except KeyError as missing:
            raise outcomes.OutcomesError(f"run {record['config_hash'][:8]} kept no outcomes "
                                         f"of {missing}") from None
    if not rows:
        raise outcomes.OutcomesError(f"no outcomes of {metric}")
    return np.stack(rows)


def _approximate(runs: list[dict], metric: str) -> statistics.Estimate | None:
    key = EXAMPLES_KEY.get(metric, "test_examples")
    sizes = {record["metrics"].get(key) for record in runs}
    examples = sizes.pop() if len(sizes) == 1 else None
    if not isinstance(examples, int) or examples < 1:
        return None
    accuracies = [a for record in runs for a in _accuracies(record, metric)]
    mean, seeds = float(np.mean(accuracies)), len(accuracies)
    if seeds == 1:
        low, high = statistics.wilson(round(mean * examples), examples)
        return statistics.Estimate(mean, low, high, 1, examples, 0.0,
                                   np.sqrt(mean * (1 - mean) / examples), None, APPROXIMATE)
    return statistics.seeds_and_items(accuracies, mean * (1 - mean), examples, APPROXIMATE)


WEIGHTED_MEAN = "weighted mean of tasks"


def mean_estimate(estimates: dict[str, statistics.Estimate | None],
                  weights: dict[str, float]) -> statistics.Estimate | None:
    """The interval of a weighted mean of task cells, `weights` by column title, renormalised
    over the tasks present in `estimates` (a partial mean); None where a present task has no
    interval, or none is present."""
    present = {title: weight for title, weight in weights.items() if title in estimates}
    if not present or any(estimates[title] is None for title in present):
        return None
    total = sum(present.values())
    mean, parts, seed_part, item_part = 0.0, [], 0.0, 0.0
    for title, weight in present.items():
        estimate, weight = estimates[title], weight / total
        mean += weight * estimate.mean
        parts += [((weight * estimate.se_seed) ** 2, estimate.seeds - 1),
                  ((weight * estimate.se_item) ** 2, estimate.examples - 1)]
        seed_part += (weight * estimate.se_seed) ** 2
        item_part += (weight * estimate.se_item) ** 2
    se, df = statistics.satterthwaite(parts)
    half = statistics.quantile(0.5 + statistics.CONFIDENCE / 2, df) * se
    approximate = any(estimates[title].method == APPROXIMATE for title in present)
    return statistics.Estimate(mean, mean - half, mean + half,
                               min(estimates[title].seeds for title in present),
                               sum(estimates[title].examples for title in present),
                               float(np.sqrt(seed_part)), float(np.sqrt(item_part)), df,
                               APPROXIMATE if approximate else WEIGHTED_MEAN)
