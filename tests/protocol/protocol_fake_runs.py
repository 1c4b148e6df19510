"""A fake run for protocol tests: completes at once with a selection score that peaks at one
learning rate per strategy (FFT at 2e-5, adapters at 1e-3), so the selection is known in advance."""

from __future__ import annotations

import math
from pathlib import Path

from kdlora.config import RunConfig
from kdlora.records import Efficiency, RunRecord, write_record
from kdlora.records.store import load_completed
from kdlora.strategies import teacher_run_id

BEST_LR = {"fft": 2e-5, "lora": 1e-3, "kd-lora": 1e-3}


def score(cfg: RunConfig) -> float:
    return 0.9 - 0.1 * abs(math.log10(cfg.lr / BEST_LR[cfg.strategy])) + 0.001 * cfg.seed


def scored(cfg: RunConfig, results: Path) -> RunRecord:
    results = Path(results)
    if cfg.strategy == "kd-lora" and load_completed(results, teacher_run_id(cfg)) is None:
        raise RuntimeError("teacher record missing")
    s = score(cfg)
    record = RunRecord(
        run_id=cfg.run_id, status="completed", config=cfg.model_dump(mode="json"),
        metrics={"accuracy": s - 0.05, "primary": s - 0.05, "primary_name": "accuracy"},
        metrics_selection={"accuracy": s, "primary": s, "primary_name": "accuracy"},
        efficiency=Efficiency(train_time_s=0.01, trainable_params=1000, total_params=10_000),
        environment={}, started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:01+00:00",
        teacher_run_id=teacher_run_id(cfg))
    write_record(results, record)
    return record
