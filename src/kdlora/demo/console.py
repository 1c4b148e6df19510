"""The demo's one-screen summary on the console (rich): every run, the best variant per strategy,
the quality bar, time and the report's path."""

from __future__ import annotations


def new_console():
    from rich.console import Console

    return Console()


def _num(value, fmt: str) -> str:
    from kdlora.analysis.fmt import missing

    return "—" if missing(value) else format(value, fmt)


def _label(strategy: str) -> str:
    """The strategy's short label (LoRA, not the report's LoRA-only): the table must fit 80 columns."""
    from kdlora.analysis.methods import STRATEGY_SHORT_LABEL

    return STRATEGY_SHORT_LABEL.get(strategy, strategy)


def _full_model(strategy: str) -> bool:
    from kdlora.analysis.methods import ADAPTER_STRATEGIES

    return strategy not in ADAPTER_STRATEGIES


def _params(n) -> str:
    """Parameter counts in the unit that keeps them short (the report has them in full)."""
    from kdlora.analysis.fmt import missing

    if missing(n):
        return "—"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def print_summary(result, console) -> None:
    """One screen: every run, the best variant per strategy, the quality bar, time, report path."""
    from rich import box
    from rich.table import Table

    from kdlora.demo.quality import FFT_MARGIN

    maj = result.majority_baseline
    table = Table(title=f"tweets3: {result.size.n_train} train / {result.size.n_eval} validation tweets, "
                        f"majority class {maj:.1%} (Δ maj.: points above it; % of T: KD-LoRA student as % of its teacher)",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    # short headers: the table must fit 80 columns (CI logs, small terminals)
    for head in ("run", "seed", "acc.", "macro-F1", "Δ maj.", "params", "train s", "% of T", ""):
        table.add_column(head, justify="left" if head in ("run", "") else "right", no_wrap=True)
    checks = {c.run_id: c for c in result.checks}
    for row in result.table.itertuples(index=False):
        acc = row.accuracy if row.status == "completed" else None
        name = _label(row.strategy) + ("" if _full_model(row.strategy) else f" {row.variant}")
        table.add_row(name, str(row.seed), _num(acc, ".1%"), _num(row.macro_f1, ".3f"),
                      "—" if acc is None else f"{(acc - maj) * 100:+.1f}", _params(row.trainable_params),
                      _num(row.train_time_s, ".0f"), _num(row.pct_of_teacher, ".1f"),
                      "[green]ok[/]" if checks[row.run_id].passed else "[red]FAIL[/]")
    console.print(table)
    for b in result.best.itertuples(index=False):
        from kdlora.analysis.methods import has_teacher

        what = "" if _full_model(b.strategy) else f"{b.variant} "
        pct = f", {_num(b.pct_of_teacher, '.1f')} % of teacher" if has_teacher(b.strategy) else ""
        console.print(f"best {_label(b.strategy)}: {what}{b.accuracy:.1%} accuracy "
                      f"({_params(b.trainable_params)} trainable params, {_num(b.train_time_s, '.0f')} s{pct})",
                      highlight=False)
    sc, t = result.sweep_counts, result.timings_s
    console.print(f"{sc['completed_now']} runs trained now, {sc['skipped']} reused, {sc['failed']} failed; "
                  f"wall time {t['total']:.0f} s (sweep {t['sweep']:.0f} s, report {t['report']:.0f} s) with "
                  f"{result.workers} worker(s) x {result.threads_per_run} thread(s)", highlight=False)
    if t.get("cpu"):
        import os

        cores = os.cpu_count() or 1
        console.print(f"CPU time {t['cpu']:.0f} s on {cores} cores (about {t['cpu'] / cores:.0f} s of wall time "
                      f"on an idle machine); load average {result.load_avg_start} at start, "
                      f"{result.load_avg_end} at end", highlight=False)
    if result.passed:
        console.print(f"[green]quality bar met[/]: FFT >= majority + {FFT_MARGIN * 100:g} points, every LoRA-only and "
                      "KD-LoRA run above the majority class", highlight=False)
    else:
        bad = [c for c in result.checks if not c.passed]
        console.print(f"[red]quality bar NOT met[/] by {len(bad)} of {len(result.checks)} runs:", highlight=False)
        for c in bad:
            got = "no completed run" if c.accuracy is None else f"{c.accuracy:.1%}"
            console.print(f"  {c.strategy}/{c.variant} seed {c.seed}: {got}, needs {c.rule} "
                          f"({c.threshold:.1%})", highlight=False)
    if result.reference is not None:
        print_reference(result.reference, console)
    # paths are never wrapped, so they can be copied (and the last line is always the report's)
    console.print(f"summary: {result.layout.summary}", highlight=False, soft_wrap=True)
    if result.reference is not None:
        console.print(f"reference report: {result.reference.report}", highlight=False, soft_wrap=True)
    console.print(f"report: {result.report if result.report else 'not written (no completed runs)'}",
                  highlight=False, soft_wrap=True)



def _signed(value) -> str:
    return "—" if value is None else f"{value:+.3f}"


def print_reference(ref, console) -> None:
    """The reference study's own conclusion beside the paired one, per variant (read from the
    reference report's CSVs): what one seed of the demo cannot show. Fits 80 columns."""
    from rich import box
    from rich.table import Table

    from kdlora.examples import REFERENCE_SOURCE

    table = Table(title=f"The reference study re-analysed ({ref.runs} GPU runs): LoRA-only vs KD-LoRA",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for head in ("variant", "ref. p", "reference", "pairs", "paired verdict", "effect", f"{ref.confidence_pct:g} % CI"):
        table.add_column(head, justify="right" if head in ("ref. p", "pairs", "effect") else "left", no_wrap=True)
    short = {"significant": "differ", "no significant difference": "no diff."}
    for r in ref.rows:
        ci = "—" if r["effect_ci_low"] is None else f"{_signed(r['effect_ci_low'])} to {_signed(r['effect_ci_high'])}"
        table.add_row(r["variant"], _num(r["reference_p"], ".3f"), short.get(r["reference_says"], "—"),
                      str(r["pairs"]), r["verdict_text"], _signed(r["effect"]), ci)
    console.print(table)
    said = sum(1 for r in ref.rows if r["reference_says"] == "no significant difference")
    better = sum(1 for r in ref.rows if r["verdict"] == "a better")
    console.print(f"reference: a Welch t-test pooling all runs of a variant over tasks; p >= {ref.alpha:g} for {said} "
                  f"of {len(ref.rows)} variants, which its report reads as no difference. paired: runs matched on "
                  f"family, task and seed, Wilcoxon signed-rank with Holm; effect = Hodges-Lehmann estimate of "
                  f"LoRA-only − KD-LoRA in the primary metric: LoRA-only better for {better} of {len(ref.rows)}.",
                  highlight=False)
    console.print(f"data: {REFERENCE_SOURCE}", highlight=False)
