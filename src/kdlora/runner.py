"""run_one(config) -> RunRecord: one experiment from data to a record on disk.

Order of work: validate (bad input raises UserError and writes nothing), load and tokenise data,
let the strategy build model and loss, train under the memory and energy meters (counting the
first step's FLOPs), evaluate (timing inference), save weights, write the record atomically. Failures
during training become records with their reason: failed, oom or nan_loss, kept distinct.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

from kdlora.config import RunConfig
from kdlora.errors import UserError
from kdlora.host import environment, host_load, host_snapshot, now
from kdlora.records import Efficiency, RunRecord, write_record
from kdlora.records.schema import as_failed_if_nonfinite
from kdlora.tracking import Tracking

CHECKPOINTS_DIR = "checkpoints"


def validate(cfg: RunConfig):
    """Everything that can be refused before loading anything; returns the task spec."""
    from kdlora.data.tasks import resolve_task
    from kdlora.models import FAMILIES
    from kdlora.strategies import STRATEGIES

    FAMILIES.get(cfg.family)
    STRATEGIES.get(cfg.strategy).check(cfg)
    spec = resolve_task(cfg.task)
    if spec.selection_file and cfg.selection_fraction > 0:
        raise UserError(f"task {spec.name} names a test file, so its {spec.selection_file} file is the selection "
                        "split; leave selection_fraction at 0")
    sized_to_budget(cfg, spec)  # an unmeetable param_budget is refused here
    return spec


def sized_to_budget(cfg: RunConfig, spec) -> RunConfig:
    """cfg with its adapter sized to its param_budget (itself without one, or once sized)."""
    from kdlora.strategies import STRATEGIES

    if cfg.param_budget is None or not STRATEGIES.get(cfg.strategy).uses_adapters:
        return cfg
    from kdlora.param_budget import resolve

    return resolve(cfg, spec.num_labels)[0]


def pick_device(cfg: RunConfig):
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA GPU is visible; use --set device=cpu")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def quiet_libraries() -> None:
    """Per-map and per-shard progress bars would drown the sweep's own progress display, and
    PEFT's calls of deprecated transformers helpers warn on every run (not actionable here)."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def run_one(cfg: RunConfig, results_dir: str | Path) -> RunRecord:
    """Train and evaluate one run; write and return its record (bad input raises UserError)."""
    from kdlora.train.engine import execute

    quiet_libraries()
    results_dir = Path(results_dir)
    spec = validate(cfg)
    cfg = sized_to_budget(cfg, spec)  # a grid's runs are sized already: then unchanged
    started = now()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg)
    # num_labels: the analysis's chance level (1/k) for a custom task's normalised score
    task = {**cfg.task_identity.as_dict(), "num_labels": str(spec.num_labels)}
    base = dict(run_id=cfg.run_id, config=cfg.model_dump(mode="json"), task=task,
                environment=environment(device), started_at=started)
    tracking = Tracking(cfg, results_dir)  # TensorBoard / MLflow when the run asks (track); else nothing
    start = host_snapshot()  # what else the machine was doing, so contended timings are marked
    try:
        try:
            outcome = execute(cfg, spec, results_dir, device, callbacks=tracking.callbacks)
        except UserError:
            raise
        except Exception as exc:  # recorded with its reason; the sweep goes on
            record = RunRecord(**base, status=failure_status(exc), error=describe(exc), metrics={},
                               efficiency=Efficiency(), finished_at=now(), host_load=host_load(start, host_snapshot()))
        else:
            record = RunRecord(**base, status="completed", error=None, finished_at=now(),
                               host_load=host_load(start, host_snapshot()), **outcome)
            record, _ = as_failed_if_nonfinite(record)  # a NaN/inf metric is no result: failed, with the reason
        tracking.finish(record, write_record(results_dir, record))
    finally:
        tracking.close()
    return record


def failure_status(exc: BaseException) -> str:
    import torch

    from kdlora.train.loop import NanLoss

    if isinstance(exc, NanLoss):
        return "nan_loss"
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom"
    return "failed"


def describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {os.path.basename(last[0].filename)}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
