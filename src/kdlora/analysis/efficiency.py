"""Efficiency tables: summary by variant x strategy, correlations with performance, gains of PEFT
over FFT, performance per parameter, and Pareto frontiers.

Units stay absolute in the computation; the `_millions` / `_mb` columns exist only so the report
can show readable numbers that are still in the CSV. Memory is compared only within one
memory_kind: an epoch-end allocation (legacy) is not a peak and never averaged with one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlora.analysis import stats
from kdlora.analysis.methods import ADAPTER_STRATEGIES, REFERENCE, TAUGHT_STRATEGIES
from kdlora.analysis.model import Settings
from kdlora.analysis.tidy import EFFICIENCY as EFFICIENCY_COLUMNS
from kdlora.analysis.tidy import STRATEGY_LABEL, method_label
from kdlora.analysis.tables import BLOCK, method_order

# (column in the tidy table, label, unit) of every efficiency measure the report may show.
MEASURES = {
    "train_time_s": ("Train time", "s"),
    "trainable_params": ("Trainable params", "count"),
    "peak_memory_bytes": ("Memory", "bytes"),
    "train_samples_per_s": ("Train throughput (samples)", "samples/s"),
    "train_tokens_per_s": ("Train throughput (tokens)", "tokens/s"),
    "flops_measured": ("Training FLOPs (measured)", "FLOPs"),
    "flops_analytic": ("Training FLOPs (analytic)", "FLOPs"),
    "hf_total_flos": ("HF total_flos (6·N_all·tokens)", "FLOPs"),
    "energy_j": ("Energy", "J"),
    "eval_samples_per_s": ("Inference throughput", "samples/s"),
    "eval_latency_ms_b32": ("Inference latency, batch 32", "ms"),
}
# For gains: baseline / group for costs, group / baseline for rates.
HIGHER_IS_BETTER = {"train_samples_per_s", "train_tokens_per_s", "eval_samples_per_s"}


def memory_kind_of(values: pd.Series) -> str | None:
    kinds = set(values.dropna())
    return None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def present(df: pd.DataFrame) -> list[str]:
    """Efficiency measures with at least one value in the data."""
    return [c for c in MEASURES if df[c].notna().any()]


def summary_by_variant(df: pd.DataFrame) -> pd.DataFrame:
    """efficiency_summary_by_variant.csv: one row per method (FFT included)."""
    rows, measures = [], present(df)
    keep = ["method", "strategy", "variant", "primary", *(["score_norm"] if "score_norm" in df else []),
            *measures, "memory_kind"]
    for method, part in df[keep].groupby("method"):  # groups copy only the columns used
        first = part.iloc[0]
        row = {"method": method, "strategy": first["strategy"], "variant": first["variant"],
               "label": method_label(method), "runs": len(part),
               "performance_mean": part["primary"].mean(), "performance_std": part["primary"].std(),
               "score_norm_mean": part["score_norm"].mean() if "score_norm" in part else np.nan}
        for col in measures:
            row[f"{col}_mean"] = part[col].mean()
            row[f"{col}_median"] = part[col].median()
        row.update(_readable(row, part))
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.set_index("method").loc[method_order(out["method"])].reset_index()


def _readable(row: dict, part: pd.DataFrame) -> dict:
    kind = memory_kind_of(part["memory_kind"])
    memory = row.get("peak_memory_bytes_mean", np.nan)
    return {"trainable_params_millions": row.get("trainable_params_mean", np.nan) / 1e6,
            "memory_mb": memory / 1e6 if kind not in (None, "mixed") else np.nan,
            "memory_kind": kind}


def correlations(df: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Pearson r (with CI) and Spearman rho of each efficiency measure with the primary metric.

    `pooled`: over all runs, as the reference did (task differences dominate it).
    `within task`: both variables centred on their task mean first, so the task's size and
    metric do not masquerade as an efficiency effect.
    """
    rows = []
    usable = df if memory_kind_of(df["memory_kind"]) != "mixed" else df.assign(peak_memory_bytes=np.nan)
    columns = present(usable)
    scopes = ("pooled", "within task") if usable["task"].nunique() > 1 else ("pooled",)
    # every column's task means in one groupby (each column's mean is computed on its own)
    task_mean = usable.groupby("task")[[*columns, "primary"]].transform("mean") if len(scopes) > 1 else None
    for col in columns:
        for scope in scopes:
            x, y = usable[col], usable["primary"]
            if scope == "within task":
                x = x - task_mean[col]
                y = y - task_mean["primary"]
            res = stats.correlation(x.to_numpy(), y.to_numpy(), settings.confidence)
            rows.append({"measure": col, "label": MEASURES[col][0], "scope": scope, **res})
    return pd.DataFrame(rows)


