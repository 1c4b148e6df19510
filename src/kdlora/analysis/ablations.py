"""Ablations: for each setting a (strategy, variant) varies, its score and costs against the
setting's values, with a paired test along the axis. Settings that only ever vary together
(lora_alpha = 2r) are one axis, `r,lora_alpha`, with levels such as `16/32`.

Runs are matched on blocks that share every other factor: (family, task, seed) and the values of
the method's other varied settings, so a level's mean and CI come from the same blocks as every
other level's. Friedman tests ≥ 3 levels, the Wilcoxon signed-rank test 2; Holm-corrected over
all ablation tests. The score is the FFT-normalised score where every run has one, else the
primary metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlora.analysis import stats
from kdlora.analysis.design import level_text
from kdlora.analysis.efficiency import memory_kind_of
from kdlora.analysis.model import MIN_BLOCKS_TEST, Settings
from kdlora.analysis.tables import BLOCK, method_order, natural_key

COSTS = ("trainable_params", "peak_memory_bytes", "train_time_s")
COLUMNS = ["axis", "strategy", "variant", "method", "level", "blocks", "runs", "score", "score_mean",
           "score_ci_low", "score_ci_high", *[f"{c}_mean" for c in COSTS],
           "trainable_params_millions", "memory_mb", "memory_kind", "held", "levels",
           "test", "p", "p_holm", "significant"]


def ablations(df: pd.DataFrame, axes: dict[str, list[str]], settings: Settings) -> pd.DataFrame:
    """ablations.csv: one row per (axis, strategy, variant, level)."""
    parts = []
    for method, cols in axes.items():
        part = df[df["base_method"] == method]
        groups = axis_groups(part, cols)
        parts += [_axis_rows(part, g, [c for other in groups if other is not g for c in other], settings)
                  for g in groups]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    rank = {m: i for i, m in enumerate(method_order(out["method"]))}
    out = out.assign(_m=out["method"].map(rank)).sort_values(["axis", "_m"], kind="stable")
    out = out.drop(columns="_m").reset_index(drop=True)
    tests = out.drop_duplicates(["axis", "method"])
    adjusted = pd.Series(stats.holm(tests["p"].to_numpy(float)), index=tests.index)
    out["p_holm"] = out.set_index(["axis", "method"]).index.map(
        dict(zip(zip(tests["axis"], tests["method"]), adjusted)))
    out["significant"] = (out["p_holm"] < settings.alpha).where(out["p_holm"].notna())
    return out[COLUMNS]


def axis_groups(part: pd.DataFrame, cols: list[str]) -> list[list[str]]:
    """Varied settings that move together (each level of one always with the same level of the
    other, e.g. lora_alpha = 2r) form one axis: neither can be varied with the other held."""
    groups: list[list[str]] = []
    for c in cols:
        home = next((g for g in groups if _one_to_one(part, g[0], c)), None)
        if home is None:
            groups.append([c])
        else:
            home.append(c)
    return groups


def _one_to_one(part: pd.DataFrame, x: str, y: str) -> bool:
    pairs = part[[x, y]].astype(object).fillna("∅").drop_duplicates()
    return pairs[x].nunique() == len(pairs) == pairs[y].nunique()


def _axis_rows(part: pd.DataFrame, group: list[str], others: list[str], s: Settings) -> pd.DataFrame:
    score = "score_norm" if part["score_norm"].notna().all() else "primary"
    keys = BLOCK + others
    axis = ",".join(group)  # one field, or settings that only vary together
    level = part[group[0]].map(level_text)
    for c in group[1:]:
        level = level + "/" + part[c].map(level_text)
    frame = part.assign(_level=level, **{c: part[c].map(level_text) for c in others})
    levels = sorted(frame["_level"].unique(), key=lambda v: tuple(natural_key(x) for x in v.split("/")))
    matrix = frame.pivot_table(index=keys, columns="_level", values=score, aggfunc="mean")
    matrix = matrix.reindex(columns=levels).dropna()
    test, p = _test(matrix, s.alpha)
    kind = memory_kind_of(part["memory_kind"])
    costs = frame.groupby("_level")[list(COSTS)].mean().reindex(levels)
    if kind in (None, "mixed"):
        costs["peak_memory_bytes"] = np.nan
    runs = frame.groupby("_level").size().reindex(levels)
    tasks = matrix.index.get_level_values("task")
    columns = [matrix[level].to_numpy(float) if level in matrix else np.array([]) for level in levels]
    # every level has the same complete blocks, so one set of resamples serves all levels
    cis = (stats.bootstrap_mean_cis(columns, tasks, s.n_boot, s.confidence, s.seed) if len(matrix)
           else [(np.nan, np.nan)] * len(levels))
    rows = []
    for level, values, (lo, hi) in zip(levels, columns, cis):
        rows.append({"axis": axis, "strategy": part["strategy"].iloc[0], "variant": part["variant"].iloc[0],
                     "method": part["base_method"].iloc[0], "level": level, "blocks": len(matrix),
                     "runs": int(runs[level]), "score": score,
                     "score_mean": float(values.mean()) if values.size else np.nan,
                     "score_ci_low": lo, "score_ci_high": hi,
                     **{f"{c}_mean": costs.loc[level, c] for c in COSTS},
                     "trainable_params_millions": costs.loc[level, "trainable_params"] / 1e6,
                     "memory_mb": costs.loc[level, "peak_memory_bytes"] / 1e6, "memory_kind": kind,
                     "held": ", ".join(others), "levels": len(levels), "test": test, "p": p})
    return pd.DataFrame(rows)


def _test(matrix: pd.DataFrame, alpha: float) -> tuple[str, float]:
    """Friedman over ≥ 3 levels, Wilcoxon for 2, on complete blocks; 'not testable (n blocks)'
    with too few blocks (or an exact Wilcoxon that cannot reach alpha)."""
    n, k = matrix.shape
    if k < 2:
        return "one level", np.nan
    if k == 2:
        if stats.not_testable(n, alpha, MIN_BLOCKS_TEST):
            return f"not testable ({n} blocks)", np.nan
        return "wilcoxon", stats.wilcoxon(matrix.iloc[:, 1].to_numpy(), matrix.iloc[:, 0].to_numpy())[1]
    if n < MIN_BLOCKS_TEST:
        return f"not testable ({n} blocks)", np.nan
    return "friedman", stats.friedman(matrix)["p"]
