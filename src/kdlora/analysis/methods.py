"""What the analysis knows about strategies and variants, read from their registries (never from
name checks): labels, report order, the reference strategy (FFT), which strategies take a
variant, which have a teacher, and which pairs are compared per variant. Never imports torch.

Names that are not registered (a record from elsewhere) still get a label: their own name.
"""

from __future__ import annotations

from kdlora.strategies import STRATEGIES, ordered_strategies, reference_strategy
from kdlora.variants import VARIANTS

STRATEGY_ORDER = tuple(s.name for s in ordered_strategies())
STRATEGY_LABEL = {s.name: s.label for s in ordered_strategies()}
STRATEGY_SHORT_LABEL = {s.name: s.short_label or s.label for s in ordered_strategies()}
STRATEGY_COLOR = {s.name: s.color for s in ordered_strategies()}
STRATEGY_COLORMAP = {s.name: s.colormap for s in ordered_strategies()}
VARIANT_MARKER = {name: VARIANTS.get(name).marker for name in VARIANTS if VARIANTS.get(name).marker}
VARIANT_LABEL = {name: VARIANTS.get(name).label for name in VARIANTS}
REFERENCE = reference_strategy()  # "fft": every other strategy is compared with it
ADAPTER_STRATEGIES = tuple(s.name for s in ordered_strategies() if s.uses_adapters)
TAUGHT_STRATEGIES = tuple(s.name for s in ordered_strategies() if s.teacher_strategy)
# (strategy, the strategy it is compared with per variant): KD-LoRA with LoRA-only, distilled vs not
PAIRED_WITH = tuple((s.name, s.compare_with) for s in ordered_strategies() if s.compare_with)
# Settings of some strategies only (distillation, the student model): every other setting must
# agree for two arms of different strategies to be compared like for like.
STRATEGY_FIELDS = tuple(dict.fromkeys(f for s in ordered_strategies() for f in s.fields))


def strategy_label(name: str) -> str:
    return STRATEGY_LABEL.get(name, name)


def is_reference(name) -> bool:
    return name == REFERENCE


def has_teacher(name) -> bool:
    return name in TAUGHT_STRATEGIES


def trains_student(name) -> bool:
    return name in STRATEGIES and STRATEGIES.get(name).trains_student
