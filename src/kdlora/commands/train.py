"""`kdlora train`: one run, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdlora.commands.common import check_results_dir, user_errors
from kdlora.strategies import STRATEGIES, ordered_strategies, teacher_of
from kdlora.variants import VARIANTS

STRATEGY_HELP = ", ".join(s.name + ("" if s.label.lower() == s.name else f" ({s.label})") for s in ordered_strategies())
VARIANT_HELP = ", ".join(VARIANTS)
NO_VARIANT = ", ".join(s.name for s in ordered_strategies() if not s.uses_adapters)


@user_errors
def train(
    family: str = typer.Option(..., help="Model family: bert, roberta, deberta or minilm (offline)."),
    task: str = typer.Option(..., help="A GLUE task name (cola, sst2, ...) or the path of a task YAML."),
    strategy: str = typer.Option(..., help=f"One of: {STRATEGY_HELP}."),
    variant: Optional[str] = typer.Option(None, help=f"One of: {VARIANT_HELP} (default lora; not for {NO_VARIANT})."),
    seed: Optional[int] = typer.Option(None, help="Random seed (model init, adapters, data order) [default: 42]."),
    results: Path = typer.Option(..., help="Results directory; the record goes to RESULTS/runs/<run_id>.json."),
    config: Optional[Path] = typer.Option(None, help="YAML file of run settings (hyperparameters, model paths)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a setting: key=value (repeatable)."),
    train_teacher: bool = typer.Option(False, help="Strategies with a teacher (" + ", ".join(
        s.name for s in ordered_strategies() if s.teacher_strategy) + "): train the teacher run first if it is missing."),
) -> None:
    """Train one experiment and write its run record."""
    from kdlora.config import build_config, parse_overrides, read_yaml
    from kdlora.errors import UserError

    check_results_dir(results)
    overrides = parse_overrides(set_)
    flags = {"family": family, "task": task, "strategy": strategy, "seed": seed, "variant": variant}
    for key, value in flags.items():
        if value is not None and key in overrides and overrides[key] != value:
            raise UserError(f"--set {key}={overrides[key]} contradicts --{key} {value}; give {key} once")
    data = read_yaml(config) if config else {}
    data.update(family=family, task=resolve_task_arg(task), strategy=strategy,
                seed=seed if seed is not None else overrides.get("seed", 42))
    takes_variant = strategy not in STRATEGIES or STRATEGIES.get(strategy).uses_adapters
    if variant is not None:
        data["variant"] = variant
    elif takes_variant and "variant" not in data:
        data["variant"] = "lora"
    data.update({k: v for k, v in overrides.items() if k != "task"})
    cfg = build_config(data)
    if not takes_variant and variant not in (None, "none"):
        typer.echo(f"note: --variant {variant} is ignored for {strategy} (no adapters)", err=True)
    run_cli(cfg, results, train_teacher)


def resolve_task_arg(task: str) -> str:
    """Task files are stored by absolute path, so the run_id does not depend on the cwd."""
    p = Path(task)
    return str(p.resolve()) if p.suffix in (".yaml", ".yml") or p.exists() else task


def run_cli(cfg, results: Path, train_teacher: bool) -> None:
    from kdlora.runner import run_one, validate

    validate(cfg)
    teacher = teacher_of(cfg)
    if teacher is not None and train_teacher:
        train_teacher_if_needed(teacher, results, run_one)
    record = run_one(cfg, results)
    summarize(record, results)
    if record.status != "completed":
        raise typer.Exit(code=1)


def train_teacher_if_needed(teacher, results: Path, run_one) -> None:
    """Train the FFT teacher unless a verified one is there; one process at a time per teacher
    (the others wait, then find it done)."""
    from kdlora.checkpoints import teacher_lock, teacher_problem

    def waiting() -> None:
        typer.echo(f"waiting for the FFT teacher {teacher.run_id}: another process is training it")

    with teacher_lock(results, teacher.run_id, waiting):
        record, problem = teacher_problem(results, teacher.run_id)
        if problem is None:
            return
        why = "first" if record is None and problem == "no record" else f"again: {problem}"
        typer.echo(f"training the FFT teacher {teacher.run_id} {why}")
        summarize(run_one(teacher, results), results)


def summarize(record, results: Path) -> None:
    from rich.console import Console

    from kdlora.records.store import record_path

    console = Console()
    eff = record.efficiency
    if record.status == "completed":
        m = record.metrics
        console.print(f"[bold]{record.run_id}[/] completed: {m['primary_name']} = {m['primary']:.4f}; "
                      f"trainable {eff.trainable_params:,} of {eff.total_params:,} params; "
                      f"train {eff.train_time_s:.1f} s")
    else:
        console.print(f"[bold red]{record.run_id} {record.status}[/]: {record.error}")
    console.print(f"record: {record_path(results, record.run_id)}")
