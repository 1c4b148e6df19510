"""Statistics as small pure functions on 1-D arrays (or one blocks x treatments frame).

Every test statistic comes from scipy / statsmodels / scikit-posthocs; this module only checks
shapes, handles the degenerate cases the report must survive (n < 2, all-zero differences) and
returns plain dicts. Inputs of the wrong shape are refused, never silently broadcast.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import pandas as pd

from kdlora.analysis import walsh
from kdlora.lazy import imports_without_collector, lazy_module

st = lazy_module("scipy.stats")  # imported on first use (~0.7 CPU s), after `kdlora report` forks its figure workers


def import_libraries() -> None:
    """Import the statistics libraries now, when the caller has a core to spare for them
    (`report.build` does while a worker loads the records)."""
    with imports_without_collector():
        import scipy.stats  # noqa: F401
        import statsmodels.stats.multitest  # noqa: F401


NAN = float("nan")
BOOT_CELLS = 1 << 16  # bootstrap indices drawn per block (256 KiB of int32: fits in cache)
MIN_BOOTSTRAP_N = 5  # fewer values: no bootstrap CI
EXACT_SIGNED_RANK_N = 300  # up to this many pairs the signed-rank null distribution is exact


# ----- shape checks -------------------------------------------------------------------------
def as_vector(x, name: str = "x") -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def as_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_vector(a, "a"), as_vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have equal length, got {a.size} and {b.size}")
    return a, b


# ----- unpaired: the reference's way ----------------------------------------------------------
def welch(a, b) -> dict:
    """Welch's unpaired t-test (scipy ttest_ind, equal_var=False), as the reference computed it."""
    a, b = as_vector(a, "a"), as_vector(b, "b")
    out = {"n_a": a.size, "n_b": b.size, "mean_a": _mean(a), "mean_b": _mean(b)}
    out["diff"] = out["mean_a"] - out["mean_b"]
    if min(a.size, b.size) < 2 or (constant(a) and constant(b)):
        return {**out, "t": NAN, "p": NAN}
    res = st.ttest_ind(a, b, equal_var=False)
    return {**out, "t": float(res.statistic), "p": float(res.pvalue)}


def constant(x: np.ndarray) -> bool:
    """No spread beyond rounding noise (centring a constant leaves ~1e-17 residues)."""
    return x.size == 0 or float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else NAN


# ----- paired: the sound way -------------------------------------------------------------------
def cohens_dz(diff) -> float:
    """Mean paired difference over its standard deviation (ddof=1)."""
    d = as_vector(diff, "diff")
    if d.size < 2:
        return NAN
    sd = float(np.std(d, ddof=1))
    return NAN if sd == 0 else float(np.mean(d)) / sd


def prob_improvement(a, b) -> float:
    """P(a > b) over matched pairs, ties counting one half."""
    a, b = as_pairs(a, b)
    if a.size == 0:
        return NAN
    return float(np.mean(a > b) + 0.5 * np.mean(a == b))


