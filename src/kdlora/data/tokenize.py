"""Tokenisation without padding, and dataloaders that pad per batch.

Padding to max_length wastes most of the compute on short GLUE sentences; padding each batch to
its own longest example (and optionally grouping similar lengths) keeps FLOPs and throughput
figures about real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from kdlora.data.tasks import TaskSpec


def tokenize_splits(splits, tokenizer: PreTrainedTokenizerBase, spec: TaskSpec, max_length: int = 128):
    """Token ids truncated to max_length, unpadded; keeps "idx", renames "label" to "labels",
    drops the raw text and adds "length" (tokens in the example) for length-grouped batching."""

    def encode(batch: dict[str, list]) -> dict[str, Any]:
        texts = [batch[f] for f in spec.text_fields]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    import datasets

    if not isinstance(splits, datasets.DatasetDict):  # a plain {name: Dataset} works too
        splits = datasets.DatasetDict(splits)
    # keep_in_memory: never write cache files next to the user's data (it may be read-only).
    return splits.map(encode, batched=True, keep_in_memory=True,
                      remove_columns=[*spec.text_fields, "label"], desc=None)


@dataclass
class PadCollator:
    """DataCollatorWithPadding, minus the "length" helper column, with idx as a LongTensor."""

    tokenizer: PreTrainedTokenizerBase

    def __post_init__(self):
        self._pad = DataCollatorWithPadding(self.tokenizer, padding="longest", return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        features = [{k: v for k, v in f.items() if k != "length"} for f in features]
        batch = dict(self._pad(features))
        if "idx" in batch:
            batch["idx"] = batch["idx"].long()
        return batch


def _sampler(ds, batch_size: int, shuffle: bool, group_by_length: bool, generator: torch.Generator):
    if group_by_length and not shuffle:
        # evaluation: longest first, fully grouped, deterministic
        lengths = ds["length"]
        return sorted(range(len(ds)), key=lambda i: -lengths[i])
    if group_by_length:
        # transformers' sampler: random mega-batches, each sorted by length, so batches hold
        # similar lengths yet the order still changes from epoch to epoch (seeded by generator).
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return LengthGroupedSampler(batch_size, lengths=list(ds["length"]), generator=generator)
    return RandomSampler(ds, generator=generator) if shuffle else SequentialSampler(ds)


def make_dataloader(ds, tokenizer: PreTrainedTokenizerBase, batch_size: int, *, shuffle: bool, seed: int,
                    group_by_length: bool = False, drop_last: bool = False,
                    pin_memory: bool = False) -> DataLoader:
    """Batches of dicts of tensors: input_ids, attention_mask, labels, idx (and token_type_ids if
    the tokenizer makes them), each padded to the batch's longest example. The same seed gives
    the same order in every run, epoch after epoch. group_by_length without shuffle orders the
    examples longest first (for evaluation). pin_memory (for CUDA runs) puts the batches in
    page-locked memory, so that copies to the GPU with non_blocking=True do not wait."""
    generator = torch.Generator().manual_seed(seed)
    sampler = _sampler(ds, batch_size, shuffle, group_by_length, generator)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=PadCollator(tokenizer),
                      drop_last=drop_last, num_workers=0, pin_memory=pin_memory)
