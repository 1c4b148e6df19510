"""A rich progress bar for a sweep: done / failed / remaining and an ETA.

Runs already completed before the sweep are counted apart and left out of the bar, so the ETA
comes from the runs this sweep actually does. When the output is not a terminal (a log file, CI),
each finished run is printed as one line instead.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SweepProgress:
    def __init__(self, expected: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.expected = expected
        self.skipped = self.done = self.failed = 0
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]sweep"), BarColumn(),
            TextColumn("{task.fields[done]} done · {task.fields[failed]} failed · {task.fields[remaining]} "
                       "remaining"),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False)
        self.task = self.progress.add_task("sweep", total=expected, done=0, failed=0, remaining=expected)

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, kind: str, run_id: str, detail: str) -> None:
        run_id, detail = escape(run_id), escape(detail)  # reasons may hold [brackets]
        if kind == "skipped":
            self.skipped += 1
        elif kind == "done":
            self.done += 1
            self._line(f"[green]done[/] {run_id} ({detail})")
        elif kind == "failed":
            self.failed += 1
            self.progress.console.print(f"[red]failed[/] {run_id}: {detail}", highlight=False, soft_wrap=True)
        elif kind == "retry":
            self.progress.console.print(f"[yellow]retry[/] {run_id}: {detail}", highlight=False, soft_wrap=True)
        todo = self.expected - self.skipped
        self.progress.update(self.task, total=todo, completed=self.done + self.failed, done=self.done,
                             failed=self.failed, remaining=todo - self.done - self.failed)

    def _line(self, text: str) -> None:
        if not self.console.is_terminal:
            self.progress.console.print(text, highlight=False, soft_wrap=True)
