"""select_best_epoch restores the best epoch whole: with AdaLoRA that includes the rank pattern,
which is not a tensor but decides which ranks the saved adapter keeps. The adapter saved after
restoring an earlier epoch must reload to the very model the engine evaluates after restoring."""

from __future__ import annotations

import torch

from kdlora.config import build_config
from kdlora.models import head_modules, load_classifier, target_modules
from kdlora.seeding import seed_everything
from kdlora.train.epochs import EpochEvaluator
from kdlora.variants import VARIANTS, AdapterTargets

INIT_R = 4


def adalora_model(model_dir):
    cfg = build_config(dict(family="bert", task="sst2", strategy="lora", variant="adalora", seed=3,
                            teacher_model=str(model_dir), adalora_init_r=INIT_R, r=2))
    seed_everything(3)
    base = load_classifier(str(model_dir), 2)
    targets = AdapterTargets(target_modules(base), head_modules(base))
    variant = VARIANTS.get("adalora")
    return variant.apply(base, cfg, targets, total_steps=100), variant, cfg, targets


def prune(model, keep: list[bool]) -> None:
    """What AdaLoRA's budget step does: zero the singular values of dropped ranks and record the
    pattern in the PEFT config (every adapted layer gets the same mask here)."""
    config = model.peft_config["default"]
    pattern = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_E" in name:
                param.normal_()
                param[[not k for k in keep]] = 0.0
                pattern[name.removeprefix("base_model.model.")] = list(keep)  # as PEFT names them
            elif "lora_A" in name or "lora_B" in name:
                param.normal_(std=0.5)
    config.rank_pattern = pattern


def regrow(model, keep: list[bool]) -> None:
    """What the optimizer does between two budget steps: pruned singular values move off zero."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_E" in name:
                param[[not k for k in keep]] = 0.3


def logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([[2, 5, 7, 9, 3]])).logits


def test_restored_adalora_epoch_saves_its_own_rank_pattern(tiny_model_dirs, tmp_path):
    model, variant, cfg, targets = adalora_model(tiny_model_dirs["bert"])
    scores = iter([0.9, 0.5])  # epoch 1 is best on the selection set
    evaluator = EpochEvaluator(model, lambda: {}, lambda: {"primary": next(scores)}, keep_best=True,
                               variant=variant)
    first = [True, True, False, False]
    prune(model, first)
    best_logits = logits(model)
    regrow(model, first)  # steps after the last budget step: pruned values are no longer zero
    evaluator.epoch_end(1)
    prune(model, [False, False, True, True])  # the last epoch keeps other ranks
    protocol = evaluator.finish(2, {}, {"primary": next(scores)})

    assert protocol["best_epoch"] == 1 and protocol.get("restored")
    assert all(mask == first for mask in model.peft_config["default"].rank_pattern.values())
    torch.testing.assert_close(logits(model), best_logits)
    variant.save(model, tmp_path / "adapter")
    reloaded = variant.load_adapter(load_classifier(str(tiny_model_dirs["bert"]), 2), cfg, targets,
                                    tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded), best_logits)


def test_plain_variants_have_no_extra_state(tiny_model_dirs):
    """LoRA's best epoch is its tensors: nothing else is copied."""
    base = load_classifier(str(tiny_model_dirs["bert"]), 2)
    assert VARIANTS.get("lora").training_state(base) is None
