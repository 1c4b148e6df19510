"""The study's design, read from the runs: which settings each (strategy, variant) varies, and
the arms those settings define.

A setting is *varied* for a (strategy, variant) when two of its runs on the same family and task
differ in it (a setting that changes only with the family or task, such as the teacher model, is
set per cell, not varied). An *arm* is (strategy, variant, the values of its varied settings):
its id is the method followed by `key=value` for each varied setting, e.g.
`lora:lora r=16 lora_alpha=32`, so a study that varies nothing has one arm per method, named as
the method. Runs of different arms are never pooled; `--pool FIELD` takes a setting out of the
arms (its values are then pooled, and the report says so).
"""

from __future__ import annotations

import math

import pandas as pd

from kdlora.analysis.tidy import SETTINGS, method_label
from kdlora.analysis.tables import method_order, natural_key

# Settings that say how a run was read or where its data live, never a factor of the design.
NOT_FACTORS = ("metric_policy", "data_dir")
CELL = ["method", "family", "task"]


def factors(pool: tuple[str, ...] = ()) -> list[str]:
    return [c for c in SETTINGS if c not in NOT_FACTORS and c not in pool]


def varied_axes(df: pd.DataFrame, pool: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """method -> the settings its runs vary within one (family, task) cell (in SETTINGS order)."""
    cols = factors(pool)
    if df.empty:
        return {}
    n = df.groupby(CELL, sort=False)[cols].nunique(dropna=False)  # "not set" counts as a value
    varied = (n > 1).groupby(level="method", sort=False).any()
    return {m: [c for c in cols if row[c]] for m, row in varied.iterrows()}


def level_text(value) -> str:
    """A setting's value as it appears in an arm label: 16.0 -> '16', 5e-05 -> '5e-05'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


def add_arms(df: pd.DataFrame, pool: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The table with `base_method` (strategy:variant), `arm` and `method` = arm; and the axes.

    Every table grouped by `method` is then one row per arm."""
    axes = varied_axes(df, pool)
    out = df.assign(base_method=df["method"])
    arm = out["method"].astype(object).copy()
    for method, cols in axes.items():
        if not cols:
            continue
        rows = out["method"] == method
        suffix = pd.Series("", index=out.index[rows], dtype=object)
        for c in cols:
            suffix = suffix + " " + c + "=" + out.loc[rows, c].map(level_text)
        arm[rows] = (method if ":" in method else method + ":") + suffix  # "fft" -> "fft: lr=..."
    out["arm"] = arm
    out["method"] = arm
    return out, axes


def design_table(df: pd.DataFrame, axes: dict[str, list[str]]) -> pd.DataFrame:
    """design.csv: one row per arm with its varied settings' values, runs, families, tasks, seeds."""
    varied = [c for c in SETTINGS if any(c in cols for cols in axes.values())]
    g = df.groupby("arm", sort=False)
    out = g.agg(strategy=("strategy", "first"), variant=("variant", "first"), runs=("run_id", "size"),
                families=("family", "nunique"), tasks=("task", "nunique"), seeds=("seed", "nunique"))
    for c in varied:
        out[c] = g[c].first().where(g[c].nunique() == 1)
    out = out.reindex(method_order(out.index)).rename_axis("arm").reset_index()
    out["label"] = [method_label(a) for a in out["arm"]]
    return out[["arm", "strategy", "variant", *varied, "runs", "families", "tasks", "seeds", "label"]]


def distinct(values: pd.Series):
    """One of each value, to be labelled once instead of per run: numbers through pd.unique
    (equal numbers get equal labels); other values keyed by type as well, so True and 1 stay
    apart; unhashable ones (lists) as they are."""
    if values.dtype.kind in "biuf":
        return values.unique()
    try:
        return list({(type(v), v): v for v in values}.values())
    except TypeError:
        return values


def settings_table(df: pd.DataFrame, axes: dict[str, list[str]], pool: tuple[str, ...]) -> pd.DataFrame:
    """design_settings.csv: each setting that applies to some run: varied (by which methods),
    pooled, set per (family, task) cell, or fixed (its value); or "not recorded" when no run
    records it (legacy imports: `assumed_settings`; methods = the runs' methods, no values)."""
    rows = []
    present = [c for c in SETTINGS if df[c].notna().any()]
    per_cell_levels = df.groupby(CELL[1:], sort=False)[present].nunique().max()  # NaN (not applicable) is no level
    for c in present:
        values = df[c].dropna()
        methods = sorted(m for m, cols in axes.items() if c in cols)
        per_cell = per_cell_levels[c] == 1
        status = ("pooled" if c in pool else "varied" if methods else "not a factor" if c in NOT_FACTORS
                  else "fixed" if values.nunique() == 1 else "per family/task" if per_cell else "per method")
        shown = sorted({level_text(v) for v in distinct(values)}, key=natural_key)
        rows.append({"setting": c, "status": status, "methods": ", ".join(methods),
                     "values": ", ".join(shown[:12]) + (" ..." if len(shown) > 12 else "")})
    # settings no run records (legacy imports hold kdlora's defaults for them, assumed for re-running)
    assumed = {k for v in df.get("assumed_settings", pd.Series(dtype=object)).dropna() for k in str(v).split(",")}
    for c in SETTINGS:
        if c in assumed and c not in present:
            methods = sorted(df.loc[df["assumed_settings"].fillna("").str.split(",").map(lambda ks: c in ks), "method"].unique())
            rows.append({"setting": c, "status": "not recorded", "methods": ", ".join(methods), "values": ""})
    return pd.DataFrame(rows, columns=["setting", "status", "methods", "values"])

