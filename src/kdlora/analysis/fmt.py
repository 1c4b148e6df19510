"""Number formatting shared by the markdown report, LaTeX tables and rule sentences.

One place decides how a number looks, so the test that checks every number in report.md
against the CSVs knows how each was rounded.
"""

from __future__ import annotations

import math

import pandas as pd

NA = "n/a"


def missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT


def num(x, digits: int = 4) -> str:
    if missing(x):
        return NA
    return f"{float(x):.{digits}f}"


def signed(x, digits: int = 4) -> str:
    return NA if missing(x) else f"{float(x):+.{digits}f}"


def integer(x) -> str:
    return NA if missing(x) else f"{int(round(float(x))):d}"


def pct(x, digits: int = 2) -> str:
    return NA if missing(x) else f"{float(x):.{digits}f} %"


def pval(p) -> str:
    """4 decimals, or 3 significant digits in scientific notation below 0.0001."""
    if missing(p):
        return NA
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"


def ratio(x) -> str:
    return NA if missing(x) else f"{float(x):.1f}×"


def compact(x) -> str:
    """Large magnitudes (FLOPs, joules) in scientific notation, others with 4 significant digits."""
    if missing(x):
        return NA
    x = float(x)
    return f"{x:.3e}" if abs(x) >= 1e5 else f"{x:.4g}"


def ci(lo, hi, digits: int = 4) -> str:
    return NA if missing(lo) or missing(hi) else f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def mean_sd(mean, sd, digits: int = 1) -> str:
    if missing(mean):
        return NA
    return f"{mean:.{digits}f}" if missing(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def stars(p) -> str:
    """Significance marks for tables: *** p<0.001, ** p<0.01, * p<0.05."""
    if missing(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
