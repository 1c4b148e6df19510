"""The executor contract: start runs, report how their processes ended. The scheduler does the rest.

An executor knows nothing about records, retries or dependencies: it starts a Job (one attempt of
one run) in a process of its own and later reports it Finished, with `crash` saying why the
process died, if it did. Whether the run succeeded is read from the record the run wrote.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from kdlora.config import RunConfig


@dataclass(frozen=True)
class Job:
    cfg: RunConfig
    attempt: int
    log_path: Path


@dataclass(frozen=True)
class Finished:
    job: Job
    crash: str | None  # None: the run's process ended normally (its record tells the outcome)
    seconds: float
    notes: tuple[str, ...] = ()  # what the executor did on the way (a cancelled job submitted again)


# Keys of a grid file's `executor:` section (the CLI options of the same names win over them).
GRID_EXECUTOR_KEYS = ("partition", "account", "qos", "time_limit", "mem_per_run", "cpus_per_run", "gpus_per_run",
                      "array_parallelism", "runs_per_task")


@dataclass(frozen=True)
class SlurmSettings:
    """SLURM job settings (executor slurm): from CLI options or the grid's `executor:` section."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit_min: int | None = None  # per run; an array task of several runs gets their sum
    mem_mb: int | None = None  # per run
    array_parallelism: int | None = None  # array tasks running at once (SLURM's %N)
    runs_per_task: int = 1  # runs one after another in one array task (short runs)


@dataclass(frozen=True)
class ExecutorOptions:
    workers: int | None = None  # runs at once; None: one per GPU, else 1 (local) / cluster size (ray)
    ray_address: str | None = None
    gpus_per_run: float | None = None  # None: 1 when GPUs exist, else 0 (fractions allowed on Ray)
    cpus_per_run: float = 1.0
    # Local executor: runs side by side on one GPU, K or "auto" (by free memory; executors/packing.py),
    # and whether to start a CUDA MPS daemon for them.
    runs_per_gpu: int | str | None = None
    mps: bool = False
    # Modules the local executor's fork server imports once for every run (the real runner's
    # heavy imports are added automatically when it is the run function).
    preload: tuple[str, ...] = ()
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


class Executor(ABC):
    """Runs jobs of a sweep; `capacity` is how many may run at once."""

    capacity: int

    def __init__(self, results_dir: Path, run_fn: str, options: ExecutorOptions) -> None:
        self.results_dir = Path(results_dir)
        self.run_fn = run_fn
        self.options = options

    def check_runs(self, runs: list[RunConfig]) -> None:
        """Refuse (UserError) what cannot work for these runs before any is claimed; default: nothing."""

    @abstractmethod
    def submit(self, job: Job) -> None: ...

    def admits(self, cfg: RunConfig) -> bool:
        """Whether this run may start now, beyond `capacity` (the local executor asks its GPUs'
        free memory with --runs-per-gpu auto)."""
        return True

    @abstractmethod
    def wait(self, timeout: float) -> list[Finished]:
        """Jobs that ended since the last call; waits up to `timeout` seconds for one."""

    @abstractmethod
    def close(self) -> None:
        """Stop whatever still runs (an interrupted sweep) and free resources."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
