"""LoRA+: plain LoRA whose B matrices learn faster, at lr x loraplus_lr_ratio (16 by default, as
in the LoRA+ paper, Hayou et al. 2024). Parameters are grouped as PEFT's
create_loraplus_optimizer groups them (every `lora_B` and every 1-D parameter at the higher
rate); kdlora's one optimizer keeps its own weight-decay rule (none on biases and LayerNorms)."""

from __future__ import annotations

from kdlora.variants.base import register
from kdlora.variants.peft_lora import PeftLoraVariant


@register
class LoraPlus(PeftLoraVariant):
    name = "loraplus"
    marker = "h"
    label = "LoRA+"
    in_default_grid = False  # listed explicitly in a grid (the defaults stay the reference design)
    fields = {"loraplus_lr_ratio": (float, 16.0, "LoRA+'s learning-rate ratio of B to A (lr_B = lr x ratio)",
                                    (1, True, None, False))}

    def lr_scale(self, name: str, param, cfg) -> float:
        return cfg.loraplus_lr_ratio if "lora_B" in name or param.ndim == 1 else 1.0
