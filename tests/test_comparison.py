"""Paired comparisons of two rows: per task (McNemar, seed tests, minimum detectable effect)
and over tasks (the stratified paired bootstrap), against scipy and the statistics spec's
worked examples."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from vitbench.evaluate import comparison, statistics

# The spec's 19-task example (section 4.5): n, b, c per task; groups 7 natural, 4
# specialized, 8 structured.
SPEC_TASKS = [(6084, 395, 335), (10000, 625, 575), (1880, 105, 120), (6149, 375, 363),
              (3669, 231, 209), (21750, 1348, 1262), (26032, 1523, 1601), (32768, 2114, 1819),
              (5400, 327, 321), (6300, 400, 356), (42670, 2518, 2603), (15000, 1013, 788),
              (15000, 922, 878), (22735, 1307, 1421), (73728, 4497, 4350),
              (73728, 4571, 4276), (711, 50, 36), (12150, 668, 790), (12150, 778, 680)]
GROUPS = [0] * 7 + [1] * 4 + [2] * 8


def one_run_each(examples, b, c, rng, accuracy=0.7):
    """Two runs' correctness with b items only A got right, c only B, on shuffled items."""
    both_right = int(round(accuracy * examples)) - b
    a = np.zeros(examples, bool)
    other = np.zeros(examples, bool)
    a[:b] = True
    other[b:b + c] = True
    a[b + c:b + c + both_right] = other[b + c:b + c + both_right] = True
    order = rng.permutation(examples)
    return a[order], other[order]


def test_one_run_a_side_is_the_exact_mcnemar_test_of_statsmodels():
    a, b = one_run_each(711, 31, 14, np.random.default_rng(0))
    result = comparison.task_difference(a, b)
    both_right, both_wrong = int(np.sum(a & b)), int(np.sum(~a & ~b))
    table = [[both_right, 31], [14, both_wrong]]
    assert result.test == comparison.MCNEMAR and (result.b, result.c) == (31, 14)
    assert result.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
    assert result.psi == pytest.approx(45 / 711)
    assert result.delta == pytest.approx(17 / 711)
    with pytest.raises(ValueError, match="same items"):
        comparison.task_difference(a, b[:-1])


@pytest.mark.parametrize("examples, expected", [(711, 0.0332), (1880, 0.0204), (10000, 0.0089)])
def test_the_mcnemar_detectable_effect_has_about_80_percent_exact_power(examples, expected):
    """The spec's values at psi = 0.10, checked by enumerating the exact test's power."""
    mde = comparison.mcnemar_mde(examples, 0.10)
    assert mde == pytest.approx(expected, abs=1e-4)
    assert 0.77 <= exact_mcnemar_power(examples, 0.10, mde) <= 0.83
    assert comparison.mcnemar_mde(examples, 0.0) is None


def exact_mcnemar_power(examples, psi, delta, alpha=0.05):
    """m ~ Bin(n, psi) discordant items, b | m ~ Bin(m, (psi + delta)/(2 psi)); reject where
    the exact McNemar p <= alpha."""
    discordant = np.arange(examples + 1)
    weight_m = stats.binom.pmf(discordant, examples, psi)
    power = 0.0
    for m in discordant[weight_m > 1e-12]:
        b = np.arange(m + 1)
        p = np.minimum(1, 2 * stats.binom.cdf(np.minimum(b, m - b), m, 0.5))
        power += weight_m[m] * stats.binom.pmf(b, m, (psi + delta) / (2 * psi))[p <= alpha].sum()
    return power


def spec_differences(rng):
    return [comparison.task_difference(*one_run_each(n, b, c, rng)) for n, b, c in SPEC_TASKS]


def test_the_stratified_bootstrap_of_the_means_gives_the_specs_worked_example():
    tasks = spec_differences(np.random.default_rng(0))
    replicates = comparison.bootstrap_tasks(tasks)
    mean19 = comparison.mean_difference(tasks, np.full(19, 1 / 19), replicates)
    sizes = np.bincount(GROUPS)
    groups = comparison.mean_difference(tasks, [1 / (3 * sizes[g]) for g in GROUPS],
                                        replicates)
    assert 100 * mean19.delta == pytest.approx(0.355, abs=1e-3)
    assert 100 * mean19.se_item == pytest.approx(0.108, rel=0.05)
    assert (100 * mean19.low, 100 * mean19.high) == pytest.approx((0.142, 0.568), abs=0.03)
    assert 100 * groups.delta == pytest.approx(0.354, abs=1e-3)
    assert 100 * groups.se_item == pytest.approx(0.103, rel=0.05)
    assert (100 * groups.low, 100 * groups.high) == pytest.approx((0.153, 0.560), abs=0.03)
    assert mean19.method == comparison.BOOTSTRAP and mean19.p_value < 0.01
    analytic = np.sqrt(sum(((b + c) / n - ((b - c) / n) ** 2) / n
                           for n, b, c in SPEC_TASKS)) / 19
    assert mean19.se_item == pytest.approx(analytic, rel=0.05)


