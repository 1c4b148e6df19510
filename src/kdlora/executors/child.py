"""What runs inside a run's own process (a local child or a Ray worker): one run, its log, and a
record whatever happens.

The run function is named by a dotted path ("package.module:function") so that it can be
resolved in any process, including a Ray worker on another machine. It takes (RunConfig,
results_dir) and writes RESULTS/runs/<run_id>.json; kdlora.runner:run_one is the real one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterator

from kdlora.config import RunConfig
from kdlora.errors import UserError
from kdlora.records import Efficiency, RunRecord, record_path, write_record
from kdlora.host import now
from kdlora.strategies import teacher_run_id

DEFAULT_RUN_FN = "kdlora.runner:run_one"
LOGS_DIR = "logs"

RunFn = Callable[[RunConfig, Path], object]


def resolve_run_fn(path: str) -> RunFn:
    """Import "package.module:function" (or "package.module.function")."""
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(f"cannot import run function {path!r} ({exc}); give it as package.module:function") from None
    if not callable(fn):
        raise UserError(f"run function {path!r} is not callable")
    return fn


def log_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / LOGS_DIR / f"{run_id}.log"


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors too, so C libraries and
    subprocesses land there as well) to `path`, restoring them afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def failure_record(cfg: RunConfig, reason: str, status: str = "failed", started_at: str | None = None,
                   notes: list[str] | None = None) -> RunRecord:
    """The record of a run that could not leave its own (its process died, its teacher failed)."""
    return RunRecord(run_id=cfg.run_id, status=status, error=reason, config=cfg.model_dump(mode="json"),
                     task=cfg.task_identity.as_dict(), metrics={}, efficiency=Efficiency(),
                     environment={"host": socket.gethostname(), "python": sys.version.split()[0]},
                     started_at=started_at or now(), finished_at=now(),
                     teacher_run_id=teacher_run_id(cfg),
                     notes=notes or [])


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]


def execute_run(run_fn: str, cfg_json: str, results_dir: str, log_file: str, attempt: int = 1) -> None:
    """Run one run with its output in its log; a run function that raises still leaves a record."""
    cfg = RunConfig.model_validate_json(cfg_json)
    started = now()
    with output_to(Path(log_file)):
        print(f"=== kdlora run {cfg.run_id} attempt {attempt} on {socket.gethostname()} pid {os.getpid()} "
              f"at {started} (micro-batch {cfg.micro_batch_size} x grad_accum {cfg.grad_accum})", flush=True)
        try:
            resolve_run_fn(run_fn)(cfg, Path(results_dir))
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the run gets a record
            traceback.print_exc()
            if not record_path(results_dir, cfg.run_id).exists():
                write_record(results_dir, failure_record(cfg, describe(exc), started_at=started))
        # SystemExit / KeyboardInterrupt propagate: the process's exit is the outcome (the
        # scheduler records "exited with code N"; an interrupted sweep reruns the run later).
        print(f"=== finished at {now()}", flush=True)
