"""Read the reference study's legacy result layout as kdlora run records.

Layout (one file per run):
    [results/]{fft|lora|kd-lora}/task_{task}_{family}_{seed}/base_{batch}_{lr}_{wd}/
        peft_{variant}_{alpha}_{dropout}_{rank}/metrics.json

What the legacy files hold, and how it is made honest here:
- `train.trainable_params_count` is in MILLIONS for every strategy: multiplied by 1e6 into a count.
- `train.memory_allocated` is a list of torch.cuda.memory_allocated() values in MB (1e6 bytes)
  read at each epoch end. It is not a peak: it is kept as bytes under
  memory_kind="epoch_end_allocated" so it is never mistaken for a real peak.
- HF's `total_flos` (6 x tokens x all parameters, even for adapters) is kept as `hf_total_flos`,
  not as a measured or analytic FLOP count.
- Settings the args and folder names do not give (max_length, warmup_ratio, kd_temperature, ...)
  take kdlora's defaults in `config` (the run_id needs a full config) and are listed in the
  record's `assumed_settings`, so the analysis never presents them as facts of the study.
- Corrupt, empty or partial files are reported by path and skipped.

No torch here: the analysis reads legacy results directly through this module.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from kdlora.config import RunConfig, build_config
from kdlora.data.metrics import primary_metric
from kdlora.errors import UserError
from kdlora.records.schema import Efficiency, RunRecord
from kdlora.records.store import atomic_write_text, write_record
from kdlora.strategies import STRATEGIES, TeacherRunIds, teacher_run_id

IMPORT_NOTE = "legacy import:"  # the report counts records with such notes (analysis/tidy.py)

STRATEGY_DIRS = {"fft": "fft", "lora": "lora", "kd-lora": "kd-lora"}  # legacy folder -> strategy
METRIC_NAMES = {
    "eval_matthews_correlation": "mcc",
    "eval_accuracy": "accuracy",
    "eval_f1": "f1",
    "eval_pearson": "pearson",
    "eval_spearmanr": "spearman",
    "eval_spearman": "spearman",
    "matched_accuracy": "matched_accuracy",
    "mismatched_accuracy": "mismatched_accuracy",
}
MB = 1_000_000  # torch.cuda.memory_allocated() / 1e6, as the legacy script logged it
MILLION = 1_000_000
RUN_DIR = re.compile(r"^task_(?P<task>[a-z0-9]+)_(?P<family>[a-z0-9]+)_(?P<seed>\d+)$")
BASE_DIR = re.compile(r"^base_(?P<batch>\d+)_(?P<lr>[^_]+)_(?P<wd>[^_]+)$")
PEFT_DIR = re.compile(r"^peft_(?P<variant>[a-z]+)_(?P<alpha>[^_]+)_(?P<dropout>[^_]+)_(?P<rank>\d+)$")
GLOB = "*/task_*/base_*/peft_*/metrics.json"
NOTES = [
    "imported from the legacy layout",
    "trainable_params converted from millions to a count",
    "memory is torch memory_allocated read at epoch end (not a peak): memory_kind=epoch_end_allocated",
]


class LegacyFormatError(ValueError):
    """One legacy file cannot be read; the message starts with its path."""


@dataclass
class ImportResult:
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason"


def legacy_root(path: str | Path) -> Path | None:
    """The folder holding fft/ lora/ kd-lora/ (the dataset folder or its results/), or None."""
    path = Path(path)
    for root in (path / "results", path):
        if root.is_dir() and any(root.glob(GLOB)):
            return root
    return None


def is_legacy_dir(path: str | Path) -> bool:
    return legacy_root(path) is not None


def legacy_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(GLOB) if p.parts[-5] in STRATEGY_DIRS)


def iter_legacy_records(path: str | Path, errors: list[str] | None = None) -> Iterator[RunRecord]:
    """Every readable legacy run under `path`; unreadable files go to `errors` as 'path: reason'."""
    root = legacy_root(path)
    if root is None:
        raise UserError(f"{path}: no legacy results found (expected {{fft,lora,kd-lora}}/{GLOB[2:]})")
    teacher_ids = TeacherRunIds()  # the study's students share one FFT teacher per family, task and seed
    for file in legacy_files(root):
        try:
            yield parse_legacy_file(file, root, teacher_ids)
        except LegacyFormatError as exc:
            if errors is not None:
                errors.append(str(exc))


def parse_legacy_file(file: Path, root: Path, teacher_ids: TeacherRunIds | None = None) -> RunRecord:
    """One legacy metrics.json as a RunRecord; LegacyFormatError names the file on any defect.
    `teacher_ids`: shared by the files of one study, so each teacher's run_id is computed once."""
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LegacyFormatError(f"{file}: unreadable or not JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or not raw:
        raise LegacyFormatError(f"{file}: empty or not a JSON object")
    try:
        return _to_record(raw, file, root, teacher_ids)
    except (KeyError, TypeError, ValueError, IndexError, UserError) as exc:
        reason = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise LegacyFormatError(f"{file}: partial or inconsistent legacy record ({reason})") from None


def _to_record(raw: dict[str, Any], file: Path, root: Path, teacher_ids: TeacherRunIds | None = None) -> RunRecord:
    where, folder = _path_fields(file)
    args, train = raw["args"], raw["train"]
    if not isinstance(args, dict):
        raise ValueError("args is not an object")
    _check_agrees(where, args)
    notes: list[str] = []
    assumed: list[str] = []
    config = _config(where, args, folder, notes, assumed)
    metrics = _metrics(raw)
    if not metrics:
        raise ValueError("no task metric (eval_* or matched_accuracy)")
    name, value = primary_metric(config.task, metrics, "legacy")
    if value is None:
        raise ValueError(f"primary metric {name} missing")
    teacher = teacher_run_id(config) if teacher_ids is None else teacher_ids(config)
    return RunRecord(
        run_id=config.run_id,
        status="completed",
        config=config.model_dump(mode="json"),
        task=config.task_identity.as_dict(),
        metrics={**metrics, "primary": value, "primary_name": name},
        efficiency=_efficiency(raw, train, teacher),
        environment={"source": "legacy", "legacy_file": str(file.relative_to(root.parent))},
        started_at="unknown",
        finished_at="unknown",
        teacher_run_id=teacher,
        assumed_settings=assumed,
        notes=NOTES + notes + ([] if teacher is None else [
            "teacher_run_id links the FFT run of the same family/task/seed and teacher settings; "
            "the legacy files do not say which teacher checkpoint was used"]),
    )


def _path_fields(file: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(the run's key, the settings its folder names spell: batch, lr, weight decay, alpha, dropout, rank)."""
    strategy_dir, run_dir, base_dir, peft_dir = file.parts[-5:-1]
    run, base, peft = RUN_DIR.match(run_dir), BASE_DIR.match(base_dir), PEFT_DIR.match(peft_dir)
    if run is None or peft is None:
        raise ValueError(f"unexpected folder names {run_dir!r} / {peft_dir!r}")
    strategy = STRATEGY_DIRS[strategy_dir]
    where = {"strategy": strategy, "task": run["task"], "family": run["family"],
             "seed": int(run["seed"]), "variant": peft["variant"] if STRATEGIES.get(strategy).uses_adapters else None}
    folder = {"lora_alpha": peft["alpha"], "lora_dropout": peft["dropout"], "rank": peft["rank"]}
    if base is not None:
        folder |= {"train_batch_size": base["batch"], "teacher_learning_rate": base["lr"], "weight_decay": base["wd"]}
    return where, folder


def _check_agrees(where: dict[str, Any], args: dict[str, Any]) -> None:
    """The folder names and the stored args must describe the same run (where args say)."""
    stored = {k: args[a] for k, a in (("task", "task"), ("family", "model_family")) if a in args}
    if "seed" in args:
        stored["seed"] = int(args["seed"])
    if where["variant"] is not None and "peft" in args:
        stored["variant"] = args["peft"]
    wrong = {k: (where[k], v) for k, v in stored.items() if where[k] != v}
    if wrong:
        raise ValueError(f"folder and args disagree on {sorted(wrong)}")


# RunConfig field <- legacy args key, and whether the field applies to FFT runs.
LEGACY_ARGS = {"epochs": ("num_train_epochs", float, True), "batch_size": ("train_batch_size", int, True),
               "weight_decay": ("weight_decay", float, True), "r": ("rank", int, False),
               "lora_alpha": ("lora_alpha", float, False), "lora_dropout": ("lora_dropout", float, False)}


def _setting(key: str, args: dict[str, Any], folder: dict[str, str], applies: bool, notes: list[str]):
    """A legacy setting from args; missing there: None if it does not apply to the run, else the
    folder name's value; each noted. Missing from both and applicable: a partial record."""
    if args.get(key) is not None:
        return args[key]
    if not applies:
        notes.append(f"{IMPORT_NOTE} {key} missing from args (it does not apply to this run)")
        return None
    if key in folder:
        notes.append(f"{IMPORT_NOTE} {key} missing from args; taken from the folder name ({folder[key]})")
        return folder[key]
    raise KeyError(key)


def _config(where: dict[str, Any], args: dict[str, Any], folder: dict[str, str], notes: list[str],
            assumed: list[str] | None = None) -> RunConfig:
    """The run's RunConfig from its args and folder names; `assumed` gets the hashed fields neither
    records (they hold kdlora's defaults, which the legacy script may not have used)."""
    strategy = STRATEGIES.get(where["strategy"])
    fft = not strategy.uses_adapters
    data: dict[str, Any] = {
        **where,
        "teacher_model": args.get("teacher_model_name"),
        "student_model": args.get("student_model_name") if strategy.trains_student else None,
        "metric_policy": "legacy",
    }
    for field, (key, kind, for_fft) in LEGACY_ARGS.items():
        value = _setting(key, args, folder, for_fft or not fft, notes)
        if value is not None:
            data[field] = kind(float(value)) if kind is int else kind(value)
    teacher_lr = _setting("teacher_learning_rate", args, folder, fft or "teacher_lr" in strategy.teacher_fields, notes)
    data["lr"] = float(teacher_lr) if fft else float(_setting("student_learning_rate", args, folder, True, notes))
    if "teacher_lr" in strategy.teacher_fields:
        data["teacher_lr"] = float(teacher_lr)
    if where["variant"] == "mrlora" and args.get("lora_ranks"):
        data["mrlora_ranks"] = tuple(int(r) for r in args["lora_ranks"])
    try:
        config = build_config(data)
    except UserError as exc:  # a finished run whose settings kdlora would refuse for a new run
        notes.append(f"{IMPORT_NOTE} settings fail kdlora's validation for a new run ({exc}); imported as recorded")
        config = _unvalidated(data)
    if assumed is not None:
        recorded = {k for k, v in data.items() if v is not None}
        assumed.extend(k for k in config.hashed_fields() if k not in recorded)
    return config


def _unvalidated(data: dict[str, Any]) -> RunConfig:
    """The RunConfig of recorded settings without the checks for new runs (defaults resolved as
    RunConfig resolves them, so its run_id and canonical form are the usual ones)."""
    resolved = RunConfig._resolve_defaults(dict(data))
    return RunConfig.model_construct(**resolved)


def _metrics(raw: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, name in METRIC_NAMES.items():
        value = raw.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"metric {key} is {value} (not a finite number)")
            out[name] = float(value)
    return out


def _efficiency(raw: dict[str, Any], train: dict[str, Any], teacher: str | None) -> Efficiency:
    summary = _train_summary(raw.get("log_history") or [])
    allocated, reserved = train.get("memory_allocated") or [], train.get("memory_reserved") or []
    return Efficiency(
        trainable_params=round(float(train["trainable_params_count"]) * MILLION),
        peak_memory_bytes=round(max(allocated) * MB) if allocated else None,
        peak_memory_reserved_bytes=round(max(reserved) * MB) if reserved else None,
        memory_kind="epoch_end_allocated" if allocated else None,
        train_time_s=float(train["train_time"]),
        train_steps=summary.get("step"),
        train_samples_per_s=summary.get("train_samples_per_second"),
        eval_samples_per_s=_eval_throughput(raw),
        teacher_run_id=teacher,
        hf_total_flos=summary.get("total_flos"),
    )


def _train_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """HF Trainer's final training entry (the one with train_runtime), or {}."""
    entries = [e for e in history if isinstance(e, dict) and "train_runtime" in e]
    return entries[-1] if entries else {}


def _eval_throughput(raw: dict[str, Any]) -> float | None:
    value = raw.get("eval_samples_per_second")
    if value is None:  # MNLI files keep evaluation only in the log history
        evals = [e for e in raw.get("log_history") or [] if "eval_samples_per_second" in e]
        value = evals[-1]["eval_samples_per_second"] if evals else None
    return None if value is None else float(value)


def import_legacy(source: str | Path, results_dir: str | Path) -> ImportResult:
    """Convert every readable legacy run under `source` into RESULTS/runs/<run_id>.json."""
    result = ImportResult()
    records = list(iter_legacy_records(source, result.skipped))
    seen: dict[str, str] = {}
    for record in records:
        where = record.environment["legacy_file"]
        if record.run_id in seen:  # two files claiming the same experiment: keep the first
            result.skipped.append(f"{where}: same experiment as {seen[record.run_id]} (run_id {record.run_id})")
            continue
        seen[record.run_id] = where
        result.written.append(write_record(results_dir, record))
    write_problems(results_dir, result.skipped)
    return result


def write_problems(results_dir: str | Path, problems: list[str]) -> Path:
    """RESULTS/problems.csv: one `problem` per line (the files not imported, and why)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["problem"])
    writer.writerows([p] for p in problems)
    return atomic_write_text(Path(results_dir) / "problems.csv", buf.getvalue())
