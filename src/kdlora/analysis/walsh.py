"""Order statistics of the Walsh averages (d_i + d_j) / 2, i <= j, without sorting all of them.

The Hodges-Lehmann estimate and its CI are a few order statistics (the median and two ranks
about 2 standard deviations of the signed-rank statistic either side) of n(n+1)/2 values:
5.4 million for 3,281 pairs. Sorting them all, as the textbook does, is the slow way; this
module returns the same values, bit for bit:

- few values (or any non-finite d): all averages, np.partition at the ranks;
- else only the band of averages between two thresholds that bracket the ranks. With d sorted,
  the averages (d_i + d_j) / 2 of row i rise with j, so the averages in [lo, hi] are one run of
  columns per row; each run's ends come from np.searchsorted and are then checked against the
  averages themselves, computed exactly as above (rounding of 2t - d_i cannot shift a count).
  The thresholds come from the Walsh averages of an evenly spaced subsample of d, whose
  quantiles track the full set's; counts verify that the band holds every wanted rank, and a
  band that misses one is widened.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

FULL_MAX = 1 << 16  # up to this many averages (n ~ 360): compute them all
SUBSAMPLE = 256  # points of d whose Walsh averages give the band's thresholds
MARGIN = 4.0 / SUBSAMPLE  # the band's slack beyond the wanted ranks, as a share of all averages
MAX_STEPS = 64  # boundary corrections before giving up on the band (pathological ties)


def averages(d: np.ndarray) -> np.ndarray:
    """All (d_i + d_j) / 2, i <= j, row by row: d_i + d[i:] written into one buffer, which
    needs no n(n+1)/2 index arrays (np.triu_indices costs more than the sums)."""
    n = d.size
    out = np.empty(n * (n + 1) // 2)
    start = 0
    for i in range(n):
        np.add(d[i:], d[i], out=out[start:start + n - i])
        start += n - i
    out /= 2
    return out


def order_statistics(d: np.ndarray, ranks: Sequence[int]) -> np.ndarray:
    """The Walsh averages at 0-based `ranks` of their sorted order (nan sorting last, as np.sort)."""
    n = d.size
    m = n * (n + 1) // 2
    if m > FULL_MAX and np.isfinite(d).all():
        ds = np.sort(d)
        for margin in (MARGIN, 4 * MARGIN, 16 * MARGIN):
            found = _from_band(ds, ranks, margin)
            if found is not None:
                return found
    walsh = averages(d)
    walsh.partition(sorted(set(ranks)))
    return walsh[list(ranks)]


def _from_band(ds: np.ndarray, ranks: Sequence[int], margin: float) -> np.ndarray | None:
    """The ranks' values from the averages between two thresholds, or None if the band misses a
    rank or a row boundary does not settle."""
    n = ds.size
    m = n * (n + 1) // 2
    lo_t, hi_t = _thresholds(ds, min(ranks) / m - margin, max(ranks) / m + margin)
    first = _row_starts(ds, lo_t, strict=False)  # first column with average >= lo_t
    stop = _row_starts(ds, hi_t, strict=True)  # first column with average > hi_t
    if first is None or stop is None:
        return None
    rows = np.arange(n)
    below = int((first - rows).sum())  # averages < lo_t
    sizes = np.maximum(stop - first, 0)
    if below > min(ranks) or below + int(sizes.sum()) <= max(ranks):
        return None
    band = _band_values(ds, first, sizes)
    wanted = [r - below for r in ranks]
    band.partition(sorted(set(wanted)))
    return band[wanted]


def _thresholds(ds: np.ndarray, q_lo: float, q_hi: float) -> tuple[float, float]:
    """Walsh averages of an evenly spaced subsample at quantiles q_lo and q_hi (-inf / inf
    outside [0, 1])."""
    step = max(1, ds.size // SUBSAMPLE)
    sample = averages(ds[step // 2::step])
    last = sample.size - 1
    at = [int(q_lo * last) if q_lo > 0 else 0, min(last, int(np.ceil(q_hi * last))) if q_hi < 1 else last]
    sample.partition(at)  # two order statistics: no need to sort the sample
    lo = sample[at[0]] if q_lo > 0 else -np.inf
    hi = sample[at[1]] if q_hi < 1 else np.inf
    return float(lo), float(hi)


def _row_starts(ds: np.ndarray, t: float, strict: bool) -> np.ndarray | None:
    """Per row i, the first column j >= i whose average (ds[i] + ds[j]) / 2 is >= t (> t if
    `strict`), n where none is. searchsorted on 2t - ds[i] gives a start; each correction step
    then moves a row past one whole run of tied values toward the exact boundary."""
    n = ds.size
    rows = np.arange(n)
    side = "right" if strict else "left"
    with np.errstate(over="ignore", invalid="ignore"):
        j = np.clip(np.searchsorted(ds, 2 * t - ds, side=side), rows, n)
    for _ in range(MAX_STEPS):
        at = np.minimum(j, n - 1)
        before = np.maximum(j - 1, rows)
        here, prev = (ds + ds[at]) / 2, (ds + ds[before]) / 2
        hit_here, hit_prev = (here > t, prev > t) if strict else (here >= t, prev >= t)
        right = (j < n) & ~hit_here  # the average at j is still on the low side
        left = (j > rows) & hit_prev  # the one before j is already on the high side
        if not (right.any() or left.any()):
            return j
        j = np.where(right, np.searchsorted(ds, ds[at], side="right"), j)
        j = np.where(left, np.maximum(np.searchsorted(ds, ds[before], side="left"), rows), j)
    return None


def _band_values(ds: np.ndarray, first: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The averages of columns first[i] .. first[i] + sizes[i] - 1 of every row i."""
    total = int(sizes.sum())
    row = np.repeat(np.arange(ds.size), sizes)
    offset = np.cumsum(sizes) - sizes  # where each row's run starts in the band
    col = np.arange(total) - np.repeat(offset - first, sizes)
    return (ds[row] + ds[col]) / 2
