"""Task metrics and the primary-metric policies. Pure numpy/scipy/scikit-learn: no torch.

The analysis package imports this module, so it must stay free of torch.
"""

from __future__ import annotations

import math

from typing import Callable, Mapping, Sequence

import numpy as np

from kdlora.errors import UserError

# scipy and scikit-learn are imported inside the metric functions: `kdlora plan` and `status`
# only need the task names from here, and those two imports cost seconds at start-up.

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _as_labels(preds: np.ndarray) -> np.ndarray:
    preds = np.asarray(preds)
    return preds.argmax(axis=-1) if preds.ndim == 2 else preds


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    from sklearn import metrics as skm

    return float(skm.accuracy_score(labels, _as_labels(preds)))


def f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    from sklearn import metrics as skm

    return float(skm.f1_score(labels, _as_labels(preds), zero_division=0))


def macro_f1(preds: np.ndarray, labels: np.ndarray) -> float:
    from sklearn import metrics as skm

    return float(skm.f1_score(labels, _as_labels(preds), average="macro", zero_division=0))


def mcc(preds: np.ndarray, labels: np.ndarray) -> float:
    from sklearn import metrics as skm

    return float(skm.matthews_corrcoef(labels, _as_labels(preds)))


def _regression(preds: np.ndarray) -> np.ndarray:
    return np.asarray(preds, dtype=float).reshape(len(preds), -1)[:, 0]


def _correlation(fn: Callable, preds: np.ndarray, labels: np.ndarray) -> float:
    x, y = _regression(preds), np.asarray(labels, dtype=float)
    if np.std(x) == 0 or np.std(y) == 0:
        return 0.0  # a constant predictor has no correlation; scipy would return nan
    return float(fn(x, y)[0])


def pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    from scipy import stats

    return _correlation(stats.pearsonr, preds, labels)


def spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    from scipy import stats

    return _correlation(stats.spearmanr, preds, labels)


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: Sequence[str], preds: np.ndarray, labels: np.ndarray,
                    prefix: str = "") -> dict[str, float]:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {unknown}; choose from: {', '.join(METRICS)}")
    return {prefix + n: METRICS[n](preds, labels) for n in names}


# ----- primary metric policies --------------------------------------------------------------
# `glue`: the GLUE benchmark's own convention (and the KD-LoRA paper's).
# `legacy`: what the reference study's analysis used, so its numbers can be reproduced.
GLUE_PRIMARY = {
    "cola": ("mcc",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("matched_accuracy",),
}
LEGACY_PRIMARY = {
    "cola": ("mcc",),
    "mnli": ("matched_accuracy",),
    "stsb": ("pearson",),
}
POLICIES = {"glue": GLUE_PRIMARY, "legacy": LEGACY_PRIMARY}
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def primary_parts(task: str, policy: str) -> tuple[str, ...]:
    if policy not in POLICIES:
        raise UserError(f"unknown metric policy {policy!r}; choose glue or legacy")
    return POLICIES[policy].get(task, ("accuracy",))


def primary_metric(task: str, metrics: Mapping[str, float], policy: str = "glue",
                   custom_primary: str | None = None) -> tuple[str, float | None]:
    """(name, value) of the task's primary metric under a policy.

    GLUE tasks follow the policy; a custom task keeps the primary its task file names. A value
    that is missing from `metrics` gives None rather than a made-up number.
    """
    if task not in GLUE_TASKS:
        name = custom_primary or "accuracy"
        value = metrics.get(name)
        return name, None if value is None else float(value)
    parts = primary_parts(task, policy)
    values = [metrics.get(p) for p in parts]
    name = parts[0] if len(parts) == 1 else "mean(" + ",".join(parts) + ")"
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return name, None
    return name, sum(float(v) for v in values) / len(values)  # plain floats: called once per record