def paired_t(a, b) -> tuple[float, float]:
    a, b = as_pairs(a, b)
    if a.size < 2 or np.all(a - b == 0):
        return NAN, NAN
    res = st.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def wilcoxon(a, b) -> tuple[float, float]:
    """Wilcoxon signed-rank (two-sided, scipy's default method); nan when every difference is 0."""
    a, b = as_pairs(a, b)
    if a.size == 0 or np.all(a - b == 0):
        return NAN, NAN
    res = st.wilcoxon(a, b)
    return float(res.statistic), float(res.pvalue)


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided exact Wilcoxon p-value n pairs can reach: 2 / 2**n."""
    return math.ldexp(1.0, 1 - n) if n > 0 else NAN  # 2**(1-n), underflowing to 0 instead of overflowing


def paired_summary(a, b) -> dict:
    """Every paired statistic the report shows for one comparison of a against b."""
    a, b = as_pairs(a, b)
    t, p_t = paired_t(a, b)
    w, p_w = wilcoxon(a, b)
    return {"n_pairs": a.size, "mean_a": _mean(a), "mean_b": _mean(b), "mean_diff": _mean(a - b),
            "t": t, "p_t": p_t, "w": w, "p_wilcoxon": p_w, "d_z": cohens_dz(a - b),
            "prob_improvement": prob_improvement(a, b)}


# ----- effect sizes and equivalence ---------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def signed_rank_cdf(n: int) -> np.ndarray:
    """P(T+ <= k), k = 0 .. n(n+1)/2, of the Wilcoxon signed-rank statistic under the null
    (every sign equally likely, no ties): the subset sums of 1..n, by dynamic programming."""
    pmf = np.zeros(n * (n + 1) // 2 + 1)
    pmf[0] = 1.0
    for k in range(1, n + 1):
        top = k * (k + 1) // 2 + 1  # after adding rank k, only T+ <= 1 + .. + k has mass
        pmf[k:top] += pmf[:top - k].copy()  # the old values: P(T+ = t) + P(T+ = t - k) ...
        pmf[:top] *= 0.5  # ... halved (the zeros beyond `top` stay zero)
    return np.cumsum(pmf)


def hodges_lehmann(diff, confidence: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): the median of the Walsh averages (d_i + d_j) / 2, i <= j, and the
    distribution-free CI that inverts the Wilcoxon signed-rank test (exact null distribution up to
    EXACT_SIGNED_RANK_N pairs, normal beyond). The CI is nan when n pairs cannot reach it."""
    d = as_vector(diff, "diff")
    n = d.size
    if n == 0:
        return NAN, NAN, NAN
    m = n * (n + 1) // 2
    c = _hl_rank(n, m, confidence)
    # 0-based ranks of the median (two middle values when m is even) and the CI bounds; with
    # inf or nan in d also of the largest value (nan sorts last: np.median's nan check)
    finite = bool(np.isfinite(d).all())
    ranks = [(m - 1) // 2, m // 2] + ([c - 1, m - c] if c >= 1 else []) + ([] if finite else [m - 1])
    values = walsh.order_statistics(d, ranks)
    middle = values[:1] if m % 2 else values[:2]  # np.median's arithmetic: their mean
    estimate = NAN if not finite and np.isnan(values[-1]) else float(np.mean(middle))
    if c < 1:
        return estimate, NAN, NAN
    return estimate, float(values[2]), float(values[3])


def _hl_rank(n: int, m: int, confidence: float) -> int:
    """1-based rank c of the Hodges-Lehmann CI's lower bound among the m Walsh averages (the
    upper bound has rank m + 1 - c); c < 1 when n pairs cannot reach the confidence."""
    tail = (1 - confidence) / 2
    if n <= EXACT_SIGNED_RANK_N:
        below = np.flatnonzero(signed_rank_cdf(n) <= tail)  # T+ values cut off in the lower tail
        return int(below[-1]) + 1 if below.size else 0
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return int(math.floor(m / 2 - st.norm.ppf(1 - tail) * sd))


def tost_paired(a, b, margin: float) -> float:
    """Two one-sided paired t-tests of |mean(a - b)| < margin: the larger one-sided p-value
    (statsmodels' ttost_paired with low = -margin, upp = margin). Differences without spread
    are equivalent exactly when they lie inside the margin (p 0), else not (p 1)."""
    a, b = as_pairs(a, b)
    if margin <= 0:
        raise ValueError(f"equivalence margin must be > 0 (got {margin})")
    d = a - b
    if d.size < 2:
        return NAN
    mean = float(np.mean(d))
    if constant(d):
        return 0.0 if abs(mean) < margin else 1.0
    se = float(np.std(d, ddof=1)) / math.sqrt(d.size)
    df = d.size - 1
    p_low = float(st.t.sf((mean + margin) / se, df))  # H0: mean <= -margin
    p_high = float(st.t.cdf((mean - margin) / se, df))  # H0: mean >= +margin
    return max(p_low, p_high)


VERDICTS = ("a better", "b better", "equivalent", "inconclusive")


def not_testable(n: int, alpha: float, min_blocks: int = 3) -> bool:
    """Too few matched blocks for any test, or an exact Wilcoxon that cannot reach alpha."""
    return n < min_blocks or min_wilcoxon_p(n) >= alpha


def verdict(p_adjusted: float, ci_low: float, ci_high: float, p_tost: float, alpha: float) -> str:
    """a better / b better: the (Holm-adjusted) test below alpha AND the effect's CI on one side
    of zero; equivalent: the TOST p below alpha; otherwise inconclusive."""
    if p_adjusted < alpha and ci_low > 0:
        return "a better"
    if p_adjusted < alpha and ci_high < 0:
        return "b better"
    if p_tost < alpha:
        return "equivalent"
    return "inconclusive"


# ----- bootstrap ---------------------------------------------------------------------------------
def bootstrap_mean_ci(values, strata: Sequence | None = None, n_boot: int = 2000,
                      confidence: float = 0.95, seed: int = 0, min_n: int = MIN_BOOTSTRAP_N) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampling within each stratum (e.g. task); nan for
    fewer than `min_n` values (a resample of 3 values has a handful of distinct means).

    Stratifying keeps every resample's task mix equal to the data's, so the interval reflects
    seed-to-seed variation and not a random reshuffling of which tasks are in the average.
    """
    return bootstrap_mean_cis([values], strata, n_boot, confidence, seed, min_n)[0]


def bootstrap_mean_cis(columns: Sequence, strata: Sequence | None = None, n_boot: int = 2000,
                       confidence: float = 0.95, seed: int = 0,
                       min_n: int = MIN_BOOTSTRAP_N) -> list[tuple[float, float]]:
    """bootstrap_mean_ci of several equally long value columns sharing one `strata`: each CI is
    exactly what its own call gives (every call starts the same seeded stream, so equal strata
    mean equal resamples), but the resample indices are drawn once for all columns."""
    xs = [as_vector(c, "values") for c in columns]
    if any(x.shape != xs[0].shape for x in xs):
        raise ValueError("bootstrap columns must have equal length")
    x = xs[0]
    if x.size == 0:
        return [(NAN, NAN)] * len(xs)
    groups = np.zeros(x.size, dtype=int) if strata is None else pd.factorize(np.asarray(strata))[0]
    if groups.shape != x.shape:
        raise ValueError(f"strata must match values: {groups.shape} vs {x.shape}")
    if x.size < min_n:
        return [(NAN, NAN)] * len(xs)
    rng = np.random.default_rng(seed)
    totals = np.zeros((len(xs), n_boot))
    for g in np.unique(groups):
        members = [v[groups == g] for v in xs]
        _add_resample_sums(rng, members, n_boot, totals)
    tail = (1 - confidence) / 2 * 100
    cis = []
    for total in totals:
        lo, hi = np.percentile(total / x.size, [tail, 100 - tail])
        cis.append((float(lo), float(hi)))
    return cis


def _add_resample_sums(rng: np.random.Generator, members: list[np.ndarray], n_boot: int,
                       totals: np.ndarray) -> None:
    """Add to totals[k] the sums of n_boot resamples (with replacement) of members[k], all
    columns resampled with the same indices. The indices are int32 draws in blocks of about
    BOOT_CELLS (the draws are one stream whatever the block shape: PCG64 hands out 32-bit halves
    across calls), so the picks and gathered values stay in cache; each resample is summed as
    one contiguous row, which fixes numpy's pairwise summation order."""
    size = members[0].size
    rows = max(1, min(n_boot, BOOT_CELLS // size))
    gathered = np.empty((rows, size))
    for start in range(0, n_boot, rows):
        block = min(rows, n_boot - start)
        picks = rng.integers(0, size, size=(block, size), dtype=np.int32)
        for total, member in zip(totals, members):
            # mode="clip": indices are in range, and it lets np.take write into `out` unbuffered
            total[start:start + block] += np.take(member, picks, out=gathered[:block], mode="clip").sum(axis=1)


# ----- multiple comparisons ---------------------------------------------------------------------
def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (statsmodels); nan inputs stay nan and are not counted."""
    from statsmodels.stats.multitest import multipletests

    p = as_vector(pvalues, "pvalues")
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


# ----- many methods over blocks ------------------------------------------------------------------
def check_blocks(matrix: pd.DataFrame) -> pd.DataFrame:
    """A blocks x treatments frame with no missing cells (rows: blocks, columns: methods)."""
    if not isinstance(matrix, pd.DataFrame) or matrix.ndim != 2:
        raise ValueError("expected a blocks x treatments DataFrame")
    if matrix.isna().any().any():
        raise ValueError("blocks x treatments frame has missing cells; keep complete blocks only")
    return matrix.astype(float)


def mean_ranks(matrix: pd.DataFrame) -> pd.Series:
    """Average rank of each column, rank 1 = best (highest score) within a block; ties averaged."""
    m = check_blocks(matrix)
    ranks = st.rankdata(-m.to_numpy(), axis=1)
    return pd.Series(ranks.mean(axis=0), index=m.columns)


def friedman(matrix: pd.DataFrame) -> dict:
    m = check_blocks(matrix)
    if m.shape[1] < 3 or m.shape[0] < 2:
        return {"n_blocks": m.shape[0], "k": m.shape[1], "chi2": NAN, "p": NAN}
    res = st.friedmanchisquare(*[m[c].to_numpy() for c in m.columns])
    return {"n_blocks": m.shape[0], "k": m.shape[1], "chi2": float(res.statistic), "p": float(res.pvalue)}


def nemenyi(matrix: pd.DataFrame) -> pd.DataFrame:
    """Nemenyi post-hoc p-values after Friedman, columns x columns: scikit-posthocs'
    posthoc_nemenyi_friedman, computed the same way (Demšar 2006: |mean rank difference| /
    sqrt(k(k+1)/(6N)), times sqrt 2, against scipy's studentized range with infinite df) because
    importing scikit-posthocs loads seaborn and matplotlib, which the table-computing process
    otherwise never needs (tests check equality with scikit-posthocs to 1e-12)."""
    m = check_blocks(matrix)
    n, k = m.shape
    ranks = mean_ranks(m).to_numpy()
    i, j = np.triu_indices(k, 1)
    q = np.abs(ranks[i] - ranks[j]) / math.sqrt(k * (k + 1.0) / (6.0 * n))
    p = np.ones((k, k))
    p[i, j] = p[j, i] = st.studentized_range.sf(q * math.sqrt(2.0), k, np.inf)
    return pd.DataFrame(p, index=m.columns, columns=m.columns)


def critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks (Demšar 2006): q_alpha * sqrt(k(k+1)/(6N))."""
    if k < 2 or n_blocks < 1:
        return NAN
    return float(_nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n_blocks)))


@functools.lru_cache(maxsize=64)
def _nemenyi_q(k: int, alpha: float) -> float:
    """q_alpha of the studentized range / sqrt 2 (scipy's ppf integrates numerically: ~25 ms a call,
    and strategies usually have the same number of variants)."""
    return st.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)


# ----- correlation and power ----------------------------------------------------------------------
def correlation(x, y, confidence: float = 0.95) -> dict:
    """Pearson r with its Fisher-z confidence interval (scipy), and Spearman's rho."""
    x, y = as_pairs(x, y)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    out = {"n": x.size, "pearson_r": NAN, "ci_low": NAN, "ci_high": NAN, "p": NAN,
           "spearman_rho": NAN, "spearman_p": NAN}
    if x.size < 4 or constant(x) or constant(y):
        return out
    res = st.pearsonr(x, y)
    ci = res.confidence_interval(confidence)
    rho = st.spearmanr(x, y)
    return {**out, "pearson_r": float(res.statistic), "ci_low": float(ci.low), "ci_high": float(ci.high),
            "p": float(res.pvalue), "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)}


@functools.lru_cache(maxsize=256)
def min_detectable_dz(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest standardised paired effect (d_z) a two-sided paired t-test detects with `power`.

    The power function is statsmodels'; the root is found with scipy's brentq in a bracket that
    doubles until it holds the root (statsmodels' own solve_power needs ~60 evaluations a call).
    """
    from scipy.optimize import brentq
    from statsmodels.stats.power import TTestPower

    if n < 3:
        return NAN
    analysis = TTestPower()
    gap = lambda d: float(analysis.power(effect_size=d, nobs=n, alpha=alpha)) - power  # noqa: E731
    hi = 4.0 / math.sqrt(n)  # noncentrality 4: power ~0.98, above the usual targets
    while 0 < hi < 64 and gap(hi) < 0:
        hi *= 2
    try:
        if gap(hi) > 0:
            return float(brentq(gap, 1e-9, hi, xtol=1e-12))
    except ValueError:  # the noncentral t gives nan far in its tail
        pass
    dz = analysis.solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)  # statsmodels' own solver
    return float(np.ravel(dz)[0])  # a 1-element array when statsmodels falls back to fsolve


# ----- Pareto ----------------------------------------------------------------------------------------
def pareto_mask(cost, score) -> np.ndarray:
    """True where no other point has cost <= and score >= with one strictly better."""
    c, s = as_pairs(cost, score)
    better_or_equal = (c[None, :] <= c[:, None]) & (s[None, :] >= s[:, None])
    strictly = (c[None, :] < c[:, None]) | (s[None, :] > s[:, None])
    dominated = (better_or_equal & strictly).any(axis=1)
    return ~dominated & ~np.isnan(c) & ~np.isnan(s)
