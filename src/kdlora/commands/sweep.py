"""`kdlora plan`, `kdlora sweep` and `kdlora status`: a grid file as a first-class object."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdlora.commands.common import check_results_dir, user_errors
from kdlora.errors import UserError

GridArg = typer.Argument(..., help="grid YAML file (see docs/sweeps.md)", show_default=False)
ResultsOpt = typer.Option(..., "--results", help="results directory (records in DIR/runs)")


def _console():
    from rich.console import Console

    return Console(soft_wrap=True)  # long lines (paths, run ids) stay whole for grep


def _load(grid: Path):
    from kdlora.grid import expand_grid, load_grid

    spec = load_grid(grid)
    return spec, expand_grid(spec)


def _print_budget(console, spec) -> None:
    """The protocol's budget per method (runs, candidates per cell, estimated optimizer steps);
    refuses unequal budgets unless the grid allows them."""
    from kdlora.grid import (check_budgets, grid_budgets, needs_teacher_selection, pending_students, search_space,
                             teacher_strategies)

    budget = grid_budgets(spec)
    console.print("tuning budget per method (a cell: family x task x seed x study axes):", highlight=False)
    for b in budget:  # one plain line each, whole, so that they can be grepped
        strategy, _, variant = b.method.partition("/")
        space = search_space(spec, strategy, None if variant == "full" else variant)
        searched = "; ".join(f"{k} {v}" for k, v in space.items()) or "not searched"
        steps = "?" if b.steps is None else f"{b.steps:,}"
        console.print(f"  {b.method}: {b.candidates:g} candidate(s) per cell ({searched}), {b.runs} runs, "
                      f"~{steps} optimizer steps", highlight=False, markup=False)
    pending = pending_students(spec)
    if needs_teacher_selection(spec):
        console.print(f"KD-LoRA teacher: per family and task, the FFT candidate with the best mean selection metric "
                      f"over seeds; its {len(pending)} KD-LoRA runs start once every FFT candidate of their "
                      "cell has finished", highlight=False)
    elif any(spec.search.get(t) for t in teacher_strategies(spec)):
        console.print("KD-LoRA teacher: every FFT candidate (teachers: every): each student is run once per "
                      "teacher candidate", highlight=False)
    _print_param_budget(console, spec)
    check_budgets(spec, budget)


def _print_param_budget(console, spec) -> None:
    """The adapter size param_budget chose per family, strategy and variant, with its exact count."""
    from kdlora.grid import budget_matches

    matches = budget_matches(spec)
    if not matches:
        return
    console.print(f"matched parameter budgets {spec.param_budget or '(set per run)'} (size: r; adalora: its "
                  "initial rank; mrlora: the top of its rank chain):", highlight=False, markup=False)
    rows: dict[tuple, list] = {}
    for (family, _task, strategy, variant), m in matches.items():
        rows.setdefault((family, strategy, variant, m.model, m.size), []).append(m)
    for (family, strategy, variant, model, size), ms in rows.items():
        lo, hi = min(m.ratio for m in ms), max(m.ratio for m in ms)
        ratio = f"{lo:.3f}x" if round(lo, 3) == round(hi, 3) else f"{lo:.3f}-{hi:.3f}x"
        console.print(f"  {family} {strategy}/{variant} on {model}: size {size}, {ms[0].count:,} trainable "
                      f"(reference {ms[0].reference_count:,}; {ratio} over {len(ms)} task(s))",
                      highlight=False, markup=False)


@user_errors
def plan(grid: Path = GridArg,
         csv: Optional[Path] = typer.Option(None, "--csv", help="write every expected run to this CSV"),
         results: Optional[Path] = typer.Option(
             None, "--results", help="save the grid's param_budget sizes in DIR/param_budget.json (kdlora sweep "
                                     "does too), so that `kdlora report --grid` needs no torch")) -> None:
    """Expand a grid and print how many runs it expects, with a breakdown."""
    from rich.table import Table

    from kdlora.grid import breakdown, run_row

    if results is not None:
        check_results_dir(results)
    spec, runs = _load(grid)
    counts = breakdown(runs)
    console = _console()
    by_strategy = ", ".join(f"{n} {s}" for s, n in counts["strategy"].items())
    from kdlora.grid import pending_students

    waiting = len(pending_students(spec))
    later = f" + {waiting} KD-LoRA runs once their teachers are chosen" if waiting else ""
    console.print(f"[bold]{len(runs)}[/] runs expected by {grid} ({by_strategy}){later}", highlight=False)
    table = Table(title="expected runs by strategy/variant x family")
    table.add_column("strategy/variant")
    for family in spec.families:
        table.add_column(family, justify="right")
    table.add_column("total", justify="right")
    per_family = {f: breakdown(r for r in runs if r.family == f)["variant"] for f in spec.families}
    for key, total in counts["variant"].items():
        table.add_row(key, *(str(per_family[f].get(key, 0)) for f in spec.families), str(total))
    table.add_row("[bold]all", *(str(counts["family"][f]) for f in spec.families), f"[bold]{len(runs)}")
    console.print(table)
    console.print("tasks: " + ", ".join(f"{t} {n}" for t, n in counts["task"].items()), highlight=False)
    _print_budget(console, spec)
    if csv is not None:
        import pandas as pd

        from kdlora.records.store import atomic_write_text

        atomic_write_text(csv, pd.DataFrame([run_row(r) for r in runs]).to_csv(index=False))
        console.print(f"wrote {csv}")
    if results is not None:
        from kdlora.grid import save_budget_sizes

        results.mkdir(parents=True, exist_ok=True)
        saved = save_budget_sizes(spec, results)
        console.print(f"wrote {saved}" if saved else "no param_budget sizes to save (the grid sets no param_budget)",
                      highlight=False)


@user_errors
def sweep(grid: Path = GridArg, results: Path = ResultsOpt,
          executor: str = typer.Option("local", "--executor", help="local (a process pool), ray or slurm"),
          workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                                help="runs at once [default: one per GPU, else 1; ray: cluster]"),
          ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (ray only)"),
          retries: int = typer.Option(0, "--retries", min=0, help="retry a failed run up to K times"),
          gpus_per_run: Optional[float] = typer.Option(None, "--gpus-per-run", min=0,
                                                       help="GPUs per run, fractions allowed on Ray "
                                                            "[default: 1 if there are GPUs, else 0]"),
          runs_per_gpu: Optional[str] = typer.Option(
              None, "--runs-per-gpu", metavar="K|auto",
              help="local: up to K runs side by side on each GPU, or auto: admit a run while the GPU's free "
                   "memory exceeds its measured or estimated peak plus a margin [default: 1]"),
          mps: bool = typer.Option(False, "--mps", help="local: run the sweep's runs under a CUDA MPS daemon "
                                                       "(kernels of runs sharing a GPU overlap)"),
          run_fn: str = typer.Option("kdlora.runner:run_one", "--run-fn",
                                     help="function (package.module:function) that trains one run"),
          cpus_per_run: Optional[int] = typer.Option(None, "--cpus-per-run", min=1,
                                                     help="CPUs per run (slurm, ray) [default: 1]"),
          partition: Optional[str] = typer.Option(None, "--partition", help="SLURM partition (slurm only)"),
          account: Optional[str] = typer.Option(None, "--account", help="SLURM account (slurm only)"),
          qos: Optional[str] = typer.Option(None, "--qos", help="SLURM quality of service (slurm only)"),
          time_limit: Optional[str] = typer.Option(None, "--time-limit",
                                                   help="SLURM time limit per run: minutes or HH:MM:SS, "
                                                        "D-HH:MM:SS (slurm only) [default: 60]"),
          mem_per_run: Optional[str] = typer.Option(None, "--mem-per-run",
                                                    help="memory per run, e.g. 16G (slurm only) "
                                                         "[default: the partition's]"),
          array_parallelism: Optional[int] = typer.Option(None, "--slurm-array-parallelism", min=1,
                                                          help="SLURM array tasks running at once "
                                                               "(slurm only) [default: no limit]"),
          runs_per_task: Optional[int] = typer.Option(None, "--slurm-runs-per-task", min=1,
                                                      help="runs one after another in one SLURM array task, "
                                                           "for short runs (slurm only) [default: 1]"),
          track: Optional[str] = typer.Option(None, "--track",
                                              help="training curves to tensorboard (DIR/tb/<run_id>/) and/or "
                                                   "mlflow, comma-separated [default: off]"),
          tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri",
                                                     help="MLflow tracking URI [default: sqlite:///DIR/mlflow.db]"),
          ) -> None:
    """Run every expected run of a grid not yet completed (rerun the same command to resume)."""
    from kdlora.executors import make_executor
    from kdlora.executors.child import resolve_run_fn
    from kdlora.sweep.progress import SweepProgress
    from kdlora.sweep.scheduler import run_sweep

    from kdlora.grid import check_budgets, expand_grid, grid_budgets, needs_teacher_selection
    from kdlora.sweep.teachers import choose_teachers

    check_results_dir(results)
    spec, runs = _load(grid)
    check_budgets(spec, grid_budgets(spec))
    check_targets(runs)
    resolve_run_fn(run_fn)  # a typo is refused here, not once per run
    from kdlora.executors.packing import parse_runs_per_gpu

    slurm_cli = {"partition": partition, "account": account, "qos": qos, "time_limit": time_limit,
                 "mem_per_run": mem_per_run, "array_parallelism": array_parallelism, "runs_per_task": runs_per_task}
    options = executor_options(executor, spec.executor, workers=workers, ray_address=ray_address,
                               gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, slurm=slurm_cli,
                               runs_per_gpu=parse_runs_per_gpu(runs_per_gpu), mps=mps)
    staged = needs_teacher_selection(spec)  # KD-LoRA students wait for the protocol's teacher choice
    if staged and results.is_dir():
        runs = expand_grid(spec, choose_teachers(spec, [results]))
    tracked = tracking_settings(track, tracking_uri)
    runs = with_tracking(runs, tracked)
    pool = make_executor(executor, results.resolve(), run_fn, options)  # refuses bad settings: nothing written yet
    try:
        pool.check_runs(runs)
    except BaseException:
        pool.close()
        raise
    results.mkdir(parents=True, exist_ok=True)
    from kdlora.grid import save_budget_sizes

    save_budget_sizes(spec, results)  # so that `kdlora report --grid` rebuilds the same runs without torch
    console = _console()
    failed = False
    while True:  # one stage, or two when students wait for the teacher choice
        pool = pool or make_executor(executor, results.resolve(), run_fn, options)  # run_sweep closes it
        try:
            with SweepProgress(len(runs)) as progress:
                outcome = run_sweep(runs, results, pool, retries=retries, on_event=progress)
        except KeyboardInterrupt:
            console.print("interrupted: runs in progress were stopped; rerun the same command to resume")
            raise typer.Exit(code=130) from None
        console.print(f"{len(outcome.skipped)} already done, {len(outcome.completed)} completed now, "
                      f"{len(outcome.failed)} failed, of {outcome.expected} expected; records in {results / 'runs'}",
                      highlight=False)
        failed = failed or bool(outcome.failed)
        pool = None
        more = expand_grid(spec, choose_teachers(spec, [results])) if staged else runs
        if {r.run_id for r in more} <= {r.run_id for r in runs}:
            break
        console.print(f"teachers chosen on the selection split: {len(more) - len(runs)} KD-LoRA runs follow",
                      highlight=False)
        runs = with_tracking(more, tracked)
    if failed:
        console.print(f"failed runs keep their reason in their record; `kdlora status {grid} --results {results}` "
                      "lists them, rerunning this command retries them", highlight=False)
        raise typer.Exit(code=1)


def tracking_settings(track: str | None, uri: str | None) -> dict:
    """--track / --tracking-uri as run-config updates (execution only: the run_ids stay the same)."""
    import importlib.util

    from kdlora.tracking import parse_track

    if track is None:
        if uri is not None:
            raise UserError("--tracking-uri needs --track mlflow")
        return {}
    try:
        names = parse_track(track)
    except ValueError as exc:
        raise UserError(f"--track: {exc}") from None
    for name in (names or "").split(","):
        if name and importlib.util.find_spec(name) is None:
            raise UserError(f"--track {name} needs {name}: pip install 'kdlora[{name}]'")
    return {"track": names, **({"tracking_uri": uri} if uri else {})}


def with_tracking(runs: list, updates: dict) -> list:
    return [r.model_copy(update=updates) for r in runs] if updates else runs


def check_targets(runs) -> None:
    """target_modules that name no module of the model are refused before anything runs."""
    chosen = {}
    for cfg in runs:
        if cfg.target_modules and cfg.variant is not None:  # a strategy with adapters
            chosen.setdefault((cfg.strategy, cfg.family, cfg.teacher_model, cfg.student_model, cfg.target_modules), cfg)
    if chosen:
        from kdlora.strategies import STRATEGIES

        for cfg in chosen.values():
            STRATEGIES.get(cfg.strategy).check(cfg)


def executor_options(executor: str, grid_section: dict, *, workers, ray_address, gpus_per_run, cpus_per_run,
                     slurm: dict, **others):
    """ExecutorOptions from the CLI options and the grid's `executor:` section; the CLI wins."""
    from kdlora.executors import EXECUTORS, ExecutorOptions, SlurmSettings
    from kdlora.executors.slurm import parse_mem, parse_time_limit

    EXECUTORS.get(executor)  # an unknown executor is named as such
    if executor != "slurm":
        given = [k for k, v in slurm.items() if v is not None]
        if given:
            flag = {"array_parallelism": "slurm-array-parallelism", "runs_per_task": "slurm-runs-per-task"}
            name = flag.get(given[0], given[0].replace("_", "-"))
            raise UserError(f"--{name} needs --executor slurm")
    merged = {k: (v if v is not None else grid_section.get(k)) for k, v in slurm.items()}

    def whole(key: str) -> int | None:
        value = merged[key]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"executor.{key} must be a whole number >= 1, not {value!r}")
        return value

    settings = SlurmSettings(
        partition=merged["partition"], account=merged["account"], qos=merged["qos"],
        time_limit_min=parse_time_limit(merged["time_limit"]) if merged["time_limit"] is not None else None,
        mem_mb=parse_mem(merged["mem_per_run"]) if merged["mem_per_run"] is not None else None,
        array_parallelism=whole("array_parallelism"), runs_per_task=whole("runs_per_task") or 1)
    gpus = gpus_per_run if gpus_per_run is not None else grid_section.get("gpus_per_run")
    cpus = cpus_per_run if cpus_per_run is not None else grid_section.get("cpus_per_run")
    return ExecutorOptions(workers=workers, ray_address=ray_address, gpus_per_run=gpus,
                           cpus_per_run=float(cpus) if cpus is not None else 1.0, slurm=settings, **others)


