"""Seeding every random number generator a run uses: a leaf module, so that the engine and any
strategy that reseeds (KD-LoRA, after loading its teacher) can both use it without importing
each other."""

from __future__ import annotations


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)  # python, numpy, torch (and CUDA) RNGs, before any initialisation
