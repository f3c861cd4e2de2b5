"""Intervals and paired tests against statsmodels and scipy, and the statistics spec's worked
examples."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from vitbench.evaluate import statistics


@pytest.mark.parametrize("correct, examples", [(0, 10), (10, 10), (498, 711), (1, 1),
                                               (3, 7), (7000, 10000), (711, 711)])
def test_wilson_bounds_equal_statsmodels(correct, examples):
    ours = statistics.wilson(correct, examples)
    assert ours == pytest.approx(proportion_confint(correct, examples, method="wilson"),
                                 abs=1e-12)


def test_wilson_on_kitti_is_the_specs_worked_example():
    assert statistics.wilson(498, 711) == pytest.approx((0.665748, 0.732942), abs=1e-6)
    with pytest.raises(ValueError, match="at least one item"):
        statistics.wilson(0, 0)


def runs(b, c, both_right, both_wrong, seed=0):
    """Two runs' correctness on the same shuffled items with these counts."""
    a = np.array([1] * b + [0] * c + [1] * both_right + [0] * both_wrong, bool)
    other = np.array([0] * b + [1] * c + [1] * both_right + [0] * both_wrong, bool)
    order = np.random.default_rng(seed).permutation(len(a))
    return a[order], other[order]


@pytest.mark.parametrize("b, c", [(31, 14), (5, 5), (0, 0), (1, 0), (0, 3), (200, 170)])
def test_exact_mcnemar_equals_statsmodels_and_scipy(b, c):
    result = statistics.paired(*runs(b, c, 40, 20))
    assert (result.b, result.c) == (b, c)
    table = [[40, b], [c, 20]]
    assert result.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
    if b + c:
        assert result.p_value == pytest.approx(stats.binomtest(c, b + c, 0.5).pvalue,
                                               abs=1e-12)
        assert result.mid_p == pytest.approx(
            result.p_value - stats.binom.pmf(min(b, c), b + c, 0.5), abs=1e-12)


def test_mcnemar_on_kitti_is_the_specs_worked_example():
    a, b = runs(31, 14, 467, 199)
    result = statistics.paired(a, b)
    assert result.examples == 711 and result.delta == pytest.approx(0.02391, abs=1e-5)
    assert result.p_value == pytest.approx(0.016094, abs=1e-6)
    assert result.mid_p == pytest.approx(0.011352, abs=1e-6)
    assert (100 * result.low, 100 * result.high) == pytest.approx((0.550, 4.232), abs=1e-3)
    t_interval = stats.ttest_rel(a.astype(float), b.astype(float)).confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx(tuple(t_interval), abs=2e-4)
    with pytest.raises(ValueError, match="same items"):
        statistics.paired(a, b[:-1])


# The spec's 19-task example: raw exact McNemar p-values (section 4.5).
SPEC_P = [0.02892, 0.1572, 0.3507, 0.6856, 0.3168, 0.09614, 0.1683, 2.731e-6, 0.8443,
          0.1178, 0.2405, 1.258e-7, 0.3108, 0.03048, 0.1206, 0.001772, 0.1606, 0.001522,
          0.01105]


def test_holm_and_benjamini_hochberg_equal_statsmodels():
    for p in (SPEC_P, np.random.default_rng(0).uniform(size=30), [0.5], [0.01, 0.01, 0.2]):
        np.testing.assert_allclose(statistics.holm(p),
                                   multipletests(p, method="holm")[1], atol=1e-12)
        np.testing.assert_allclose(statistics.benjamini_hochberg(p),
                                   multipletests(p, method="fdr_bh")[1], atol=1e-12)
    kept = np.flatnonzero(statistics.holm(SPEC_P) < 0.05)
    assert kept.tolist() == [7, 11, 15, 17]  # camelyon, clevr_count, dsprites_ori, snorb_azim


def test_seeds_and_items_together_give_the_specs_worked_example():
    correct = [[1, 1, 1, 0, 1, 0, 1, 1], [1, 1, 0, 0, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1, 1, 0]]
    estimate = statistics.accuracy_estimate(correct)
    assert estimate.mean == pytest.approx(0.708333, abs=1e-6)
    assert np.hypot(estimate.se_seed, estimate.se_item) == pytest.approx(0.139087, abs=1e-6)
    assert estimate.df == pytest.approx(8.170, abs=1e-3)
    half = stats.t.ppf(0.975, estimate.df) * np.hypot(estimate.se_seed, estimate.se_item)
    assert (estimate.low, estimate.high) == pytest.approx((estimate.mean - half,
                                                           estimate.mean + half))
    assert estimate.seeds == 3 and estimate.method == "seed+item t"


