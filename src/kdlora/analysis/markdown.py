"""report.md, rendered only from the computed tables.

Each section is a function of the Analysis; every number it prints is a cell of one of the CSVs
written beside the report (formatted by kdlora.analysis.fmt), and every sentence is filled from
those cells. Sections whose data are absent say so instead of printing placeholders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from kdlora.analysis.design import level_text
from kdlora.analysis.fmt import ci, compact, integer, mean_sd, missing, num, pct, pval, ratio, signed
from kdlora.analysis.methods import TAUGHT_STRATEGIES
from kdlora.analysis.model import Analysis
from kdlora.analysis.protocol_section import bias_lines, protocol_section
from kdlora.analysis.rules import verdict_counts
from kdlora.analysis.tidy import STRATEGY_LABEL, method_label
from kdlora.analysis.tables import method_order, task_order

Cell = Callable[[pd.Series], str]


def md_table(frame: pd.DataFrame, columns: Sequence[tuple[str, Cell]]) -> str:
    """A GitHub markdown table: one (header, row -> text) pair per column."""
    if frame.empty:
        return "_(no data)_\n"
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(fn(row) for _, fn in columns) + " |")
    return "\n".join(lines) + "\n"


def col(name: str, fmt=num, *args) -> Cell:
    return lambda r: fmt(r[name], *args) if not missing(r[name]) else "n/a"


def text(name: str) -> Cell:
    return lambda r: "—" if missing(r[name]) else str(r[name])


def yes_no(name: str) -> Cell:
    return lambda r: "n/a" if missing(r[name]) else ("**yes**" if bool(r[name]) else "no")


def _count(a: Analysis, dimension: str, level: str) -> int:
    c = a["counts"]
    hit = c[(c["dimension"] == dimension) & (c["level"] == level)]
    return int(hit["runs"].iloc[0]) if len(hit) else 0


# ----- sections ---------------------------------------------------------------------------------------
def header(a: Analysis) -> str:
    c = a["counts"]
    by = lambda dim: ", ".join(f"{r.level} ({r.runs})" for r in c[c["dimension"] == dim].itertuples())
    strategies = ", ".join(f"{STRATEGY_LABEL.get(r.level, r.level)} ({r.runs})"
                           for r in c[c["dimension"] == "strategy"].itertuples())
    lines = ["# kdlora report", "", *bias_lines(a),
             f"- **Runs analysed**: {_count(a, 'total', 'all')} completed runs",
             f"- **Model families**: {by('family')}",
             f"- **Strategies**: {strategies}",
             f"- **Tasks**: {by('task')}",
             f"- **Seeds**: {by('seed')}",
             f"- **Primary metric policy**: `{a['settings']['metric_policy'].iloc[0]}`",
             f"- **Completion**: {_completion_phrase(a)}",
             "- **Sources**: " + ", ".join(f"`{s}`" for s in a.sources)]
    return "\n".join(lines) + "\n"


def _completion_phrase(a: Analysis) -> str:
    comp = a.tables.get("completion")
    if comp is None:
        return "unknown (no `--grid` given)"
    row = comp[comp["scope"] == "overall"].iloc[0]
    return f"{pct(row['completion_pct'])} ({int(row['done'])}/{int(row['expected'])} runs of `{a.grid}`)"


def design_section(a: Analysis) -> str:
    """What the study varied and held fixed, and the arms that makes (design.csv)."""
    d, st = a["design"], a["design_settings"]
    by = lambda status: st[st["status"] == status]  # noqa: E731
    varied, pooled = by("varied"), by("pooled")
    out = ["## Design"]
    if varied.empty:
        out.append("No setting takes more than one value within a (strategy, variant) on the same family and "
                   "task: each method is one arm.")
    else:
        out.append("Varied (each value is its own arm; runs of different arms are never pooled): " + "; ".join(
            f"`{r.setting}` ∈ {{{r.values}}} ({', '.join(method_label(m) for m in r.methods.split(', '))})"
            for r in varied.itertuples()) + ".")
    if not pooled.empty:
        out.append("Pooled on request (`--pool`; their values are treated as replicates): "
                   + "; ".join(f"`{r.setting}` ∈ {{{r.values}}}" for r in pooled.itertuples()) + ".")
    fixed = "; ".join(f"`{r.setting}` = {r.values}" for r in by("fixed").itertuples())
    if fixed:
        out.append(f"Held fixed: {fixed}.")
    per = pd.concat([by("per method"), by("per family/task")])
    if not per.empty:
        out.append("Set per method or per family/task (not a factor within a cell): "
                   + "; ".join(f"`{r.setting}` ({r.status}: {r.values})" for r in per.itertuples()) + ".")
    unrecorded = by("not recorded")
    if not unrecorded.empty:
        out.append("Not recorded in the source records (kdlora's defaults assumed for re-running): "
                   + ", ".join(f"`{r.setting}`" for r in unrecorded.itertuples()) + ".")
    extra = [c for c in d.columns if c not in ("arm", "label", "strategy", "variant", "runs", "families", "tasks", "seeds")]
    level = lambda c: lambda r: "—" if missing(r[c]) else level_text(r[c])  # noqa: E731
    cols = [("Arm", text("label"))] + [(c, level(c)) for c in extra] + [
        (h, col(c, integer)) for h, c in (("Runs", "runs"), ("Families", "families"), ("Tasks", "tasks"),
                                          ("Seeds", "seeds"))]
    return "\n\n".join(out) + "\n\n" + md_table(d, cols)


def executive_summary(a: Analysis) -> str:
    s = a["scores"]
    strat = s[s["level"] == "strategy"]
    means = ", ".join(f"{STRATEGY_LABEL[r.name]} {num(r.performance_mean)} ({int(r.runs)} runs)"
                      for r in strat.itertuples())
    norm = ", ".join(f"{STRATEGY_LABEL[r.name]} {num(r.score_norm_mean)} {ci(r.score_norm_ci_low, r.score_norm_ci_high)}"
                     for r in strat.itertuples() if not missing(r.score_norm_mean))
    items = [f"Pooled mean primary metric (the reference's measure; it mixes tasks and metrics): {means}."]
    if norm:
        items.append(f"Mean FFT-normalised score with task-stratified bootstrap CI: {norm}.")
    items += _test_headlines(a) + _gain_headlines(a)
    kd_tasks = a["strategy_task_counts"]
    kd = kd_tasks[kd_tasks["strategy"].isin(TAUGHT_STRATEGIES)]
    if not kd.empty:
        per = ", ".join(f"{t} {int(kd[t].iloc[0])}" for t in kd.columns[1:])
        items.append(f"KD-LoRA runs per task: {per}.")
    collapsed = len(a["collapsed_runs"])
    if collapsed:
        items.append(f"{collapsed} runs collapsed to a constant prediction (see Limitations). Recomputed without "
                     f"them: {_changed_phrase(a['sensitivity'], 'section 1.6')}")
    body = "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))
    return "## Executive summary\n\n" + body + "\n"


SIDES = {"lora_vs_kd": ("LoRA-only", "KD-LoRA"), "vs_fft": ("the adapter arm", "FFT")}


def _winner(r) -> str:
    return {"a better": f"{r.a} better", "b better": f"{r.b} better"}.get(r.verdict, r.verdict)


def _test_headlines(a: Analysis) -> list[str]:
    tests, legacy = a["statistical_tests"], a["legacy_tests"]
    s = a["settings"].iloc[0]
    out = []
    for fam, what in (("lora_vs_kd", "LoRA-only vs KD-LoRA per arm"), ("vs_fft", "Adapter arms vs FFT"),
                      ("families", "Model families")):
        part = tests[tests["test_family"] == fam] if not tests.empty else tests
        old = legacy[legacy["test_family"] == fam] if not legacy.empty else legacy
        if part.empty:
            continue
        counts = verdict_counts(part, *SIDES[fam]) if fam != "families" else "; ".join(
            f"{r.comparison}: {_winner(r)}" for r in part.itertuples())
        out.append(f"{what}, paired verdicts: {counts} "
                   f"(of {len(part)}; equivalence within ±{num(s['equivalence_margin'], 3)} of the primary "
                   f"metric); the reference's unpaired, uncorrected Welch tests call {int(old['significant'].sum())}"
                   f" of {len(old)} significant and cannot show equivalence.")
    return out


def _gain_headlines(a: Analysis) -> list[str]:
    gains = a["efficiency_gains"]
    if gains.empty:
        return []
    part = gains[(gains["baseline"] == "FFT") & (gains["group"] == "PEFT (all)")]
    pieces = [f"{r.label} {ratio(r.ratio_of_means)} {r.direction} (medians: {ratio(r.ratio_of_medians)})"
              for r in part.itertuples()]
    return ["PEFT vs FFT, ratio of means: " + "; ".join(pieces) + "."]


def lora_vs_kd(a: Analysis) -> str:
    legacy, tests = a["legacy_tests"], a["statistical_tests"]
    alpha = num(a["settings"]["alpha"].iloc[0], 2)
    out = ["## 1. Statistical comparisons", "",
           "Each comparison is shown the reference's way (unpaired Welch t-test over all runs, pooled over "
           "tasks, uncorrected) and the sound way (runs matched on family, task and seed; paired t and "
           "Wilcoxon signed-rank tests; Holm–Bonferroni within each family of comparisons; mean difference "
           "with a task-stratified bootstrap CI; d_z; probability of improvement). Differences are a − b in "
           "the primary metric of each pair's own task; the normalised difference uses the FFT-normalised score "
           "(score − chance) / (FFT − chance), FFT being the run of the same family, task and seed and chance "
           "the expected score of uniform guessing (accuracy 1/k, MCC and correlations 0), so that tasks with "
           "different metrics and ceilings can be averaged.", "", _verdict_rule(a), "",
           "### 1.1 LoRA-only vs KD-LoRA", "", "**Reference method (pooled Welch, uncorrected):**", ""]
    out.append(_welch_table(legacy, "lora_vs_kd", "Variant", "LoRA-only mean (n)", "KD-LoRA mean (n)", alpha))
    out += ["", "**Paired (LoRA-only − KD-LoRA):**", "", _paired_table(tests, "lora_vs_kd", "Variant")]
    by_task = a["paired_by_task"]
    if not by_task.empty:
        wide = by_task.pivot(index="variant", columns="task", values="mean_diff")
        n = by_task.pivot(index="variant", columns="task", values="n_pairs")
        wide = wide[task_order(wide.columns)].reset_index()
        cols = [("Variant", text("variant"))] + [
            (t, (lambda t: lambda r: f"{signed(r[t])} ({integer(n.loc[r['variant'], t])})"
                 if not missing(r[t]) else "—")(t)) for t in wide.columns[1:]]
        out += ["", "Mean paired difference per task, in the task's own metric (pairs):", "", md_table(wide, cols)]
    return "\n".join(out)


def _welch_table(legacy: pd.DataFrame, fam: str, first: str, a_head: str, b_head: str, alpha: str) -> str:
    part = legacy[legacy["test_family"] == fam] if not legacy.empty else legacy
    return md_table(part, [
        (first, text("comparison")),
        (a_head, lambda r: f"{num(r['mean_a'])} ({integer(r['n_a'])})"),
        (b_head, lambda r: f"{num(r['mean_b'])} ({integer(r['n_b'])})"),
        ("Difference", col("diff", signed)), ("p-value", col("p", pval)),
        (f"p < {alpha}?", yes_no("significant"))])


def _paired_table(tests: pd.DataFrame, fam: str, first: str) -> str:
    part = tests[tests["test_family"] == fam] if not tests.empty else tests
    columns = [(first, text("comparison")), ("Pairs", col("n_pairs", integer)),
               ("Mean diff [CI]", lambda r: f"{signed(r['mean_diff'])} {ci(r['ci_low'], r['ci_high'])}")]
    if not part.empty and part["mean_diff_norm"].notna().any():
        columns.append(("Normalised diff [CI]",
                        lambda r: f"{signed(r['mean_diff_norm'])} {ci(r['ci_norm_low'], r['ci_norm_high'])}"))
    columns += [("t-test p (Holm)", lambda r: f"{pval(r['p_t'])} ({pval(r['p_t_holm'])})"),
                ("Wilcoxon p (Holm)", lambda r: f"{pval(r['p_wilcoxon'])} ({pval(r['p_wilcoxon_holm'])})"),
                ("Effect (HL) [CI]", lambda r: f"{signed(r['effect'])} {ci(r['effect_ci_low'], r['effect_ci_high'])}"),
                ("TOST p", col("p_tost", pval))]
    if not part.empty and part["p_tost_norm"].notna().any():
        columns.append(("TOST p (normalised)", col("p_tost_norm", pval)))
    columns += [("d_z", col("d_z", signed, 2)), ("P(a > b)", col("prob_improvement", num, 2)),
                ("Verdict", lambda r: f"**{r['verdict']}**" if r["verdict"] in ("a better", "b better")
                 else str(r["verdict"]))]
    notes = part[part["note"].fillna("") != ""] if not part.empty else part
    extra = "".join(f"\n- {r.comparison}: {r.note}." for r in notes.itertuples())
    return md_table(part, columns) + (f"\nNotes:\n{extra}\n" if extra else "")


def _verdict_rule(a: Analysis) -> str:
    s = a["settings"].iloc[0]
    return (f"**Verdicts.** *a better* / *b better*: the Holm-adjusted Wilcoxon p is below alpha = "
            f"{num(s['alpha'], 2)} and the Hodges–Lehmann {num(s['confidence_pct'], 0)} % CI of the paired "
            f"difference (the effect that belongs to the Wilcoxon test) lies on one side of zero. *equivalent*: the "
            f"TOST p (two one-sided paired t-tests) is below alpha for the margin ±{num(s['equivalence_margin'], 3)} "
            f"in the primary metric (`--equivalence-margin`; in FFT-normalised units the margin is "
            f"±{num(s['equivalence_margin_norm'], 3)}, `TOST p (normalised)`). Otherwise *inconclusive*: the data "
            f"neither show a difference nor rule out one larger than the margin. Fewer than "
            f"{integer(s['min_blocks_test'])} matched blocks, or too few for an exact Wilcoxon to reach alpha, is "
            f"*not testable*; bootstrap CIs need at least {integer(s['min_blocks_bootstrap'])} blocks.")


def vs_fft_and_families(a: Analysis) -> str:
    legacy, tests = a["legacy_tests"], a["statistical_tests"]
    alpha = num(a["settings"]["alpha"].iloc[0], 2)
    return "\n".join([
        "### 1.2 Adapter variants vs FFT", "",
        "**Reference method** (both strategies pooled per variant; difference = variant − FFT):", "",
        _welch_table(legacy, "vs_fft", "Comparison", "Variant mean (n)", "FFT mean (n)", alpha),
        "**Paired** on (family, task, seed), per strategy:", "", _paired_table(tests, "vs_fft", "Comparison"),
        "### 1.3 Model families", "", "**Reference method** (all runs of each family):", "",
        _welch_table(legacy, "families", "Comparison", "First mean (n)", "Second mean (n)", alpha),
        "**Paired** on (task, strategy, variant, seed):", "", _paired_table(tests, "families", "Comparison"),
    ])


def ranking(a: Analysis) -> str:
    fr, ranks, nem = a["friedman"], a["friedman_ranks"], a["nemenyi"]
    out = ["### 1.4 Ranking the variants (Friedman, Nemenyi)", ""]
    if fr.empty:
        return "\n".join(out + ["Not enough complete blocks (every variant on the same family, task and seed).", ""])
    for r in fr.itertuples():
        rk = ranks[ranks["strategy"] == r.strategy].sort_values("mean_rank")
        order = ", ".join(f"{x.variant} {num(x.mean_rank, 2)}" for x in rk.itertuples())
        sig = nem[(nem["strategy"] == r.strategy) & nem["significant"]]
        pairs = ", ".join(f"{x.a}–{x.b} (p = {pval(x.p_nemenyi)})" for x in sig.itertuples()) or "none"
        out.append(f"- **{r.label}**: {int(r.n_blocks)} complete blocks, Friedman χ² = {num(r.chi2, 2)}, "
                   f"p = {pval(r.p)}; mean ranks (1 = best): {order}; critical difference "
                   f"{num(r.critical_difference, 2)}; pairs that differ (Nemenyi): {pairs}.")
    return "\n".join(out) + "\n"


def power_note(a: Analysis) -> str:
    tests = a["statistical_tests"]
    if tests.empty:
        return ""
    rows = md_table(tests, [("Comparison", text("comparison")), ("Pairs", col("n_pairs", integer)),
                            ("Smallest detectable mean diff", col("min_detectable_diff")),
                            ("Smallest possible Wilcoxon p", col("min_wilcoxon_p", pval))])
    s = a["settings"].iloc[0]
    return "\n".join([
        "### 1.5 Power", "",
        f"Smallest mean paired difference a two-sided paired t-test detects with power {num(s['power'], 2)} at "
        f"alpha = {num(s['alpha'], 2)} (d_z from statsmodels × the SD of the differences); with n pairs the "
        "exact Wilcoxon test cannot go below 2/2^n "
        f"(3 seeds: {pval(s['min_wilcoxon_p_3_seeds'])}).", "", rows])


def sensitivity_section(a: Analysis) -> str:
    sens, collapsed = a["sensitivity"], a["collapsed_runs"]
    head = ["### 1.6 Sensitivity: without collapsed runs", ""]
    if sens.empty:
        return ""
    if collapsed.empty:
        return "\n".join(head + ["No run collapsed to a constant predictor, so every verdict stands as computed.", ""])
    changed = sens[sens["changed"]]
    lines = head + [f"{len(collapsed)} runs scored exactly what a constant predictor scores (`collapsed_runs.csv`). "
                    "They stay in every statistic above; here each verdict is recomputed without them. "
                    f"{_changed_phrase(sens)}", ""]
    if not changed.empty:
        lines.append(md_table(changed, [
            ("Comparison", text("comparison")), ("Verdict (pairs)", lambda r: f"{r['verdict']} ({integer(r['n_pairs'])})"),
            ("Without collapsed runs (pairs)",
             lambda r: f"{r['verdict_without']} ({integer(r['n_pairs_without'])})"),
            ("Effect", col("effect", signed)), ("Effect without", col("effect_without", signed))]))
    return "\n".join(lines) + "\n"


def _changed_phrase(sens: pd.DataFrame, where: str = "below") -> str:
    n = int(sens["changed"].sum())
    if n == 0:
        return f"None of the {len(sens)} verdicts changes."
    listed = ", ".join(sens.loc[sens["changed"], "comparison"].head(6))
    return f"{n} of {len(sens)} verdicts change ({listed}; {where}); the others stand."


def ablation_section(a: Analysis) -> str:
    """One table per (varied setting, method): score and costs against the setting's values."""
    abl = a["ablations"]
    if abl.empty:
        return ""
    conf = num(a["settings"]["confidence_pct"].iloc[0], 0)
    out = ["## Ablations", "",
           "For each setting a method varies: the score (FFT-normalised where every run has one, else the primary "
           f"metric) with its {conf} % task-stratified bootstrap CI over the blocks that ran every level and share "
           "every other factor (family, task, seed and the method's other varied settings), and the mean costs of "
           "all runs at the level. Along the axis: Friedman across 3 or more levels, Wilcoxon signed-rank for 2, "
           "Holm-corrected over all ablation tests (`ablations.csv`; figure `ablations`).", ""]
    for (axis, method), part in abl.groupby(["axis", "method"], sort=False):
        r = part.iloc[0]
        held = f" and {r['held']}" if r["held"] else ""
        test = (f"{r['test']} p = {pval(r['p'])} (Holm {pval(r['p_holm'])})" if r["test"] in ("friedman", "wilcoxon")
                else str(r["test"]))
        out += [f"**`{axis}` — {method_label(method)}** ({integer(r['blocks'])} blocks matched on family, task, "
                f"seed{held}; {r['score']}): {test}.", ""]
        cols = [("Level", text("level")), ("Runs", col("runs", integer)),
                ("Score [CI]", lambda x: f"{num(x['score_mean'])} {ci(x['score_ci_low'], x['score_ci_high'])}"),
                ("Trainable params (M)", col("trainable_params_millions", num, 3))]
        if part["memory_mb"].notna().any():
            cols.append(("Memory (MB)", col("memory_mb", num, 1)))
        cols.append(("Train time (s)", col("train_time_s_mean", num, 1)))
        out.append(md_table(part, cols))
    return "\n".join(out)


