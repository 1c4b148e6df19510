"""Method comparisons, both ways side by side.

Legacy (the reference's way): Welch t-tests on every run of A against every run of B, pooled over
tasks with different metrics, no correction. Kept so its numbers can be reproduced.

Sound: runs are matched on blocks (family, task, seed), or (task, method, seed) for family
comparisons, so each difference compares like with like; paired t and Wilcoxon tests,
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
from kdlora.analysis.design import level_text
from kdlora.analysis.fmt import pval
from kdlora.analysis.methods import ADAPTER_STRATEGIES, PAIRED_WITH, REFERENCE, STRATEGY_FIELDS, strategy_label
from kdlora.analysis.model import MIN_BLOCKS_TEST, Settings
from kdlora.analysis.tables import BLOCK, method_order, ordered
from kdlora.analysis.tidy import STRATEGY_LABEL, method_label

TEST_FAMILIES = {"lora_vs_kd": "LoRA-only vs KD-LoRA (per variant)",
                 "vs_fft": "each variant vs FFT",
                 "families": "model families"}
# How runs are matched: (block columns, the column whose values are compared).
LAYOUTS = {"method": (BLOCK, "method"), "family": (["task", "method", "seed"], "family")}


class Comparison(NamedTuple):
    test_family: str
    label: str
    a: str  # a value of the layout's compared column (an arm or a family)
    b: str
    layout: str
    matched_on: str = ""  # the varied settings both arms share, as key=value


def variants_of(df: pd.DataFrame, strategy: str) -> list[str]:
    return ordered(df.loc[df["strategy"] == strategy, "variant"])


def arms_of(df: pd.DataFrame, strategy: str) -> list[str]:
    return method_order(df.loc[df["strategy"] == strategy, "method"])


def settings_part(arm: str) -> str:
    """'lora:lora r=16 lora_alpha=32' -> 'r=16 lora_alpha=32'."""
    return arm.partition(" ")[2]


# ----- which comparisons -------------------------------------------------------------------------
# Settings that mean different things for LoRA-only and KD-LoRA (the distillation, and which
# model is trained); every other setting must agree for two arms to be compared.
NOT_SHARED = (*STRATEGY_FIELDS, "teacher_model")


def like_for_like(df: pd.DataFrame, a: str, b: str, axes: dict[str, list[str]]) -> str | None:
    """The shared settings (key=value) if arms a and b agree on every setting either varies
    (distillation settings aside), else None."""
    base_a, base_b = a.partition(" ")[0].rstrip(":"), b.partition(" ")[0].rstrip(":")
    cols = [c for c in dict.fromkeys([*axes.get(base_a, []), *axes.get(base_b, [])]) if c not in NOT_SHARED]
    if not cols:
        return ""
    values = arm_values(df, [a, b], cols)
    if values.isna().any().any() or not (values.loc[a] == values.loc[b]).all():
        return None
    return " ".join(f"{c}={level_text(values.loc[a, c])}" for c in cols)


def arm_values(df: pd.DataFrame, arms: list[str], cols: list[str]) -> pd.DataFrame:
    """arms x settings: the value each arm holds constant (nan where its runs differ)."""
    part = df[df["method"].isin(arms)].astype({c: object for c in cols})
    g = part[["method", *cols]].fillna("∅").groupby("method")
    return g.first().where(g.nunique() == 1).reindex(arms)


def lora_vs_kd(df: pd.DataFrame, axes: dict[str, list[str]] | None = None) -> Iterator[Comparison]:
    """LoRA-only vs KD-LoRA (each strategy vs the one it is compared with), per variant, on arms
    with the same adapter settings."""
    axes = axes or {}
    for strategy, other in PAIRED_WITH:
        yield from _pairs(df, other, strategy, axes)


def _pairs(df: pd.DataFrame, a_strategy: str, b_strategy: str, axes: dict[str, list[str]]) -> Iterator[Comparison]:
    kd = arms_of(df, b_strategy)
    for a in arms_of(df, a_strategy):
        variant = a.partition(" ")[0].partition(":")[2]
        for b in (x for x in kd if x.partition(" ")[0] == f"{b_strategy}:{variant}"):
            shared = like_for_like(df, a, b, axes)
            if shared is not None:
                same = settings_part(a) == settings_part(b)
                label = f"{variant} {settings_part(a)}".strip() if same else f"{method_label(a)} vs {method_label(b)}"
                yield Comparison("lora_vs_kd", label, a, b, "method", shared)


def each_vs_fft(df: pd.DataFrame) -> Iterator[Comparison]:
    ffts = arms_of(df, REFERENCE)
    for f in ffts:
        against = strategy_label(REFERENCE) if len(ffts) == 1 else method_label(f)
        for m in method_order(df.loc[df["strategy"] != REFERENCE, "method"]):
            yield Comparison("vs_fft", f"{method_label(m)} vs {against}", m, f, "method")


def between_families(df: pd.DataFrame) -> Iterator[Comparison]:
    for f1, f2 in combinations(ordered(df["family"], ("bert", "roberta", "deberta")), 2):
        yield Comparison("families", f"{f1} vs {f2}", f1, f2, "family")


def all_comparisons(df: pd.DataFrame, axes: dict[str, list[str]] | None = None) -> list[Comparison]:
    return [*lora_vs_kd(df, axes), *each_vs_fft(df), *between_families(df)]


def pools(df: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """layout -> compared value -> the primary metric of every run with that value, in table
    order, unmatched: what the reference's Welch test used (one groupby, not a mask per side)."""
    primary = df["primary"].to_numpy()
    out = {}
    for layout, (_, column) in LAYOUTS.items():
        out[layout] = {k: primary[rows] for k, rows in df.groupby(column, sort=False).indices.items()}
    return out


