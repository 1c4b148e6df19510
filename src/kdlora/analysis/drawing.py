"""The report's figures, drawn by worker processes while the main process computes and writes.

Drawing is most of a report's time and the figures are independent of each other, so with more
than one core they are drawn in parallel. The first worker is forked when the caller likes
(`kdlora report` forks it once the analysis's modules are imported, which it then shares): it
loads the report's inputs (`beside`) while the main process imports the statistics libraries,
then imports matplotlib and warms its fonts, and then forks the second worker, which so starts
warm instead of paying the ~0.4 CPU s again on the same cores (forktree.py). Both draw the
figures they are handed while the main process computes the tables. The figures that need only
the first tables (the runs, cells and completion) are handed over as soon as those exist, the
rest when the analysis is complete. The tables reach the workers pickled, through a file each
worker reads once.

This module imports only the standard library (and forktree, which does too) at the top.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from kdlora.analysis.forktree import ForkTree

TIMEOUT_S = 600  # a worker that died would otherwise leave the report waiting forever
MAX_WORKERS = 2  # the main process keeps writing CSVs and LaTeX beside them
NICENESS = 0  # was 10: on a shared machine a lowered priority left the figures waiting far longer than it saved
FIGURE_WIDTHS = ("double", "single")  # plots.WIDTHS, named here without importing matplotlib
# Figures by drawing time on the legacy study, costliest first (bench/bench_report.py profiles them).
DRAWING_ORDER = ("per_task_bars", "efficiency_performance_scatter", "completion_heatmap", "paired_differences_forest",
                 "pareto_frontier", "critical_difference")
_UNPICKLED: dict[int, object] = {}  # per worker: the tables it was last sent
_WARM = False  # per worker: matplotlib imported and its fonts ready
_TOKENS = itertools.count()
T = TypeVar("T")


def worker_count() -> int:
    """Processes that may draw: one per core up to MAX_WORKERS; 0 where forking is unsafe or
    unavailable (macOS, Windows), and then the figures are drawn in turn by the caller."""
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_WORKERS, cores) if cores > 1 else 0


def write_figure(analysis, name: str, out: Path, width: str = "double") -> list[Path]:
    """One figure, as PNG and PDF, each written atomically (nothing when its tables are empty)."""
    from kdlora.analysis import plots
    from kdlora.records.store import atomic_write_bytes

    with plots.style(), _no_collector_pauses():
        fig = plots.FIGURES[name](analysis, width)
        if fig is None:
            return []
        rendered = plots.render(fig, ("png", "pdf"), dpi=plots.DPI[width])
        plots.close(fig)
        del fig  # garbage now, for the collection as the block ends
    paths = []
    for ext, data in rendered.items():
        path = out / "figures" / f"{name}.{ext}"
        atomic_write_bytes(path, data)
        paths.append(path)
    return paths


@contextmanager
def _no_collector_pauses() -> Iterator[None]:
    """A figure makes some 10^5 short-lived objects, and the cyclic garbage collector would stop
    ~25 times a figure to scan them and every older object of the process (~12 % of the drawing
    time on the legacy study): it is off while a figure is drawn, and one pass over the objects
    made meanwhile frees the figure's cycles after. In a figure worker the collector stays off
    (`_settle`): there is no pass."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            gc.collect(0)


def _settle() -> None:
    """The first worker as it starts. It runs at NICENESS: under load from other work a lowered
    priority starved the workers (figures waited up to 3x the analysis's time). The workers run
    without the cyclic garbage collector: they live for the pool's few figures, and what cycles
    those leave go when the pool closes; its passes over each figure's 10^5 objects cost the two
    workers ~0.1 CPU s a report."""
    os.nice(NICENESS)
    gc.disable()


def _warm_up() -> None:
    """In the first worker, before its first figure (once): matplotlib's imports, the font cache
    and the PDFs' font subset (the analysis's own imports come with the fork); the other workers
    are forked from it after this, warm. Asked for as a task, not run as the worker starts, so
    that the worker can first take the report's inputs (`beside`)."""
    global _WARM
    if _WARM:
        return
    from kdlora.analysis import plots  # (the collector is off in a worker: see _settle)

    plots.defer_font_subsetter()
    from matplotlib.backends import backend_agg, backend_pdf  # noqa: F401

    with plots.style():  # fonts, and the PDFs' TrueType subset (every character the figures use)
        fig = plots.new_figure("single", 1.0)
        fig.text(0.5, 0.5, plots.FONT_CHARACTERS)
        plots.render(fig, ("png", "pdf"))
    _WARM = True