def efficiency_section(a: Analysis) -> str:
    eff = a["efficiency_summary_by_variant"]
    cols = [("Method", text("label")), ("Runs", col("runs", integer)), ("Performance", col("performance_mean"))]
    if eff["score_norm_mean"].notna().any():
        cols.append(("Normalised", col("score_norm_mean")))
    optional = [("train_time_s_mean", "Train time (s)", 1), ("trainable_params_millions", "Trainable params (M)", 3),
                ("memory_mb", "Memory (MB)", 1), ("train_samples_per_s_mean", "Throughput (samples/s)", 1),
                ("eval_samples_per_s_mean", "Inference (samples/s)", 1),
                ("eval_latency_ms_b32_mean", "Latency b32 (ms)", 2)]
    cols += [(h, col(c, num, d)) for c, h, d in optional if c in eff and eff[c].notna().any()]
    cols += [(h, col(c, compact)) for c, h in (("flops_measured_mean", "FLOPs measured"),
                                               ("flops_analytic_mean", "FLOPs analytic"),
                                               ("energy_j_mean", "Energy (J)")) if c in eff and eff[c].notna().any()]
    kinds = ", ".join(sorted(set(eff["memory_kind"].dropna())))
    out = ["## 2. Efficiency vs performance", "", "### 2.1 Efficiency by variant and strategy", "",
           "Means over runs (complete data, medians included, in `efficiency_summary_by_variant.csv`). "
           f"Memory kind: {kinds or 'none recorded'}.", "", md_table(eff, cols)]
    conf = num(a["settings"]["confidence_pct"].iloc[0], 0)
    out += ["### 2.2 Correlation of efficiency measures with performance", "",
            f"Pearson r with its {conf} % CI (Fisher z) and Spearman ρ, pooled over all runs (the reference's way) "
            "and within task (both variables centred on the task mean).", "",
            md_table(a["correlations"], [("Measure", text("label")), ("Scope", text("scope")), ("n", col("n", integer)),
                                         ("Pearson r [CI]", lambda r: f"{signed(r['pearson_r'], 2)} "
                                                                      f"{ci(r['ci_low'], r['ci_high'], 2)}"),
                                         ("p", col("p", pval)), ("Spearman ρ", col("spearman_rho", signed, 2))])]
    out += [_gains(a)]
    return "\n".join(out)


