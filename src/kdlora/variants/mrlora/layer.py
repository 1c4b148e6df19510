"""MrLoRA as a PEFT LoRA variant.

The blocks are stored stacked, as one PEFT LoRA adapter of rank R = sum(r_i):
    lora_A = [A_1; A_2; ...]  (R x in),   lora_B = [B_1, B_2, ...]  (out x R)
so  sum_i lambda_i s_i B_i A_i = B diag(d) A  with d = (lambda_i s_i repeated r_i times).
PEFT initialises lora_A with kaiming_uniform_(a=sqrt(5)), whose bound depends only on `in`, so
the stacked A has exactly the distribution of separately initialised A_i; lora_B starts at zero.
The only new parameters are the lambda_i ("lora_mr_lambda": the "lora_" prefix is what PEFT uses
to mark adapter weights trainable and to save them). PEFT does dropout, merge bookkeeping, saving
and modules_to_save; this file adds the forward pass and the delta weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from peft import LoraConfig
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from peft.tuners.lora.layer import LoraVariant
from peft.utils.other import transpose
from torch import nn


@dataclass
class MrLoraPeftConfig(LoraConfig):
    """LoraConfig with the block ranks and their scales; `r` must be sum(mrlora_ranks)."""

    # PEFT picks a layer's LoraVariant from config fields tagged is_lora_variant.
    mrlora_ranks: Optional[list[int]] = field(default=None, metadata={"is_lora_variant": True})
    mrlora_scales: Optional[list[float]] = field(default=None)


def block_diag(module: PeftLoraLinear, adapter: str) -> torch.Tensor:
    """d = (lambda_i * s_i repeated r_i times), the diagonal between A and B."""
    ranks, scales = module.mrlora_blocks[adapter]
    lam = module.lora_mr_lambda[adapter]
    per_block = lam * torch.tensor(scales, dtype=lam.dtype, device=lam.device)
    return torch.repeat_interleave(per_block, torch.tensor(ranks, device=lam.device))


def delta_weight(module: PeftLoraLinear, adapter: str) -> torch.Tensor:
    a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
    return transpose((b * block_diag(module, adapter)) @ a, module.fan_in_fan_out)


class MrLoraLinearVariant(LoraVariant):
    @staticmethod
    def init(module: PeftLoraLinear, adapter_name: str, config: MrLoraPeftConfig, **kwargs: Any) -> None:
        if config.lora_bias:
            raise ValueError("MrLoRA has no lora_bias")
        if not hasattr(module, "lora_mr_lambda"):  # first MrLoRA adapter on this layer
            module.lora_mr_lambda = nn.ParameterDict()
            module.mrlora_blocks = {}
        weight = module.lora_A[adapter_name].weight
        module.lora_mr_lambda[adapter_name] = nn.Parameter(
            torch.ones(len(config.mrlora_ranks), dtype=weight.dtype, device=weight.device))
        module.mrlora_blocks[adapter_name] = (tuple(config.mrlora_ranks), tuple(config.mrlora_scales))

    @staticmethod
    def merge_safe(module: PeftLoraLinear, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight + delta_weight(module, active_adapter).to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module: PeftLoraLinear, active_adapter: str, orig_weight: torch.Tensor) -> None:
        orig_weight.data += delta_weight(module, active_adapter).to(orig_weight.dtype)

    @staticmethod
    def unmerge(module: PeftLoraLinear, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight - delta_weight(module, active_adapter).to(orig_weight.dtype)

    @staticmethod
    def forward(module: PeftLoraLinear, active_adapter: str, x: torch.Tensor, result: torch.Tensor,
                **kwargs: Any) -> torch.Tensor:
        a, b = module.lora_A[active_adapter], module.lora_B[active_adapter]
        h = a(module.lora_dropout[active_adapter](x))
        return result + b(h * block_diag(module, active_adapter))


class MrLoraLinear(PeftLoraLinear):
    """PEFT's LoRA Linear whose only variant is MrLoRA."""

    # Listed so PEFT's set_adapter/delete_adapter treat lambda like lora_A/lora_B.
    adapter_layer_names = PeftLoraLinear.adapter_layer_names + ("lora_mr_lambda",)
    other_param_names = PeftLoraLinear.other_param_names + ("mrlora_blocks",)

    @property
    def lora_variants(self):
        return {(): None, ("mrlora_ranks",): MrLoraLinearVariant}