def _is_warm() -> bool:
    return _WARM


def _draw(job: tuple[int, str, str, str, str]) -> list[Path]:
    token, tables, name, out, width = job
    _warm_up()
    if token not in _UNPICKLED:
        _UNPICKLED.clear()
        _UNPICKLED[token] = pickle.loads(Path(tables).read_bytes())
    return write_figure(_UNPICKLED[token], name, Path(out), width)


class FigureWorkers:
    """A pool of figure-drawing processes (or none: then `start` draws in the caller).

        with FigureWorkers(defer_warm_up=True) as workers:      # fork the first worker now
            analysis = build(..., workers=workers, early=workers.early(out))   # it loads the
                        # inputs, imports matplotlib, forks the second; both draw the early figures
            paths = workers.start(analysis, out)   # they draw ...
            write_csvs(...)                   # ... while this process writes
            figure_paths = paths()            # wait for them
    """

    def __init__(self, enabled: bool = True, workers: int | None = None, width: str = "double",
                 defer_warm_up: bool = False):
        if width not in FIGURE_WIDTHS:
            from kdlora.errors import UserError

            raise UserError(f"unknown figure width {width!r}; choose one of: {', '.join(FIGURE_WIDTHS)}")
        self.enabled = enabled
        self.width = width  # the figures' size: a paper's column (3.3 in) or its text width (6.9 in)
        n = (worker_count() if workers is None else workers) if enabled else 0
        self.pending: dict[str, int] = {}  # figure name -> its task
        # One worker is forked here; the other is forked from it once matplotlib is warm there.
        self.pool = ForkTree(n, initializer=_settle, ready=_is_warm) if n >= 2 else None
        self.folder = tempfile.mkdtemp(prefix="kdlora-figures-") if self.pool is not None else None
        self.defer_warm_up = defer_warm_up
        if self.pool is not None and not defer_warm_up:
            self.pool.submit(_warm_up)

    def beside(self, fn: Callable[..., T], *args) -> Callable[[], T]:
        """fn(*args) in the first worker while the caller goes on (with `defer_warm_up`, that
        worker warms up next and then forks the others); the returned function waits for its
        result (re-raising what it raised). Without workers fn runs when that function is called."""
        if self.pool is None:
            return lambda: fn(*args)
        pool = self.pool
        job = pool.submit(fn, *args)
        if self.defer_warm_up:  # else the first worker was asked to warm up as it started
            pool.submit(_warm_up)
        return lambda: pool.result(job, TIMEOUT_S)

    def early(self, out: Path) -> Callable[[object], None] | None:
        """A callback for `report.build(early=...)`: hands the figures that need only the first
        tables to the workers as soon as those exist (None when there are no workers)."""
        from kdlora.analysis.plots import EARLY_FIGURES

        if self.pool is None:
            return None
        return lambda first_tables: self._submit(first_tables, out, EARLY_FIGURES)

    def start(self, analysis, out: Path) -> Callable[[], list[Path]]:
        """Hand every figure not yet handed over to the workers; the returned function waits for
        all their paths (in the figures' order). Without workers they are drawn when it is called."""
        from kdlora.analysis.plots import FIGURES

        if not self.enabled:
            return lambda: []
        if self.pool is None:
            return lambda: [p for name in FIGURES for p in write_figure(analysis, name, out, self.width)]
        self._submit(analysis, out, [name for name in FIGURES if name not in self.pending])
        pending, self.pending, pool = self.pending, {}, self.pool  # the next report starts afresh
        return lambda: [p for name in FIGURES for p in pool.result(pending[name], TIMEOUT_S)]

    def _submit(self, analysis, out: Path, names) -> None:
        # The tables (1-8 MB) go through a file, read once per worker, and the tasks name it: in
        # each task they would be pickled once per figure, and a task bigger than the pipe's buffer
        # holds this process in `submit` until a worker is free to read it.
        token = next(_TOKENS)
        tables = Path(self.folder) / f"{token}.pickle"
        tables.write_bytes(pickle.dumps(analysis, protocol=pickle.HIGHEST_PROTOCOL))
        # the costliest first, so that two workers finish at about the same time
        for name in sorted(names, key=lambda n: DRAWING_ORDER.index(n) if n in DRAWING_ORDER else 0):
            self.pending[name] = self.pool.submit(_draw, (token, str(tables), name, str(out), self.width))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            self.pool = None

    def __enter__(self) -> FigureWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
