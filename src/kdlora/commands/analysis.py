"""`kdlora report` and `kdlora import-legacy`: thin wrappers over kdlora.analysis and
kdlora.records.legacy. Heavy imports (pandas, scipy, matplotlib) happen inside the functions."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from kdlora.commands.common import user_errors


@user_errors
def report(
    results: List[Path] = typer.Option(..., "--results", help="Results directory (kdlora records, or the legacy "
                                       "layout, detected); repeat to merge several."),
    legacy: List[Path] = typer.Option([], "--legacy", help="A legacy-layout results directory to include."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Grid YAML the runs belong to (completion rate)."),
    metric_policy: str = typer.Option("glue", "--metric-policy", help="Primary metric policy: glue or legacy."),
    out: Path = typer.Option(..., "--out", help="Output directory for report.md, CSVs, LaTeX and figures."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the figures (PNG and PDF)."),
    figure_width: str = typer.Option("double", "--figure-width", help="Figure size: double (6.9 in, a paper's "
                                     "text width) or single (3.3 in, one column); fonts 7-8 pt at that size."),
    pool: List[str] = typer.Option([], "--pool", help="A setting (RunConfig field, e.g. r) whose values are pooled "
                                   "instead of forming separate arms; repeatable."),
    equivalence_margin: float = typer.Option(0.01, "--equivalence-margin", help="TOST equivalence margin in the "
                                             "primary metric (> 0)."),
    equivalence_margin_norm: float = typer.Option(0.02, "--equivalence-margin-norm", help="TOST equivalence margin "
                                                  "in FFT-normalised units (> 0)."),
    glue_average: str = typer.Option("no-wnli", "--glue-average", help="Per-task tables' average: no-wnli (the "
                                     "BERT/RoBERTa papers' convention) or all."),
    select: Optional[str] = typer.Option(None, "--select", help="Protocol: per (method, family, task) keep the "
                                         "searched setting with the best mean selection-split metric over seeds "
                                         "(selection), or on the reported split (reported: optimistically biased); "
                                         "see docs/protocol.md."),
) -> None:
    """Analyse results: statistics, efficiency, recommendations and limitations, into OUT/report.md."""
    import warnings

    from kdlora.analysis.drawing import FigureWorkers
    from kdlora.lazy import imports_without_collector

    # Non-finite inputs are failed runs listed in problems.csv, and statistics of too few values
    # are n/a in the report: numpy's RuntimeWarnings about them would only repeat that, without
    # saying which run (set before the figure workers fork, so they inherit it).
    warnings.simplefilter("ignore", RuntimeWarning)

    with imports_without_collector():
        from kdlora.analysis.model import Settings
        from kdlora.analysis.report import build, write_report
        from kdlora.analysis.summary import import_rich, print_summary

    # Forked after the analysis's imports (pandas), which the workers then share instead of
    # importing them again on the same cores: the first loads the records while this process
    # imports scipy.stats, then imports matplotlib and forks the second; they draw while this
    # process computes and writes.
    with FigureWorkers(enabled=figures, width=figure_width, defer_warm_up=True) as workers:

        settings = Settings(policy=metric_policy, pool=tuple(pool), equivalence_margin=equivalence_margin,
                            equivalence_margin_norm=equivalence_margin_norm, glue_average=glue_average,
                            select=select)

        analysis = build([*results, *legacy], metric_policy, grid, settings, early=workers.early(out),
                         workers=workers)
        import_rich()  # while the workers draw, instead of alone at the end
        path = write_report(analysis, out, figures=figures, workers=workers)
    print_summary(analysis, path)


@user_errors
def import_legacy(
    source: Path = typer.Argument(..., help="The legacy results folder (holding fft/ lora/ kd-lora/ or results/)."),
    results: Path = typer.Option(..., "--results", help="kdlora results directory to write records into."),
) -> None:
    """Convert the reference study's legacy layout into kdlora run records (units made absolute)."""
    from rich.console import Console

    from kdlora.errors import UserError
    from kdlora.records.legacy import import_legacy as convert

    if not source.is_dir():
        raise UserError(f"legacy folder {str(source)!r} not found")
    result = convert(source, results)
    console = Console()
    for problem in result.skipped:
        console.print(f"[yellow]skipped[/] {problem}", highlight=False)
    console.print(f"imported {len(result.written)} runs into {results / 'runs'}; skipped {len(result.skipped)} files",
                  highlight=False)
