"""Each statistic against scipy / statsmodels / scikit-posthocs on random inputs (1e-9), and small
cases computed by hand with exact asserts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from scipy import stats as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from kdlora.analysis import stats

TOL = 1e-9


@pytest.fixture(params=[0, 1, 2])
def rng(request):
    return np.random.default_rng(request.param)


def test_welch_equals_scipy(rng):
    a, b = rng.normal(0.7, 0.1, 31), rng.normal(0.65, 0.2, 17)
    res, ref = stats.welch(a, b), st.ttest_ind(a, b, equal_var=False)
    assert res["t"] == pytest.approx(ref.statistic, abs=TOL)
    assert res["p"] == pytest.approx(ref.pvalue, abs=TOL)
    assert res["diff"] == pytest.approx(a.mean() - b.mean(), abs=TOL)
    assert (res["n_a"], res["n_b"]) == (31, 17)


def test_welch_by_hand():
    # means 2 and 5, variances 1 and 1, n 3 and 3: se = sqrt(2/3), t = -3/se, df = 4
    res = stats.welch([1, 2, 3], [4, 5, 6])
    t = -3 / math.sqrt(2 / 3)
    assert res["t"] == pytest.approx(t, abs=1e-12)
    assert res["p"] == pytest.approx(2 * st.t.sf(abs(t), 4), abs=1e-12)
    assert res["diff"] == -3.0


def test_welch_too_small_gives_nan():
    res = stats.welch([1.0], [2.0, 3.0])
    assert math.isnan(res["p"]) and res["mean_a"] == 1.0


def test_paired_tests_equal_scipy(rng):
    a = rng.normal(0.8, 0.05, 25)
    b = a - rng.normal(0.01, 0.02, 25)
    t, p = stats.paired_t(a, b)
    ref = st.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic, abs=TOL) and p == pytest.approx(ref.pvalue, abs=TOL)
    w, pw = stats.wilcoxon(a, b)
    refw = st.wilcoxon(a, b)
    assert w == pytest.approx(refw.statistic, abs=TOL) and pw == pytest.approx(refw.pvalue, abs=TOL)


def test_paired_summary_by_hand():
    a, b = np.array([3.0, 5.0, 7.0, 4.0]), np.array([2.0, 3.0, 4.0, 4.0])
    s = stats.paired_summary(a, b)
    # differences 1, 2, 3, 0: mean 1.5, sd sqrt(5/3)
    assert s["mean_diff"] == 1.5
    assert s["d_z"] == pytest.approx(1.5 / math.sqrt(5 / 3), abs=1e-12)
    assert s["prob_improvement"] == (3 + 0.5) / 4
    assert s["n_pairs"] == 4


def test_cohens_dz_and_prob_improvement_exact():
    assert stats.cohens_dz([1.0, 2.0, 3.0]) == 2.0
    assert stats.prob_improvement([1, 2, 3, 4], [0, 2, 5, 1]) == 0.625
    assert math.isnan(stats.cohens_dz([1.0, 1.0]))  # no spread: undefined, not infinite


def test_all_zero_differences_give_nan_not_error():
    assert all(math.isnan(x) for x in stats.wilcoxon([1.0, 2.0], [1.0, 2.0]))
    assert all(math.isnan(x) for x in stats.paired_t([1.0, 2.0], [1.0, 2.0]))


@pytest.mark.parametrize("n", [3, 4, 5, 6, 8])
def test_min_wilcoxon_p_is_what_scipy_gives_for_all_positive_pairs(n):
    diffs = np.arange(1, n + 1, dtype=float)
    assert stats.min_wilcoxon_p(n) == pytest.approx(st.wilcoxon(diffs).pvalue, abs=1e-12)
    assert stats.min_wilcoxon_p(3) == 0.25


def test_holm_equals_statsmodels(rng):
    p = rng.uniform(0, 0.2, 9)
    assert np.allclose(stats.holm(p), multipletests(p, method="holm")[1], atol=TOL, rtol=0)


def test_holm_by_hand_and_nan():
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06], abs=1e-15)
    out = stats.holm([0.01, np.nan, 0.02])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def test_friedman_and_nemenyi_equal_libraries(rng):
    m = pd.DataFrame(rng.normal(0, 1, (20, 5)) + np.arange(5) * 0.3, columns=list("abcde"))
    res = stats.friedman(m)
    ref = st.friedmanchisquare(*[m[c] for c in m.columns])
    assert res["chi2"] == pytest.approx(ref.statistic, abs=TOL)
    assert res["p"] == pytest.approx(ref.pvalue, abs=TOL)
    assert np.allclose(stats.nemenyi(m).to_numpy(), sp.posthoc_nemenyi_friedman(m).to_numpy(), atol=TOL)


@pytest.mark.parametrize("blocks,k,ties", [(20, 5, False), (6, 3, True), (50, 6, True), (3, 7, False)])
def test_nemenyi_equals_scikit_posthocs(rng, blocks, k, ties):
    """kdlora computes Nemenyi itself (to keep scikit-posthocs' plotting imports out of the
    analysis); it must equal posthoc_nemenyi_friedman, ties included."""
    values = rng.normal(0, 1, (blocks, k)) + np.arange(k) * 0.2
    m = pd.DataFrame(values.round(0) if ties else values, columns=[f"m{i}" for i in range(k)])
    ours, ref = stats.nemenyi(m), sp.posthoc_nemenyi_friedman(m)
    assert list(ours.index) == list(ref.index) and list(ours.columns) == list(ref.columns)
    assert np.allclose(ours.to_numpy(), ref.to_numpy(), atol=TOL, rtol=0)


def test_mean_ranks_by_hand():
    m = pd.DataFrame([[3, 2, 1], [3, 1, 2]], columns=["x", "y", "z"])
    assert stats.mean_ranks(m).to_dict() == {"x": 1.0, "y": 2.5, "z": 2.5}
    ties = pd.DataFrame([[1, 1, 0]], columns=["x", "y", "z"])
    assert stats.mean_ranks(ties).to_dict() == {"x": 1.5, "y": 1.5, "z": 3.0}


@pytest.mark.parametrize("k, q", [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850)])
def test_critical_difference_matches_demsar_table(k, q):
    # Demšar (2006), Table 5(a): q_0.05 for the Nemenyi test
    n = 10
    assert stats.critical_difference(k, n) == pytest.approx(q * math.sqrt(k * (k + 1) / (6 * n)), abs=2e-3)


def test_correlation_equals_scipy(rng):
    x = rng.normal(0, 1, 50)
    y = 0.5 * x + rng.normal(0, 1, 50)
    res = stats.correlation(x, y)
    ref = st.pearsonr(x, y)
    ci = ref.confidence_interval(0.95)
    assert res["pearson_r"] == pytest.approx(ref.statistic, abs=TOL)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((ci.low, ci.high), abs=TOL)
    assert res["spearman_rho"] == pytest.approx(st.spearmanr(x, y).statistic, abs=TOL)


def test_correlation_drops_missing_pairs():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    y = np.array([2.0, 4.0, 5.0, np.nan, 10.0, 12.5])
    assert stats.correlation(x, y)["n"] == 4


def test_min_detectable_dz_has_the_stated_power():
    for n in (5, 20, 60):
        dz = stats.min_detectable_dz(n, 0.05, 0.8)
        assert TTestPower().power(effect_size=dz, nobs=n, alpha=0.05) == pytest.approx(0.8, abs=1e-6)


def test_stratified_bootstrap_keeps_the_task_mix():
    # Within each stratum the values are constant, so every stratified resample has exactly the
    # data's mean; an unstratified resample does not.
    values = np.array([0.0] * 5 + [1.0] * 5)
    strata = ["a"] * 5 + ["b"] * 5
    assert stats.bootstrap_mean_ci(values, strata) == (0.5, 0.5)
    lo, hi = stats.bootstrap_mean_ci(values)
    assert lo < 0.5 < hi


def test_bootstrap_is_reproducible_and_brackets_the_mean(rng):
    x = rng.normal(0, 1, 40)
    strata = np.repeat(["a", "b", "c", "d"], 10)
    a = stats.bootstrap_mean_ci(x, strata, seed=3)
    assert a == stats.bootstrap_mean_ci(x, strata, seed=3)
    assert a[0] < x.mean() < a[1]
    narrow = stats.bootstrap_mean_ci(x, strata, confidence=0.5, seed=3)
    assert a[0] < narrow[0] < narrow[1] < a[1]


def test_pareto_mask_by_hand():
    cost = [1.0, 2.0, 3.0, 2.0, 5.0]
    score = [0.5, 0.7, 0.6, 0.7, 0.9]
    # (3, 0.6) is dominated by (2, 0.7); the two (2, 0.7) tie and both stay
    assert stats.pareto_mask(cost, score).tolist() == [True, True, False, True, True]


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="1-D"):
        stats.welch(np.ones((3, 2)), [1.0, 2.0])
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_summary([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="strata"):
        stats.bootstrap_mean_ci([1.0, 2.0, 3.0], ["a", "b"])
    with pytest.raises(ValueError, match="missing cells"):
        stats.friedman(pd.DataFrame([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]]))


# ----- verdicts: effect, TOST, the decision ---------------------------------------------------------
def test_tost_equals_statsmodels(rng):
    from statsmodels.stats.weightstats import ttost_paired

    for n, shift, margin in ((8, 0.0, 0.01), (25, 0.004, 0.01), (40, 0.02, 0.015), (12, -0.006, 0.02)):
        a = rng.normal(0.8, 0.02, n)
        b = a - shift - rng.normal(0, 0.01, n)
        ref = ttost_paired(a, b, -margin, margin)[0]
        assert stats.tost_paired(a, b, margin) == pytest.approx(ref, abs=TOL)


def test_tost_without_spread_and_bad_margin():
    a = np.array([0.5, 0.6, 0.7])
    assert stats.tost_paired(a, a, 0.01) == 0.0  # identical: equivalent
    assert stats.tost_paired(a + 0.05, a, 0.01) == 1.0  # a constant shift beyond the margin
    with pytest.raises(ValueError, match="margin"):
        stats.tost_paired(a, a, 0.0)


def test_hodges_lehmann_by_hand():
    # Walsh averages of (1, 2, 4): 1, 1.5, 2.5, 2, 3, 4 -> median 2.25; 3 pairs cannot reach a 95 % CI
    est, lo, hi = stats.hodges_lehmann([1.0, 2.0, 4.0])
    assert est == 2.25 and math.isnan(lo) and math.isnan(hi)
    # n = 10: P(T+ <= 8) = 0.0244 <= 0.025 < P(T+ <= 9), so the CI is the 9th smallest and
    # 9th largest of the 55 Walsh averages (the textbook table's critical value 8)
    d = np.arange(1.0, 11.0)
    i, j = np.triu_indices(10)
    walsh = np.sort((d[i] + d[j]) / 2)
    est, lo, hi = stats.hodges_lehmann(d)
    assert (est, lo, hi) == (float(np.median(walsh)), walsh[8], walsh[-9])
    assert stats.signed_rank_cdf(10)[8] == pytest.approx(25 / 1024)


@pytest.mark.parametrize("n", [0, 1, 2, 9, 57, 300])
def test_signed_rank_cdf_equals_the_plain_recursion(n):
    """Updating only the support 0 .. k(k+1)/2 gives the plain full-length recursion's values."""
    pmf = np.zeros(n * (n + 1) // 2 + 1)
    pmf[0] = 1.0
    for k in range(1, n + 1):
        shifted = np.zeros_like(pmf)
        shifted[k:] = pmf[:-k]
        pmf = 0.5 * (pmf + shifted)
    assert np.array_equal(stats.signed_rank_cdf(n), np.cumsum(pmf))


def test_hodges_lehmann_ci_inverts_wilcoxon(rng):
    """The exact CI excludes 0 exactly when the exact two-sided Wilcoxon p is below 0.05."""
    for _ in range(20):
        d = rng.normal(0.3, 1.0, 12)
        _, lo, hi = stats.hodges_lehmann(d)
        p = st.wilcoxon(d, method="exact").pvalue
        assert (lo > 0 or hi < 0) == (p < 0.05)


def _hodges_lehmann_by_full_sort(d, confidence=0.95):
    """The textbook computation: sort all n(n+1)/2 Walsh averages, read the median and ranks."""
    d = np.asarray(d, dtype=float)
    n = d.size
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    m, tail = walsh.size, (1 - confidence) / 2
    if n <= stats.EXACT_SIGNED_RANK_N:
        below = np.flatnonzero(stats.signed_rank_cdf(n) <= tail)
        c = int(below[-1]) + 1 if below.size else 0
    else:
        c = int(math.floor(m / 2 - st.norm.ppf(1 - tail) * math.sqrt(n * (n + 1) * (2 * n + 1) / 24)))
    est = float(np.median(walsh))
    return (est, math.nan, math.nan) if c < 1 else (est, float(walsh[c - 1]), float(walsh[m - c]))


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7, 10, 41, 300, 301, 420])
def test_hodges_lehmann_equals_the_full_sort(rng, n):
    """Order-statistic selection gives bit-identical estimate and CI, with ties (rounded and
    integer differences, many equal Walsh averages) and on both sides of the exact/normal switch."""
    for d in (rng.normal(0.01, 0.05, n), np.round(rng.normal(0, 1, n), 1), rng.integers(-2, 3, n).astype(float)):
        for confidence in (0.95, 0.8):
            fast, slow = stats.hodges_lehmann(d, confidence), _hodges_lehmann_by_full_sort(d, confidence)
            assert np.array_equal(fast, slow, equal_nan=True)  # exact equality, nan where nan


