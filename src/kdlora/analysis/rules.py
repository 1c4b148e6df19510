"""Recommendations and limitations: stated rules applied to the computed tables.

Each rule is a small function of the analysis tables that returns zero or more findings
{rule, statement, text, ...values}. `statement` says the rule itself; `text` is the sentence the
report prints, filled only from table values. Nothing here is prose written in advance of the data.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from kdlora.analysis.fmt import num, pct, pval, ratio
from kdlora.analysis.methods import ADAPTER_STRATEGIES, REFERENCE
from kdlora.analysis.tidy import STRATEGY_LABEL, method_label

Tables = Mapping[str, pd.DataFrame]
Rule = Callable[[Tables], list[dict]]
IMBALANCE_RATIO = 1.25  # max/min runs per adapter method above which the design is called imbalanced


def finding(rule: str, statement: str, text: str, **values) -> dict:
    """One finding; every number `text` prints is also one of `values` (the CSV's columns)."""
    return {"rule": rule, "statement": statement, "text": text, **values}


def _detail(counts: pd.Series) -> str:
    """A breakdown as data ('a=3; b=4'), stored beside the sentence that prints it."""
    return "; ".join(f"{k}={int(v)}" for k, v in counts.items())


def _score_column(scores: pd.DataFrame) -> tuple[str, str]:
    """FFT-normalised score when every method has one, else the raw primary (one task, or no FFT)."""
    if scores["score_norm_mean"].notna().all():
        return "score_norm", "mean FFT-normalised score"
    return "performance", "mean primary metric"


# ----- recommendations -------------------------------------------------------------------------------
def best_per_strategy(t: Tables) -> list[dict]:
    scores = t["scores"]
    out = []
    for strategy in ADAPTER_STRATEGIES:
        part = scores[(scores["level"] == "method") & (scores["strategy"] == strategy)]
        if part.empty:
            continue
        col, what = _score_column(part)
        ranked = part.sort_values(f"{col}_mean", ascending=False)
        best = ranked.iloc[0]
        conf = num(t["settings"]["confidence_pct"].iloc[0], 0)
        text = (f"Best {STRATEGY_LABEL[strategy]} variant by {what}: {best['variant']} "
                f"({num(best[col + '_mean'])}, {conf} % CI {num(best[col + '_ci_low'])} to "
                f"{num(best[col + '_ci_high'])}, {int(best['runs'])} runs).")
        text += _separable(t, strategy, best["variant"], ranked)
        out.append(finding("best_per_strategy", f"highest {what} within the strategy; the CI is a "
                           "task-stratified bootstrap; Nemenyi decides whether the runner-up differs",
                           text, strategy=strategy, variant=best["variant"], value=best[col + "_mean"],
                           ci_low=best[col + "_ci_low"], ci_high=best[col + "_ci_high"]))
    return out


def _separable(t: Tables, strategy: str, best: str, ranked: pd.DataFrame) -> str:
    if len(ranked) < 2:
        return ""
    runner = ranked.iloc[1]["variant"]
    posthoc = t["nemenyi"]
    hit = posthoc[(posthoc["strategy"] == strategy) & (
        ((posthoc["a"] == best) & (posthoc["b"] == runner)) | ((posthoc["a"] == runner) & (posthoc["b"] == best)))]
    if hit.empty:
        return f" Runner-up: {runner}; no complete blocks to test the difference."
    p = float(hit["p_nemenyi"].iloc[0])
    if p < t["settings"]["alpha"].iloc[0]:
        return f" Against the runner-up {runner} it differs significantly (Nemenyi p = {pval(p)})."
    return (f" The runner-up {runner} is not separated from it (Nemenyi p = {pval(p)}), which does not show "
            "that the two perform alike.")


def best_per_parameter(t: Tables) -> list[dict]:
    pe = t["parameter_efficiency"]
    pe = pe[pe["strategy"] != REFERENCE].dropna(subset=["performance_per_million"])
    if pe.empty:
        return []
    best = pe.iloc[0]
    text = (f"Best performance per million trainable parameters: {best['label']} "
            f"({num(best['performance_per_million'], 3)} per million; {num(best['trainable_params_millions'], 3)} M "
            f"trainable parameters, mean primary {num(best['performance_mean'])}).")
    return [finding("best_per_parameter", "highest mean primary metric / mean trainable parameters "
                    "(millions) among adapter methods", text, method=best["method"],
                    value=best["performance_per_million"])]


def lowest_memory(t: Tables) -> list[dict]:
    eff = t["efficiency_summary_by_variant"]
    part = eff.dropna(subset=["memory_mb"])
    if part.empty:
        return []
    best = part.sort_values("memory_mb").iloc[0]
    caveat = (" This is memory allocated at epoch end, not a peak." if best["memory_kind"] == "epoch_end_allocated"
              else "")
    text = f"Lowest mean training memory: {best['label']} ({num(best['memory_mb'], 1)} MB, {best['memory_kind']}).{caveat}"
    return [finding("lowest_memory", "smallest mean memory among methods measured with one memory kind",
                    text, method=best["method"], value=best["memory_mb"])]


def kd_memory(t: Tables) -> list[dict]:
    gains = t["efficiency_gains"]
    if gains.empty:
        return []
    row = gains[(gains["measure"] == "peak_memory_bytes") & (gains["baseline"] == "LoRA-only")
                & (gains["group"] == "KD-LoRA")]
    if row.empty or not row["paired_blocks"].iloc[0]:
        return []
    r = row.iloc[0]
    kind = t["efficiency_summary_by_variant"]["memory_kind"].dropna().iloc[0]
    text = (f"KD-LoRA (student) needs {ratio(r['ratio_paired_median'])} less training memory than LoRA-only "
            f"(teacher-size model): median of per-block ratios over {int(r['paired_blocks'])} matched (family, "
            f"task, seed) blocks; memory kind {kind}.")
    return [finding("kd_memory", "median over matched blocks of LoRA-only memory / KD-LoRA memory", text,
                    value=r["ratio_paired_median"], blocks=r["paired_blocks"])]


def verdict_counts(part: pd.DataFrame, a_name: str, b_name: str) -> str:
    """'5 LoRA-only better (dora, lora, ...), 1 inconclusive (adalora)' from the verdict column."""
    names = {"a better": f"{a_name} better", "b better": f"{b_name} better"}
    verdicts = part["verdict"].astype(str)
    kind = verdicts.where(~verdicts.str.startswith("not testable"), "not testable")
    pieces = []
    for v in ("a better", "b better", "equivalent", "inconclusive", "not testable"):
        members = list(part.loc[kind == v, "comparison"])
        if members:
            listed = ", ".join(members[:6]) + (", ..." if len(members) > 6 else "")
            pieces.append(f"{len(members)} {names.get(v, v)} ({listed})")
    return "; ".join(pieces)


def kd_versus_lora(t: Tables) -> list[dict]:
    tests = t["statistical_tests"]
    part = tests[tests["test_family"] == "lora_vs_kd"] if not tests.empty else tests
    if part.empty:
        return []
    by = part["verdict"].value_counts()
    col = "mean_diff_norm" if part["mean_diff_norm"].notna().all() else "mean_diff"
    unit = "FFT-normalised units" if col == "mean_diff_norm" else "points of the primary metric"
    s = t["settings"].iloc[0]
    text = (f"LoRA-only vs KD-LoRA on like-for-like arms, paired on (family, task, seed): "
            f"{verdict_counts(part, 'LoRA-only', 'KD-LoRA')}; equivalence margin ±{num(s['equivalence_margin'], 3)} "
            f"of the primary metric. Mean differences range from {num(part[col].min())} to "
            f"{num(part[col].max())} {unit}.")
    if by.get("inconclusive", 0):
        text += " An inconclusive arm is not evidence that the two strategies perform alike: more seeds are needed."
    return [finding("kd_versus_lora", "verdict per arm pair: Holm-adjusted Wilcoxon and Hodges-Lehmann CI on one "
                    "side of zero for a direction, TOST for equivalence", text,
                    a_better=int(by.get("a better", 0)), b_better=int(by.get("b better", 0)),
                    equivalent=int(by.get("equivalent", 0)), inconclusive=int(by.get("inconclusive", 0)),
                    tests=len(part), low=part[col].min(), high=part[col].max())]


def student_of_teacher(t: Tables) -> list[dict]:
    pairs = t["teacher_student"]
    if pairs.empty:
        return []
    text = (f"KD-LoRA students reach a mean {num(pairs['pct_of_teacher'].mean(), 1)} % of their FFT "
            f"teacher's primary metric (range {num(pairs['pct_of_teacher'].min(), 1)} % to "
            f"{num(pairs['pct_of_teacher'].max(), 1)} %, {len(pairs)} student runs).")
    speedup = pairs["inference_speedup"].mean()
    if pairs["inference_speedup"].notna().any():
        text += f" Their inference throughput is {ratio(speedup)} the teacher's."
    return [finding("student_of_teacher", "mean of student primary / teacher primary over linked pairs",
                    text, value=pairs["pct_of_teacher"].mean(), low=pairs["pct_of_teacher"].min(),
                    high=pairs["pct_of_teacher"].max(), runs=len(pairs), speedup=speedup)]


RECOMMENDATIONS: list[Rule] = [best_per_strategy, best_per_parameter, lowest_memory, kd_memory, kd_versus_lora,
                               student_of_teacher]


# ----- limitations -------------------------------------------------------------------------------------
def imbalance(t: Tables) -> list[dict]:
    counts = t["counts"]
    methods = counts[(counts["dimension"] == "method") & (counts["level"] != REFERENCE)]
    if len(methods) < 2:
        return []
    lo, hi = methods.loc[methods["runs"].idxmin()], methods.loc[methods["runs"].idxmax()]
    spread = hi["runs"] / lo["runs"]
    if spread <= IMBALANCE_RATIO:
        return []
    text = (f"Imbalanced design: runs per adapter method range from {int(lo['runs'])} "
            f"({method_label(lo['level'])}) to {int(hi['runs'])} ({method_label(hi['level'])}), "
            f"a ratio of {num(spread, 2)} (threshold {num(IMBALANCE_RATIO, 2)}); pooled means compare "
            "different task mixes, which is why the paired tests match runs.")
    return [finding("imbalance", f"max/min runs per adapter method > {IMBALANCE_RATIO}", text,
                    value=spread, threshold=IMBALANCE_RATIO, low=lo["runs"], high=hi["runs"])]


def missing_cells(t: Tables) -> list[dict]:
    grid = t.get("completion_cells")
    if grid is not None and not grid.empty:
        done = grid.groupby(["method", "task"])["done"].sum()
        source, empty_fine = "expected by the grid", int((grid["done"] == 0).sum())
    else:  # no grid: a cell is missing if the method ran elsewhere and the task ran for others
        done = t["cells"].groupby(["method", "task"])["runs"].sum().unstack(fill_value=0).stack()
        source, empty_fine = "present for other methods", None
    missing = done[done == 0]
    if missing.empty:
        return []
    listed = ", ".join(f"{method_label(m)}/{task}" for m, task in missing.index[:12])
    more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
    text = f"{len(missing)} (method, task) cells {source} have no completed run: {listed}{more}."
    if empty_fine:
        text += f" Counting families, {empty_fine} (family, method, task) grid cells are empty."
    return [finding("missing_cells", "a (method, task) cell with zero completed runs", text, value=len(missing),
                    empty_family_cells=empty_fine)]


def single_seed(t: Tables) -> list[dict]:
    cells = t["cells"]
    single = cells[cells["seeds"] == 1]
    if single.empty:
        return []
    by = single.groupby("strategy").size()
    parts = ", ".join(f"{STRATEGY_LABEL.get(s, s)} {int(n)}" for s, n in by.items())
    text = (f"{len(single)} of {len(cells)} (family, method, task) cells have a single seed ({parts}); "
            "they carry no seed-to-seed variance and a per-cell test is impossible.")
    return [finding("single_seed", "a (family, method, task) cell with one distinct seed", text, value=len(single),
                    cells=len(cells), detail=_detail(by))]


def incomplete(t: Tables) -> list[dict]:
    comp = t.get("completion")
    if comp is None or comp.empty:
        return [finding("completion", "no grid given", "Completion is unknown: no --grid was given.")]
    row = comp[comp["scope"] == "overall"].iloc[0]
    if row["done"] >= row["expected"]:
        return []
    by = comp[comp["scope"] == "strategy"]
    parts = ", ".join(f"{STRATEGY_LABEL.get(r.level, r.level)} {int(r.done)}/{int(r.expected)} "
                      f"({pct(r.completion_pct)})" for r in by.itertuples())
    text = (f"The grid is {pct(row['completion_pct'])} complete ({int(row['done'])}/{int(row['expected'])}); "
            f"by strategy: {parts}.")
    return [finding("completion", "completed grid runs < expected grid runs", text, value=row["completion_pct"])]


def collapsed(t: Tables) -> list[dict]:
    runs = t["collapsed_runs"]
    if runs.empty:
        return []
    by = runs.groupby("task").size()
    parts = ", ".join(f"{task} {int(n)}" for task, n in by.items())
    text = (f"{len(runs)} runs scored exactly what a constant predictor scores (MCC or F1 of 0, or "
            f"accuracy equal to a class's share): {parts}. They are kept in every statistic and listed "
            "in collapsed_runs.csv.")
    return [finding("collapsed", "a metric equal to a constant predictor's score", text, value=len(runs),
                    detail=_detail(by))]


def memory_not_peak(t: Tables) -> list[dict]:
    eff = t["efficiency_summary_by_variant"]
    kinds = set(eff["memory_kind"].dropna())
    if "epoch_end_allocated" not in kinds and "mixed" not in kinds:
        return []
    text = ("Memory of legacy runs is torch memory_allocated read at epoch end, not a peak; it is shown "
            "only beside memory of the same kind and never compared with measured peaks.")
    return [finding("memory_not_peak", "any memory_kind = epoch_end_allocated", text)]


def mixed_metrics(t: Tables) -> list[dict]:
    per_task = t["per_task_results"]
    names = sorted(set(per_task["primary_name"].dropna()))
    if len(names) < 2:
        return []
    text = (f"Tasks use different primary metrics ({', '.join(names)}): pooled means mix them (the "
            "reference's way, kept only for comparison); cross-task aggregates here use FFT-normalised "
            "scores and paired differences within a task.")
    return [finding("mixed_metrics", "more than one primary metric across tasks", text, value=len(names))]


def low_power(t: Tables) -> list[dict]:
    cells = t["cells"]
    alpha = float(t["settings"]["alpha"].iloc[0])
    seeds = int(cells["seeds"].max()) if not cells.empty else 0
    floor = math.ldexp(1.0, 1 - seeds) if seeds else np.nan
    if not seeds or floor < alpha:
        return []
    text = (f"With at most {seeds} seeds per cell, a Wilcoxon test within one cell cannot reach p below "
            f"{pval(floor)} (2/2^n), above alpha = {num(alpha, 2)}: per-task significance needs pooling "
            "over families or more seeds.")
    return [finding("low_power", "2/2^(max seeds per cell) >= alpha", text, value=floor, seeds=seeds)]


def not_normalisable(t: Tables) -> list[dict]:
    scores = t["scores"]
    overall = scores[scores["level"] == "all"]
    if overall.empty or overall["n_norm"].iloc[0] >= overall["runs"].iloc[0]:
        return []
    lost = int(overall["runs"].iloc[0] - overall["n_norm"].iloc[0])
    text = (f"{lost} runs have no FFT-normalised score (no FFT run for their family and task, FFT at or "
            "below chance, or a task without a known chance level); normalised aggregates leave them out.")
    return [finding("not_normalisable", "runs whose score_norm is missing", text, value=lost)]


def skipped_inputs(t: Tables) -> list[dict]:
    problems = t["problems"]
    failed = t["failed_runs"]
    out = []
    if not problems.empty:
        out.append(finding("skipped_inputs", "unreadable, partial or duplicate input files",
                           f"{len(problems)} input files were skipped (listed in problems.csv).", value=len(problems)))
    if not failed.empty:
        by = failed.groupby("status").size()
        parts = ", ".join(f"{s} {int(n)}" for s, n in by.items())
        out.append(finding("failed_runs", "records whose status is not completed",
                           f"{len(failed)} runs did not complete ({parts}); they are excluded from every "
                           "statistic.", value=len(failed), detail=_detail(by)))
    comp = t.get("completion")
    if comp is not None and not comp.empty:
        outside = comp.loc[comp["scope"] == "overall", "outside_grid"].iloc[0]
        if outside > 0:
            out.append(finding("outside_grid", "completed runs whose key is not in the grid",
                               f"{int(outside)} completed runs are outside the grid and not counted in "
                               "its completion.", value=outside))
    return out


def imported_with_notes(t: Tables) -> list[dict]:
    runs = t["runs"]
    noted = runs[runs["import_notes"] > 0] if "import_notes" in runs else runs.iloc[0:0]
    if noted.empty:
        return []
    text = (f"{len(noted)} legacy runs were imported with a note (a setting missing from their args, taken "
            "from the folder name or not applying to the run, or settings kdlora would refuse for a new run, "
            "imported as recorded); `import_notes` in runs.csv counts them per run, the records hold the notes.")
    return [finding("imported_with_notes", "legacy records whose import needed a note", text, value=len(noted))]


def contended(t: Tables) -> list[dict]:
    runs = t["runs"]
    marked = runs[runs["contended"].eq(True)] if "contended" in runs else runs.iloc[0:0]
    if marked.empty:
        return []
    text = (f"{len(marked)} runs' efficiency figures (train time, throughput, latency) were measured while "
            "other work loaded the host (half a CPU or more busy beside the run, or a load average above the "
            "CPU count; `host_load` in their records); `contended` in runs.csv marks them, and their times "
            "are upper bounds of what an idle machine gives.")
    return [finding("contended", "efficiency measured under contention", text, value=len(marked))]


LIMITATIONS: list[Rule] = [incomplete, imbalance, missing_cells, single_seed, collapsed, memory_not_peak,
                           mixed_metrics, low_power, not_normalisable, skipped_inputs, imported_with_notes,
                           contended]


def apply(rules: list[Rule], tables: Tables) -> pd.DataFrame:
    rows = [f for rule in rules for f in rule(tables)]
    return pd.DataFrame(rows, columns=sorted({k for r in rows for k in r} | {"rule", "statement", "text"}))
