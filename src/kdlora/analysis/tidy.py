"""The tidy table every analysis function takes: one row per run.

Columns: identity (run_id, family, task, seed, strategy, variant, method, status), every task
metric, `primary` / `primary_name` under the chosen policy, efficiency in absolute units
(counts, bytes, seconds, FLOPs, joules), and the run's settings: every RunConfig field in its
run_id hash, named as the field (r, lora_alpha, lr, kd_temperature, ...), empty where the field
does not apply to the run (adapter settings of an FFT run) or that the source did not record
(`assumed_settings` names them: settings of a legacy import that hold kdlora's defaults). FFT
rows have variant None and method "fft"; adapter rows have method "<strategy>:<variant>" (e.g. "kd-lora:dora").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import functools
import types
import typing

import numpy as np
import pandas as pd

from kdlora.analysis.methods import STRATEGY_LABEL, STRATEGY_ORDER, has_teacher, strategy_label  # noqa: F401
from kdlora.config import EXECUTION_FIELDS, RunConfig, build_config
from kdlora.data.metrics import GLUE_TASKS, primary_metric
from kdlora.errors import UserError
from kdlora.records.legacy import IMPORT_NOTE  # notes the legacy importer adds when it bent a rule
from kdlora.records.schema import RunRecord, as_failed_if_nonfinite
from kdlora.strategies import teacher_run_id

KEY = ("family", "task", "strategy", "variant", "seed")
METRICS = ("accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman",
           "matched_accuracy", "mismatched_accuracy")
EFFICIENCY = ("trainable_params", "total_params", "peak_memory_bytes", "peak_memory_reserved_bytes",
              "train_time_s", "train_steps", "train_samples_per_s", "train_tokens_per_s",
              "flops_measured", "flops_analytic", "hf_total_flos", "energy_j", "gpu_util_mean",
              "gpu_power_mean_w", "eval_samples_per_s", "eval_latency_ms_b32", "teacher_cache_build_s")
TEXT = ("run_id", "family", "task", "strategy", "variant", "method", "status", "primary_name",
        "memory_kind", "teacher_run_id", "source", "contended", "assumed_settings")
# The settings that define an experiment: every RunConfig field its run_id hashes, except the key.
SETTINGS = tuple(f for f in RunConfig.model_fields if f not in (*KEY, *EXECUTION_FIELDS))
COLUMNS = ("run_id", "family", "task", "seed", "strategy", "variant", "method", "status",
           *METRICS, "primary", "primary_name", "selection_primary", *EFFICIENCY, "memory_kind", "teacher_run_id",
           "source", "import_notes", "assumed_settings", "num_labels", "contended", *SETTINGS)


@dataclass
class Loaded:
    """A tidy table plus what could not be used, each reported by path or run_id."""

    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def method_of(strategy: str, variant: str | None) -> str:
    # no variant: FFT (None, or NaN where a string column of a frame holds the missing value)
    return strategy if variant is None or variant != variant else f"{strategy}:{variant}"


def method_label(method: str) -> str:
    """'kd-lora:dora' -> 'KD-LoRA dora'; 'fft' -> 'FFT'; an arm keeps its settings:
    'lora:lora r=16' -> 'LoRA-only lora r=16', 'fft: lr=1e-05' -> 'FFT lr=1e-05'."""
    base, _, settings = method.partition(" ")
    strategy, _, variant = base.partition(":")
    return " ".join(p for p in (strategy_label(strategy), variant, settings) if p)


def record_row(record: RunRecord, policy: str, source: str = "") -> dict:
    cfg, metrics = record.config, record.metrics
    task = record.task_name
    custom = None if task in GLUE_TASKS else metrics.get("primary_name")
    name, value = primary_metric(task, metrics, policy, custom)
    # record.efficiency.model_dump() without the dump: its fields and extras as they are (what is read
    # from it below is scalar: a dump would hand back the same objects)
    eff = record.efficiency.__dict__
    if record.efficiency.__pydantic_extra__:
        eff = {**eff, **record.efficiency.__pydantic_extra__}
    row = {
        "run_id": record.run_id, "family": cfg.get("family"), "task": task,
        "seed": cfg.get("seed"), "strategy": cfg.get("strategy"), "variant": cfg.get("variant"),
        "method": method_of(cfg.get("strategy"), cfg.get("variant")), "status": record.status,
        "primary": value, "primary_name": name, "memory_kind": eff.get("memory_kind"),
        "teacher_run_id": record.teacher_run_id or eff.get("teacher_run_id") or _teacher_of(cfg),
        "source": source,
    }
    # _number(value), its usual cases inlined (26 numbers per record)
    row.update({m: v if type(v := metrics.get(m)) is float else _number(v) for m in METRICS})
    row["selection_primary"] = _number(record.metrics_selection.get("primary"))  # the protocol's choosing metric
    row.update({e: v if type(v := eff.get(e)) is float else np.nan if v is None else _number(v) for e in EFFICIENCY})
    row["import_notes"] = (sum(1 for n in record.notes if n.startswith(IMPORT_NOTE)) or None) if record.notes else None
    # efficiency measured while other work loaded the host (records from before have no host_load)
    row["contended"] = (record.host_load or {}).get("contended")
    row["num_labels"] = None if task in GLUE_TASKS else num_labels_of(record)
    row.update(settings_of(cfg))
    # settings the source did not record (legacy imports): empty, never kdlora's defaults shown as facts
    assumed = [k for k in record.assumed_settings if k in SETTINGS]
    row.update(dict.fromkeys(assumed))
    row["assumed_settings"] = ",".join(assumed) or None
    return row


def num_labels_of(record: RunRecord) -> int | None:
    """A custom task's number of classes: from the record's task identity, else from its task
    YAML where that is still readable; None when neither says (the chance level is then unknown)."""
    stored = (record.task or {}).get("num_labels")
    if stored is not None:
        try:
            return int(stored)
        except (TypeError, ValueError):
            return None
    return _labels_in_task_file(str(record.config.get("task", "")))


@functools.lru_cache(maxsize=256)
def _labels_in_task_file(path: str) -> int | None:
    if not path.endswith((".yaml", ".yml")) or not Path(path).is_file():
        return None
    from kdlora.data.tasks import load_task_file

    try:
        return load_task_file(path).num_labels
    except (UserError, OSError, ValueError):
        return None




@functools.lru_cache(maxsize=None)
def hashed_settings(strategy: str | None, variant: str | None) -> tuple[str, ...]:
    """The settings a run of this strategy and variant hashes into its run_id (RunConfig's own
    canonical form decides; one unvalidated config per pair, so any record is cheap)."""
    probe = RunConfig.model_construct(family="", task="", strategy=strategy, variant=variant)
    return tuple(k for k in probe.hashed_fields() if k in SETTINGS)


def settings_of(cfg: dict) -> dict:
    """The run's settings as table cells: lists joined by commas, fields it does not hash empty."""
    keep = hashed_settings(cfg.get("strategy"), cfg.get("variant"))
    return {k: _cell(v) if isinstance(v := cfg.get(k), (list, tuple)) else v for k in keep}  # _cell, inlined


