"""The task table: the nine GLUE tasks and custom tasks described by a small YAML file.

No torch or transformers here: the CLI validates a task before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from kdlora.data.metrics import GLUE_TASKS, METRICS, compute_metrics
from kdlora.errors import UserError

REGRESSION_METRICS = ("pearson", "spearman")
CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "mcc")
DEFAULT_EVAL = (("validation", ""),)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_fields: tuple[str, ...]
    label_field: str
    num_labels: int
    is_regression: bool
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    primary: str | None
    eval_splits: tuple[tuple[str, str], ...] = DEFAULT_EVAL
    source: str = "glue"
    files: dict = field(default_factory=dict, compare=False)
    # Custom tasks may record the validation split's majority-class accuracy (see docs/tasks.md).
    majority_baseline: float | None = None
    # A split file that is the task's own selection set (never reported): "validation" when a
    # custom task names a `test:` file, which is then the reported split.
    selection_file: str | None = None

    @property
    def is_glue(self) -> bool:
        return self.source == "glue"

    def compute_metrics(self, preds, labels, prefix: str = "") -> dict[str, float]:
        """Every metric of the task; `preds` are logits (n, k), class ids (n,) or scores (n,)/(n, 1)."""
        return compute_metrics(self.metrics, np.asarray(preds), np.asarray(labels), prefix)


def _glue(name, text_fields, label_names, metrics, eval_splits=DEFAULT_EVAL) -> TaskSpec:
    regression = label_names is None
    return TaskSpec(name=name, text_fields=text_fields, label_field="label",
                    num_labels=1 if regression else len(label_names), is_regression=regression,
                    label_names=label_names, metrics=metrics, primary=None, eval_splits=eval_splits)


# Text fields and label names follow the HF `nyu-mll/glue` dataset, so every source yields the
# same columns; loading.py maps the original TSV columns onto these.
GLUE: dict[str, TaskSpec] = {
    "cola": _glue("cola", ("sentence",), ("unacceptable", "acceptable"), ("mcc",)),
    "sst2": _glue("sst2", ("sentence",), ("negative", "positive"), ("accuracy",)),
    "mrpc": _glue("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1")),
    "qqp": _glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
    "stsb": _glue("stsb", ("sentence1", "sentence2"), None, ("pearson", "spearman")),
    "mnli": _glue("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                  ("accuracy",), (("validation_matched", "matched_"), ("validation_mismatched", "mismatched_"))),
    "qnli": _glue("qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",)),
    "rte": _glue("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": _glue("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",)),
}
assert tuple(GLUE) == GLUE_TASKS


class TaskFile(BaseModel):
    """The custom task YAML (docs/tasks.md). Unknown keys are refused so typos don't pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    train: str
    validation: str
    test: str | None = None  # given: test is the reported split and validation the selection split
    text: str | list[str]
    label: str = "label"
    labels: list[str] | None  # required: null means regression, so that is never assumed silently
    metric: str | list[str]
    primary: str | None = None
    majority_baseline: float | None = None  # written by the demo's task builder; informational

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if v.lower() in GLUE_TASKS:
            raise ValueError(f"{v!r} is a GLUE task name; give the custom task another name")
        return v

    @field_validator("text")
    @classmethod
    def _text(cls, v):
        fields = [v] if isinstance(v, str) else v
        if not 1 <= len(fields) <= 2:
            raise ValueError("give one text column or a pair, e.g. [sentence1, sentence2]")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _label_scalars(cls, v):
        if isinstance(v, list):
            if any(isinstance(x, bool) for x in v):
                raise ValueError("YAML reads yes/no/true/false/on/off as booleans; quote the label names, "
                                 "e.g. ['no', 'yes']")
            return [str(x) if isinstance(x, (int, float)) else x for x in v]
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v):
        if v is not None and (len(v) < 2 or len(set(v)) != len(v)):
            raise ValueError("give at least two distinct label names (or null for regression)")
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        names = [v] if isinstance(v, str) else v
        unknown = [n for n in names if n not in METRICS]
        if not names or unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        metrics = self.metric_names
        wrong = [m for m in metrics if m in (CLASSIFICATION_METRICS if self.labels is None else REGRESSION_METRICS)]
        if wrong:
            kind = "regression (labels: null)" if self.labels is None else "classification"
            raise ValueError(f"metric {wrong} does not fit a {kind} task")
        if self.primary is not None and self.primary not in metrics:
            raise ValueError(f"primary {self.primary!r} must be one of metric {metrics}")
        return self

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)

    @property
    def text_fields(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else tuple(self.text)


def _read_task_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"task file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise UserError(f"cannot read task file {path}: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise UserError(f"task file {path} must be a mapping with keys name, train, validation, text, "
                        "label, labels, metric, primary (see docs/tasks.md)")
    return data


def _validation_message(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(file)"
    if err["type"] == "missing":
        return f"task file {path}: missing key {key!r}; add it (see docs/tasks.md for the format)"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(TaskFile.model_fields)
        return f"task file {path}: unknown key {key!r}; allowed keys: {allowed}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"task file {path}: bad value for {key!r}: {msg}"


def load_task_file(path: str | Path) -> TaskSpec:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"task file {path} not found; --task takes a GLUE task name "
                        f"({', '.join(GLUE_TASKS)}) or the path of a task YAML")
    try:
        tf = TaskFile.model_validate(_read_task_yaml(path))
    except ValidationError as exc:
        raise UserError(_validation_message(path, exc)) from None
    files = {}
    for split in ("train", "validation") + (("test",) if tf.test else ()):
        file = (path.parent / getattr(tf, split)).resolve()
        if not file.is_file():
            raise UserError(f"task file {path}: {split} file {file} not found "
                            f"(paths are relative to the task file)")
        check_header(file)
        files[split] = str(file)
    metrics = tf.metric_names
    return TaskSpec(
        name=tf.name, text_fields=tf.text_fields, label_field=tf.label,
        num_labels=1 if tf.labels is None else len(tf.labels), is_regression=tf.labels is None,
        label_names=None if tf.labels is None else tuple(tf.labels), metrics=metrics,
        primary=tf.primary or metrics[0], eval_splits=(("test", ""),) if tf.test else DEFAULT_EVAL,
        source=str(path), files=files, majority_baseline=tf.majority_baseline,
        selection_file="validation" if tf.test else None,
    )


def check_header(path: Path) -> None:
    """Refuse a CSV/TSV whose header names a column twice (pandas would read `label.1` and train
    on the first one silently)."""
    import csv
    from collections import Counter

    delimiter = {".csv": ",", ".tsv": "\t", ".tab": "\t"}.get(path.suffix.lower())
    if delimiter is None:
        return
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f, delimiter=delimiter), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # reading the data reports it
    twice = [name for name, n in Counter(h.strip() for h in header).items() if n > 1]
    if twice:
        raise UserError(f"{path}: column {twice[0]!r} appears {Counter(h.strip() for h in header)[twice[0]]} times "
                        "in the header; give each column its own name")


def resolve_task(task: str) -> TaskSpec:
    """A GLUE task name (case-insensitive) or the path of a custom task YAML."""
    if task.lower() in GLUE:
        return GLUE[task.lower()]
    if task.endswith((".yaml", ".yml")) or Path(task).expanduser().is_file():
        return load_task_file(task)
    raise UserError(f"unknown task {task!r}; give a GLUE task ({', '.join(GLUE_TASKS)}) "
                    "or the path of a task YAML file (see docs/tasks.md)")
