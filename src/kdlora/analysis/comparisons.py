"""Method comparisons, both ways side by side.

Legacy (the reference's way): Welch t-tests on every run of A against every run of B, pooled over
tasks with different metrics, no correction. Kept so its numbers can be reproduced.

Sound: runs are matched on blocks (family, task, seed), or (task, strategy, variant, seed) for
family comparisons, so each difference compares like with like; paired t and Wilcoxon tests,
a task-stratified bootstrap CI of the mean difference, d_z, probability of improvement, and
Holm–Bonferroni within each family of comparisons. Friedman + Nemenyi rank all variants of a
strategy over complete blocks.
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterator, NamedTuple

import numpy as np
import pandas as pd

from kdlora.analysis import stats
from kdlora.analysis.table import STRATEGY_LABEL, method_label
from kdlora.analysis.tables import BLOCK, Settings, method_order, ordered

FAMILY_BLOCK = ["task", "strategy", "variant", "seed"]
TEST_FAMILIES = {"lora_vs_kd": "LoRA-only vs KD-LoRA (per variant)",
                 "vs_fft": "each variant vs FFT",
                 "families": "model families"}


class Comparison(NamedTuple):
    test_family: str
    label: str
    a: pd.Series  # a run subset's mask
    b: pd.Series
    block: list[str]


def variants_of(df: pd.DataFrame, strategy: str) -> list[str]:
    return ordered(df.loc[df["strategy"] == strategy, "variant"])


# ----- which comparisons -------------------------------------------------------------------------
def lora_vs_kd(df: pd.DataFrame) -> Iterator[Comparison]:
    for v in variants_of(df, "lora"):
        if v in variants_of(df, "kd-lora"):
            yield Comparison("lora_vs_kd", v, (df["method"] == f"lora:{v}"),
                             (df["method"] == f"kd-lora:{v}"), BLOCK)


def each_vs_fft(df: pd.DataFrame) -> Iterator[Comparison]:
    if not (df["strategy"] == "fft").any():
        return
    for m in method_order(df.loc[df["strategy"] != "fft", "method"]):
        yield Comparison("vs_fft", f"{method_label(m)} vs FFT", df["method"] == m, df["strategy"] == "fft", BLOCK)


def between_families(df: pd.DataFrame) -> Iterator[Comparison]:
    for f1, f2 in combinations(ordered(df["family"], ("bert", "roberta", "deberta")), 2):
        yield Comparison("families", f"{f1} vs {f2}", df["family"] == f1, df["family"] == f2, FAMILY_BLOCK)


def all_comparisons(df: pd.DataFrame) -> list[Comparison]:
    return [*lora_vs_kd(df), *each_vs_fft(df), *between_families(df)]


# ----- legacy: pooled Welch ------------------------------------------------------------------------
def legacy_tests(df: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The reference's three tables: LoRA-only vs KD-LoRA per variant, variant (both strategies
    pooled) vs FFT, and family vs family over all runs; unpaired Welch, uncorrected."""
    rows = [_welch_row(c.test_family, c.label, df.loc[c.a, "primary"], df.loc[c.b, "primary"])
            for c in lora_vs_kd(df)]
    fft = df.loc[df["strategy"] == "fft", "primary"]
    if len(fft):
        for v in ordered(df.loc[df["strategy"] != "fft", "variant"]):
            peft = df.loc[(df["strategy"] != "fft") & (df["variant"] == v), "primary"]
            rows.append(_welch_row("vs_fft", f"{v} vs FFT", peft, fft))
    rows += [_welch_row(c.test_family, c.label, df.loc[c.a, "primary"], df.loc[c.b, "primary"])
             for c in between_families(df)]
    out = pd.DataFrame(rows)
    if not out.empty:
        out["significant"] = out["p"] < settings.alpha
    return out


def _welch_row(test_family: str, label: str, a: pd.Series, b: pd.Series) -> dict:
    return {"test_family": test_family, "comparison": label, **stats.welch(a.to_numpy(), b.to_numpy())}


# ----- sound: paired -------------------------------------------------------------------------------
def matched(df: pd.DataFrame, c: Comparison, value: str = "primary") -> pd.DataFrame:
    """Blocks where both sides ran: columns a, b and task (runs sharing a block are averaged)."""
    a = df[c.a].groupby(c.block, dropna=False)[value].mean().rename("a")
    b = df[c.b].groupby(c.block, dropna=False)[value].mean().rename("b")
    both = pd.concat([a, b], axis=1, join="inner").dropna().reset_index()
    return both


