"""The PEFT-variant plug-in interface and its registry.

A variant turns a loaded model into one with adapters, and may ask to be called after every
optimizer step (AdaLoRA reallocates ranks there). The training loop only sees these hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdlora.registry import Registry

if TYPE_CHECKING:
    import torch.nn as nn

    from kdlora.config import RunConfig


@dataclass(frozen=True)
class AdapterTargets:
    modules: tuple[str, ...]  # linear layers that get adapters
    head: tuple[str, ...]  # classifier modules trained in full


class Variant:
    name = "base"

    def check(self, cfg: RunConfig) -> None:
        """Refuse option combinations that cannot work, before anything is loaded."""

    def apply(self, model: nn.Module, cfg: RunConfig, targets: AdapterTargets, total_steps: int) -> nn.Module:
        raise NotImplementedError

    def size_updates(self, cfg: RunConfig, size: int) -> dict:
        """The settings that give this variant adapter size `size`: what a matched parameter
        budget (param_budget, kdlora.param_budget) turns to meet the reference's count."""
        return {"r": size}

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step, before gradients are zeroed."""

    def save(self, model: nn.Module, path) -> None:
        """Write the adapter weights (safetensors) to the directory `path`."""
        model.save_pretrained(str(path), safe_serialization=True)

    def merge(self, model: nn.Module) -> nn.Module:
        """The model with adapters folded into the base weights, for inference."""
        return model.merge_and_unload()


VARIANTS: Registry[Variant] = Registry("variant")


def register(cls: type[Variant]) -> type[Variant]:
    VARIANTS.add(cls.name, cls())
    return cls
