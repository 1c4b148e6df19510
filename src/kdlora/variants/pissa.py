"""PiSSA: LoRA whose A and B start as the principal singular vectors of each target weight
(PEFT `init_lora_weights="pissa"`, an exact SVD), the residual staying frozen in the base.

Like OLoRA it changes the base weights when applied (W becomes W - B·A at initialisation), so
the saved adapter is relative to those residual weights; the init is a deterministic function of
the original weights, so applying the variant to the original base again and loading the adapter
rebuilds the trained model (the note written beside the adapter says so).
"""

from __future__ import annotations

from kdlora.variants.base import register
from kdlora.variants.peft_lora import PeftLoraVariant


@register
class Pissa(PeftLoraVariant):
    name = "pissa"
    marker = "<"
    label = "PiSSA"
    extra = {"init_lora_weights": "pissa"}
    changes_base_weights = True
    portable_adapter = False  # relative to the residual base: kdlora export writes the merged model
    in_default_grid = False  # listed explicitly in a grid (the defaults stay the reference design)
