"""Choosing a searched setting by protocol: pure functions on the tidy table (no torch).

Per group (by default one method on one family and task) the candidate *setting* with the best
mean score over seeds wins, never individual seeds: every seed of the chosen setting is kept, and
the reported metric of the chosen arm is what the analysis then compares. The score is the
selection-set primary metric (`selection_primary`); choosing on the reported split instead is
possible only when asked, and the report then says its numbers are optimistically biased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from kdlora.errors import UserError

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
    """"low" / "high" when a chosen numeric value is the smallest / largest of the values searched
    (with two values, always: the optimum may lie beyond either)."""
    values = sorted({v for v in searched if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if len(values) < 2 or not isinstance(value, (int, float)):
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


# ----- the report's selection -----------------------------------------------------------------------
MODES = ("selection", "reported")
SCORES = {"selection": SELECTION_SCORE, "reported": REPORTED_SCORE}
BIAS_WARNING = ("**Warning: optimistically biased.** Settings were selected on the reported split "
                "(`--select reported`): the numbers below are the best of a search scored on the same examples, "
                "so they overstate what the chosen settings would score on new data.")


@dataclass
class Selected:
    runs: pd.DataFrame  # the chosen arms' runs (all seeds): what the analysis compares
    candidates: pd.DataFrame  # every other candidate's runs
    selection: pd.DataFrame  # one row per (strategy, variant, family, task): the chosen value per setting
    protocol: pd.DataFrame  # one row per method: searched settings and values, candidates, runs, steps


def select(runs: pd.DataFrame, mode: str, searched: dict[tuple[str, str | None], list[str]]) -> Selected:
    """Keep, per (method, family, task), the runs of the candidate setting with the best mean score
    over seeds. `searched` maps (strategy, variant) to the settings searched for it (methods not in
    it, or with none, keep all their runs)."""
    if mode not in MODES:
        raise UserError(f"--select must be one of {', '.join(MODES)} (got {mode!r})")
    score = SCORES[mode]
    settings = sorted({s for cols in searched.values() for s in cols})
    with_search = runs[[bool(searched.get((st, _key(v)))) for st, v in zip(runs["strategy"], runs["variant"])]]
    if mode == "selection" and with_search[score].isna().any():
        n = int(with_search[score].isna().sum())
        raise UserError(f"--select selection: {n} candidate run(s) have no selection-set metric (trained without a "
                        "selection split: selection_fraction 0); rerun them with selection_fraction > 0, or use "
                        "--select reported (the report then says its numbers are optimistically biased)")
    keep = pd.Series(True, index=runs.index)
    rows, protocol = [], []
    for (strategy, variant), cols in searched.items():
        same_variant = runs["variant"].isna() if variant is None else runs["variant"] == variant
        part = runs[(runs["strategy"] == strategy) & same_variant]
        if part.empty:
            continue
        chosen = choose(part, cols, score) if cols else pd.DataFrame()
        if cols:
            keep[part.index] = selected_mask(part, chosen, cols)
            rows.append(chosen)
        protocol.append(_protocol_row(strategy, variant, part, cols))
    selection = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[*GROUP, *settings])
    selection = selection.reindex(columns=[*GROUP, *settings, "score_mean", "n_seeds", "n_candidates",
                                           *(f"{s}_edge" for s in settings)])
    selection = selection.rename(columns={"score_mean": f"{score}_mean"})
    return Selected(runs[keep].copy(), runs[~keep].copy(), selection, pd.DataFrame(protocol))


def _protocol_row(strategy: str, variant, part: pd.DataFrame, cols: list[str]) -> dict:
    space = "; ".join(f"{c} " + ", ".join(_fmt(v) for v in sorted(part[c].dropna().unique())) for c in cols)
    cells = part.groupby(["family", "task", "seed"]).size()
    steps = pd.to_numeric(part.get("train_steps"), errors="coerce")
    return {"strategy": strategy, "variant": variant, "searched": space or "not searched",
            "candidates_per_cell": float(cells.mean()) if len(cells) else 0.0, "runs": len(part),
            "train_steps": float(steps.sum()) if steps is not None and steps.notna().any() else np.nan}


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def edge_warnings(selection: pd.DataFrame) -> list[str]:
    """One line per chosen value on the edge of its search range."""
    from kdlora.analysis.tidy import method_of as method_name

    out = []
    for c in (c for c in selection.columns if c.endswith("_edge")):
        setting = c.removesuffix("_edge")
        for r in selection[selection[c].isin(["low", "high"])].to_dict("records"):
            method = method_name(r["strategy"], None if pd.isna(r["variant"]) else r["variant"])
            out.append(f"{method} on {r['family']}/{r['task']}: {setting} = {_fmt(r[setting])} is the "
                       f"{'smallest' if r[c] == 'low' else 'largest'} value searched; the best may lie beyond it")
    return out


def searched_from_runs(runs: pd.DataFrame, pool: tuple[str, ...] = ()) -> dict[tuple[str, str | None], list[str]]:
    """Without a grid: every setting a method varies within a (family, task) cell is a candidate axis."""
    from kdlora.analysis.design import varied_axes

    pairs = runs[["method", "strategy", "variant"]].drop_duplicates("method")
    method_of = {m: (st, _key(v)) for m, st, v in pairs.itertuples(index=False, name=None)}
    return {method_of[m]: cols for m, cols in varied_axes(runs, pool).items() if m in method_of}


def searched_from_grid(path) -> dict[tuple[str, str | None], list[str]]:
    """The grid's search: settings per (strategy, variant) (a student distilled from every teacher
    candidate also searches its teacher's settings)."""
    from kdlora.grid import load_grid, search_space

    from kdlora.strategies import STRATEGIES

    grid = load_grid(path)
    out: dict[tuple[str, str | None], list[str]] = {}
    for strategy in grid.strategies:
        s = STRATEGIES.get(strategy)
        # a student distilled from every teacher candidate also searches its teacher's settings
        theirs = {field: mine for mine, field in s.teacher_fields.items()}
        teacher = ([theirs[k] for k in search_space(grid, s.teacher_strategy, None) if k in theirs]
                   if s.teacher_strategy and grid.teachers == "every" else [])
        for variant in (grid.variants if s.uses_adapters else [None]):
            out[(strategy, variant)] = list(search_space(grid, strategy, variant)) + teacher
        if s.teacher_strategy and s.teacher_strategy not in grid.strategies:
            out[(s.teacher_strategy, None)] = list(search_space(grid, s.teacher_strategy, None))
    return out