def test_walsh_band_equals_full_sort(rng):
    """The band of averages between two thresholds (n > 361) gives the full sort's order
    statistics, also for heavy ties, values a few ulps apart, subnormals and a huge range."""
    from kdlora.analysis import walsh

    n = 400
    cases = [rng.normal(size=n), np.round(rng.normal(size=n), 1), rng.integers(-2, 3, n).astype(float),
             np.zeros(n), np.r_[np.zeros(n // 2), np.ones(n // 2)], 0.1 + np.arange(n) * 1e-17,
             0.3 + rng.integers(0, 4, n) * 2.0 ** -52, rng.normal(size=n) * 1e-310,
             np.r_[rng.normal(size=n - 2), 1e300, -1e300], rng.standard_cauchy(n)]
    i, j = np.triu_indices(n)
    m = i.size
    for d in cases:
        full = np.sort((d[i] + d[j]) / 2)
        for ranks in ([m // 2 - 1, m // 2, m // 2 - 2000, m // 2 + 1999], [0, m - 1], [7, m // 3]):
            assert np.array_equal(walsh.order_statistics(d, ranks), full[ranks])


def test_hodges_lehmann_nan_like_np_median():
    est, lo, hi = stats.hodges_lehmann([np.nan, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    ref = _hodges_lehmann_by_full_sort([np.nan, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert math.isnan(est) and np.array_equal((est, lo, hi), ref, equal_nan=True)  # nan sorts last


def test_verdict_rules():
    assert stats.verdict(0.001, 0.01, 0.05, 0.9, 0.05) == "a better"
    assert stats.verdict(0.001, -0.05, -0.01, 0.9, 0.05) == "b better"
    # the test says significant but the effect's CI spans zero: not directional
    assert stats.verdict(0.001, -0.01, 0.05, 0.9, 0.05) == "inconclusive"
    assert stats.verdict(0.3, -0.002, 0.002, 0.01, 0.05) == "equivalent"
    assert stats.verdict(0.3, -0.05, 0.05, 0.4, 0.05) == "inconclusive"
    assert stats.not_testable(2, 0.05) and stats.not_testable(5, 0.05) and not stats.not_testable(6, 0.05)


def _bootstrap_by_one_draw(values, strata, n_boot=2000, confidence=0.95, seed=0):
    """The plain computation: one (n_boot x size) int32 draw per stratum, in np.unique order."""
    x = np.asarray(values, dtype=float)
    groups = pd.factorize(np.asarray(strata))[0]
    rng, total = np.random.default_rng(seed), np.zeros(n_boot)
    for g in np.unique(groups):
        member = x[groups == g]
        total += member[rng.integers(0, member.size, size=(n_boot, member.size), dtype=np.int32)].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(total / x.size, [tail, 100 - tail])
    return float(lo), float(hi)


@pytest.mark.parametrize("n", [5, 9, 700, 20000])
def test_bootstrap_blocks_equal_one_draw(rng, n):
    """Drawing the resamples in cache-sized blocks, and sharing them between columns with the same
    strata, gives bit-identical CIs to one big draw per stratum (numpy's int32 stream does not
    depend on how the draws are split)."""
    x, y = rng.normal(0.8, 0.1, n), np.round(rng.normal(0.0, 1.0, n), 2)
    strata = rng.choice(["cola", "sst2", "rte"], n) if n > 5 else np.array(["cola"] * 4 + ["rte"])
    n_boot = 300 if n > 1000 else 2000
    assert stats.bootstrap_mean_ci(x, strata, n_boot, seed=4) == _bootstrap_by_one_draw(x, strata, n_boot, seed=4)
    both = stats.bootstrap_mean_cis([x, y], strata, n_boot, seed=4)
    assert both == [stats.bootstrap_mean_ci(x, strata, n_boot, seed=4), stats.bootstrap_mean_ci(y, strata, n_boot, seed=4)]


def test_bootstrap_needs_five_values():
    lo, hi = stats.bootstrap_mean_ci([0.1, 0.2, 0.3, 0.4])
    assert math.isnan(lo) and math.isnan(hi)
    assert not math.isnan(stats.bootstrap_mean_ci([0.1, 0.2, 0.3, 0.4, 0.5])[0])
