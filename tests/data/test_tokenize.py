"""Tokenisation pads per batch, keeps idx, and the dataloader order is seeded."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

from kdlora.data.loading import load_splits
from kdlora.testing.synthetic_data import FIXTURE_WORDS
from kdlora.data.tasks import resolve_task
from kdlora.data.tokenize import make_dataloader, tokenize_splits


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    from kdlora.testing.tiny import write_vocab

    words = write_vocab(tmp_path_factory.mktemp("tok") / "vocab.txt", FIXTURE_WORDS).read_text().split()
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    assert tok.unk_token_id not in tok("good movie")["input_ids"]
    return tok


@pytest.fixture(scope="module")
def varied(tokenizer):
    """200 sentences of 1..60 words: lengths vary a lot, so padding strategy matters."""
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(FIXTURE_WORDS, size=int(rng.integers(1, 61)))) for _ in range(200)]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"sentence": texts, "label": [i % 2 for i in range(200)], "idx": list(range(200))})})
    return tokenize_splits(dd, tokenizer, resolve_task("sst2"), max_length=128)["train"]


def test_columns_truncation_and_lengths(glue_dir, tokenizer):
    spec = resolve_task("mrpc")
    tok = tokenize_splits(load_splits(spec, str(glue_dir)), tokenizer, spec, max_length=10)
    ds = tok["train"]
    assert set(ds.column_names) == {"idx", "input_ids", "token_type_ids", "attention_mask", "labels", "length"}
    assert ds["idx"] == list(range(64))
    assert all(len(ids) == n <= 10 for ids, n in zip(ds["input_ids"], ds["length"]))
    assert max(ds["length"]) == 10  # pairs longer than 10 tokens were truncated, not dropped
    assert set(ds["labels"]) == {0, 1}


def test_regression_labels_stay_float(glue_dir, tokenizer):
    spec = resolve_task("stsb")
    loader = make_dataloader(tokenize_splits(load_splits(spec, str(glue_dir)), tokenizer, spec)["train"],
                             tokenizer, 16, shuffle=False, seed=0)
    batch = next(iter(loader))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].max() > 1.0


def test_batches_are_padded_to_their_longest_example(varied, tokenizer):
    lengths = dict(zip(varied["idx"], varied["length"]))
    widths = []
    for batch in make_dataloader(varied, tokenizer, 16, shuffle=True, seed=0):
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "idx"}
        assert batch["idx"].dtype == torch.long
        want = [lengths[i] for i in batch["idx"].tolist()]
        assert batch["input_ids"].shape[1] == max(want)
        assert batch["attention_mask"].sum(1).tolist() == want
        widths.append(batch["input_ids"].shape[1])
    assert len(set(widths)) > 1 and max(widths) < 128  # not padded to max_length


def _batch_ids(loader):
    return [b["idx"].tolist() for b in loader]


def test_same_seed_same_order_every_epoch(varied, tokenizer):
    a = make_dataloader(varied, tokenizer, 16, shuffle=True, seed=7)
    b = make_dataloader(varied, tokenizer, 16, shuffle=True, seed=7)
    first_a, first_b = _batch_ids(a), _batch_ids(b)
    assert first_a == first_b
    assert _batch_ids(a) == _batch_ids(b) != first_a  # epoch 2: new order, still reproducible
    assert _batch_ids(make_dataloader(varied, tokenizer, 16, shuffle=True, seed=8)) != first_a
    assert sorted(sum(first_a, [])) == list(range(200))


def test_group_by_length_batches_have_similar_lengths(varied, tokenizer):
    lengths = dict(zip(varied["idx"], varied["length"]))

    def spread(loader):
        return np.mean([np.ptp([lengths[i] for i in b]) for b in _batch_ids(loader)])

    grouped = make_dataloader(varied, tokenizer, 8, shuffle=True, seed=1, group_by_length=True)
    plain = make_dataloader(varied, tokenizer, 8, shuffle=True, seed=1)
    order = _batch_ids(grouped)
    assert sorted(sum(order, [])) == list(range(200))
    assert spread(grouped) < spread(plain) / 4
    again = make_dataloader(varied, tokenizer, 8, shuffle=True, seed=1, group_by_length=True)
    assert _batch_ids(again) == order
    assert _batch_ids(make_dataloader(varied, tokenizer, 8, shuffle=True, seed=2, group_by_length=True)) != order


def test_eval_grouping_is_longest_first_and_complete(varied, tokenizer):
    loader = make_dataloader(varied, tokenizer, 32, shuffle=False, seed=0, group_by_length=True)
    widths = [b["input_ids"].shape[1] for b in loader]
    assert widths == sorted(widths, reverse=True)
    assert sorted(sum(_batch_ids(loader), [])) == list(range(200))
    assert _batch_ids(make_dataloader(varied, tokenizer, 32, shuffle=False, seed=0))[0] == list(range(32))


def test_drop_last(varied, tokenizer):
    sizes = [len(b) for b in _batch_ids(make_dataloader(varied, tokenizer, 64, shuffle=True, seed=0,
                                                        drop_last=True))]
    assert sizes == [64, 64, 64]


def test_plain_dict_of_splits_is_accepted(glue_dir, tokenizer):
    spec = resolve_task("rte")
    train = load_splits(spec, str(glue_dir), max_train_samples=10, seed=2)["train"]
    out = tokenize_splits({"train": train}, tokenizer, spec)["train"]
    assert out["idx"] == train["idx"] and out["labels"] == train["label"]
