"""Facts about the GLUE validation sets the analysis needs: label counts, chance scores, and how
to recognise a run that collapsed to a constant prediction.

Label counts are those of the `nyu-mll/glue` validation splits (MNLI: validation_matched and
validation_mismatched). A constant predictor scores exactly count_c / n accuracy for some class
c, MCC 0, F1 0 (never predicts the positive class) and Pearson/Spearman 0 (kdlora's metrics
return 0 for a constant prediction). The legacy data show each of these: MRPC accuracy 279/408,
RTE 146/277, WNLI 40/71 and 31/71, CoLA MCC 0.
"""

from __future__ import annotations

import math

import numpy as np

VALIDATION_LABEL_COUNTS: dict[str, tuple[int, ...]] = {
    "cola": (322, 721),
    "sst2": (428, 444),
    "mrpc": (129, 279),
    "qqp": (25545, 14885),
    "mnli": (3479, 3123, 3213),  # validation_matched
    "mnli_mismatched": (3463, 3129, 3240),
    "qnli": (2702, 2761),
    "rte": (131, 146),
    "wnli": (40, 31),
}
# Index of the positive class whose F1 GLUE reports (MRPC: equivalent, QQP: duplicate).
POSITIVE_CLASS = {"mrpc": 1, "qqp": 1}
CORRELATION_METRICS = ("mcc", "pearson", "spearman")


def _counts(task: str, metric: str) -> tuple[int, ...] | None:
    if task == "mnli" and metric == "mismatched_accuracy":
        return VALIDATION_LABEL_COUNTS["mnli_mismatched"]
    return VALIDATION_LABEL_COUNTS.get(task)


def chance_score(task: str, metric: str) -> float:
    """Expected score of uniform random guessing; nan where unknown (custom tasks).

    accuracy: 1/k. MCC, Pearson, Spearman: 0. F1 of the positive class with rate pi under
    uniform guessing on two classes: pi / (pi + 1/2).
    """
    if metric in CORRELATION_METRICS:
        return 0.0
    counts = _counts(task, metric)
    if counts is None:
        return math.nan
    if metric in ("accuracy", "matched_accuracy", "mismatched_accuracy"):
        return 1.0 / len(counts)
    if metric == "f1" and task in POSITIVE_CLASS:
        pi = counts[POSITIVE_CLASS[task]] / sum(counts)
        return pi / (pi + 0.5)
    return math.nan


def chance_of_primary(task: str, primary_name: str) -> float:
    """Chance level of a primary metric, including the GLUE means like 'mean(accuracy,f1)'."""
    if primary_name.startswith("mean(") and primary_name.endswith(")"):
        parts = primary_name[5:-1].split(",")
        return sum(chance_score(task, p) for p in parts) / len(parts)
    return chance_score(task, primary_name)


def constant_predictor(task: str, metric: str, value: float) -> bool:
    """True if `value` is exactly what a model predicting one class (or one number) scores."""
    if value is None or math.isnan(value):
        return False
    if metric in CORRELATION_METRICS or metric == "f1":
        return abs(value) < 1e-12
    counts = _counts(task, metric)
    if counts is None or metric not in ("accuracy", "matched_accuracy", "mismatched_accuracy"):
        return False
    n = sum(counts)
    return any(abs(value - c / n) < 0.5 / n for c in counts)


def constant_predictor_mask(task: str, metric: str, values: np.ndarray) -> np.ndarray:
    """constant_predictor for many values of one task and metric at once (same comparisons)."""
    v = np.asarray(values, dtype=float)
    if metric in CORRELATION_METRICS or metric == "f1":
        return np.abs(v) < 1e-12  # nan compares False
    counts = _counts(task, metric)
    if counts is None or metric not in ("accuracy", "matched_accuracy", "mismatched_accuracy"):
        return np.zeros(v.shape, dtype=bool)
    n = sum(counts)
    return np.logical_or.reduce([np.abs(v - c / n) < 0.5 / n for c in counts])