def _gains(a: Analysis) -> str:
    gains = a["efficiency_gains"]
    head = ["### 2.3 Efficiency gains of PEFT vs FFT (and KD-LoRA vs LoRA-only)", ""]
    if gains.empty:
        return "\n".join(head + ["No two strategies to compare.", ""])
    unit = {"trainable_params": "M", "peak_memory_bytes": "MB"}
    show = lambda c: lambda r: f"{compact(r[c])} {unit.get(r['measure'], r['unit'])}"
    return "\n".join(head + [
        "Ratios are baseline ÷ group for costs and group ÷ baseline for rates (above 1: the group is "
        "cheaper or faster): of pooled means and medians, which depend on each group's task mix, and the "
        "median of per-block ratios over (family, task, seed) blocks both groups ran. *KD-LoRA + teacher share* "
        "is KD-LoRA's full cost: each student's own train time (and energy) plus its FFT teacher's and the "
        "teacher's logit-cache builds, divided by the number of students that used that teacher; plain "
        "*KD-LoRA* leaves the teacher out, as if it were free.", "",
        md_table(gains, [("Measure", text("label")), ("Baseline", text("baseline")), ("Group", text("group")),
                         ("Baseline mean", show("baseline_mean_display")), ("Group mean", show("group_mean_display")),
                         ("Ratio of means", col("ratio_of_means", ratio)),
                         ("Baseline median", show("baseline_median_display")),
                         ("Group median", show("group_median_display")),
                         ("Ratio of medians", col("ratio_of_medians", ratio)),
                         ("Paired median ratio (blocks)",
                          lambda r: f"{ratio(r['ratio_paired_median'])} ({integer(r['paired_blocks'])})"),
                         ("", text("direction"))])])