def _slurm_queue(table, results: Path) -> str | None:
    """Runs not completed whose SLURM job is queued or running become `queued` / `running` in the
    table; returns a line saying so (or that SLURM does not answer), None without SLURM jobs."""
    from collections import Counter

    from kdlora.executors.slurm import ACTIVE, queue_states

    if not (results / "jobs").is_dir():
        return None
    states = queue_states(results)
    if states is None:
        return "SLURM jobs: squeue and sacct do not answer here; their states are unknown"
    active = {run_id: s.state for run_id, s in states.items() if s.state in ACTIVE}
    todo = table["status"] != "completed"
    for run_id, state in active.items():
        mask = todo & (table["run_id"] == run_id)
        table.loc[mask, "status"] = "queued" if state == "PENDING" else "running"
    counts = Counter(active[r] for r in table.loc[todo, "run_id"] if r in active)
    if not counts:
        return "SLURM jobs: none queued or running"
    return "SLURM jobs: " + ", ".join(f"{n} {state.lower()}" for state, n in counts.most_common())


@user_errors
def status(grid: Path = GridArg, results: Path = ResultsOpt,
           plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG heatmap of completion"),
           missing: Optional[Path] = typer.Option(None, "--missing",
                                                  help="write the runs still to do to this CSV")) -> None:
    """Completion of a grid in a results directory: done counts, failures, what is missing."""
    from rich.table import Table

    from kdlora.sweep import status as st

    if not results.is_dir():
        raise UserError(f"results directory {str(results)!r} not found")
    from kdlora.grid import load_grid
    from kdlora.sweep.teachers import expected_runs

    spec = load_grid(grid)
    runs = expected_runs(spec, [results])  # with an FFT search: the chosen teachers' students; saved budget sizes
    table = st.run_table(runs, results)
    console = _console()
    queue_line = _slurm_queue(table, results)
    console.print(f"completion: [bold]{st.completion_line(table)}[/]", highlight=False)
    counts = table["status"].value_counts()
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
    if queue_line:
        console.print(queue_line, highlight=False)
    by_key = int((table["matched"] == "key").sum())
    if by_key:
        console.print(f"{by_key} records matched by family/task/strategy/variant/seed only: their run_id differs "
                      "from the grid's (other hyperparameters, model paths or metric policy)", highlight=False)
    for problem in table.attrs.get("unreadable", []):
        console.print(f"ignored: {problem}", highlight=False, markup=False)
    done, expected = st.done_matrix(table)
    grid_table = Table(title="done / expected by strategy x variant x task")
    grid_table.add_column("strategy")
    grid_table.add_column("variant")
    for task in done.columns:
        grid_table.add_column(str(task), justify="right")
    for (strategy, variant), row in done.iterrows():
        cells = [f"{row[t]}/{expected.loc[(strategy, variant), t]}" for t in done.columns]
        grid_table.add_row(strategy, variant, *cells)
    console.print(grid_table)
    bad = st.failures(table)
    if len(bad):  # one line each, whole, so that they can be grepped
        console.print(f"[bold red]{len(bad)} failed runs[/]:")
        for row in bad.itertuples(index=False):
            console.print(f"  {row.run_id}  {row.status}: {row.error}", highlight=False, markup=False)
    if plot is not None:
        st.plot_heatmap(table, plot)
        console.print(f"wrote {plot}")
    if missing is not None:
        n = st.write_missing(table, missing)
        console.print(f"wrote {n} runs still to do to {missing}")