def gains(df: pd.DataFrame) -> pd.DataFrame:
    """Efficiency of PEFT against FFT, and of KD-LoRA against LoRA-only: ratios baseline / group
    for costs and group / baseline for rates, of means and of medians (> 1 = the group is better)."""
    columns = present(df)
    used = [*BLOCK, "strategy", "memory_kind", *columns]
    runs = df[used]  # the groups below copy only these columns
    groups = {"FFT": runs[runs["strategy"] == REFERENCE], "PEFT (all)": runs[runs["strategy"] != REFERENCE],
              **{STRATEGY_LABEL[s]: runs[runs["strategy"] == s] for s in ADAPTER_STRATEGIES},
              WITH_TEACHER: with_teacher_share(df)[used]}
    pairs = [("FFT", "PEFT (all)"), ("FFT", "LoRA-only"), ("FFT", "KD-LoRA"), ("FFT", WITH_TEACHER),
             ("LoRA-only", "KD-LoRA"), ("LoRA-only", WITH_TEACHER)]
    blocks = {name: g.groupby(BLOCK)[columns].mean() for name, g in groups.items()}  # one groupby per group
    aligned = {(x, y): blocks[x].align(blocks[y], join="inner", axis=0) for x, y in pairs}  # one join per pair
    # each group's mean and median of each measure, once (a group is in several pairs); None: no values
    summary = {(name, col): (g[col].mean(), g[col].median()) if g[col].notna().any() else None
               for name, g in groups.items() for col in columns}
    kinds = {name: memory_kind_of(g["memory_kind"]) for name, g in groups.items()}
    rows = []
    for col in columns:
        for base, group in pairs:
            a, b = summary[(base, col)], summary[(group, col)]
            if a is not None and b is not None and _same_memory(col, kinds[base], kinds[group]):
                block_a, block_b = aligned[(base, group)]
                rows.append({**_gain(col, base, group, a, b),
                             **_paired_ratio(col, block_a[col].to_numpy(float), block_b[col].to_numpy(float))})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["measure", "label", "baseline", "group"])


WITH_TEACHER = "KD-LoRA + teacher share"
SHARED_COSTS = ("train_time_s", "energy_j")  # what a teacher spends once for all its students


def with_teacher_share(df: pd.DataFrame) -> pd.DataFrame:
    """KD-LoRA runs with their full cost (docs/record-schema.md): own train time plus the
    teacher's train time and every logit-cache build for it, divided by the number of students
    that used that teacher (energy likewise); other measures empty, so only these are compared.
    Runs whose teacher is not among the records are left out."""
    kd = df[df["strategy"].isin(TAUGHT_STRATEGIES) & df["teacher_run_id"].notna()]
    teachers = df[~df["strategy"].isin(TAUGHT_STRATEGIES)].set_index("run_id")
    kd = kd[kd["teacher_run_id"].isin(teachers.index)]
    students = kd.groupby("teacher_run_id")["run_id"].transform("size")
    builds = kd["teacher_cache_build_s"].fillna(0).groupby(kd["teacher_run_id"]).transform("sum")
    out = kd.copy()
    for col in EFFICIENCY_COLUMNS:
        if col not in SHARED_COSTS:
            out[col] = np.nan
    teacher = teachers.loc[kd["teacher_run_id"], list(SHARED_COSTS)].set_axis(kd.index)
    out["train_time_s"] = kd["train_time_s"] + (teacher["train_time_s"] + builds) / students
    out["energy_j"] = kd["energy_j"] + teacher["energy_j"] / students
    return out


