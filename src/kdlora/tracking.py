"""Training curves in the tools people already use: `track: tensorboard` and/or `track: mlflow`.

Off by default (the run config's execution-only `track` field, `kdlora sweep --track ...`); each is an
optional extra (`pip install 'kdlora[tensorboard]'` / `'kdlora[mlflow]'`).

- tensorboard: event files in RESULTS/tb/<run_id>/ (torch.utils.tensorboard): train/loss and
  train/lr per optimizer step, epoch/<name> per epoch (train_loss and per-epoch metrics),
  final/<metric> at the last step.
- mlflow: one MLflow run per kdlora run, named by its run_id, in experiment "kdlora" at
  `tracking_uri` (default sqlite:///RESULTS/mlflow.db): the run config as params, the same metrics
  (step metrics sent in batches at epoch ends, not one request per step) and the record file as an
  artifact. Writes to a local sqlite store are serialised across processes by a lock file.

A run is tracked afresh each time it runs (a retried run's earlier curves are replaced). Tracking
never fails a run: a tracker that breaks says so in the run's log and is dropped.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

TRACKERS = ("tensorboard", "mlflow")
TB_DIR = "tb"
MLFLOW_EXPERIMENT = "kdlora"
BATCH = 900  # MLflow takes at most 1000 metrics per log_batch


def parse_track(value: str | None) -> str | None:
    """"tensorboard,mlflow" (any order, spaces, repeats) -> canonical string, or None; bad names raise ValueError."""
    if value is None:
        return None
    names = sorted({n.strip().lower() for n in str(value).replace(" ", ",").split(",") if n.strip()})
    bad = [n for n in names if n not in TRACKERS and n != "none"]
    if bad:
        raise ValueError(f"unknown tracker {bad[0]!r}; choose from {', '.join(TRACKERS)}")
    names = [n for n in names if n != "none"]
    return ",".join(names) or None


def default_tracking_uri(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def _numeric(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _epoch_values(logged: set[tuple[int, str]], epoch: int, entry: dict[str, Any]) -> list[tuple[str, float]]:
    """An epoch entry's numbers not logged yet (each (epoch, name) once)."""
    out = []
    for key, value in _numeric({k: v for k, v in entry.items() if k != "epoch"}).items():
        if (epoch, key) not in logged:
            logged.add((epoch, key))
            out.append((key, value))
    return out


def _warn(what: str) -> None:
    print(f"kdlora tracking: {what}; training goes on without it", file=sys.stderr, flush=True)