def parameter_section(a: Analysis) -> str:
    pe = a["parameter_efficiency"]
    out = ["## 3. Parameter efficiency", "", "### 3.1 Performance per parameter", "",
           md_table(pe, [("Method", text("label")), ("Params (M)", col("trainable_params_millions", num, 3)),
                         ("Performance", col("performance_mean")),
                         ("Performance per M params", col("performance_per_million", num, 3)),
                         ("Normalised per M params", col("score_norm_per_million", num, 3))]),
           "### 3.2 Pareto frontier", ""]
    front = a["pareto_frontier"]
    for cost, part in front.groupby("cost", sort=False):
        on = part[part["on_frontier"]].sort_values("cost_value")
        out.append(f"- **{cost}**: " + ", ".join(f"{r.label} ({compact(r.cost_value)}, {num(r.score)})"
                                                for r in on.itertuples()))
    return "\n".join(out) + "\n"


PER_RUN_LIMIT = 40  # up to this many KD-LoRA runs, the report lists each beside its teacher


def teacher_section(a: Analysis) -> str:
    pairs, summ = a["teacher_student"], a["teacher_student_summary"]
    if pairs.empty:
        return ""
    cols = [("Family", text("family")), ("Variant", text("variant")), ("Runs", col("runs", integer)),
            ("Student % of teacher", col("pct_of_teacher_mean", num, 1)),
            ("Lowest %", col("pct_of_teacher_min", num, 1))]
    if summ["inference_speedup_mean"].notna().any():
        cols.append(("Inference speed-up", col("inference_speedup_mean", ratio)))
    out = ["## 4. KD-LoRA student vs its FFT teacher", "",
           "Each KD-LoRA run beside the FFT run that taught it (linked by teacher_run_id); per run in "
           "`teacher_student.csv`.", "", md_table(summ, cols)]
    if len(pairs) <= PER_RUN_LIMIT:
        run_cols = [("Task", text("task")), ("Family", text("family")), ("Seed", col("seed", integer)),
                    ("Variant", text("variant")), ("Student", col("student_primary")),
                    ("Teacher", col("teacher_primary")), ("% of teacher", col("pct_of_teacher", num, 1))]
        optional = [("inference_speedup", "Inference speed-up", ratio), ("latency_ratio", "Latency ratio", ratio),
                    ("trainable_params_ratio", "Trainable params ratio", lambda x: num(x, 4))]
        run_cols += [(h, col(c, f)) for c, h, f in optional if pairs[c].notna().any()]
        out += ["Per run:", "", md_table(pairs, run_cols)]
    return "\n".join(out)


