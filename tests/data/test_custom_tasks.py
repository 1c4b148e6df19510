"""Custom tasks: the task YAML contract, CSV/TSV/JSONL files, and one clear error per mistake."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kdlora.data.loading import load_splits
from kdlora.testing.synthetic_data import write_custom_task
from kdlora.data.tasks import resolve_task
from kdlora.errors import UserError

REVIEWS2 = """\
name: reviews2
train: train.csv
validation: validation.csv
text: text
label: label
labels: [negative, positive]
metric: [accuracy, f1]
primary: accuracy
"""


def _write(folder, name, frame: pd.DataFrame):
    path = folder / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".tsv"):
        frame.to_csv(path, sep="\t", index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


@pytest.fixture
def reviews(tmp_path):
    train = pd.DataFrame({"text": ["good film", "bad film", "great plot"], "label": [1, 0, 1]})
    val = pd.DataFrame({"text": ["awful", "fine"], "label": [0, 1]})
    _write(tmp_path, "train.csv", train)
    _write(tmp_path, "validation.csv", val)
    (tmp_path / "task.yaml").write_text(REVIEWS2)
    return tmp_path


def test_reviews2_yaml_works_as_written(reviews):
    spec = resolve_task(str(reviews / "task.yaml"))
    assert (spec.name, spec.text_fields, spec.num_labels, spec.is_regression) == ("reviews2", ("text",), 2, False)
    assert spec.metrics == ("accuracy", "f1") and spec.primary == "accuracy" and not spec.is_glue
    dd = load_splits(spec)
    assert dd["train"]["text"] == ["good film", "bad film", "great plot"]
    assert dd["train"]["label"] == [1, 0, 1] and dd["validation"]["idx"] == [0, 1]


def test_task_path_relative_to_the_current_directory(reviews, monkeypatch):
    monkeypatch.chdir(reviews.parent)
    assert resolve_task(f"{reviews.name}/task.yaml").files["train"] == str(reviews / "train.csv")


def test_label_names_in_the_file_map_to_ids(reviews):
    _write(reviews, "train.csv", pd.DataFrame({"text": ["a", "b", "c"], "label": ["positive", "negative", "1"]}))
    assert load_splits(resolve_task(str(reviews / "task.yaml")))["train"]["label"] == [1, 0, 1]


def test_generated_single_task_is_the_reviews2_contract(tmp_path):
    path = write_custom_task(tmp_path, n_train=20, n_eval=10)
    assert path.read_text() == REVIEWS2
    dd = load_splits(resolve_task(str(path)))
    assert len(dd["train"]) == 20 and set(dd["train"]["label"]) == {0, 1}


def test_pair_task(tmp_path):
    spec = resolve_task(str(write_custom_task(tmp_path, n_train=30, n_eval=10, pair=True)))
    assert spec.text_fields == ("sentence1", "sentence2")
    dd = load_splits(spec)
    assert dd["train"].column_names == ["sentence1", "sentence2", "label", "idx"]


def test_regression_task_keeps_float_labels(tmp_path):
    spec = resolve_task(str(write_custom_task(tmp_path, n_train=30, n_eval=10, regression=True)))
    assert spec.is_regression and spec.num_labels == 1 and spec.label_names is None
    labels = load_splits(spec)["train"]["label"]
    assert any(x != round(x) for x in labels)
    assert spec.metrics == ("pearson", "spearman") and spec.primary == "pearson"


@pytest.mark.parametrize("ext", ["tsv", "jsonl"])
def test_tsv_and_jsonl_files(tmp_path, ext):
    train = pd.DataFrame({"q": ["a b", "c d", "e f"], "a": ["x", "y", "z"], "y": ["no", "yes", "no"]})
    _write(tmp_path, f"train.{ext}", train)
    _write(tmp_path, f"dev.{ext}", train.iloc[:2])
    (tmp_path / "t.yaml").write_text(f"name: qa\ntrain: train.{ext}\nvalidation: dev.{ext}\ntext: [q, a]\n"
                                     "label: y\nlabels: ['no', 'yes']\nmetric: accuracy\n")
    spec = resolve_task(str(tmp_path / "t.yaml"))
    assert spec.primary == "accuracy"  # defaults to the first metric
    dd = load_splits(spec)
    assert dd["train"]["q"] == ["a b", "c d", "e f"] and dd["train"]["a"] == ["x", "y", "z"]
    assert dd["train"]["label"] == [0, 1, 0]


def test_numeric_label_names_are_text(reviews):
    (reviews / "task.yaml").write_text(REVIEWS2.replace("[negative, positive]", "[0, 1]"))
    spec = resolve_task(str(reviews / "task.yaml"))
    assert spec.label_names == ("0", "1") and load_splits(spec)["train"]["label"] == [1, 0, 1]


def test_jsonl_numeric_labels(tmp_path):
    rows = [{"text": "a", "label": 2}, {"text": "b", "label": 0}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text("name: three\ntrain: d.jsonl\nvalidation: d.jsonl\ntext: text\n"
                                     "labels: [a, b, c]\nmetric: [accuracy, macro_f1]\n")
    assert load_splits(resolve_task(str(tmp_path / "t.yaml")))["train"]["label"] == [2, 0]


# ----- errors: one line that names the problem and the fix ---------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda y: y.replace("name: reviews2\n", ""), r"missing key 'name'"),
    (lambda y: y + "epochs: 3\n", r"unknown key 'epochs'.*allowed keys"),
    (lambda y: y.replace("metric: [accuracy, f1]", "metric: [accuracy, auc]"), r"'metric'.*auc.*choose from"),
    (lambda y: y.replace("primary: accuracy", "primary: mcc"), r"primary 'mcc' must be one of"),
    (lambda y: y.replace("labels: [negative, positive]", "labels: null"), r"does not fit a regression"),
    (lambda y: y.replace("labels: [negative, positive]", "labels: [only]"), r"'labels'.*two distinct"),
    (lambda y: y.replace("text: text", "text: [a, b, c]"), r"'text'.*pair"),
    (lambda y: y.replace("name: reviews2", "name: sst2"), r"GLUE task name"),
    (lambda y: y.replace("labels: [negative, positive]\n", ""), r"missing key 'labels'"),
    (lambda y: y.replace("[negative, positive]", "[no, yes]"), r"'labels'.*quote the label names"),
    (lambda y: "name: [unclosed\n", r"not valid YAML"),
    (lambda y: "- just\n- a list\n", r"must be a mapping"),
])
def test_bad_yaml_is_a_user_error(reviews, edit, message):
    (reviews / "task.yaml").write_text(edit(REVIEWS2))
    with pytest.raises(UserError, match=message) as err:
        resolve_task(str(reviews / "task.yaml"))
    assert "\n" not in str(err.value) and "task.yaml" in str(err.value)


def test_missing_data_file_is_named(reviews):
    (reviews / "validation.csv").unlink()
    with pytest.raises(UserError, match=r"validation file .*validation\.csv not found.*relative to the task"):
        resolve_task(str(reviews / "task.yaml"))


def test_missing_task_file_and_unknown_task():
    with pytest.raises(UserError, match="not found"):
        resolve_task("nowhere/task.yaml")
    with pytest.raises(UserError, match=r"unknown task 'imdb'.*cola"):
        resolve_task("imdb")


def test_missing_column_lists_the_columns_present(reviews):
    _write(reviews, "train.csv", pd.DataFrame({"review": ["a"], "label": [1]}))
    with pytest.raises(UserError, match=r"\['text'\] not found \(columns present: \['review', 'label'\]\)"):
        load_splits(resolve_task(str(reviews / "task.yaml")))


@pytest.mark.parametrize("labels", [["positive", "meh"], [0, 2], [1, ""]])
def test_bad_labels_are_named(reviews, labels):
    _write(reviews, "train.csv", pd.DataFrame({"text": ["a", "b"], "label": labels}))
    with pytest.raises(UserError, match=r"train\.csv: labels .* are neither label names"):
        load_splits(resolve_task(str(reviews / "task.yaml")))


def test_regression_needs_numbers(tmp_path):
    path = write_custom_task(tmp_path, n_train=5, n_eval=5, regression=True)
    _write(tmp_path, "train.csv", pd.DataFrame({"text": ["a"], "label": ["high"]}))
    with pytest.raises(UserError, match=r"regression labels must be numbers; found \['high'\]"):
        load_splits(resolve_task(str(path)))


def test_unsupported_extension(reviews):
    (reviews / "train.parquet").write_text("x")
    (reviews / "task.yaml").write_text(REVIEWS2.replace("train.csv", "train.parquet"))
    with pytest.raises(UserError, match=r"unsupported file type '\.parquet'"):
        load_splits(resolve_task(str(reviews / "task.yaml")))
