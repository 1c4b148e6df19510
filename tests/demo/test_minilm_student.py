"""The minilm family's student must give its classifier something to read.

all-MiniLM-L6-v2 was trained with mean pooling. Cut to its first three layers, its [CLS] vector
was nearly constant across inputs (std ~6e-4), and KD-LoRA students stayed at the majority
class; cut to every other layer it varies ~50x more and students learn (docs/demo.md).
"""

from __future__ import annotations

import torch

from kdlora.data.tweets import read_corpus
from kdlora.models import load_classifier, load_tokenizer, model_names, student_layers


def cls_spread(layers) -> float:
    _, student = model_names("minilm", None, None)
    tok = load_tokenizer(student)
    model = load_classifier(student, 3, layers=layers).eval()
    texts = list(read_corpus()["text"].sample(64, random_state=0))
    batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        cls = model.bert(**batch).last_hidden_state[:, 0]
    return float(cls.std(0).mean())


def test_default_student_cls_varies_with_the_input():
    layers = student_layers("minilm", None)
    assert len(layers) == 3
    spread = cls_spread(layers)
    assert spread > 10 * cls_spread((0, 1, 2)), "the student's [CLS] is (nearly) the same for every tweet"
