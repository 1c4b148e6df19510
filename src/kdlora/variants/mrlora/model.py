"""Put MrLoRA adapters into a model, merge them, count, save and load them.

The model returned is a PEFT PeftModel like every other variant's: PEFT freezes the base weights,
trains the adapters and the `modules_to_save` copies (the classifier head), and merges.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

from kdlora.errors import UserError
from kdlora.variants.mrlora.config import MrLoRAConfig
from kdlora.variants.mrlora.layer import MrLoraLinear, MrLoraPeftConfig

ADAPTER = "default"
META_KEY = "kdlora_mrlora"


def _matches(name: str, suffixes) -> bool:
    # PEFT's rule for a list of names: the module's full name is, or ends with, ".<name>".
    return any(name == s or name.endswith(f".{s}") for s in suffixes)


def _check_names(model: nn.Module, cfg: MrLoRAConfig, modules_to_save: tuple[str, ...]) -> None:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not any(_matches(n, cfg.target_modules) for n in linears):
        raise UserError(f"mrlora target modules {list(cfg.target_modules)} match no linear layer of "
                        f"{type(model).__name__}; its linear layers include {linears[:6]}")
    names = [n for n, _ in model.named_modules()]
    if modules_to_save and not any(_matches(n, modules_to_save) for n in names):
        raise UserError(f"modules_to_save {list(modules_to_save)} match no module of {type(model).__name__}, "
                        "so the classifier head would stay frozen; name its head module")


def _peft_config(cfg: MrLoRAConfig, modules_to_save: tuple[str, ...]) -> MrLoraPeftConfig:
    peft_cfg = MrLoraPeftConfig(
        r=sum(cfg.ranks), lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules), modules_to_save=list(modules_to_save) or None,
        mrlora_ranks=list(cfg.ranks), mrlora_scales=list(cfg.block_scales()))
    # PEFT's (experimental) hook for own LoRA layer classes: every targeted nn.Linear becomes ours.
    peft_cfg._register_custom_module({nn.Linear: MrLoraLinear})
    return peft_cfg


def apply_mrlora(model: nn.Module, cfg: MrLoRAConfig, modules_to_save: tuple[str, ...] = ()) -> nn.Module:
    """`model` wrapped with MrLoRA adapters on every targeted Linear; only adapters, lambdas and
    the modules_to_save are trainable."""
    from peft import get_peft_model

    _check_names(model, cfg, tuple(modules_to_save))
    return get_peft_model(model, _peft_config(cfg, tuple(modules_to_save)))


def _layers(model: nn.Module) -> list[MrLoraLinear]:
    layers = [m for m in model.modules() if isinstance(m, MrLoraLinear)]
    if not layers:
        raise UserError("this model has no MrLoRA adapters; call apply_mrlora first")
    return layers


def merge_mrlora(model: nn.Module) -> None:
    """Fold the adapters into the base weights (in place); forward then costs what the base does."""
    for layer in _layers(model):
        layer.merge()


def unmerge_mrlora(model: nn.Module) -> None:
    for layer in _layers(model):
        if layer.merged:
            layer.unmerge()


def count_mrlora_params(model: nn.Module) -> int:
    """Trainable parameters: sum_i r_i (in + out) + blocks per adapted layer, plus the saved head."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mrlora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Adapter weights, lambdas and modules_to_save copies; no frozen base weights."""
    from peft import get_peft_model_state_dict

    _layers(model)
    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}


def _describe(model: nn.Module) -> str:
    """What a saved file must agree with to be loadable into `model` (JSON, stored in the file)."""
    c = model.peft_config[ADAPTER]
    return json.dumps({"ranks": list(c.mrlora_ranks), "scales": list(c.mrlora_scales), "dropout": c.lora_dropout,
                       "target_modules": sorted(c.target_modules),
                       "modules_to_save": sorted(c.modules_to_save or [])}, sort_keys=True)


def save_mrlora(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter state (safetensors) atomically: temp file in the same directory + rename."""
    from safetensors.torch import save_file

    from kdlora.records.store import atomic_replace

    state, meta = mrlora_state_dict(model), {"format": "pt", META_KEY: _describe(model)}
    return atomic_replace(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_mrlora(model: nn.Module, path: str | Path) -> None:
    """Load a saved adapter into a model made by apply_mrlora with the same settings."""
    from peft import set_peft_model_state_dict
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(META_KEY)
            saved = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError) as exc:
        raise UserError(f"{path}: not a readable MrLoRA adapter file ({exc})") from None
    if meta != _describe(model):
        raise UserError(f"{path}: adapter was saved with settings {meta}, the model has {_describe(model)}; "
                        "apply_mrlora with the saved settings before loading")
    expected = {k: v.shape for k, v in mrlora_state_dict(model).items()}
    found = {k: v.shape for k, v in saved.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:4]
        raise UserError(f"{path}: adapter tensors do not fit this model (differences: {diff}); "
                        "was it saved from another architecture?")
    set_peft_model_state_dict(model, saved, adapter_name=ADAPTER)
