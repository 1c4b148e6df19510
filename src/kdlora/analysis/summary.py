"""The one-screen terminal summary of a report (rich), from the same tables as report.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kdlora.analysis.fmt import missing, num, pct
from kdlora.analysis.model import Analysis
from kdlora.analysis.tidy import STRATEGY_LABEL

if TYPE_CHECKING:  # rich is imported when printing, after the report's work (not by its figure workers)
    from rich.console import Console
    from rich.table import Table


def import_rich() -> None:
    """rich's modules for the summary (~0.07 CPU s), for a caller with other work running beside
    it: printed last, with nothing left to overlap, the import would add its whole time."""
    import rich.console  # noqa: F401
    import rich.table  # noqa: F401


def summary_table(a: Analysis) -> Table:
    """Best variant per strategy with its score, trainable parameters and median train time."""
    scores, eff = a["scores"], a["efficiency_summary_by_variant"].set_index("method")
    methods = scores[scores["level"] == "method"]
    use_norm = methods["score_norm_mean"].notna().all()
    col = "score_norm_mean" if use_norm else "performance_mean"
    from rich.table import Table

    table = Table(title="Best method per strategy", title_justify="left")
    for head in ("Strategy", "Best", "Score" + (" (FFT = 1)" if use_norm else ""), "Runs", "Trainable params (M)",
                 "Median train time (s)"):
        table.add_column(head)
    for strategy, part in methods.groupby("strategy", sort=False):
        best = part.sort_values(col, ascending=False).iloc[0]
        e = eff.loc[best["name"]]
        table.add_row(STRATEGY_LABEL.get(strategy, strategy), "—" if missing(best["variant"]) else str(best["variant"]), num(best[col]),
                      str(int(best["runs"])), num(e.get("trainable_params_millions"), 3),
                      num(e.get("train_time_s_median"), 1))
    return table


def print_summary(a: Analysis, report: Path, console: Console | None = None) -> None:
    if console is None:
        from rich.console import Console

        console = Console()
    runs = len(a["runs"])
    comp = a.tables.get("completion")
    line = f"{runs} completed runs"
    if comp is not None:
        row = comp[comp["scope"] == "overall"].iloc[0]
        line += f", {int(row['done'])}/{int(row['expected'])} of the grid ({pct(row['completion_pct'])})"
    console.print(line, highlight=False)
    console.print(summary_table(a))
    if len(a["problems"]):
        console.print(f"[yellow]{len(a['problems'])} input files skipped[/] (problems.csv)")
    console.print(f"report: {report}", highlight=False)