def pooled(runs: dict[str, dict[str, np.ndarray]], c: Comparison, side: str) -> np.ndarray:
    """Every run of one side of c (from `pools`), empty when it has none."""
    return runs[c.layout].get(getattr(c, side), np.array([]))


# ----- legacy: pooled Welch ------------------------------------------------------------------------
def legacy_tests(df: pd.DataFrame, settings: Settings, axes: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The reference's three tables: LoRA-only vs KD-LoRA per variant, variant (both strategies
    pooled) vs FFT, and family vs family over all runs; unpaired Welch, uncorrected. Arms with
    different settings stay apart (a variant's arm is its variant and varied settings)."""
    runs = pools(df)
    rows = [_welch_row(c.test_family, c.label, pooled(runs, c, "a"), pooled(runs, c, "b")) for c in lora_vs_kd(df, axes)]
    peft = df[df["strategy"] != REFERENCE]
    variant_arm = pd.Series([m.partition(":")[2] for m in peft["method"]], index=peft.index, dtype=object)
    ffts = arms_of(df, REFERENCE)
    for f in ffts:
        fft = df.loc[df["method"] == f, "primary"].to_numpy()
        against = strategy_label(REFERENCE) if len(ffts) == 1 else method_label(f)
        for v in method_order(variant_arm):
            rows.append(_welch_row("vs_fft", f"{v} vs {against}", peft.loc[variant_arm == v, "primary"].to_numpy(), fft))
    rows += [_welch_row(c.test_family, c.label, pooled(runs, c, "a"), pooled(runs, c, "b"))
             for c in between_families(df)]
    out = pd.DataFrame(rows)
    if not out.empty:
        out["significant"] = (out["p"] < settings.alpha).where(out["p"].notna())
    return out


def _welch_row(test_family: str, label: str, a: np.ndarray, b: np.ndarray) -> dict:
    return {"test_family": test_family, "comparison": label, **stats.welch(a, b)}


# ----- sound: paired -------------------------------------------------------------------------------
class Wide(NamedTuple):
    """Blocks x compared values as plain arrays: values, column position of each compared value,
    and each block's task."""
    values: np.ndarray
    column: dict[str, int]
    task: np.ndarray


def wide(df: pd.DataFrame, layout: str, value: str = "primary") -> Wide:
    """Blocks x compared values (runs sharing a block are averaged); one groupby for all comparisons."""
    index, column = LAYOUTS[layout]
    table = df.groupby([*index, column])[value].mean().unstack(column)
    return Wide(table.to_numpy(dtype=float), {c: i for i, c in enumerate(table.columns)},
                table.index.get_level_values("task").to_numpy())


class Pairs(NamedTuple):
    """Matched blocks of one comparison: a's and b's values and each block's task."""
    a: np.ndarray
    b: np.ndarray
    task: np.ndarray


def matched(table: Wide, c: Comparison) -> Pairs:
    """Blocks where both sides have a value."""
    if c.a not in table.column or c.b not in table.column:
        return Pairs(np.array([]), np.array([]), np.array([], dtype=object))
    a, b = table.values[:, table.column[c.a]], table.values[:, table.column[c.b]]
    keep = ~(np.isnan(a) | np.isnan(b))
    return Pairs(a[keep], b[keep], table.task[keep])


def paired_tests(df: pd.DataFrame, settings: Settings, axes: dict[str, list[str]] | None = None,
                 verdicts_only: bool = False) -> pd.DataFrame:
    """statistical_tests.csv: one row per comparison, paired statistics beside the legacy Welch,
    the deciding test's effect with its CI, TOST equivalence p-values and the verdict
    (`verdicts_only`: what a verdict needs, without bootstrap CIs, power and Welch)."""
    values = ("primary",) if verdicts_only else ("primary", "score_norm")
    tables = {(layout, value): wide(df, layout, value) for layout in LAYOUTS for value in values if value in df}
    tables["pooled"] = {} if verdicts_only else pools(df)
    row = _verdict_row if verdicts_only else _paired_row
    rows = [row(df, c, tables, settings) for c in all_comparisons(df, axes)]
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    for test_family, idx in out.groupby("test_family").groups.items():
        out.loc[idx, "p_t_holm"] = stats.holm(out.loc[idx, "p_t"])
        out.loc[idx, "p_wilcoxon_holm"] = stats.holm(out.loc[idx, "p_wilcoxon"])
    out["significant"] = (out["p_wilcoxon_holm"] < settings.alpha).where(out["p_wilcoxon_holm"].notna())
    return add_verdicts(out, settings.alpha)


DECIDING_TEST = "wilcoxon"  # its Holm-adjusted p and the Hodges-Lehmann CI decide a verdict
UNTESTED = ("t", "p_t", "w", "p_wilcoxon", "ci_low", "ci_high", "effect_ci_low", "effect_ci_high", "p_tost",
            "p_tost_norm", "ci_norm_low", "ci_norm_high")


def add_verdicts(out: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """verdict per row (stats.verdict; 'not testable (n blocks)' where the data cannot test) and
    a note where the paired t-test and the Wilcoxon test disagree or the difference is inside
    the equivalence margin."""
    out = out.copy()
    verdicts = [stats.verdict(p, lo, hi, q, alpha) for p, lo, hi, q in
                zip(out["p_wilcoxon_holm"], out["effect_ci_low"], out["effect_ci_high"], out["p_tost"])]
    out["verdict"] = np.where(out["testable"], verdicts,
                              [f"not testable ({int(n)} blocks)" for n in out["n_pairs"]])
    t_sig, w_sig = out["p_t_holm"] < alpha, out["p_wilcoxon_holm"] < alpha
    disagree = out["testable"] & (t_sig != w_sig)
    inside = out["verdict"].isin(["a better", "b better"]) & (out["p_tost"] < alpha)
    notes = [("; ".join(([f"paired t and Wilcoxon disagree (Holm p {pval(pt)} vs {pval(pw)})"] if d else [])
                        + ([f"yet TOST puts the mean difference inside the equivalence margin (p {pval(q)})"]
                           if i else [])))
             for d, i, pt, pw, q in zip(disagree, inside, out["p_t_holm"], out["p_wilcoxon_holm"], out["p_tost"])]
    out["note"] = notes
    return out


def _paired_row(df: pd.DataFrame, c: Comparison, tables: dict, s: Settings) -> dict:
    pairs = matched(tables[(c.layout, "primary")], c)
    a, b = pairs.a, pairs.b
    diff = a - b
    norm = _normalised_pairs(c, tables)
    (lo, hi), norm_ci = _bootstrap_cis(diff, pairs.task, norm, s)
    effect, e_lo, e_hi = stats.hodges_lehmann(diff, s.confidence)
    welch = stats.welch(pooled(tables["pooled"], c, "a"), pooled(tables["pooled"], c, "b"))
    sd = float(np.std(diff, ddof=1)) if diff.size > 1 else np.nan
    row = {
        "test_family": c.test_family, "comparison": c.label, "a": c.a, "b": c.b, "matched_on": c.matched_on,
        **stats.paired_summary(a, b),
        "ci_low": lo, "ci_high": hi, **_normalised_diff(norm, norm_ci, s),
        "deciding_test": DECIDING_TEST, "effect": effect, "effect_ci_low": e_lo, "effect_ci_high": e_hi,
        "p_tost": stats.tost_paired(a, b, s.equivalence_margin) if diff.size else np.nan,
        "n_tasks": pd.unique(pairs.task).size,
        "min_wilcoxon_p": stats.min_wilcoxon_p(diff.size),
        "min_detectable_diff": stats.min_detectable_dz(diff.size, s.alpha, s.power) * sd,
        "welch_n_a": welch["n_a"], "welch_n_b": welch["n_b"], "welch_mean_a": welch["mean_a"],
        "welch_mean_b": welch["mean_b"], "welch_diff": welch["diff"], "welch_p": welch["p"],
    }
    row["testable"] = not stats.not_testable(diff.size, s.alpha, MIN_BLOCKS_TEST)
    if not row["testable"]:
        row.update(dict.fromkeys(UNTESTED, np.nan))
    return row


def _verdict_row(df: pd.DataFrame, c: Comparison, tables: dict, s: Settings) -> dict:
    a, b, _ = matched(tables[(c.layout, "primary")], c)
    _, p_t = stats.paired_t(a, b)
    _, p_w = stats.wilcoxon(a, b)
    effect, e_lo, e_hi = stats.hodges_lehmann(a - b, s.confidence)
    row = {"test_family": c.test_family, "comparison": c.label, "a": c.a, "b": c.b, "n_pairs": a.size,
           "p_t": p_t, "p_wilcoxon": p_w, "effect": effect, "effect_ci_low": e_lo, "effect_ci_high": e_hi,
           "p_tost": stats.tost_paired(a, b, s.equivalence_margin) if a.size else np.nan,
           "testable": not stats.not_testable(a.size, s.alpha, MIN_BLOCKS_TEST)}
    if not row["testable"]:
        row.update({k: np.nan for k in UNTESTED if k in row})
    return row


def _normalised_pairs(c: Comparison, tables: dict) -> Pairs | None:
    """Matched FFT-normalised scores, comparable across tasks; None for families (each family is
    normalised by its own FFT) or without normalised scores."""
    table = tables.get((c.layout, "score_norm"))
    return None if c.layout == "family" or table is None else matched(table, c)


def _bootstrap_cis(diff: np.ndarray, task: np.ndarray, norm: Pairs | None, s: Settings):
    """Bootstrap CIs of the mean difference and of the normalised one (None without): one set
    of resamples for both when they have the same strata, as when every run has a score_norm."""
    if norm is None:
        return stats.bootstrap_mean_ci(diff, task, s.n_boot, s.confidence, s.seed), None
    norm_diff = norm.a - norm.b
    if np.array_equal(norm.task, task):
        ci, norm_ci = stats.bootstrap_mean_cis([diff, norm_diff], task, s.n_boot, s.confidence, s.seed)
        return ci, norm_ci
    return (stats.bootstrap_mean_ci(diff, task, s.n_boot, s.confidence, s.seed),
            stats.bootstrap_mean_ci(norm_diff, norm.task, s.n_boot, s.confidence, s.seed))


def _normalised_diff(norm: Pairs | None, ci: tuple[float, float] | None, s: Settings) -> dict:
    """Mean paired difference in FFT-normalised units with its CI and its TOST p against the
    normalised margin (nan without normalised pairs)."""
    if norm is None or norm.a.size == 0:
        return {"mean_diff_norm": np.nan, "ci_norm_low": np.nan, "ci_norm_high": np.nan, "p_tost_norm": np.nan}
    diff = norm.a - norm.b
    return {"mean_diff_norm": float(diff.mean()), "ci_norm_low": ci[0], "ci_norm_high": ci[1],
            "p_tost_norm": stats.tost_paired(norm.a, norm.b, s.equivalence_margin_norm)}


SENSITIVITY_COLUMNS = ["test_family", "comparison", "a", "b", "verdict", "n_pairs", "effect",
                       "verdict_without", "n_pairs_without", "effect_without", "changed"]


def sensitivity(df: pd.DataFrame, tests: pd.DataFrame, collapsed_ids, settings: Settings,
                axes: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """sensitivity.csv: every verdict recomputed without the runs that collapsed to a constant
    predictor (they stay in the main analysis), and whether it changes."""
    if tests.empty:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    drop = set(collapsed_ids)
    again = paired_tests(df[~df["run_id"].isin(drop)], settings, axes, verdicts_only=True) if drop else tests
    key = ["test_family", "comparison"]
    without = again[key + ["verdict", "n_pairs", "effect"]].rename(
        columns={"verdict": "verdict_without", "n_pairs": "n_pairs_without", "effect": "effect_without"})
    out = tests[key + ["a", "b", "verdict", "n_pairs", "effect"]].merge(without, on=key, how="left")
    out["verdict_without"] = out["verdict_without"].fillna("not testable (0 blocks)")
    out["n_pairs_without"] = out["n_pairs_without"].fillna(0).astype(int)
    out["changed"] = out["verdict"] != out["verdict_without"]
    return out[SENSITIVITY_COLUMNS]


def verdict_summary(tests: pd.DataFrame, sens: pd.DataFrame) -> pd.DataFrame:
    """verdict_summary.csv: comparisons per verdict and family of tests, with and without the
    collapsed runs, their totals, and how many verdicts the sensitivity check changes."""
    cols = ["analysis", "test_family", "verdict", "comparisons"]
    if tests.empty:
        return pd.DataFrame(columns=cols)
    parts = []
    for name, frame, column in (("main", tests, "verdict"), ("without collapsed runs", sens, "verdict_without")):
        kind = frame[column].astype(str).where(~frame[column].astype(str).str.startswith("not testable"), "not testable")
        counts = frame.groupby(["test_family", kind.rename("verdict")], sort=False).size().rename("comparisons")
        parts.append(counts.reset_index().assign(analysis=name))
        parts.append(pd.DataFrame([{"analysis": name, "test_family": "all", "verdict": "all", "comparisons": len(frame)}]))
    parts.append(pd.DataFrame([{"analysis": "without collapsed runs", "test_family": "all", "verdict": "changed",
                                "comparisons": int(sens["changed"].sum())}]))
    return pd.concat(parts, ignore_index=True)[cols]


def paired_by_task(df: pd.DataFrame, axes: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Mean paired difference per task for LoRA-only vs KD-LoRA, each in its task's own metric."""
    rows, table = [], wide(df, "method")
    for c in lora_vs_kd(df, axes):
        pairs = matched(table, c)
        for task in pd.unique(pairs.task):  # tasks in order of appearance
            here = pairs.task == task
            diff = pairs.a[here] - pairs.b[here]
            rows.append({"variant": c.label, "task": task, "n_pairs": diff.size,
                         "mean_diff": float(diff.mean()), "min_wilcoxon_p": stats.min_wilcoxon_p(diff.size)})
    return pd.DataFrame(rows, columns=["variant", "task", "n_pairs", "mean_diff", "min_wilcoxon_p"])


# ----- many variants: Friedman, Nemenyi, critical difference ----------------------------------------
def variant_matrix(df: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """Blocks (family, task, seed) x arms of one strategy (named by variant and settings),
    complete blocks only."""
    part = df[df["strategy"] == strategy]
    m = part.pivot_table(index=BLOCK, columns="method", values="primary", aggfunc="mean")
    m = m[method_order(m.columns)]
    return m.set_axis([c.partition(":")[2] for c in m.columns], axis=1).dropna()


def friedman_tables(df: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(friedman per strategy, mean ranks, Nemenyi p-values long) over complete blocks."""
    summary, ranks, posthoc = [], [], []
    for strategy in ADAPTER_STRATEGIES:
        m = variant_matrix(df, strategy)
        if m.shape[1] < 3 or m.shape[0] < MIN_BLOCKS_TEST:
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
