"""Every GLUE task loads from the original TSV layout and from save_to_disk with uniform columns."""

from __future__ import annotations

import numpy as np
import pytest

from kdlora.data.loading import load_splits, read_glue_tsv
from kdlora.data.metrics import GLUE_TASKS
from kdlora.testing.synthetic_data import GLUE_DIRS
from kdlora.data.tasks import resolve_task
from kdlora.errors import UserError

EXPECTED = {  # text fields and label count, as in the GLUE benchmark
    "cola": (("sentence",), 2), "sst2": (("sentence",), 2), "mrpc": (("sentence1", "sentence2"), 2),
    "qqp": (("question1", "question2"), 2), "stsb": (("sentence1", "sentence2"), 1),
    "mnli": (("premise", "hypothesis"), 3), "qnli": (("question", "sentence"), 2),
    "rte": (("sentence1", "sentence2"), 2), "wnli": (("sentence1", "sentence2"), 2),
}


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_glue_task_loads_from_tsv_layout(glue_dir, task):
    spec = resolve_task(task)
    fields, n_labels = EXPECTED[task]
    assert spec.text_fields == fields and spec.num_labels == n_labels
    dd = load_splits(spec, str(glue_dir))
    assert list(dd) == ["train", *(s for s, _ in spec.eval_splits)]
    for split, ds in dd.items():
        assert ds.column_names == [*fields, "label", "idx"]
        assert len(ds) == (64 if split == "train" else 32)
        assert ds["idx"] == list(range(len(ds)))
        assert all(isinstance(t, str) and t for f in fields for t in ds[f])
    labels = np.array(dd["train"]["label"])
    if spec.is_regression:
        assert labels.dtype == np.float64 and labels.min() >= 0 and labels.max() <= 5
        assert len(np.unique(labels)) > 10  # real scores, not rounded to classes
    else:
        assert set(labels.tolist()) == set(range(n_labels))  # every class present, ids in range


def test_mnli_has_both_eval_splits_with_metric_prefixes():
    spec = resolve_task("mnli")
    assert spec.eval_splits == (("validation_matched", "matched_"), ("validation_mismatched", "mismatched_"))
    out = spec.compute_metrics(np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 2, 1]), prefix="matched_")
    assert out == {"matched_accuracy": 0.75}


def test_tsv_labels_follow_glue_label_ids(glue_dir):
    """String labels in the files (MNLI, QNLI, RTE) map to the HF glue ids."""
    mnli = resolve_task("mnli")
    raw = read_glue_tsv(mnli, glue_dir / "MNLI" / "dev_matched.tsv")["label"]
    loaded = load_splits(mnli, str(glue_dir))["validation_matched"]["label"]
    assert [mnli.label_names[i] for i in loaded] == raw.tolist()
    rte = resolve_task("rte")
    raw = read_glue_tsv(rte, glue_dir / "RTE" / "train.tsv")["label"]
    assert [("entailment", "not_entailment")[i] for i in load_splits(rte, str(glue_dir))["train"]["label"]] \
        == raw.tolist()


def test_cola_headerless_file_keeps_first_row(glue_dir):
    first = (glue_dir / "CoLA" / "train.tsv").read_text().splitlines()[0].split("\t")
    ds = load_splits(resolve_task("cola"), str(glue_dir))["train"]
    assert ds[0]["sentence"] == first[3] and ds[0]["label"] == int(first[1])


def test_tsv_texts_with_quotes_are_read_verbatim(tmp_path):
    """GLUE files are unquoted TSV: a bare quote must not swallow the following lines."""
    (tmp_path / "SST-2").mkdir()
    body = 'sentence\tlabel\nhe said "good\t1\nplain "quoted" text\t0\nNA\t1\n'
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "SST-2" / name).write_text(body)
    ds = load_splits(resolve_task("sst2"), str(tmp_path))["train"]
    assert ds["sentence"] == ['he said "good', 'plain "quoted" text', "NA"]
    assert ds["label"] == [1, 0, 1]