def test_the_multinomial_bootstrap_equals_resampling_items_with_scipy():
    rng = np.random.default_rng(1)
    tasks, differences = [], []
    for n, b, c in [(200, 30, 18), (500, 40, 45), (1000, 90, 60)]:
        a, other = one_run_each(n, b, c, rng)
        tasks.append(comparison.task_difference(a, other))
        differences.append(a.astype(float) - other)
    ours = comparison.mean_difference(tasks, np.full(3, 1 / 3),
                                      comparison.bootstrap_tasks(tasks, seed=2))
    theirs = stats.bootstrap(tuple(differences), lambda *d, axis: np.mean(
        [x.mean(axis=axis) for x in d], axis=0), paired=False, vectorized=True,
        method="percentile", n_resamples=10_000, rng=np.random.default_rng(3))
    assert ours.se_item == pytest.approx(theirs.standard_error, rel=0.05)
    assert (ours.low, ours.high) == pytest.approx(
        (theirs.confidence_interval.low, theirs.confidence_interval.high), abs=0.002)


def test_independent_seeds_add_each_sides_seed_variance_to_the_item_variance():
    rng = np.random.default_rng(4)
    a = rng.uniform(size=(3, 900)) < 0.72
    b = rng.uniform(size=(2, 900)) < 0.70
    result = comparison.task_difference(a, b)
    d = a.mean(0) - b.mean(0)
    parts = [a.mean(1).var(ddof=1) / 3, b.mean(1).var(ddof=1) / 2, d.var(ddof=1) / 900]
    se = np.sqrt(sum(parts))
    df = sum(parts) ** 2 / (parts[0] ** 2 / 2 + parts[1] ** 2 / 1 + parts[2] ** 2 / 899)
    assert result.test == comparison.SEEDS_T
    assert result.delta == pytest.approx(a.mean() - b.mean())
    assert result.high - result.delta == pytest.approx(stats.t.ppf(0.975, df) * se)
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(result.delta) / se, df))
    # b and c: expected discordant counts over all pairs of seeds
    pairs = [(np.sum(x & ~y), np.sum(~x & y)) for x in a for y in b]
    assert (result.b, result.c) == pytest.approx(tuple(np.mean(pairs, axis=0)))


def test_paired_seeds_compare_seed_by_seed():
    rng = np.random.default_rng(5)
    a = rng.uniform(size=(5, 600)) < 0.6
    b = rng.uniform(size=(5, 600)) < 0.6
    result = comparison.task_difference(a, b, paired_seeds=True)
    per_seed = a.mean(1) - b.mean(1)
    se = np.sqrt(per_seed.var(ddof=1) / 5 + (a.mean(0) - b.mean(0)).var(ddof=1) / 600)
    assert result.test == comparison.PAIRED_SEEDS_T
    assert result.high - result.delta == pytest.approx(
        statistics.quantile(0.975, statistics.satterthwaite(
            [(per_seed.var(ddof=1) / 5, 4),
             ((a.mean(0) - b.mean(0)).var(ddof=1) / 600, 599)])[1]) * se)
    assert result.b == pytest.approx(np.mean((a & ~b).sum(1)))
    with pytest.raises(ValueError, match="same seeds"):
        comparison.task_difference(a, b[:3], paired_seeds=True)


def test_a_planted_effect_is_found_on_its_task_only():
    rng = np.random.default_rng(6)
    tasks = []
    for task, (n, _, _) in enumerate(SPEC_TASKS):
        b = c = int(0.06 * n)
        if task == 11:  # clevr_count: A right on 3% more items
            b += int(0.03 * n)
        tasks.append(comparison.task_difference(*one_run_each(n, b, c, rng)))
    adjusted = statistics.holm([t.p_value for t in tasks])
    verdicts = [comparison.verdict(t.delta, p) for t, p in zip(tasks, adjusted)]
    assert verdicts[11] == comparison.A_BETTER
    assert set(verdicts[:11] + verdicts[12:]) == {comparison.NO_DIFFERENCE}


def test_without_an_effect_holm_flags_a_task_in_at_most_5_percent_of_comparisons():
    rng = np.random.default_rng(7)
    flagged, draws = 0, 200
    sizes = [300, 500, 700, 900]
    for _ in range(draws):
        p = []
        for n in sizes * 4:
            chance = rng.uniform(0.3, 0.9, size=n)  # items of mixed difficulty
            a, b = rng.uniform(size=(2, n)) < chance
            p.append(comparison.task_difference(a, b).p_value)
        flagged += bool(np.any(statistics.holm(p) < 0.05))
    assert flagged / draws <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / draws)