class TensorBoardTracker:
    def __init__(self, cfg, results_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(results_dir) / TB_DIR / cfg.run_id
        shutil.rmtree(self.dir, ignore_errors=True)  # this attempt's curves only
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.last_step = 0
        self.logged: set[tuple[int, str]] = set()

    def on_step(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.last_step = step

    def on_epoch(self, epoch: int, entry: dict[str, Any]) -> None:
        for key, value in _epoch_values(self.logged, epoch, entry):
            self.writer.add_scalar(f"epoch/{key}", value, epoch)

    def finish(self, record, record_file: Path) -> None:
        for entry in record.history:  # the last epoch's metrics come from the final evaluation
            self.on_epoch(int(entry.get("epoch", 0)), entry)
        step = record.efficiency.train_steps or self.last_step
        for key, value in _numeric(record.metrics).items():
            self.writer.add_scalar(f"final/{key}", value, step)
        self.writer.add_text("run", f"{record.run_id}: {record.status}" + (f" ({record.error})" if record.error else ""),
                             step)

    def close(self) -> None:
        self.writer.close()


class MlflowTracker:
    def __init__(self, cfg, results_dir: Path, uri: str | None) -> None:
        import mlflow
        from filelock import FileLock
        from mlflow.tracking import MlflowClient

        self.uri = uri or default_tracking_uri(results_dir)
        local_db = self.uri.startswith("sqlite:///")
        lock_path = Path(self.uri.removeprefix("sqlite:///") + ".lock") if local_db else None
        self.lock = FileLock(str(lock_path)) if lock_path else None
        self.mlflow = mlflow
        with self._locked():
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
                MLFLOW_EXPERIMENT, artifact_location=(Path(results_dir).resolve() / "mlartifacts").as_uri()
                if local_db else None)
            for old in self.client.search_runs([exp_id], f"tags.mlflow.runName = '{cfg.run_id}'"):
                self.client.delete_run(old.info.run_id)  # this attempt's run only
            run = self.client.create_run(exp_id, run_name=cfg.run_id, tags={"kdlora.run_id": cfg.run_id})
            self.run_id = run.info.run_id
            params = [mlflow.entities.Param(k, json.dumps(v) if not isinstance(v, str) else v)
                      for k, v in sorted(cfg.model_dump(mode="json").items())]
            self.client.log_batch(self.run_id, params=params)
        self.buffer: list = []
        self.logged: set[tuple[int, str]] = set()

    def _locked(self):
        import contextlib

        return self.lock if self.lock is not None else contextlib.nullcontext()

    def _metric(self, key: str, value: float, step: int) -> None:
        self.buffer.append(self.mlflow.entities.Metric(key, value, int(time.time() * 1000), step))

    def _flush(self) -> None:
        with self._locked():
            while self.buffer:
                chunk, self.buffer = self.buffer[:BATCH], self.buffer[BATCH:]
                self.client.log_batch(self.run_id, metrics=chunk)

    def on_step(self, step: int, values: dict[str, float]) -> None:
        for key, value in _numeric(values).items():
            self._metric(key, value, step)

    def on_epoch(self, epoch: int, entry: dict[str, Any]) -> None:
        for key, value in _epoch_values(self.logged, epoch, entry):
            self._metric(f"epoch/{key}", value, epoch)
        self._flush()

    def finish(self, record, record_file: Path) -> None:
        for entry in record.history:  # the last epoch's metrics come from the final evaluation
            for key, value in _epoch_values(self.logged, int(entry.get("epoch", 0)), entry):
                self._metric(f"epoch/{key}", value, int(entry.get("epoch", 0)))
        step = record.efficiency.train_steps or 0
        for key, value in _numeric(record.metrics).items():
            self._metric(f"final/{key}", value, step)
        self._flush()
        with self._locked():
            self.client.log_artifact(self.run_id, str(record_file))
            self.client.set_tag(self.run_id, "kdlora.status", record.status)
            self.client.set_terminated(self.run_id, "FINISHED" if record.status == "completed" else "FAILED")

    def close(self) -> None:
        if self.buffer:
            self._flush()


class Tracking:
    """The trackers a run asked for, as the loop's callbacks; a tracker that breaks is dropped."""

    def __init__(self, cfg, results_dir: Path) -> None:
        self.trackers: list[Any] = []
        names = (parse_track(getattr(cfg, "track", None)) or "").split(",")
        for name in filter(None, names):
            try:
                if name == "tensorboard":
                    self.trackers.append(TensorBoardTracker(cfg, results_dir))
                else:
                    self.trackers.append(MlflowTracker(cfg, results_dir, getattr(cfg, "tracking_uri", None)))
            except ImportError as exc:
                _warn(f"{name} is not installed ({exc}); pip install 'kdlora[{name}]'")
            except Exception as exc:  # noqa: BLE001 - tracking never fails a run
                _warn(f"{name} could not start: {type(exc).__name__}: {exc}")

    @property
    def callbacks(self) -> list:
        return [self] if self.trackers else []

    def _each(self, method: str, *args) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001
                _warn(f"{type(tracker).__name__}.{method} failed: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                self.trackers.remove(tracker)

    def on_step(self, step: int, values: dict[str, float]) -> None:
        self._each("on_step", step, values)

    def on_epoch(self, epoch: int, entry: dict[str, Any]) -> None:
        self._each("on_epoch", epoch, entry)

    def finish(self, record, record_file: Path) -> None:
        self._each("finish", record, record_file)

    def close(self) -> None:
        self._each("close")
