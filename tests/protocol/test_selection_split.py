"""The selection split: the same examples for every run of a task, never trained on, the only
split that chooses (best epoch), and the reported split never read for it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from kdlora.config import build_config
from kdlora.data.loading import SELECTION, load_splits, selection_rows
from kdlora.testing.synthetic_data import write_custom_task, write_glue_fixture
from kdlora.data.tasks import resolve_task
from kdlora.errors import UserError
from kdlora.runner import run_one
from kdlora.strategies import teacher_of


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_fixture(tmp_path_factory.mktemp("glue"), tasks=("sst2", "stsb"), n_train=120, n_eval=40)


def test_selection_rows_are_stratified_and_fixed():
    labels = np.array([0] * 80 + [1] * 20)
    rows = selection_rows(labels, 0.1, stratify=True)
    assert len(rows) == 10 and (labels[rows] == 1).sum() == 2  # each class keeps its share
    assert rows.tolist() == selection_rows(labels, 0.1, stratify=True).tolist()
    assert len(selection_rows(np.zeros(7), 0.5, stratify=False)) == 4


@pytest.mark.parametrize("task", ["sst2", "stsb"])
def test_selection_is_the_same_for_every_seed_and_disjoint_from_train(glue_dir, task):
    spec = resolve_task(task)
    a = load_splits(spec, str(glue_dir), seed=1, selection_fraction=0.25, max_train_samples=60)
    b = load_splits(spec, str(glue_dir), seed=2, selection_fraction=0.25)
    assert a[SELECTION]["idx"] == b[SELECTION]["idx"] and len(a[SELECTION]) == 30
    assert not set(a[SELECTION]["idx"]) & set(a["train"]["idx"])
    assert not set(b[SELECTION]["idx"]) & set(b["train"]["idx"])
    assert len(b["train"]) + len(b[SELECTION]) == 120
    assert SELECTION not in load_splits(spec, str(glue_dir))


def test_max_eval_samples_draws_the_same_subset_for_every_seed(glue_dir):
    spec = resolve_task("sst2")
    a = load_splits(spec, str(glue_dir), seed=1, max_eval_samples=10)
    b = load_splits(spec, str(glue_dir), seed=7, max_eval_samples=10)
    assert a["validation"]["idx"] == b["validation"]["idx"] and len(a["validation"]) == 10


def with_test_file(root, flip: bool = False):
    """A custom task whose test file is its validation file's texts with fresh labels."""
    path = write_custom_task(root, n_train=96, n_eval=48, seed=4)
    test = pd.read_csv(root / "validation.csv")
    rng = np.random.default_rng(9)
    test["label"] = rng.choice(["negative", "positive"], len(test))
    if flip:
        test["label"] = test["label"].map({"negative": "positive", "positive": "negative"})
    test.to_csv(root / "test.csv", index=False)
    task = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**task, "test": "test.csv"}))
    return path


def test_task_with_test_file_reports_test_and_selects_on_validation(tmp_path):
    spec = resolve_task(str(with_test_file(tmp_path)))
    assert spec.eval_splits == (("test", ""),) and spec.selection_file == "validation"
    dd = load_splits(spec)
    assert set(dd) == {"train", "test", SELECTION} and len(dd[SELECTION]) == 48


def lora_cfg(model_dir, task, **extra):
    data = dict(family="bert", task=str(task), strategy="lora", variant="lora", seed=3, teacher_model=str(model_dir),
                epochs=3, batch_size=16, lr=6e-2, select_best_epoch=True)
    return build_config({**data, **extra})


def test_flipping_reported_labels_changes_metrics_not_selection(tiny_model_dirs, tmp_path):
    """Selection never reads the reported split: flipping every reported label leaves the best
    epoch and metrics_selection as they were, while metrics change."""
    runs = []
    for flip in (False, True):
        task = with_test_file(tmp_path / f"flip{flip}", flip=flip)
        rec = run_one(lora_cfg(tiny_model_dirs["bert"], task), tmp_path / f"results{flip}")
        assert rec.status == "completed", rec.error
        runs.append(rec)
    plain, flipped = runs
    assert plain.metrics_selection == flipped.metrics_selection
    assert plain.best_epoch == flipped.best_epoch is not None
    assert plain.metrics["accuracy"] == pytest.approx(1 - flipped.metrics["accuracy"])
    assert len(plain.history) == 3 and {"accuracy", "selection_accuracy"} <= set(plain.history[0])
    best = plain.history[plain.best_epoch - 1]
    assert best["selection_primary"] == max(h["selection_primary"] for h in plain.history)
    assert plain.metrics["accuracy"] == pytest.approx(best["accuracy"])
    assert plain.metrics_last_epoch["accuracy"] == pytest.approx(plain.history[-1]["accuracy"])


