"""The fixture data are learnable, so training tests can expect a falling loss."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from kdlora.data.loading import load_splits
from kdlora.data.metrics import GLUE_TASKS
from kdlora.testing.synthetic_data import FIXTURE_WORDS, write_custom_task
from kdlora.data.tasks import resolve_task

CLASSIFICATION = [t for t in GLUE_TASKS if t != "stsb"]


def _joined(ds, fields):
    return [" || ".join(parts) for parts in zip(*(ds[f] for f in fields))]


@pytest.mark.parametrize("task", CLASSIFICATION)
def test_bag_of_words_learns_each_glue_fixture(glue_dir, task):
    spec = resolve_task(task)
    dd = load_splits(spec, str(glue_dir))
    vec = CountVectorizer(token_pattern=r"[^ |]+").fit(_joined(dd["train"], spec.text_fields))
    clf = LogisticRegression(max_iter=1000).fit(vec.transform(_joined(dd["train"], spec.text_fields)),
                                                dd["train"]["label"])
    for split, _ in spec.eval_splits:
        acc = clf.score(vec.transform(_joined(dd[split], spec.text_fields)), dd[split]["label"])
        assert acc >= 0.8, (task, split, acc)


def test_stsb_scores_follow_word_overlap(glue_dir):
    ds = load_splits(resolve_task("stsb"), str(glue_dir))["train"]
    overlap = [len(set(a.split()) & set(b.split())) for a, b in zip(ds["sentence1"], ds["sentence2"])]
    assert stats.pearsonr(overlap, ds["label"])[0] > 0.8


def test_texts_use_only_the_fixture_vocabulary(glue_dir, tmp_path):
    words = set(FIXTURE_WORDS)
    for task in GLUE_TASKS:
        spec = resolve_task(task)
        ds = load_splits(spec, str(glue_dir))["train"]
        assert {w for f in spec.text_fields for t in ds[f] for w in t.split()} <= words
    spec = resolve_task(str(write_custom_task(tmp_path, n_train=50, n_eval=10, pair=True)))
    assert {w for f in spec.text_fields for t in load_splits(spec)["train"][f] for w in t.split()} <= words


def test_fixture_is_seeded(tmp_path):
    from kdlora.testing.synthetic_data import write_glue_fixture

    a = write_glue_fixture(tmp_path / "a", tasks=("rte",), seed=1)
    b = write_glue_fixture(tmp_path / "b", tasks=("rte",), seed=1)
    c = write_glue_fixture(tmp_path / "c", tasks=("rte",), seed=2)
    text = lambda root: (root / "RTE" / "train.tsv").read_text()  # noqa: E731
    assert text(a) == text(b) != text(c)
    assert np.mean([r.endswith("\tentailment") for r in text(a).splitlines()[1:]]) == pytest.approx(0.5, abs=0.2)
