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
    from kdlora.demo.console import new_console, print_summary
    from kdlora.sweep.progress import SweepProgress

    size = d.SMOKE if smoke else d.FULL
    out = out or (DEFAULT_OUT / SMOKE_SUBDIR if smoke else DEFAULT_OUT)
    console = new_console()
    command = "kdlora " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["demo"] else "kdlora demo"
    result = d.run_demo(out, size=size, workers=workers, seeds=d.parse_seeds(seeds), grid=grid,
                        threads=threads, command=command, progress=SweepProgress,
                        on_stage=lambda text: console.print(text, highlight=False, soft_wrap=True))
    print_summary(result, console)
    if not result.passed:
        raise typer.Exit(code=1)
