"""Choosing a searched setting by protocol: pure functions on the tidy table (no torch).

Per group (by default one method on one family and task) the candidate *setting* with the best
mean score over seeds wins, never individual seeds: every seed of the chosen setting is kept, and
the reported metric of the chosen arm is what the analysis then compares. The score is the
selection-set primary metric (`selection_primary`); choosing on the reported split instead is
possible only when asked, and the report then says its numbers are optimistically biased.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

GROUP = ("strategy", "variant", "family", "task")
SELECTION_SCORE = "selection_primary"  # metrics_selection.primary of a run's record
REPORTED_SCORE = "primary"


def _key(value):
    """Setting values as hashable, comparable keys (NaN and None alike, lists as tuples)."""
    if isinstance(value, list):
        return tuple(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def candidate_scores(table: pd.DataFrame, settings: Sequence[str], score: str = SELECTION_SCORE,
                     by: Sequence[str] = GROUP) -> pd.DataFrame:
    """One row per (group, candidate setting): mean score over its seeds, seeds scored, seeds run."""
    cols = [*by, *settings]
    frame = table[[*cols, score]].copy()
    for c in cols:
        frame[c] = frame[c].map(_key).astype(object)
    frame[score] = pd.to_numeric(frame[score], errors="coerce")
    grouped = frame.groupby(cols, dropna=False, sort=True)[score]
    out = grouped.agg(score_mean="mean", n_scored="count", n_runs="size").reset_index()
    return out


def choose(table: pd.DataFrame, settings: Sequence[str], score: str = SELECTION_SCORE,
           by: Sequence[str] = GROUP) -> pd.DataFrame:
    """One row per group: the candidate with the best mean score (ties: the first in sorted
    order of the settings), with `score_mean`, `n_candidates` and, per setting, whether the chosen
    value sits on the edge of the values searched (`<setting>_edge`: "low", "high" or "")."""
    scores = candidate_scores(table, settings, score, by)
    rows = []
    for _, group in scores.groupby(list(by), dropna=False, sort=True):
        scored = group[group["score_mean"].notna()]
        if scored.empty:
            continue
        best = scored.loc[scored["score_mean"].idxmax()]
        row = {**{c: best[c] for c in (*by, *settings)}, "score_mean": float(best["score_mean"]),
               "n_seeds": int(best["n_scored"]), "n_candidates": len(group)}
        for s in settings:
            row[f"{s}_edge"] = edge(best[s], group[s])
        rows.append(row)
    columns = [*by, *settings, "score_mean", "n_seeds", "n_candidates", *(f"{s}_edge" for s in settings)]
    return pd.DataFrame(rows, columns=columns)


def edge(value, searched: Iterable) -> str:
    """"low" / "high" when a chosen numeric value is the smallest / largest of 3+ searched values."""
    values = sorted({v for v in searched if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if len(values) < 3 or not isinstance(value, (int, float)):
        return ""
    return "low" if value == values[0] else "high" if value == values[-1] else ""


def selected_mask(table: pd.DataFrame, chosen: pd.DataFrame, settings: Sequence[str],
                  by: Sequence[str] = GROUP) -> pd.Series:
    """True for every run of a chosen arm (all its seeds); groups without a choice are dropped."""
    cols = [*by, *settings]
    if chosen.empty:
        return pd.Series(False, index=table.index)
    wanted = {tuple(_key(v) for v in row) for row in chosen[cols].itertuples(index=False, name=None)}
    keys = table[cols].apply(lambda r: tuple(_key(v) for v in r), axis=1)
    return keys.isin(wanted) if len(table) else pd.Series(False, index=table.index)


def searched_settings(table: pd.DataFrame, candidates: Iterable[str], by: Sequence[str] = GROUP) -> list[str]:
    """The settings among `candidates` that take more than one value within some group."""
    out = []
    for c in candidates:
        if c not in table.columns:
            continue
        counts = table[[*by, c]].assign(**{c: table[c].map(_key).astype(object)}) \
            .groupby(list(by), dropna=False)[c].nunique(dropna=False)
        if len(counts) and int(np.max(counts)) > 1:
            out.append(c)
    return out