def _cell(value):
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def _numeric(annotation) -> bool:
    """int / float fields (optional or not), bool excluded."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return any(a in (int, float) for a in (typing.get_args(annotation) if union else (annotation,)))


NUMERIC_SETTINGS = tuple(f for f in SETTINGS if _numeric(RunConfig.model_fields[f].annotation))
TEXT_SETTINGS = tuple(f for f in SETTINGS if f not in NUMERIC_SETTINGS)


def _teacher_of(cfg: dict) -> str | None:
    """A record (of a strategy with a teacher) that does not name its teacher: the run its config implies."""
    strategy = cfg.get("strategy")
    if not has_teacher(strategy):
        return None
    try:
        return teacher_run_id(build_config(cfg))
    except (UserError, ValueError, TypeError):
        return None


def _number(value) -> float:
    if type(value) is float:  # the usual cases first: ~26 calls per record
        return value
    if value is None:
        return np.nan
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan


def records_to_table(records: Iterable[tuple[RunRecord, str]], policy: str) -> pd.DataFrame:
    """(record, source) pairs -> the tidy table, checked."""
    rows = [record_row(rec, policy, src) for rec, src in records]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return check_table(_typed(table))


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for col in TEXT:
        table[col] = table[col].astype(object).where(table[col].notna(), None)
    table["seed"] = pd.to_numeric(table["seed"], errors="coerce").astype("Int64")
    for col in (*METRICS, "primary", "selection_primary", *EFFICIENCY, *NUMERIC_SETTINGS):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in TEXT_SETTINGS:
        table[col] = table[col].astype(object).where(table[col].notna(), None)
    table["import_notes"] = pd.to_numeric(table["import_notes"], errors="coerce").fillna(0).astype(int)
    table["num_labels"] = pd.to_numeric(table["num_labels"], errors="coerce").astype(float)
    return table


def check_table(table: pd.DataFrame) -> pd.DataFrame:
    """Refuse a table that is not the tidy shape: missing columns, wrong types, duplicate runs."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"tidy table lacks columns {missing}")
    numeric = [c for c in (*METRICS, "primary", *EFFICIENCY) if not pd.api.types.is_float_dtype(table[c])]
    if numeric:
        raise ValueError(f"tidy table columns {numeric} must be float")
    if table["run_id"].duplicated().any():
        raise ValueError("tidy table has duplicate run_id rows")
    bad = set(table["strategy"].dropna()) - set(STRATEGY_ORDER)
    if bad:
        raise ValueError(f"unknown strategies {sorted(bad)}")
    return table


