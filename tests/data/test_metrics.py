"""TaskSpec.compute_metrics agrees with scikit-learn and scipy on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from kdlora.data.metrics import GLUE_TASKS, primary_metric
from kdlora.data.tasks import resolve_task
from kdlora.testing.synthetic_data import write_custom_task

REFERENCE = {
    "accuracy": lambda y, p: skm.accuracy_score(y, p),
    "f1": lambda y, p: skm.f1_score(y, p),
    "macro_f1": lambda y, p: skm.f1_score(y, p, average="macro"),
    "mcc": lambda y, p: skm.matthews_corrcoef(y, p),
    "pearson": lambda y, p: stats.pearsonr(p, y)[0],
    "spearman": lambda y, p: stats.spearmanr(p, y)[0],
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", GLUE_TASKS)
def test_glue_metrics_match_reference(task, seed):
    spec = resolve_task(task)
    rng = np.random.default_rng(seed)
    n = 97
    if spec.is_regression:
        labels = rng.uniform(0, 5, n)
        scores = labels + rng.normal(0, 1.5, n)
        out = spec.compute_metrics(scores[:, None], labels)  # model output shape (n, 1)
        assert out == pytest.approx({m: REFERENCE[m](labels, scores) for m in spec.metrics})
        assert spec.compute_metrics(scores, labels) == out
        return
    labels = rng.integers(0, spec.num_labels, n)
    logits = rng.normal(size=(n, spec.num_labels)) + 1.5 * np.eye(spec.num_labels)[labels]
    preds = logits.argmax(1)
    want = {m: REFERENCE[m](labels, preds) for m in spec.metrics}
    assert spec.compute_metrics(logits, labels) == pytest.approx(want)
    assert spec.compute_metrics(preds, labels) == pytest.approx(want)  # class ids work too


def test_glue_metric_names_per_task():
    names = {t: resolve_task(t).metrics for t in GLUE_TASKS}
    assert names["cola"] == ("mcc",)
    assert names["mrpc"] == names["qqp"] == ("accuracy", "f1")
    assert names["stsb"] == ("pearson", "spearman")
    assert all(names[t] == ("accuracy",) for t in ("sst2", "mnli", "qnli", "rte", "wnli"))


def test_macro_f1_on_three_classes_and_prefix(tmp_path):
    path = tmp_path / "t.yaml"
    write_custom_task(tmp_path, n_train=4, n_eval=4)
    path.write_text("name: t3\ntrain: train.csv\nvalidation: validation.csv\ntext: text\n"
                    "labels: [neg, neu, pos]\nmetric: [accuracy, macro_f1]\nprimary: macro_f1\n")
    spec = resolve_task(str(path))
    rng = np.random.default_rng(5)
    labels, preds = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    out = spec.compute_metrics(preds, labels, prefix="val_")
    assert out == pytest.approx({"val_accuracy": skm.accuracy_score(labels, preds),
                                 "val_macro_f1": skm.f1_score(labels, preds, average="macro")})
    assert primary_metric(spec.name, {"macro_f1": 0.4, "accuracy": 0.5}, custom_primary=spec.primary) \
        == ("macro_f1", 0.4)
