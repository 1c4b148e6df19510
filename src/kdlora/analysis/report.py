"""The report: compute every table once, then write CSVs, LaTeX, figures and report.md from them.

`analyse` is pure (tables in, tables out); `write_report` does all the I/O, each file written
atomically (temp file + rename) so an interrupted report never leaves half a file.
"""

from __future__ import annotations

import contextlib
import gc
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from kdlora.analysis import ablations, comparisons, design, efficiency, rules, stats, tables
from kdlora.analysis.drawing import FigureWorkers
from kdlora.analysis.model import Analysis, Settings
from kdlora.analysis.tidy import Loaded, check_table, completed, load_results
from kdlora.errors import UserError
from kdlora.records.store import atomic_write_text

REQUIRED_CSVS = ("efficiency_summary_by_variant", "statistical_tests", "parameter_efficiency", "per_task_results")


@contextmanager
def _frozen_heap():
    """statsmodels' Holm correction calls gc.collect(), which on a heap holding thousands of
    loaded records costs about 0.1 s a call; objects that exist before the analysis are frozen
    out of those collections for its duration, then released as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def analyse(loaded: Loaded, settings: Settings, expected: pd.DataFrame | None = None,
            sources: Iterable[str] = (), grid: str | None = None,
            early: Callable[[Analysis], None] | None = None) -> Analysis:
    """Every table of the report from the tidy table (and the grid's expected runs, if any).
    `early`, if given, receives the first tables (runs, counts, cells, completion) as soon as they
    exist, so figures drawn from them can start while the statistics are computed."""
    with _frozen_heap():
        return _analyse(loaded, settings, expected, list(sources), grid, early)


def _analyse(loaded: Loaded, settings: Settings, expected: pd.DataFrame | None,
             sources: list[str], grid: str | None, early: Callable[[Analysis], None] | None) -> Analysis:
    all_runs = check_table(loaded.table)
    done = completed(all_runs)
    runs, protocol = _select(done, settings, grid)
    df, axes = design.add_arms(runs, settings.pool)
    df = tables.add_normalised(df)
    if df.empty:
        raise UserError("no completed runs with a primary metric to analyse")
    t: dict[str, pd.DataFrame] = {"settings": settings.table(), "runs": df, **protocol}
    t["design"] = design.design_table(df, axes)
    t["design_settings"] = design.settings_table(df, axes, settings.pool)
    t["problems"] = pd.DataFrame({"problem": loaded.problems})
    t["failed_runs"] = all_runs.loc[all_runs["status"] != "completed", ["run_id", "family", "task", "method", "status"]]
    t["counts"], t["strategy_task_counts"], t["cells"] = (
        tables.counts(df), tables.strategy_task_counts(df), tables.cells(df))
    if expected is not None:
        t["completion"], t["completion_cells"] = tables.completion(done, expected)  # candidates count as done
    if early is not None:
        early(Analysis(settings, dict(t), sources, grid))
    t["scores"] = tables.scores(df, settings)
    t["legacy_tests"] = comparisons.legacy_tests(df, settings, axes)
    t["statistical_tests"] = comparisons.paired_tests(df, settings, axes)
    t["paired_by_task"] = comparisons.paired_by_task(df, axes)
    t["friedman"], t["friedman_ranks"], t["nemenyi"] = comparisons.friedman_tables(df, settings)
    t["ablations"] = ablations.ablations(df, axes, settings)
    _efficiency_tables(t, df, settings)
    t["per_task_results"] = tables.per_task(df)
    t["glue_average"] = tables.glue_average(t["per_task_results"], settings.glue_average)
    t["teacher_student"] = tables.teacher_student(df)
    t["teacher_student_summary"] = tables.teacher_student_summary(t["teacher_student"])
    t["collapsed_runs"] = tables.collapsed_runs(df)
    t["sensitivity"] = comparisons.sensitivity(df, t["statistical_tests"], t["collapsed_runs"]["run_id"], settings,
                                               axes)
    t["verdict_summary"] = comparisons.verdict_summary(t["statistical_tests"], t["sensitivity"])
    t["recommendations"] = rules.apply(rules.RECOMMENDATIONS, t)
    t["limitations"] = rules.apply(rules.LIMITATIONS, t)
    return Analysis(settings, t, sources, grid)


def _select(runs: pd.DataFrame, settings: Settings, grid: str | None) -> tuple[pd.DataFrame, dict]:
    """--select: only the chosen candidate of each searched method is analysed (analysis/selection.py)."""
    if settings.select is None:
        return runs, {}
    from kdlora.analysis import selection

    searched = (selection.searched_from_grid(grid) if grid is not None
                else selection.searched_from_runs(runs, settings.pool))
    chosen = selection.select(runs, settings.select, searched)
    return chosen.runs, {"selection": chosen.selection, "candidates": chosen.candidates, "protocol": chosen.protocol}


def _efficiency_tables(t: dict[str, pd.DataFrame], df: pd.DataFrame, settings: Settings) -> None:
    summary = efficiency.summary_by_variant(df)
    t["efficiency_summary_by_variant"] = summary
    t["correlations"] = efficiency.correlations(df, settings)
    t["efficiency_gains"] = efficiency.gains(df)
    t["parameter_efficiency"] = efficiency.parameter_efficiency(summary)
    score = "score_norm_mean" if summary["score_norm_mean"].notna().all() else "performance_mean"
    t["pareto_frontier"] = efficiency.pareto(summary, score)


# ----- inputs ------------------------------------------------------------------------------------------
def expected_from_grid(path: str | Path, results: Iterable[str | Path] = ()) -> pd.DataFrame:
    """The grid file's runs as keys, through the sweep's own grid expansion (KD-LoRA students that
    wait for the protocol's teacher choice: as the sweep chose it from the teachers' records;
    param_budget sizes: as saved in any of the directories)."""
    try:
        from kdlora.grid import load_grid
        from kdlora.sweep.teachers import expected_runs
    except ImportError as exc:  # pragma: no cover - the sweep module ships with kdlora
        raise UserError(f"--grid needs kdlora.grid ({exc})") from None
    return tables.expected_keys(expected_runs(load_grid(path), list(results)))


def load_inputs(results: list[Path], policy: str, grid: str | Path | None) -> tuple[pd.DataFrame | None, Loaded]:
    """The grid's expected runs (None without a grid) and the loaded records."""
    return (expected_from_grid(grid, results) if grid is not None else None), load_results(results, policy)


def build(results: Iterable[str | Path], policy: str = "glue", grid: str | Path | None = None,
          settings: Settings | None = None, early: Callable[[Analysis], None] | None = None,
          workers: FigureWorkers | None = None) -> Analysis:
    """Load, validate and analyse; nothing is written, so bad input leaves no trace (`early`:
    see `analyse`). With `workers`, one of them expands the grid and loads the records while this
    process imports the statistics libraries (scipy.stats, statsmodels: ~0.8 CPU s, as long as
    loading the legacy study): on two cores the two overlap instead of following each other."""
    if policy not in ("glue", "legacy"):
        raise UserError(f"unknown metric policy {policy!r}; choose glue or legacy")
    results = [Path(r) for r in results]
    if not results:
        raise UserError("give at least one --results DIR (or --legacy DIR)")
    if workers is not None:
        inputs = workers.beside(load_inputs, results, policy, grid)
        stats.import_libraries()
        expected, loaded = inputs()
    else:
        expected, loaded = load_inputs(results, policy, grid)
    settings = settings or Settings(policy=policy)
    return analyse(loaded, settings, expected, [str(r) for r in results], None if grid is None else str(grid),
                   early)


# ----- outputs -----------------------------------------------------------------------------------------
def write_csvs(analysis: Analysis, out: Path) -> list[Path]:
    paths = []
    for name, frame in analysis.tables.items():
        path = out / f"{name}.csv"
        atomic_write_text(path, frame.to_csv(index=False))
        paths.append(path)
    return paths


def write_latex(analysis: Analysis, out: Path) -> list[Path]:
    from kdlora.analysis import latex

    paths = []
    for name, text in latex.all_tables(analysis):
        path = out / "tables" / f"{name}.tex"
        atomic_write_text(path, text)
        paths.append(path)
    return paths


def write_report(analysis: Analysis, out: str | Path, figures: bool = True,
                 workers: FigureWorkers | None = None, figure_width: str = "double") -> Path:
    """Every output under OUT; report.md is written last, after everything it links to.
    The figures are drawn by `workers` (forked here if not given, at `figure_width`: "double",
    6.9 in, or "single", 3.3 in) while the tables are written."""
    from kdlora.analysis.markdown import body, render

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} exists and is not a directory")
    with contextlib.ExitStack() as stack:
        if workers is None:
            workers = stack.enter_context(FigureWorkers(enabled=figures, width=figure_width))
        drawn = workers.start(analysis, out) if figures else (lambda: [])
        write_csvs(analysis, out)
        write_latex(analysis, out)
        sections = body(analysis)  # all but the list of figures, while they are drawn
        figure_paths = drawn()
    report = out / "report.md"
    atomic_write_text(report, render(analysis, [p.relative_to(out) for p in figure_paths], sections))
    return report