def findings(a: Analysis, name: str, title: str) -> str:
    f = a[name]
    if f.empty:
        return f"## {title}\n\nNo rule fired.\n"
    lines = [f"## {title}", ""] + [f"{i}. {r.text} _(rule: {r.statement})_" for i, r in enumerate(f.itertuples(), 1)]
    return "\n".join(lines) + "\n"


def per_task_section(a: Analysis) -> str:
    pt, avg = a["per_task_results"], a["glue_average"].set_index(["family", "method"])
    tasks = task_order(pt["task"])
    names = pt.drop_duplicates("task").set_index("task")["primary_name"]
    out = ["## 7. Per-task results (primary metric in percent, mean ± std over seeds)", "",
           "Primary metric per task: " + ", ".join(f"{t} {names[t]}" for t in tasks) + ". "
           + _average_rule(a), ""]
    for family, part in pt.groupby("family", sort=True):
        cell = {(r.method, r.task): mean_sd(r.mean_x100, r.std_x100) for r in part.itertuples()}
        rows = pd.DataFrame({"method": method_order(part["method"])})
        cols = [("Method", lambda r: method_label(r["method"]))]
        cols += [(t, (lambda t: lambda r: cell.get((r["method"], t), "—"))(t)) for t in tasks]
        cols.append(("Average (n)", lambda r, f=family: f"{num(avg.loc[(f, r['method']), 'average_x100'], 1)} "
                                                        f"({integer(avg.loc[(f, r['method']), 'n_tasks'])})"))
        out += [f"**{family}**", "", md_table(rows, cols)]
    return "\n".join(out)


