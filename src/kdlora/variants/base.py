"""The PEFT-variant plug-in interface and its registry.

A variant turns a loaded model into one with adapters, and may ask to be called after every
optimizer step (AdaLoRA reallocates ranks there). The training loop only sees these hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdlora.registry import Registry

# kdlora.config.RunConfig, not imported: config builds RunConfig from these plug-ins' declarations,
# so the plug-ins take a config without depending on config.py.
RunConfig = Any

if TYPE_CHECKING:
    import torch.nn as nn



@dataclass(frozen=True)
class AdapterTargets:
    modules: tuple[str, ...]  # linear layers that get adapters
    head: tuple[str, ...]  # classifier modules trained in full


# A config field a variant declares: (type, default, help); hashed only into runs of that variant.
# An optional 4th element is its valid range (low, low included, high, high included), None = open,
# checked when a config is built (config.RANGES).
FieldSpec = tuple[Any, ...]


class Variant:
    name = "base"
    label = "base"  # how reports, tables and figures name it
    fields: dict[str, FieldSpec] = {}
    # True when applying it changes the base weights (OLoRA, PiSSA): the saved adapter alone does
    # not rebuild the model from the original base checkpoint (see save()).
    changes_base_weights = False
    in_default_grid = True  # run by a grid that lists no variants (new plug-ins opt in by being listed)
    marker = ""  # its matplotlib marker in figures ("": one is picked for it)
    portable_adapter = True  # its adapter files load with plain PEFT (kdlora export writes them as they are)

    def resolve(self, data: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults that depend on other settings, before validation (returns a new dict)."""
        return data

    def validate(self, cfg: RunConfig) -> None:
        """Refuse impossible values of this variant's fields (raise ValueError)."""

    def check(self, cfg: RunConfig) -> None:
        """Refuse option combinations that cannot work, before anything is loaded."""

    def layer_params(self, in_features: int, out_features: int, cfg: RunConfig) -> int | None:
        """Trainable parameters it adds to one target linear layer (None: not stated). The
        record's count is measured; this is what the tests check the measurement against."""
        return None

    def lr_scale(self, name: str, param, cfg: RunConfig) -> float:
        """Learning-rate multiplier of the trainable parameter `name` (LoRA+ speeds up B)."""
        return 1.0

    def apply(self, model: nn.Module, cfg: RunConfig, targets: AdapterTargets, total_steps: int) -> nn.Module:
        raise NotImplementedError

    def size_updates(self, cfg: RunConfig, size: int) -> dict:
        """The settings that give this variant adapter size `size`: what a matched parameter
        budget (param_budget, kdlora.param_budget) turns to meet the reference's count."""
        return {"r": size}

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step, before gradients are zeroed."""

    def training_state(self, model: nn.Module) -> Any:
        """What, besides the trainable tensors and buffers, training changes and saving reads (a
        copy); kept with the best epoch's weights and put back with them (restore_training_state)."""
        return None

    def restore_training_state(self, model: nn.Module, state: Any) -> None:
        """Put back what training_state copied."""

    def save(self, model: nn.Module, path) -> None:
        """Write the adapter weights (safetensors) to the directory `path`."""
        model.save_pretrained(str(path), safe_serialization=True)
        if self.changes_base_weights:
            write_base_weights_note(path, self.label)

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


BASE_WEIGHTS_NOTE = "BASE_WEIGHTS.md"


def write_base_weights_note(path, label: str) -> None:
    from pathlib import Path

    from kdlora.records.store import atomic_write_text

    atomic_write_text(Path(path) / BASE_WEIGHTS_NOTE, (
        f"# {label} changed the base weights\n\n"
        f"Applying {label} replaced each target weight W by a residual (W minus its initial adapter\n"
        "product), so these adapter weights are relative to the residual, not to the original base\n"
        "checkpoint. The initialisation is a deterministic function of the original weights: to rebuild\n"
        f"the trained model, load the original base, apply {label} with the run's settings (its config is\n"
        "in the run record), then load these adapter weights over it.\n"))


VARIANTS: Registry[Variant] = Registry("variant")


def register(cls: type[Variant]) -> type[Variant]:
    VARIANTS.add(cls.name, cls())
    return cls