def completed(table: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished with a primary metric: the only rows any statistic uses."""
    check_table(table)
    return table[(table["status"] == "completed") & table["primary"].notna()].reset_index(drop=True)


# ----- loading ----------------------------------------------------------------------------------
def check_one_version_per_task(pairs: list[tuple[RunRecord, str]]) -> None:
    """Refuse records of two different tasks (by data fingerprint) under one name: the report
    would merge them. Version-1 and legacy records carry no fingerprint and are not compared."""
    seen: dict[str, tuple[str, str]] = {}
    for record, source in pairs:
        fingerprint = record.task_fingerprint
        if fingerprint is None:
            continue
        first = seen.setdefault(record.task_name, (fingerprint, record.run_id))
        if first[0] != fingerprint:
            raise UserError(
                f"{source}: runs {first[1]} and {record.run_id} are both of task {record.task_name!r} but over "
                "different data (its files changed, or two tasks share the name); move the records of the "
                "old data out of the results directory, or give one task another `name:`")


def load_results(paths: Iterable[str | Path], policy: str) -> Loaded:
    """Records from kdlora results directories or legacy-layout directories (detected), merged.

    A run_id seen twice keeps its first occurrence; the duplicate is reported.
    """
    from kdlora.records.legacy import is_legacy_dir, iter_legacy_records
    from kdlora.records.store import iter_records

    pairs, problems, seen = [], [], set()
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"results directory {str(path)!r} not found")
        legacy = is_legacy_dir(path)
        found = iter_legacy_records(path, problems) if legacy else iter_records(path, problems)
        for record in found:
            record, bad = as_failed_if_nonfinite(record)
            if bad:
                problems.append(f"{path}: run {record.run_id}: non-finite {', '.join(bad)}; counted as "
                                f"{record.status}, never averaged")
            if record.run_id in seen:
                problems.append(f"{path}: duplicate run_id {record.run_id} ignored")
                continue
            seen.add(record.run_id)
            pairs.append((record, f"{'legacy:' if legacy else ''}{path}"))
    check_one_version_per_task(pairs)
    if not pairs:
        where = ", ".join(str(p) for p in paths)
        raise UserError(f"no valid run records in {where}; expected RESULTS/runs/*.json "
                        "(kdlora train/sweep) or the legacy layout {fft,lora,kd-lora}/task_*/...")
    table = records_to_table(pairs, policy)
    unscored = table[(table["status"] == "completed") & table["primary"].isna()]
    for run_id, source, name in zip(unscored["run_id"], unscored["source"], unscored["primary_name"]):
        problems.append(f"{source}: run {run_id}: completed without a primary metric ({name}); not used")
    return Loaded(table, problems)
