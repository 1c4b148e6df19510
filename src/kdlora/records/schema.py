"""The run record: one JSON file per run, the contract between training and analysis.

Units are absolute and the same for every strategy: parameter counts are counts, memory is
bytes, time is seconds, FLOPs are FLOPs, energy is joules. A measurement that could not be
taken is null, never a guess. See docs/record-schema.md.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

# 2: run_ids hash the task's identity (name + data fingerprint), not its path; records carry it
# in `task`. Version-1 records (no `task`) are still read; their task name comes from the config.
SCHEMA_VERSION = 2
RunStatus = Literal["completed", "failed", "oom", "nan_loss"]


class Efficiency(BaseModel):
    model_config = ConfigDict(extra="allow")

    trainable_params: int | None = None
    total_params: int | None = None
    # Peak memory during training. CUDA: max_memory_allocated / max_memory_reserved after a
    # reset. CPU: growth of the process's peak RSS over the training phase.
    peak_memory_bytes: int | None = None
    peak_memory_reserved_bytes: int | None = None
    memory_kind: Literal["cuda_max_allocated", "cpu_peak_rss_growth", "epoch_end_allocated"] | None = None
    train_time_s: float | None = None  # optimisation only; evaluation excluded
    train_steps: int | None = None
    train_samples: int | None = None  # examples seen (epochs included)
    train_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None  # non-padding tokens
    flops_measured: float | None = None  # FlopCounterMode on the first training step, scaled by tokens
    flops_analytic: float | None = None  # 6·N·D full, 4·N·D + 6·N_trainable·D adapters
    flops_method: str | None = None
    energy_j: float | None = None
    gpu_util_mean: float | None = None
    gpu_power_mean_w: float | None = None
    eval_samples_per_s: float | None = None
    eval_latency_ms_b32: float | None = None  # median forward ms of the evaluation's batches of 32
    # KD-LoRA: the teacher's side of the cost, kept apart from the student's training time.
    teacher_run_id: str | None = None
    teacher_cache_build_s: float | None = None
    teacher_cache_hit: bool | None = None


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    status: RunStatus
    error: str | None = None
    config: dict[str, Any]
    metrics: dict[str, Any]  # every task metric, plus `primary` and `primary_name`
    # The evaluation protocol (docs/protocol.md): the same metrics on the selection set (empty
    # without one); with select_best_epoch, the epoch whose weights `metrics` are from, and the
    # last epoch's metrics on both splits.
    metrics_selection: dict[str, Any] = {}
    best_epoch: int | None = None
    metrics_last_epoch: dict[str, Any] = {}
    metrics_selection_last_epoch: dict[str, Any] = {}
    param_budget_ratio: float | None = None  # param_budget: trainable params / the reference's
    efficiency: Efficiency
    environment: dict[str, Any]
    started_at: str
    finished_at: str
    teacher_run_id: str | None = None
    # load average at start and end, CPUs kept busy by other work, contended (kdlora.host.host_load)
    host_load: dict[str, Any] | None = None
    weights_fingerprint: str | None = None  # sha256 over the checkpoint folder's files (checkpoints.py)
    task: dict[str, str] | None = None  # {"name", "fingerprint", "num_labels"} (data/identity.py); None in version 1
    history: list[dict[str, Any]] = []  # per-epoch loss / eval, when asked for
    # Settings (RunConfig fields) the source did not record: `config` holds kdlora's defaults for
    # them, assumed for re-running, not facts of the run (runs imported from the legacy layout).
    assumed_settings: list[str] = []
    notes: list[str] = []  # e.g. "oom retry: micro-batch 16 x 2 accumulation"

    @property
    def task_name(self) -> str:
        """The task's name: from its identity (version 2) or, for older records, its config."""
        from kdlora.slugs import slug, task_slug

        name = (self.task or {}).get("name")
        return slug(name) if name else task_slug(str(self.config.get("task", "")))

    @property
    def task_fingerprint(self) -> str | None:
        return (self.task or {}).get("fingerprint")


def nonfinite(values: dict[str, Any], prefix: str = "") -> list[str]:
    """'name=value' for every NaN or infinite number in `values` (JSON would write them as null,
    and an average would take them in)."""
    return [f"{prefix}{k}={v}" for k, v in values.items()
            if isinstance(v, float) and not math.isfinite(v)]


def record_nonfinite(record: RunRecord) -> list[str]:
    """The non-finite metrics and efficiency figures of a record."""
    eff = record.efficiency
    if _all_finite(record.metrics, record.metrics_selection, eff.__dict__, eff.__pydantic_extra__ or {}):
        return []  # the usual case, answered without dumping the efficiency (its fields and extras)
    return (nonfinite(record.metrics) + nonfinite(record.metrics_selection, "selection ")
            + nonfinite(record.efficiency.model_dump(), "efficiency."))


def _all_finite(*dicts: dict[str, Any]) -> bool:
    """No float value in `dicts` is NaN or infinite (nonfinite() of each would be empty)."""
    return all(map(math.isfinite, [v for values in dicts for v in values.values() if isinstance(v, float)]))


def as_failed_if_nonfinite(record: RunRecord) -> tuple[RunRecord, list[str]]:
    """A completed record with NaN/inf numbers becomes a failed one naming them (they are set to
    None); anything else is returned as it is."""
    bad = record_nonfinite(record)
    if not bad or record.status != "completed":
        return record, bad
    def clean(values: dict[str, Any]) -> dict[str, Any]:
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}

    return record.model_copy(update={
        "status": "failed", "error": f"non-finite result: {', '.join(bad)}", "metrics": clean(record.metrics),
        "metrics_selection": clean(record.metrics_selection),
        "efficiency": Efficiency(**clean(record.efficiency.model_dump()))}), bad
