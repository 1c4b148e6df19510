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
from kdlora.analysis.table import STRATEGY_LABEL, method_label
from kdlora.analysis.tables import Settings, method_order

# (column in the tidy table, label, unit) of every efficiency measure the report may show.
MEASURES = {
    "train_time_s": ("Train time", "s"),
    "trainable_params": ("Trainable params", "count"),
    "peak_memory_bytes": ("Memory", "bytes"),
    "train_samples_per_s": ("Train throughput", "samples/s"),
    "train_tokens_per_s": ("Train throughput", "tokens/s"),
    "flops_measured": ("Training FLOPs (measured)", "FLOPs"),
    "flops_analytic": ("Training FLOPs (analytic)", "FLOPs"),
    "hf_total_flos": ("HF total_flos (6·N_all·tokens)", "FLOPs"),
    "energy_j": ("Energy", "J"),
    "eval_samples_per_s": ("Inference throughput", "samples/s"),
    "eval_latency_ms_b32": ("Inference latency, batch 32", "ms"),
}
# For gains: FFT / PEFT for costs, PEFT / FFT for rates.
HIGHER_IS_BETTER = {"train_samples_per_s", "train_tokens_per_s", "eval_samples_per_s"}


def memory_kind_of(values: pd.Series) -> str | None:
    kinds = set(values.dropna())
    return None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def present(df: pd.DataFrame) -> list[str]:
    """Efficiency measures with at least one value in the data."""
    return [c for c in MEASURES if df[c].notna().any()]


def summary_by_variant(df: pd.DataFrame) -> pd.DataFrame:
    """efficiency_summary_by_variant.csv: one row per method (FFT included)."""
    rows = []
    for method, part in df.groupby("method"):
        first = part.iloc[0]
        row = {"method": method, "strategy": first["strategy"], "variant": first["variant"],
               "label": method_label(method), "runs": len(part),
               "performance_mean": part["primary"].mean(), "performance_std": part["primary"].std(),
               "score_norm_mean": part["score_norm"].mean() if "score_norm" in part else np.nan}
        for col in present(df):
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
    for col in present(usable):
        for scope in ("pooled", "within task"):
            x, y = usable[col], usable["primary"]
            if scope == "within task":
                x = x - usable.groupby("task")[col].transform("mean")
                y = y - usable.groupby("task")["primary"].transform("mean")
            res = stats.correlation(x.to_numpy(), y.to_numpy(), settings.confidence)
            rows.append({"measure": col, "label": MEASURES[col][0], "scope": scope, **res})
    return pd.DataFrame(rows)


def gains_vs_fft(df: pd.DataFrame) -> pd.DataFrame:
    """Ratios FFT / PEFT (costs) or PEFT / FFT (rates), of means and of medians."""
    fft = df[df["strategy"] == "fft"]
    if fft.empty:
        return pd.DataFrame()
    groups = {"PEFT (all)": df[df["strategy"] != "fft"],
              **{STRATEGY_LABEL[s]: df[df["strategy"] == s] for s in ("lora", "kd-lora")}}
    rows = []
    for col in present(df):
        for name, peft in groups.items():
            if peft[col].notna().any() and fft[col].notna().any() and _same_memory(col, fft, peft):
                rows.append(_gain(col, name, fft[col], peft[col]))
    return pd.DataFrame(rows)


def _same_memory(col: str, a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if col != "peak_memory_bytes":
        return True
    kinds = {memory_kind_of(a["memory_kind"]), memory_kind_of(b["memory_kind"])}
    return len(kinds) == 1 and "mixed" not in kinds


def _gain(col: str, name: str, fft: pd.Series, peft: pd.Series) -> dict:
    up = col in HIGHER_IS_BETTER
    ratio = (lambda f, p: p / f) if up else (lambda f, p: f / p)
    row = {"measure": col, "label": MEASURES[col][0], "unit": MEASURES[col][1], "peft_group": name,
           "direction": "increase" if up else "reduction",
           "fft_mean": fft.mean(), "peft_mean": peft.mean(), "fft_median": fft.median(),
           "peft_median": peft.median()}
    row["ratio_of_means"] = ratio(row["fft_mean"], row["peft_mean"])
    row["ratio_of_medians"] = ratio(row["fft_median"], row["peft_median"])
    scale = {"trainable_params": 1e6, "peak_memory_bytes": 1e6}.get(col, 1.0)
    for k in ("fft_mean", "peft_mean", "fft_median", "peft_median"):
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
