"""The tuning budget of a grid: how many runs and optimizer steps each method gets.

A method is a (strategy, variant) pair. A protocol is fair when every method compared gets the
same number of search candidates per (family, task, seed) cell and the same optimizer steps over
them; `kdlora plan` prints the budget and a grid with unequal budgets is refused unless it says
`allow_unequal_budget: true` (docs/protocol.md). Pure: no torch, no data loading beyond counting
the rows of a custom task's training file.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

# Training examples of the GLUE tasks (the HF nyu-mll/glue train splits).
GLUE_TRAIN_SIZES = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "qqp": 363846, "stsb": 5749, "mnli": 392702,
                    "qnli": 104743, "rte": 2490, "wnli": 635}


@functools.lru_cache(maxsize=64)
def task_train_size(task: str) -> int | None:
    """Training examples of a GLUE task or a custom task YAML (None where it cannot be read)."""
    if task in GLUE_TRAIN_SIZES:
        return GLUE_TRAIN_SIZES[task]
    try:
        from kdlora.data.loading import read_table
        from kdlora.data.tasks import resolve_task

        return len(read_table(resolve_task(task).files["train"]))
    except Exception:  # noqa: BLE001 - planning shows "?" rather than failing on a task it cannot read
        return None


def train_examples(cfg) -> int | None:
    """Examples a run trains on: the task's train split less its selection set, capped."""
    n = task_train_size(cfg.task)
    if n is None:
        return None
    n -= int(round(n * cfg.selection_fraction))
    return min(n, cfg.max_train_samples) if cfg.max_train_samples else n


def estimated_steps(cfg) -> int | None:
    n = train_examples(cfg)
    return None if n is None else max(1, math.ceil(math.ceil(n / cfg.micro_batch_size) / cfg.grad_accum * cfg.epochs))


def method(cfg) -> str:
    return f"{cfg.strategy}/{cfg.variant or 'full'}"


@dataclass(frozen=True)
class Budget:
    method: str
    runs: int
    cells: int  # cells it runs in: (family, task, seed, study-axis point)
    steps: int | None  # estimated optimizer steps over all its runs (None: a task's size is unknown)

    @property
    def candidates(self) -> float:
        """Runs per cell: the size of the method's search."""
        return self.runs / self.cells

    @property
    def steps_per_cell(self) -> float | None:
        return None if self.steps is None else self.steps / self.cells


def cell_key(cfg, searched: Iterable[str]) -> tuple:
    """What a run's cell is: everything that defines it except the searched settings (a study
    axis such as `kd_temperature: [1, 2, 4]` makes cells; a search makes candidates in a cell)."""
    skip = set(searched) | {"strategy", "variant"}
    return tuple((k, repr(v)) for k, v in cfg.canonical().items() if k not in skip)


def budgets(runs: Iterable, searched: Callable[[object], Iterable[str]],
            methods: Iterable[str] | None = None) -> list[Budget]:
    """One Budget per method (strategy/variant), in first-seen order, only of `methods` (strategies)
    when given; `searched(cfg)` names the settings searched for that run's method."""
    runs_by: dict[str, int] = defaultdict(int)
    cells: dict[str, set] = defaultdict(set)
    steps: dict[str, int | None] = defaultdict(int)
    wanted_strategies = None if methods is None else set(methods)
    for cfg in runs:
        if wanted_strategies is not None and cfg.strategy not in wanted_strategies:
            continue
        m = method(cfg)
        runs_by[m] += 1
        cells[m].add(cell_key(cfg, searched(cfg)))
        s = estimated_steps(cfg)
        steps[m] = None if s is None or steps[m] is None else steps[m] + s
    return [Budget(m, runs_by[m], len(cells[m]), steps[m]) for m in runs_by]


def unequal(budget_list: list[Budget]) -> str | None:
    """Why the budgets differ (None when every method gets the same search and steps per cell)."""
    if len(budget_list) < 2:
        return None
    first = budget_list[0]
    for b in budget_list[1:]:
        if b.candidates != first.candidates:
            return (f"{b.method} gets {b.candidates:g} candidate run(s) per cell (family, task, seed) but {first.method} gets "
                    f"{first.candidates:g}")
        if None not in (b.steps_per_cell, first.steps_per_cell) and \
                not math.isclose(b.steps_per_cell, first.steps_per_cell, rel_tol=1e-9):
            return (f"{b.method} gets {b.steps_per_cell:,.0f} optimizer steps per cell (family, task, seed) but "
                    f"{first.method} gets {first.steps_per_cell:,.0f} (epochs, batch_size or the search differ)")
    return None
