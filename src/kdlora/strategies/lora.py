"""LoRA-only: adapters (any registered variant) on the teacher-size model, trained on labels."""

from __future__ import annotations

from kdlora.models import check_target_modules, head_modules, load_classifier, model_names, target_modules
from kdlora.strategies.base import RunContext, Setup, Strategy, register
from kdlora.variants import VARIANTS, AdapterTargets


def with_adapters(model, ctx: RunContext):
    """Freeze the model and add the run's variant on the architecture's target modules."""
    cfg = ctx.cfg
    targets = AdapterTargets(target_modules(model, cfg.target_modules), head_modules(model))
    return VARIANTS.get(cfg.variant).apply(model, cfg, targets, ctx.total_steps)


@register
class LoraOnly(Strategy):
    name = "lora"
    label = "LoRA-only"
    short_label = "LoRA"
    order = 1
    color, colormap = "#0072B2", "Blues"
    default_lr = 5e-4

    def check(self, cfg) -> None:
        VARIANTS.get(cfg.variant).check(cfg)
        check_target_modules(model_names(cfg.family, cfg.teacher_model, cfg.student_model)[0], cfg.target_modules)

    def setup(self, ctx: RunContext) -> Setup:
        cfg = ctx.cfg
        teacher, _ = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
        return Setup(model=with_adapters(load_classifier(teacher, ctx.spec.num_labels), ctx))
