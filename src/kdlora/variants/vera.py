"""VeRA: one pair of frozen random projections (A: r x in, B: out x r) shared by every target
layer, and per layer two trainable scaling vectors, d (r) and b (out): ΔW = diag(b)·B·diag(d)·A
(PEFT VeraConfig). Trainable parameters per layer: r + out_features, plus the head; the shared
projections are buffers, not parameters, so they are not counted as trained."""

from __future__ import annotations

from kdlora.variants.base import AdapterTargets, Variant, register


@register
class Vera(Variant):
    name = "vera"
    marker = ">"
    label = "VeRA"
    in_default_grid = False  # listed explicitly in a grid (the defaults stay the reference design)
    fields = {
        "vera_d_initial": (float, 0.1, "VeRA's initial value of the d scaling vectors (b starts at 0)",
                           (0, False, None, False)),
        "vera_projection_seed": (int, 0, "VeRA's seed of its shared random projections", (0, True, 2**32 - 1, True)),
    }

    def layer_params(self, in_features: int, out_features: int, cfg) -> int:
        return cfg.r + out_features  # d and b; the shared projections are buffers

    def apply(self, model, cfg, targets: AdapterTargets, total_steps: int):
        from peft import VeraConfig, get_peft_model

        peft_cfg = VeraConfig(
            task_type="SEQ_CLS", r=cfg.r, target_modules=list(targets.modules), modules_to_save=list(targets.head),
            vera_dropout=cfg.lora_dropout, d_initial=cfg.vera_d_initial,
            projection_prng_key=cfg.vera_projection_seed, save_projection=True)
        return get_peft_model(model, peft_cfg)