def test_selection_fraction_run_records_both_splits(tiny_model_dirs, glue_dir, tmp_path):
    cfg = lora_cfg(tiny_model_dirs["bert"], "sst2", data_dir=str(glue_dir), selection_fraction=0.2, epochs=2)
    rec = run_one(cfg, tmp_path)
    assert rec.status == "completed", rec.error
    on_disk = json.loads((tmp_path / "runs" / f"{rec.run_id}.json").read_text())
    assert {"accuracy", "primary", "primary_name"} <= set(on_disk["metrics_selection"])
    assert on_disk["best_epoch"] in (1, 2)
    assert build_config(on_disk["config"]).run_id == rec.run_id


def test_protocol_defaults_keep_old_run_ids():
    base = dict(family="bert", task="sst2", strategy="lora")
    old = build_config(base)
    assert "selection_fraction" not in old.canonical()
    assert build_config({**base, "selection_fraction": 0.1}).run_id != old.run_id


def test_teacher_shares_the_selection_split():
    kd = build_config(dict(family="bert", task="sst2", strategy="kd-lora", selection_fraction=0.1,
                           select_best_epoch=True))
    teacher = teacher_of(kd)
    assert teacher.selection_fraction == 0.1 and teacher.select_best_epoch


@pytest.mark.parametrize("extra,match", [
    ({"selection_fraction": 0.6}, "selection_fraction must be in"),
    ({"selection_fraction": -0.1}, "selection_fraction must be in"),
    ({"select_best_epoch": True}, "select_best_epoch needs a selection split"),
])
def test_bad_protocol_values_are_one_line(extra, match):
    with pytest.raises(UserError, match=match):
        build_config(dict(family="bert", task="sst2", strategy="lora", **extra))


def test_kd_student_never_sees_the_selection_set(tiny_model_dirs, glue_dir, tmp_path):
    """Teacher and students of any seed share one selection set; the teacher-logit cache (the
    examples a KD-LoRA student trains on) holds none of its ids."""
    from safetensors.torch import load_file

    spec = resolve_task("sst2")
    ids = []
    for seed in (5, 6):
        kd = build_config(dict(family="bert", task="sst2", strategy="kd-lora", variant="lora", seed=seed,
                               data_dir=str(glue_dir), teacher_model=str(tiny_model_dirs["bert"]),
                               student_model=str(tiny_model_dirs["distilbert"]), epochs=1, batch_size=16,
                               teacher_epochs=1, selection_fraction=0.2))
        assert run_one(teacher_of(kd), tmp_path).status == "completed"
        rec = run_one(kd, tmp_path)
        assert rec.status == "completed", rec.error and rec.metrics_selection
        for cfg in (kd, teacher_of(kd)):
            ids.append(load_splits(spec, cfg.data_dir, seed=cfg.seed, max_train_samples=cfg.max_train_samples,
                                   selection_fraction=cfg.selection_fraction)[SELECTION]["idx"])
    assert all(i == ids[0] for i in ids) and ids[0]
    caches = list((tmp_path / "teacher_logits").glob("*.safetensors"))
    assert len(caches) == 2
    for cache in caches:
        trained = set(load_file(str(cache))["idx"].tolist())
        assert len(trained) == 120 - len(ids[0]) and not trained & set(ids[0])


@pytest.mark.parametrize("sets,match", [
    (["select_best_epoch=true"], "select_best_epoch needs a selection split"),
    (["selection_fraction=0.7"], "selection_fraction must be in"),
    (["param_budget={reference: lora, r: 8, tolerance: 0.001}"], "comes within"),
])
def test_train_refuses_bad_protocol_input_writing_nothing(tiny_model_dirs, glue_dir, tmp_path, sets, match):
    from typer.testing import CliRunner

    from kdlora.cli import app

    args = ["train", "--family", "bert", "--task", "sst2", "--strategy", "lora", "--variant", "dora",
            "--results", str(tmp_path / "results"), "--set", f"teacher_model={tiny_model_dirs['bert']}",
            "--set", f"data_dir={glue_dir}"]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and match in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()
