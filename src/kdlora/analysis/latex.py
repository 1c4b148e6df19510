"""LaTeX tables (booktabs, via pandas Styler) with significance marks, from the computed tables.

Marks: * p < 0.05, ** p < 0.01, *** p < 0.001 on Holm-adjusted Wilcoxon p-values for paired
tests, and on the raw Welch p for the reference's table (which applied no correction).
"""

from __future__ import annotations

from typing import Iterator

import pandas as pd

from kdlora.analysis import labels
from kdlora.analysis.fmt import ci, num, pval, signed, stars
from kdlora.analysis.model import Analysis
from kdlora.analysis.tables import method_order, task_order

NOTE = r"\multicolumn{%d}{l}{\footnotesize %s}\\"


def to_booktabs(frame: pd.DataFrame, caption: str, label: str, note: str = "") -> str:
    body = frame.style.hide(axis="index").to_latex(
        hrules=True, caption=caption, label=label, position="htbp", position_float="centering")
    if note:
        body = body.replace(r"\bottomrule", r"\bottomrule" + "\n" + NOTE % (frame.shape[1], note))
    return body


def _escape(s: str) -> str:
    return (s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace(labels.MINUS, "$-$")
            .replace("\u03c1", r"$\rho$"))


def statistical_tests(a: Analysis) -> str | None:
    t = a["statistical_tests"]
    if t.empty:
        return None
    frame = pd.DataFrame({
        "Comparison": [_escape(labels.comparison(f, x, y)) for f, x, y in zip(t["test_family"], t["a"], t["b"])],
        "Pairs": t["n_pairs"].astype(int),
        "Mean diff.": [signed(d) + stars(p) for d, p in zip(t["mean_diff"], t["p_wilcoxon_holm"])],
        f"{a['settings']['confidence_pct'].iloc[0]:g}\\% CI": [ci(lo, hi) for lo, hi in zip(t["ci_low"], t["ci_high"])],
        "$p_t$ (Holm)": [pval(p) for p in t["p_t_holm"]],
        "$p_W$ (Holm)": [pval(p) for p in t["p_wilcoxon_holm"]],
        "$d_z$": [signed(d, 2) for d in t["d_z"]],
        "Effect (HL) [CI]": [f"{signed(e)} {ci(lo, hi)}" for e, lo, hi in
                             zip(t["effect"], t["effect_ci_low"], t["effect_ci_high"])],
        "$p_{TOST}$": [pval(p) for p in t["p_tost"]],
        "Verdict": [_escape(str(v)) for v in t["verdict"]],
        "Welch $p$ (ref.)": [pval(p) for p in t["welch_p"]],
    })
    return to_booktabs(frame, "Paired comparisons (matched blocks) beside the reference's pooled Welch test",
                       "tab:statistical-tests", "* $p<0.05$, ** $p<0.01$, *** $p<0.001$ (Holm-adjusted Wilcoxon).")


def legacy_tests(a: Analysis) -> str | None:
    t = a["legacy_tests"]
    if t.empty:
        return None
    frame = pd.DataFrame({
        "Comparison": [_escape(labels.legacy_comparison(f, c)) for f, c in zip(t["test_family"], t["comparison"])],
        "Mean A (n)": [f"{num(m)} ({int(n)})" for m, n in zip(t["mean_a"], t["n_a"])],
        "Mean B (n)": [f"{num(m)} ({int(n)})" for m, n in zip(t["mean_b"], t["n_b"])],
        "Diff.": [signed(d) + stars(p) for d, p in zip(t["diff"], t["p"])],
        "$p$": [pval(p) for p in t["p"]],
    })
    return to_booktabs(frame, "Reference method: unpaired Welch t-tests pooled over tasks, uncorrected",
                       "tab:legacy-tests", "* $p<0.05$, ** $p<0.01$, *** $p<0.001$ (uncorrected).")


def efficiency(a: Analysis) -> str:
    e = a["efficiency_summary_by_variant"]
    frame = pd.DataFrame({"Method": e["label"], "Runs": e["runs"].astype(int),
                          "Performance": [num(x) for x in e["performance_mean"]]})
    for column, head, digits in (("train_time_s_mean", "Time (s)", 1), ("trainable_params_millions", "Params (M)", 3),
                                 ("memory_mb", "Memory (MB)", 1), ("train_samples_per_s_mean", "Samples/s", 1)):
        if column in e and e[column].notna().any():
            frame[head] = [num(x, digits) for x in e[column]]
    kinds = ", ".join(labels.memory(k) for k in sorted(set(e["memory_kind"].dropna())))
    return to_booktabs(frame, "Efficiency by variant and strategy (means over runs)", "tab:efficiency",
                       f"Memory kind: {kinds or 'none'}.")


def per_task(a: Analysis) -> Iterator[tuple[str, str]]:
    pt, avg = a["per_task_results"], a["glue_average"]
    tasks = task_order(pt["task"])
    for family, part in pt.groupby("family"):
        cell = {(r.method, r.task): f"{r.mean_x100:.1f}" + ("" if pd.isna(r.std_x100) else f"$\\pm${r.std_x100:.1f}")
                for r in part.itertuples()}
        methods = method_order(part["method"])
        frame = pd.DataFrame({"Method": [labels.method(m) for m in methods]})
        for t in tasks:
            frame[_escape(labels.task(t))] = [cell.get((m, t), "--") for m in methods]
        av = avg[avg["family"] == family].set_index("method")["average_x100"]
        frame["Avg."] = ["--" if pd.isna(av[m]) else f"{av[m]:.1f}" for m in methods]
        rule = "WNLI included" if avg["convention"].iloc[0] == "all" else "WNLI excluded"
        yield f"per_task_{family}", to_booktabs(frame, f"{labels.family(family)}: primary metric per task (percent, "
                                                f"mean $\\pm$ std over seeds; average {rule})", f"tab:per-task-{family}")


def all_tables(a: Analysis) -> Iterator[tuple[str, str]]:
    for name, make in (("statistical_tests", statistical_tests), ("legacy_tests", legacy_tests),
                       ("efficiency", efficiency)):
        text = make(a)
        if text is not None:
            yield name, text
    yield from per_task(a)
