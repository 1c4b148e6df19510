"""Shared test set-up: offline, one torch thread, tiny models built from configs.

Tiny-model tests run with one torch thread: on a busy 2-core machine two threads are far slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

# Words the synthetic fixture data are made of; the tiny tokenizers' vocabulary. The list lives
# in kdlora.testing.synthetic_data (the fixture writer) so data and vocabulary cannot drift apart.
from kdlora.testing.synthetic_data import FIXTURE_WORDS  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """Tiny random BERT, RoBERTa, DistilBERT and DeBERTa-v2 checkpoints on disk."""
    from kdlora.testing.tiny import TINY_ARCHS, build_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: build_tiny_model(arch, root / arch, FIXTURE_WORDS) for arch in TINY_ARCHS}


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch
    except ImportError:  # the analysis tests never need torch
        yield
        return
    torch.set_num_threads(1)
    yield
