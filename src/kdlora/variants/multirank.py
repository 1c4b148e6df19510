"""MrLoRA (multi-rank LoRA) as a variant plug-in; the method itself lives in variants/mrlora/."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kdlora.variants.base import AdapterTargets, Variant, register


def default_mrlora_ranks(r: int) -> tuple[int, ...]:
    """r, r/2, ..., 1 (the multi-rank default: [8, 4, 2, 1] for r = 8)."""
    ranks = []
    while r >= 1:
        ranks.append(r)
        r //= 2
    return tuple(ranks)


@register
class MrLora(Variant):
    name = "mrlora"
    marker = "P"
    label = "MrLoRA"
    fields = {
        "mrlora_ranks": (tuple[int, ...] | None, None, "MrLoRA's block ranks (default: r, r/2, ..., 1)"),
        "mrlora_scaling": (Literal["rank_stabilized", "standard"], "rank_stabilized",
                           "MrLoRA's block scale: alpha/sqrt(r_i) (rank_stabilized) or alpha/r_i"),
    }

    def resolve(self, data: dict) -> dict:
        if data.get("mrlora_ranks"):
            return data
        return {**data, "mrlora_ranks": default_mrlora_ranks(int(data.get("r", 8)))}

    def validate(self, cfg) -> None:
        if any(r <= 0 for r in cfg.mrlora_ranks):
            raise ValueError(f"mrlora_ranks must all be > 0 (got {list(cfg.mrlora_ranks)})")

    def apply(self, model, cfg, targets: AdapterTargets, total_steps: int):
        from kdlora.variants.mrlora import MrLoRAConfig, apply_mrlora

        mr_cfg = MrLoRAConfig(ranks=tuple(cfg.mrlora_ranks), alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                              scaling=cfg.mrlora_scaling, target_modules=targets.modules)
        return apply_mrlora(model, mr_cfg, modules_to_save=targets.head)

    def size_updates(self, cfg, size: int) -> dict:
        """The rank chain scaled to top rank `size`: size, size/2, ..., 1 ([8, 4, 2, 1] -> [16, 8, 4, 2, 1])."""
        return {"r": size, "mrlora_ranks": default_mrlora_ranks(size)}

    def layer_params(self, in_features: int, out_features: int, cfg) -> int:
        return sum(cfg.mrlora_ranks) * (in_features + out_features) + len(cfg.mrlora_ranks)  # + one lambda per block

    def save(self, model, path) -> None:
        from kdlora.variants.mrlora import save_mrlora

        Path(path).mkdir(parents=True, exist_ok=True)
        save_mrlora(model, Path(path) / "mrlora_adapter.safetensors")

    def merge(self, model):
        from kdlora.variants.mrlora import merge_mrlora

        merge_mrlora(model)
        return model

    # MrLoRA's adapter needs kdlora's layer to load: an export holds merged weights, plus these files.
    portable_adapter = False

    def load_adapter(self, model, cfg, targets: AdapterTargets, checkpoint):
        from kdlora.variants.mrlora import load_mrlora

        model = self.apply(model, cfg, targets, total_steps=1)
        load_mrlora(model, Path(checkpoint) / "mrlora_adapter.safetensors")
        return model

    def merged_model(self, model):
        self.merge(model)
        return model.unload()  # the merged base layers, without the adapter wrappers

    def export_adapter(self, model, out, base_ref: str) -> None:
        import json

        self.save(model, out)
        config = model.peft_config["default"]
        (Path(out) / "mrlora_config.json").write_text(json.dumps({
            "base_model": base_ref, "ranks": list(config.mrlora_ranks), "scales": list(config.mrlora_scales or []),
            "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
            "target_modules": sorted(config.target_modules), "modules_to_save": list(config.modules_to_save or []),
            "definition": "docs/mrlora.md of kdlora"}, indent=2))
