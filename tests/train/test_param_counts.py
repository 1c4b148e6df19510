"""Trainable-parameter counts on the real architectures' shapes (random weights from their
configs) equal the published HF PEFT figures: LoRA r=8 on query/value plus the classifier head
(with DistilBERT's pre_classifier and RoBERTa's dense head layer), and the FFT totals."""

from __future__ import annotations

import pytest

from kdlora.config import build_config
from kdlora.models import count_params, head_modules, target_modules
from kdlora.variants import VARIANTS, AdapterTargets

DEBERTA_V3 = dict(relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
                  share_att_key=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                  position_biased_input=False, type_vocab_size=0, vocab_size=128100, hidden_size=768,
                  num_attention_heads=12, intermediate_size=3072, pooler_hidden_size=768)
# (config class, kwargs, LoRA trainable M, FFT total M) from ../shared/reference/ANCHORS.md
SHAPES = {
    "bert-base": ("BertConfig", {}, 0.296, 109.48),
    "roberta-base": ("RobertaConfig", dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                            pad_token_id=1), 0.887, 124.65),
    "distilbert": ("DistilBertConfig", {}, 0.740, None),
    "deberta-v3-small": ("DebertaV2Config", dict(num_hidden_layers=6, **DEBERTA_V3), 0.149, None),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_lora_and_fft_parameter_counts(shape):
    import torch
    import transformers

    cls, kwargs, lora_m, fft_m = SHAPES[shape]
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = transformers.AutoModelForSequenceClassification.from_config(
            getattr(transformers, cls)(num_labels=2, **kwargs))
    _, total = count_params(model)
    if fft_m is not None:
        assert round(total / 1e6, 2) == fft_m
    cfg = build_config(dict(family="bert", task="sst2", strategy="lora", variant="lora"))
    targets = AdapterTargets(target_modules(model), head_modules(model))
    with torch.device("meta"):
        peft_model = VARIANTS.get("lora").apply(model, cfg, targets, total_steps=10)
    trainable, _ = count_params(peft_model)
    assert round(trainable / 1e6, 3) == lora_m