def _paired_ratio(col: str, a: np.ndarray, b: np.ndarray) -> dict:
    """Median over (family, task, seed) blocks of the per-block ratio: unlike the pooled ratios it
    does not depend on which tasks each group happened to run (a block's runs are averaged).
    `a` and `b` are the two groups' block means, aligned on the blocks both ran."""
    both = ~(np.isnan(a) | np.isnan(b))
    a, b = a[both], b[both]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = b / a if col in HIGHER_IS_BETTER else a / b
    ratios = ratios[~np.isnan(ratios)]
    return {"paired_blocks": int(both.sum()), "ratio_paired_median": float(np.median(ratios)) if ratios.size else np.nan}


def _same_memory(col: str, kind_a: str | None, kind_b: str | None) -> bool:
    """Memory is compared only between groups with one and the same memory_kind."""
    if col != "peak_memory_bytes":
        return True
    kinds = {kind_a, kind_b}
    return len(kinds) == 1 and "mixed" not in kinds


def _gain(col: str, base: str, group: str, a: tuple[float, float], b: tuple[float, float]) -> dict:
    """One gains row from the baseline's and the group's (mean, median) of measure `col`."""
    up = col in HIGHER_IS_BETTER
    ratio = (lambda x, y: y / x) if up else (lambda x, y: x / y)
    row = {"measure": col, "label": MEASURES[col][0], "unit": MEASURES[col][1], "baseline": base, "group": group,
           "direction": "increase" if up else "reduction",
           "baseline_mean": a[0], "group_mean": b[0], "baseline_median": a[1], "group_median": b[1]}
    row["ratio_of_means"] = ratio(row["baseline_mean"], row["group_mean"])
    row["ratio_of_medians"] = ratio(row["baseline_median"], row["group_median"])
    scale = {"trainable_params": 1e6, "peak_memory_bytes": 1e6}.get(col, 1.0)
    for k in ("baseline_mean", "group_mean", "baseline_median", "group_median"):
        row[f"{k}_display"] = row[k] / scale  # millions of params, MB
    return row


def parameter_efficiency(summary: pd.DataFrame) -> pd.DataFrame:
    """parameter_efficiency.csv: performance per million trainable parameters, per method."""
    cols = ["method", "label", "strategy", "variant", "runs", "trainable_params_mean",
            "trainable_params_millions", "performance_mean", "score_norm_mean"]
    if "trainable_params_mean" not in summary:
        return pd.DataFrame(columns=cols + ["performance_per_million", "score_norm_per_million"])
    out = summary[cols].copy()
    out["performance_per_million"] = out["performance_mean"] / out["trainable_params_millions"]
    out["score_norm_per_million"] = out["score_norm_mean"] / out["trainable_params_millions"]
    return out.sort_values("performance_per_million", ascending=False).reset_index(drop=True)


def pareto(summary: pd.DataFrame, score: str) -> pd.DataFrame:
    """Methods on the frontier of `score` (higher better) against each cost (lower better)."""
    costs = {"trainable_params_mean": "trainable params", "peak_memory_bytes_mean": "memory",
             "train_time_s_mean": "train time"}
    rows = []
    for col, name in costs.items():
        if col not in summary or (col == "peak_memory_bytes_mean" and summary["memory_mb"].isna().all()):
            continue
        part = summary[["method", "label", col, score]].dropna()
        mask = stats.pareto_mask(part[col].to_numpy(), part[score].to_numpy())
        rows += [{"cost": name, "method": m, "label": lbl, "cost_value": c, "score": s, "on_frontier": bool(f)}
                 for m, lbl, c, s, f in zip(part["method"], part["label"], part[col], part[score], mask)]
    return pd.DataFrame(rows, columns=["cost", "method", "label", "cost_value", "score", "on_frontier"])
