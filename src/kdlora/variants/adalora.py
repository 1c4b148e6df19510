"""AdaLoRA: adaptive rank allocation. Its budget schedule needs the real number of optimizer
steps, and it must be told after every step (PEFT leaves that call to the training loop)."""

from __future__ import annotations

import copy

from kdlora.errors import UserError
from kdlora.variants.base import AdapterTargets, Variant, register


@register
class AdaLora(Variant):
    name = "adalora"
    marker = "v"
    label = "AdaLoRA"
    fields = {
        "adalora_init_r": (int, 12, "AdaLoRA's initial rank per layer (budgeted down to r)", (0, False, None, False)),
        "adalora_tinit": (float, 0.1, "fraction of the steps before rank pruning starts", (0, True, 1, False)),
        "adalora_tfinal": (float, 0.2, "fraction of the steps at the end with the final ranks", (0, True, 1, False)),
        "adalora_delta_t": (int, 10, "optimizer steps between two rank reallocations", (0, False, None, False)),
    }

    def validate(self, cfg) -> None:
        if cfg.adalora_init_r < cfg.r:
            raise ValueError(f"adalora_init_r ({cfg.adalora_init_r}) must be >= r ({cfg.r})")
        if cfg.adalora_tinit + cfg.adalora_tfinal >= 1:
            raise ValueError(f"adalora_tinit + adalora_tfinal must be < 1, leaving steps to prune "
                             f"(got {cfg.adalora_tinit} + {cfg.adalora_tfinal})")

    def check(self, cfg) -> None:
        if cfg.adalora_tinit + cfg.adalora_tfinal >= 1.0:
            raise UserError("adalora_tinit + adalora_tfinal must be < 1 (they are fractions of the "
                            "total steps; the budget phase needs the rest)")

    def apply(self, model, cfg, targets: AdapterTargets, total_steps: int):
        from peft import AdaLoraConfig, get_peft_model

        tinit = int(cfg.adalora_tinit * total_steps)
        tfinal = int(cfg.adalora_tfinal * total_steps)
        if total_steps - tfinal - tinit < 1:
            raise UserError(f"AdaLoRA needs more optimizer steps than {total_steps} for its schedule: "
                            "train on more data or for more epochs, or use a smaller batch_size")
        peft_cfg = AdaLoraConfig(
            task_type="SEQ_CLS", init_r=cfg.adalora_init_r, target_r=cfg.r, lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout, target_modules=list(targets.modules),
            modules_to_save=list(targets.head), total_step=total_steps, tinit=tinit, tfinal=tfinal,
            deltaT=max(1, min(cfg.adalora_delta_t, total_steps // 10 or 1)))
        return get_peft_model(model, peft_cfg)

    def size_updates(self, cfg, size: int) -> dict:
        """Its trainable parameters are set by the initial rank; the target keeps its ratio to it."""
        return {"adalora_init_r": size, "r": max(1, min(size, round(size * cfg.r / cfg.adalora_init_r)))}

    def layer_params(self, in_features: int, out_features: int, cfg) -> int:
        return cfg.adalora_init_r * (in_features + out_features + 1)  # P, Q and the singular values E

    def after_optimizer_step(self, model, step: int) -> None:
        model.base_model.update_and_allocate(step)

    # The rank pattern lives in the PEFT config, not in a tensor, and save_pretrained cuts P, E and Q
    # down to it: the best epoch's weights saved with the last epoch's pattern would lose ranks the
    # evaluated model used (or keep pruned ones), so it travels with the weights.
    def training_state(self, model):
        return copy.deepcopy(_config(model).rank_pattern)

    def restore_training_state(self, model, state) -> None:
        """The pattern back, and E masked by it: between two budget steps the optimizer regrows
        pruned singular values, which saving drops. Masked here, the restored model (evaluated
        again by the engine) is the one the saved adapter reloads to."""
        _config(model).rank_pattern = copy.deepcopy(state)
        if state:
            model.base_model.rankallocator.mask_using_rank_pattern(model.base_model.model, state)


def _config(model):
    tuner = model.base_model
    return tuner.peft_config[tuner.trainable_adapter_name]
