"""LoRA and its HF PEFT relatives that differ only in LoraConfig: rsLoRA, OLoRA, DoRA."""

from __future__ import annotations

from typing import Any

from kdlora.variants.base import AdapterTargets, Variant, register


class PeftLoraVariant(Variant):
    extra: dict[str, Any] = {}

    def layer_params(self, in_features: int, out_features: int, cfg) -> int:
        return cfg.r * (in_features + out_features)  # A: r x in, B: out x r

    def apply(self, model, cfg, targets: AdapterTargets, total_steps: int):
        from peft import LoraConfig, get_peft_model

        peft_cfg = LoraConfig(
            task_type="SEQ_CLS", r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(targets.modules), modules_to_save=list(targets.head), **self.extra)
        return get_peft_model(model, peft_cfg)


@register
class Lora(PeftLoraVariant):
    name = "lora"
    marker = "o"
    label = "LoRA"


@register
class RsLora(PeftLoraVariant):
    name = "rslora"
    marker = "s"
    label = "rsLoRA"
    extra = {"use_rslora": True}  # scaling alpha/sqrt(r) instead of alpha/r


@register
class OLora(PeftLoraVariant):
    name = "olora"
    marker = "^"
    label = "OLoRA"
    changes_base_weights = True
    portable_adapter = False  # relative to the residual base: kdlora export writes the merged model
    extra = {"init_lora_weights": "olora"}  # QR-based orthonormal init; shifts the base weights


@register
class Dora(PeftLoraVariant):
    name = "dora"
    marker = "D"
    label = "DoRA"
    extra = {"use_dora": True}  # weight-decomposed: a learned magnitude per output feature

    def layer_params(self, in_features: int, out_features: int, cfg) -> int:
        return cfg.r * (in_features + out_features) + out_features  # + the magnitude vector
