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
    portable_adapter = True  # its adapter files load with plain PEFT (kdlora export writes them as they are)

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

    # ----- export (kdlora.export) -----------------------------------------------------------
    def load_adapter(self, model: nn.Module, cfg: RunConfig, targets: AdapterTargets, checkpoint) -> nn.Module:
        """The trained run again: `model` (the base it trained on) with the adapter saved in `checkpoint`."""
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(checkpoint))

    def merged_model(self, model: nn.Module) -> nn.Module:
        """A plain transformers model with the adapter folded in (no adapter modules left)."""
        return self.merge(model)

    def export_adapter(self, model: nn.Module, out, base_ref: str) -> None:
        """Write the adapter files to `out`, naming `base_ref` (a hub id or a path relative to
        `out`) as their base model."""
        import json
        from pathlib import Path

        model.save_pretrained(str(out), safe_serialization=True)
        config = Path(out) / "adapter_config.json"
        data = json.loads(config.read_text())
        data["base_model_name_or_path"] = base_ref
        config.write_text(json.dumps(data, indent=2, sort_keys=True))


VARIANTS: Registry[Variant] = Registry("variant")


def register(cls: type[Variant]) -> type[Variant]:
    VARIANTS.add(cls.name, cls())
    return cls
