"""Quick run functions for sweep tests: they stand in for kdlora.runner:run_one (same signature,
same record contract) so that the scheduler, executors and claims are tested in seconds.

They are found by dotted path ("sweep_fake_runs:quick") in worker processes and Ray workers;
tests put this directory on PYTHONPATH. FAKE_SLEEP sets how long a run takes.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from kdlora.checkpoints import checkpoint_dir, fingerprint
from kdlora.config import RunConfig
from kdlora.records import Efficiency, RunRecord, write_record
from kdlora.records.store import load_completed
from kdlora.strategies import teacher_of, teacher_run_id

STARTS = "starts.log"


def _log_start(cfg: RunConfig, results: Path) -> None:
    line = f"{cfg.run_id} {os.environ.get('FAKE_PHASE', '-')} {time.time():.6f} {os.getpid()}\n"
    fd = os.open(results / STARTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def write(cfg: RunConfig, results: Path, status: str = "completed", error: str | None = None) -> RunRecord:
    teacher = teacher_run_id(cfg)
    weights = None
    if status == "completed":  # a stand-in checkpoint, fingerprinted as the real runner does
        ckpt = checkpoint_dir(results, cfg.run_id)
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "model.safetensors").write_text(cfg.run_id)
        weights = fingerprint(ckpt)
    record = RunRecord(weights_fingerprint=weights,
        run_id=cfg.run_id, status=status, error=error, config=cfg.model_dump(mode="json"),
        metrics={"accuracy": 0.5, "primary": 0.5, "primary_name": "accuracy"} if status == "completed" else {},
        efficiency=Efficiency(train_time_s=float(os.environ.get("FAKE_SLEEP", "0.05"))),
        environment={"host": socket.gethostname(), "pid": os.getpid(),
                     "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")},
        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:01+00:00",
        teacher_run_id=teacher)
    write_record(results, record)
    return record


def quick(cfg: RunConfig, results: Path) -> RunRecord:
    """Sleep FAKE_SLEEP seconds and complete; a KD run refuses to start without its teacher."""
    results = Path(results)
    _log_start(cfg, results)
    if cfg.strategy == "kd-lora" and load_completed(results, teacher_of(cfg).run_id) is None:
        raise RuntimeError("teacher record missing: the scheduler started a KD run too early")
    print(f"training {cfg.run_id}", flush=True)
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0.05")))
    return write(cfg, results)


def dying(cfg: RunConfig, results: Path) -> RunRecord:
    """dora runs die: LoRA-only with os._exit(3), KD-LoRA by SIGKILL; the rest complete."""
    if cfg.variant == "dora":
        _log_start(cfg, Path(results))
        if cfg.strategy == "lora":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)
    return quick(cfg, results)


def failing_teacher(cfg: RunConfig, results: Path) -> RunRecord:
    if cfg.strategy == "fft":
        raise RuntimeError("boom")
    return quick(cfg, results)


def flaky(cfg: RunConfig, results: Path) -> RunRecord:
    """Fails the first attempt of every run (a marker file remembers), succeeds after."""
    marker = Path(results) / "flaky" / cfg.run_id
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("x")
        raise RuntimeError("flaky first attempt")
    return quick(cfg, results)


def oom_until_accum_4(cfg: RunConfig, results: Path) -> RunRecord:
    """Reports CUDA out of memory (as the real runner does) until the micro-batch is a quarter."""
    if cfg.grad_accum < 4:
        _log_start(cfg, Path(results))
        return write(cfg, Path(results), status="oom",
                     error=f"OutOfMemoryError: CUDA out of memory (micro-batch {cfg.micro_batch_size})")
    return quick(cfg, results)


def diverging(cfg: RunConfig, results: Path) -> RunRecord:
    if cfg.strategy == "lora":
        _log_start(cfg, Path(results))
        return write(cfg, Path(results), status="nan_loss", error="loss became nan at step 3")
    return quick(cfg, results)


def slow_first(cfg: RunConfig, results: Path) -> RunRecord:
    """The first start of the runs named in FAKE_SLOW_FIRST ("strategy/variant" or "fft", comma
    separated) sleeps FAKE_SLOW seconds (a run to cancel or time out); every other start is quick."""
    name = cfg.strategy if cfg.strategy == "fft" else f"{cfg.strategy}/{cfg.variant}"
    marker = Path(results) / "slow_first" / cfg.run_id
    if name in os.environ.get("FAKE_SLOW_FIRST", "").split(",") and not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(os.environ.get("SLURM_JOB_ID", "-"))
        _log_start(cfg, Path(results))
        time.sleep(float(os.environ.get("FAKE_SLOW", "600")))
        raise RuntimeError("the slow first start was not interrupted")
    return quick(cfg, results)