def test_subsampling_is_seeded_and_keeps_original_idx(glue_dir):
    spec = resolve_task("sst2")
    full = load_splits(spec, str(glue_dir))["train"]
    a = load_splits(spec, str(glue_dir), max_train_samples=20, max_eval_samples=8, seed=3)
    b = load_splits(spec, str(glue_dir), max_train_samples=20, max_eval_samples=8, seed=3)
    c = load_splits(spec, str(glue_dir), max_train_samples=20, seed=4)
    assert len(a["train"]) == 20 and len(a["validation"]) == 8
    assert a["train"]["idx"] == b["train"]["idx"] and a["train"]["idx"] != c["train"]["idx"]
    for row in a["train"]:  # idx points at the same example in the full split
        assert full[row["idx"]]["sentence"] == row["sentence"]
        assert full[row["idx"]]["label"] == row["label"]
    assert len(load_splits(spec, str(glue_dir), max_train_samples=10_000)["train"]) == 64


@pytest.mark.parametrize("layout", ["per_task", "itself"])
def test_save_to_disk_layout(glue_dir, tmp_path, layout):
    spec = resolve_task("mnli")
    saved = load_splits(spec, str(glue_dir))
    target = tmp_path / "mnli" if layout == "per_task" else tmp_path
    saved.remove_columns("idx").save_to_disk(str(target))  # idx is added back when absent
    dd = load_splits(spec, str(tmp_path), max_train_samples=16, seed=1)
    assert list(dd) == ["train", "validation_matched", "validation_mismatched"]
    assert dd["validation_mismatched"]["premise"] == saved["validation_mismatched"]["premise"]
    ref = load_splits(spec, str(glue_dir), max_train_samples=16, seed=1)["train"]
    assert dd["train"]["idx"] == ref["idx"]


def test_save_to_disk_of_the_wrong_task_is_refused(glue_dir, tmp_path):
    load_splits(resolve_task("sst2"), str(glue_dir)).save_to_disk(str(tmp_path / "sst2"))
    with pytest.raises(UserError, match="mrpc"):
        load_splits(resolve_task("mrpc"), str(tmp_path))


def test_missing_data_dir_says_what_layout_is_expected(tmp_path):
    with pytest.raises(UserError, match=r"RTE/train\.tsv.*dataset_dict\.json"):
        load_splits(resolve_task("rte"), str(tmp_path))


def test_missing_dev_file_is_named(glue_dir, tmp_path):
    (tmp_path / "MNLI").mkdir()
    (tmp_path / "MNLI" / "train.tsv").write_text((glue_dir / "MNLI" / "train.tsv").read_text())
    (tmp_path / "MNLI" / "dev_matched.tsv").write_text((glue_dir / "MNLI" / "dev_matched.tsv").read_text())
    with pytest.raises(UserError, match="dev_mismatched.tsv"):
        load_splits(resolve_task("mnli"), str(tmp_path))


def test_offline_hub_gives_actionable_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"data_dir=.*CoLA/train\.tsv"):
        load_splits(resolve_task("cola"))


def test_fixture_writes_every_glue_folder(glue_dir):
    assert sorted(p.name for p in glue_dir.iterdir()) == sorted(GLUE_DIRS.values())


def test_broken_tsv_lines_are_skipped_not_fatal(tmp_path):
    """Real GLUE files have a few malformed lines (QQP); they are skipped with a warning."""
    (tmp_path / "QQP").mkdir()
    head = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    body = head + "0\t1\t2\twhat a\twhy b\t1\n1\t3\t4\tbroken\n2\t5\t6\tx\ty\t0\textra\tfields\n3\t7\t8\tc\td\t0\n"
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "QQP" / name).write_text(body)
    with pytest.warns(Warning):
        ds = load_splits(resolve_task("qqp"), str(tmp_path))["train"]
    assert ds["question1"] == ["what a", "c"] and ds["label"] == [1, 0] and ds["idx"] == [0, 1]