def _average_rule(a: Analysis) -> str:
    if a["settings"]["glue_average"].iloc[0] == "all":
        return "Average = mean of the task means present, WNLI included (`--glue-average all`) (n tasks)."
    return ("Average = mean of the task means present, WNLI excluded as in the BERT and RoBERTa papers (its "
            "column stays; `--glue-average all` includes it) (n tasks).")


def files_section(a: Analysis, figures: Sequence[Path]) -> str:
    out = ["## Files", "", "CSV: " + ", ".join(f"`{n}.csv`" for n in a.tables), "",
           "LaTeX (booktabs): `tables/*.tex`", ""]
    out += figures_list(a, figures)
    return "\n".join(out) + "\n"


def figures_list(a: Analysis, figures: Sequence[Path]) -> list[str]:
    """The figures with their captions (PNG and PDF; `--figure-width` sets their size), the status
    figure apart from the results, and why a figure the report usually has is missing."""
    from kdlora.analysis.plots import CAPTIONS, FIGURES, STATUS_FIGURES, missing_reason

    if not figures:
        return []
    pngs = {p.stem: p for p in figures if p.suffix == ".png"}
    line = lambda n: f"- [{n}]({pngs[n].as_posix()}) ([PDF]({pngs[n].with_suffix('.pdf').as_posix()})): {CAPTIONS[n]}"  # noqa: E731
    out = ["Figures (`figures/`, PNG and PDF):", ""]
    out += [line(n) for n in FIGURES if n in pngs and n not in STATUS_FIGURES]
    out += [f"- {reason}." for n in FIGURES if n not in pngs and (reason := missing_reason(a, n))]
    status = [line(n) for n in STATUS_FIGURES if n in pngs]
    if status:
        out += ["", "Status of the study (not a result):", "", *status]
    return out


def body(a: Analysis) -> list[str]:
    """Every section but the list of files, which needs the figures drawn: `write_report` renders
    these while the figure workers finish."""
    return [header(a), protocol_section(a), design_section(a), executive_summary(a), lora_vs_kd(a),
            vs_fft_and_families(a), ranking(a), power_note(a), sensitivity_section(a), ablation_section(a),
            efficiency_section(a), parameter_section(a), teacher_section(a),
            findings(a, "recommendations", "5. Recommendations"), findings(a, "limitations", "6. Limitations"),
            per_task_section(a)]


def render(a: Analysis, figures: Sequence[Path] = (), sections: list[str] | None = None) -> str:
    """report.md: `sections` (from `body`, rendered earlier) or the body now, then the files."""
    sections = [*(body(a) if sections is None else sections), files_section(a, figures)]
    return "\n".join(s for s in sections if s)