def paired_tests(df: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """statistical_tests.csv: one row per comparison, paired statistics beside the legacy Welch."""
    rows = [_paired_row(df, c, settings) for c in all_comparisons(df)]
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    for test_family, idx in out.groupby("test_family").groups.items():
        out.loc[idx, "p_t_holm"] = stats.holm(out.loc[idx, "p_t"])
        out.loc[idx, "p_wilcoxon_holm"] = stats.holm(out.loc[idx, "p_wilcoxon"])
    out["significant"] = out["p_wilcoxon_holm"] < settings.alpha
    return out


def _paired_row(df: pd.DataFrame, c: Comparison, s: Settings) -> dict:
    pairs = matched(df, c)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    diff = a - b
    lo, hi = stats.bootstrap_mean_ci(diff, pairs["task"], s.n_boot, s.confidence, s.seed)
    norm = _normalised_diff(df, c, s)
    welch = stats.welch(df.loc[c.a, "primary"].to_numpy(), df.loc[c.b, "primary"].to_numpy())
    sd = float(np.std(diff, ddof=1)) if diff.size > 1 else np.nan
    return {
        "test_family": c.test_family, "comparison": c.label, **stats.paired_summary(a, b),
        "ci_low": lo, "ci_high": hi, **norm,
        "n_tasks": pairs["task"].nunique(),
        "min_wilcoxon_p": stats.min_wilcoxon_p(diff.size),
        "min_detectable_diff": stats.min_detectable_dz(diff.size, s.alpha, s.power) * sd,
        "welch_n_a": welch["n_a"], "welch_n_b": welch["n_b"], "welch_mean_a": welch["mean_a"],
        "welch_mean_b": welch["mean_b"], "welch_diff": welch["diff"], "welch_p": welch["p"],
    }


def _normalised_diff(df: pd.DataFrame, c: Comparison, s: Settings) -> dict:
    """Mean paired difference in FFT-normalised units, comparable across tasks (not for families:
    each family is normalised by its own FFT)."""
    nan = {"mean_diff_norm": np.nan, "ci_norm_low": np.nan, "ci_norm_high": np.nan}
    if c.test_family == "families" or "score_norm" not in df:
        return nan
    pairs = matched(df, c, "score_norm")
    if pairs.empty:
        return nan
    diff = (pairs["a"] - pairs["b"]).to_numpy()
    lo, hi = stats.bootstrap_mean_ci(diff, pairs["task"], s.n_boot, s.confidence, s.seed)
    return {"mean_diff_norm": float(diff.mean()), "ci_norm_low": lo, "ci_norm_high": hi}


def paired_by_task(df: pd.DataFrame) -> pd.DataFrame:
    """Mean paired difference per task for LoRA-only vs KD-LoRA, each in its task's own metric."""
    rows = []
    for c in lora_vs_kd(df):
        for task, part in matched(df, c).groupby("task", sort=False):
            diff = (part["a"] - part["b"]).to_numpy()
            rows.append({"variant": c.label, "task": task, "n_pairs": diff.size,
                         "mean_diff": float(diff.mean()), "min_wilcoxon_p": stats.min_wilcoxon_p(diff.size)})
    return pd.DataFrame(rows, columns=["variant", "task", "n_pairs", "mean_diff", "min_wilcoxon_p"])


# ----- many variants: Friedman, Nemenyi, critical difference ----------------------------------------
def variant_matrix(df: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """Blocks (family, task, seed) x variants of one strategy, complete blocks only."""
    part = df[df["strategy"] == strategy]
    m = part.pivot_table(index=BLOCK, columns="variant", values="primary", aggfunc="mean")
    return m.dropna()


def friedman_tables(df: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(friedman per strategy, mean ranks, Nemenyi p-values long) over complete blocks."""
    summary, ranks, posthoc = [], [], []
    for strategy in ("lora", "kd-lora"):
        m = variant_matrix(df, strategy)
        if m.shape[1] < 3 or m.shape[0] < 2:
            continue
        res = stats.friedman(m)
        cd = stats.critical_difference(m.shape[1], m.shape[0], settings.alpha)
        summary.append({"strategy": strategy, "label": STRATEGY_LABEL[strategy], **res, "critical_difference": cd})
        for variant, rank in stats.mean_ranks(m).items():
            ranks.append({"strategy": strategy, "variant": variant, "mean_rank": rank})
        p = stats.nemenyi(m)
        for a, b in combinations(m.columns, 2):
            posthoc.append({"strategy": strategy, "a": a, "b": b, "p_nemenyi": float(p.loc[a, b]),
                            "significant": bool(p.loc[a, b] < settings.alpha)})
    return (pd.DataFrame(summary), pd.DataFrame(ranks, columns=["strategy", "variant", "mean_rank"]),
            pd.DataFrame(posthoc, columns=["strategy", "a", "b", "p_nemenyi", "significant"]))
