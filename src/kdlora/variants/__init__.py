"""PEFT variants as plug-ins behind one registry. Adding one = a module here + its import below
(the import order is the order grids, help texts and reports list them in)."""

from kdlora.variants import peft_lora  # noqa: F401  (registration: lora, rslora, olora, dora)
from kdlora.variants import adalora, multirank  # noqa: F401,I001  (adalora, mrlora)
from kdlora.variants import pissa, vera, loraplus  # noqa: F401,I001
from kdlora.variants.base import VARIANTS, AdapterTargets, Variant

__all__ = ["VARIANTS", "AdapterTargets", "Variant"]
