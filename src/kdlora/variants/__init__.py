"""PEFT variants as plug-ins behind one registry. Adding one = a module here + its import below."""

from kdlora.variants import adalora, multirank, peft_lora  # noqa: F401  (registration)
from kdlora.variants.base import VARIANTS, AdapterTargets, Variant

__all__ = ["VARIANTS", "AdapterTargets", "Variant"]