def test_identical_seeds_leave_only_the_item_part_and_one_run_is_wilson():
    row = np.random.default_rng(0).uniform(size=500) < 0.7
    same = statistics.accuracy_estimate([row, row, row])
    assert same.se_seed == 0 and same.se_item == pytest.approx(np.std(row, ddof=1) / np.sqrt(500))
    one = statistics.accuracy_estimate(row)
    assert one.method == "wilson" and (one.low, one.high) == statistics.wilson(row.sum(), 500)


def test_the_seed_and_item_interval_covers_the_true_mean_at_about_95_percent():
    """Items drawn from a population of difficulties, seeds shift every item's chance: the
    interval of 3 seeds on 400 items covers the population mean in 90% to 99% of draws."""
    rng = np.random.default_rng(0)
    covered, draws = 0, 400
    for _ in range(draws):
        difficulty = rng.normal(size=400)
        seed_shift = rng.normal(scale=0.3, size=(3, 1))
        chance = 1 / (1 + np.exp(-(1.0 + difficulty + seed_shift)))
        correct = rng.uniform(size=chance.shape) < chance
        estimate = statistics.accuracy_estimate(correct)
        covered += estimate.low <= TRUE_MEAN <= estimate.high
    assert 0.90 <= covered / draws <= 0.99


def _population_mean(samples=2_000_000):
    rng = np.random.default_rng(1)
    logits = 1.0 + rng.normal(size=samples) + rng.normal(scale=0.3, size=samples)
    return float(np.mean(1 / (1 + np.exp(-logits))))


TRUE_MEAN = _population_mean()


def test_the_reproduction_margin_is_the_specs_prediction_interval_and_welch_interval():
    """Section 4.7: ViT-L/16 I21k's VTAB mean 72.72 ± 0.21 over 3 runs; one run of ours lies
    within ± 1.04 of it; ours 72.10 ± 0.30 over 3 seeds: the Welch interval of the difference
    is ± 0.615 (scipy's Welch test from summaries gives the same t)."""
    assert statistics.reproduction_margin([72.10], 0.21) == pytest.approx(1.0434, abs=1e-4)
    ours = np.array([72.10 - 0.30, 72.10, 72.10 + 0.30])  # std 0.30 (ddof 1)
    margin = statistics.reproduction_margin(ours, 0.21)
    assert margin == pytest.approx(0.615, abs=1e-3)
    welch = stats.ttest_ind_from_stats(72.72, 0.21, 3, 72.10, 0.30, 3, equal_var=False)
    assert welch.statistic == pytest.approx(2.932, abs=1e-3)
    se = (72.72 - 72.10) / welch.statistic
    df = se ** 4 / ((0.21 ** 2 / 3) ** 2 / 2 + (0.30 ** 2 / 3) ** 2 / 2)
    assert df == pytest.approx(3.58, abs=0.01)
    assert margin == pytest.approx(stats.t.ppf(0.975, df) * se, rel=1e-9)


def test_the_seed_and_item_se_matches_the_two_way_bootstrap_that_shares_items_across_seeds():
    """The spec's cross-check (section 4.2 (c)): 3 seeds crossed with 1,880 items; the
    bootstrap draws seeds and one shared vector of items per replicate and agrees with the
    analytic SE once the bootstrap's own bias is allowed for (with k seeds resampled, its
    seed part is (k - 1)/k of the sample's, and a seed drawn twice averages less of the items'
    own noise: within 8%); resampling items separately per seed understates it."""
    rng = np.random.default_rng(2)
    difficulty = rng.normal(size=1880)
    seed_shift = np.array([[-0.15], [0.0], [0.2]])
    correct = rng.uniform(size=(3, 1880)) < 1 / (1 + np.exp(-(0.8 + difficulty + seed_shift)))
    estimate = statistics.accuracy_estimate(correct)
    analytic = np.sqrt(2 / 3 * estimate.se_seed ** 2 + estimate.se_item ** 2)
    draws = 4000
    seeds = rng.integers(0, 3, size=(draws, 3))
    items = rng.integers(0, 1880, size=(draws, 1880))
    shared = correct[seeds[:, :, None], items[:, None, :]].mean(axis=(1, 2))
    assert shared.std(ddof=1) == pytest.approx(analytic, rel=0.08)
    nested = correct[seeds[:, :, None], rng.integers(0, 1880, size=(draws, 3, 1880))]
    assert nested.mean(axis=(1, 2)).std(ddof=1) < 0.95 * shared.std(ddof=1)
