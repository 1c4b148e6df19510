"""MrLoRA (multi-rank LoRA), kdlora's own definition (docs/mrlora.md), built as a PEFT LoRA variant."""

from kdlora.variants.mrlora.config import MrLoRAConfig
from kdlora.variants.mrlora.model import (
    apply_mrlora,
    count_mrlora_params,
    load_mrlora,
    merge_mrlora,
    mrlora_state_dict,
    save_mrlora,
    unmerge_mrlora,
)

__all__ = ["MrLoRAConfig", "apply_mrlora", "count_mrlora_params", "load_mrlora", "merge_mrlora",
           "mrlora_state_dict", "save_mrlora", "unmerge_mrlora"]
