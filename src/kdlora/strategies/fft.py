"""Full fine-tuning: every parameter of the teacher-size model is trained."""

from __future__ import annotations

from kdlora.models import load_classifier, model_names
from kdlora.strategies.base import RunContext, Setup, Strategy, register


@register
class FullFineTuning(Strategy):
    name = "fft"
    label = "FFT"
    order = 0
    color, colormap = "#000000", "Greys"  # Okabe & Ito (2008) colours, for figures
    default_lr = 5e-5
    uses_adapters = False
    reference = True  # every other strategy is compared with it ("<method> vs FFT")

    def setup(self, ctx: RunContext) -> Setup:
        cfg = ctx.cfg
        teacher, _ = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
        model = load_classifier(teacher, ctx.spec.num_labels)
        for p in model.parameters():
            p.requires_grad_(True)
        return Setup(model=model)
