"""The protocol's KD-LoRA teacher: with an FFT search and `teachers: selected`, every student of a
(family, task) distils from the FFT candidate setting with the best mean selection-set metric
over seeds (its own seed's run of that setting). Chosen once every candidate of the cell has a
record; until then the cell's students wait."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kdlora.grid import (GridConfig, TeacherChoice, expand_grid, needs_teacher_selection, pending_students,
                         search_space, teacher_strategies, use_saved_sizes)


def choose_teachers(grid: GridConfig, results: Sequence[str | Path]) -> TeacherChoice:
    """The chosen teacher setting per (family, task), from the FFT records in the results
    directories (a record is read from the first that has it)."""
    import pandas as pd

    from kdlora.analysis.selection import SELECTION_SCORE, choose
    from kdlora.records.store import read_record, record_path

    teacher = next(iter(teacher_strategies(grid)), None)  # the FFT runs that teach the grid's students
    keys = list(search_space(grid, teacher, None)) if teacher else []
    rows, unfinished = [], set()
    for cfg in (c for c in expand_grid(grid) if c.strategy == teacher):
        path = next((p for p in (record_path(d, cfg.run_id) for d in results) if p.is_file()), None)
        if path is None:
            unfinished.add((cfg.family, cfg.task))
            continue
        rec = read_record(path)
        score = rec.metrics_selection.get("primary") if rec.status == "completed" else None
        rows.append({"family": cfg.family, "task": cfg.task, **{k: getattr(cfg, k) for k in keys},
                     SELECTION_SCORE: score})
    table = pd.DataFrame(rows, columns=["family", "task", *keys, SELECTION_SCORE])
    finished = [(f, t) not in unfinished for f, t in zip(table["family"], table["task"])]
    table = table.loc[pd.Series(finished, index=table.index, dtype=bool)]
    chosen = choose(table, keys, by=("family", "task"))
    return {(row["family"], row["task"]): {k: row[k] for k in keys} for _, row in chosen.iterrows()}


def expected_runs(grid: GridConfig, results: Sequence[str | Path]) -> list:
    """Every run the grid expects given what is in the results directories: the
    students of chosen teachers, and, for cells whose teacher is not chosen yet, one stand-in per
    student (first FFT candidate as teacher: counted as to do, never run under that id). A grid
    with param_budget not yet expanded is sized with the sizes the directories keep
    (param_budget.json): no torch needed."""
    dirs = [Path(r) for r in results]
    use_saved_sizes(grid, dirs)
    if not needs_teacher_selection(grid):
        return expand_grid(grid)
    present = [d for d in dirs if d.is_dir()]
    choice = choose_teachers(grid, present) if present else {}
    return expand_grid(grid, choice) + [p for p in pending_students(grid) if (p.family, p.task) not in choice]
