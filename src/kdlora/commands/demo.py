"""`kdlora demo`: the embedded default study, end to end, with a one-screen summary."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from kdlora.commands.common import user_errors

DEFAULT_OUT = Path("kdlora-demo")
SMOKE_SUBDIR = "smoke"  # --smoke without --out: kdlora-demo/smoke, apart from the full study


@user_errors
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help=f"Output folder (default: ./{DEFAULT_OUT}; "
                                       f"--smoke: ./{DEFAULT_OUT}/{SMOKE_SUBDIR})", show_default=False),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="Runs at once (default: CPU cores, at most 4)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Run seeds, comma-separated (e.g. 42,123) "
                                        "(default: the grid's)"),
    smoke: bool = typer.Option(False, "--smoke", help="CI size: fewer tweets, one variant per strategy."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="The study's grid (default: configs/demo.yaml)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="Torch threads per run (default: cores / workers)"),
) -> None:
    """Run the default study (FFT teacher, 6 variants x LoRA-only / KD-LoRA on real tweets, offline on
    CPU), write the report, check the quality bar. Rerun to resume."""
    from kdlora import demo as d
    from kdlora.sweep.progress import SweepProgress

    size = d.SMOKE if smoke else d.FULL
    out = out or (DEFAULT_OUT / SMOKE_SUBDIR if smoke else DEFAULT_OUT)
    console = _console()
    command = "kdlora " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["demo"] else "kdlora demo"
    result = d.run_demo(out, size=size, workers=workers, seeds=d.parse_seeds(seeds), grid=grid,
                        threads=threads, command=command, progress=SweepProgress,
                        on_stage=lambda text: console.print(text, highlight=False, soft_wrap=True))
    print_summary(result, console)
    if not result.passed:
        raise typer.Exit(code=1)


def _console():
    from rich.console import Console

    return Console()


def _num(value, fmt: str) -> str:
    from kdlora.analysis.fmt import missing

    return "—" if missing(value) else format(value, fmt)


# shorter than the report's labels ("LoRA-only"): the table must fit 80 columns
STRATEGY_LABEL = {"fft": "FFT", "lora": "LoRA", "kd-lora": "KD-LoRA"}


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

    from kdlora.demo import FFT_MARGIN

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
        name = STRATEGY_LABEL[row.strategy] + ("" if row.strategy == "fft" else f" {row.variant}")
        table.add_row(name, str(row.seed), _num(acc, ".1%"), _num(row.macro_f1, ".3f"),
                      "—" if acc is None else f"{(acc - maj) * 100:+.1f}", _params(row.trainable_params),
                      _num(row.train_time_s, ".0f"), _num(row.pct_of_teacher, ".1f"),
                      "[green]ok[/]" if checks[row.run_id].passed else "[red]FAIL[/]")
    console.print(table)
    for b in result.best.itertuples(index=False):
        what = "" if b.strategy == "fft" else f"{b.variant} "
        pct = f", {_num(b.pct_of_teacher, '.1f')} % of teacher" if b.strategy == "kd-lora" else ""
        console.print(f"best {STRATEGY_LABEL[b.strategy]}: {what}{b.accuracy:.1%} accuracy "
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
    # paths are never wrapped, so they can be copied (and the last line is always the report's)
    console.print(f"summary: {result.layout.summary}", highlight=False, soft_wrap=True)
    console.print(f"report: {result.report if result.report else 'not written (no completed runs)'}",
                  highlight=False, soft_wrap=True)

