"""MrLoRA: the definition, parameter count, merge, save/load and learning, on tiny models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlora.errors import UserError
from kdlora.variants.mrlora import (
    MrLoRAConfig,
    apply_mrlora,
    count_mrlora_params,
    load_mrlora,
    merge_mrlora,
    mrlora_state_dict,
    save_mrlora,
    unmerge_mrlora,
)
from kdlora.variants.mrlora.layer import MrLoraLinear

# Architecture -> (target module names, head modules trained in full).
ARCHS = {
    "bert": (("query", "value"), ("classifier",)),
    "roberta": (("query", "value"), ("classifier",)),
    "distilbert": (("q_lin", "v_lin"), ("pre_classifier", "classifier")),
    "deberta-v2": (("query_proj", "value_proj"), ("classifier",)),
}


def load(tiny_model_dirs, arch):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dirs[arch]).eval()


def batch(model, n=4, length=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (n, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits(model, inputs):
    """Logits and the last hidden states (those are O(1), so tolerances on them are meaningful)."""
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return torch.cat([out.logits.flatten(), out.hidden_states[-1].flatten()])


def randomize_adapters(model, seed=2):
    """Non-zero B and lambda != 1, so merge/save tests see a real update."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, MrLoraLinear):
                b = layer.lora_B["default"].weight
                b.copy_(torch.randn(b.shape, generator=g) * 0.05)
                lam = layer.lora_mr_lambda["default"]
                lam.copy_(torch.rand(lam.shape, generator=g) + 0.5)


def adapted(tiny_model_dirs, arch, cfg=None, head=True):
    targets, head_modules = ARCHS[arch]
    model = load(tiny_model_dirs, arch)
    cfg = cfg or MrLoRAConfig(target_modules=targets)
    return apply_mrlora(model, cfg, modules_to_save=head_modules if head else ())


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("ranks", [(8, 4, 2, 1), (3, 1)])
def test_trainable_parameter_count_is_exact(tiny_model_dirs, arch, ranks):
    targets, head_modules = ARCHS[arch]
    base = load(tiny_model_dirs, arch)
    linears = [m for n, m in base.named_modules()
               if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    heads = [m for n, m in base.named_modules() if n.rsplit(".", 1)[-1] in head_modules]
    per_layer = [sum(ranks) * (m.in_features + m.out_features) + len(ranks) for m in linears]
    expected = sum(per_layer) + sum(p.numel() for h in heads for p in h.parameters())

    model = apply_mrlora(base, MrLoRAConfig(ranks=ranks, target_modules=targets), modules_to_save=head_modules)

    layers = [m for m in model.modules() if isinstance(m, MrLoraLinear)]
    assert len(layers) == len(linears) == 2 * base.config.num_hidden_layers
    assert sorted(sum(p.numel() for p in m.parameters() if p.requires_grad) for m in layers) == sorted(per_layer)
    assert count_mrlora_params(model) == expected


def test_forward_is_the_specified_sum_of_scaled_blocks(tiny_model_dirs):
    """h = W x + b + sum_i lambda_i s_i B_i A_i x, with each block sliced out of the stacked matrices."""
    for scaling, s in [("rank_stabilized", lambda r: 16.0 / r ** 0.5), ("standard", lambda r: 16.0 / r)]:
        ranks = (4, 2, 1)
        model = adapted(tiny_model_dirs, "bert", MrLoRAConfig(ranks=ranks, scaling=scaling), head=False).eval()
        randomize_adapters(model)
        layer = next(m for m in model.modules() if isinstance(m, MrLoraLinear))
        x = torch.randn(3, layer.in_features)
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        lam = layer.lora_mr_lambda["default"]
        want = layer.base_layer(x)
        start = 0
        for i, r in enumerate(ranks):
            a_i, b_i = a[start:start + r], b[:, start:start + r]
            want = want + lam[i] * s(r) * (x @ a_i.T @ b_i.T)
            start += r
        with torch.no_grad():
            torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_initial_output_equals_base_model(tiny_model_dirs, arch):
    base = load(tiny_model_dirs, arch)
    inputs = batch(base)
    expected = logits(base, inputs)
    model = adapted(tiny_model_dirs, arch).eval()
    torch.testing.assert_close(logits(model, inputs), expected, atol=1e-6, rtol=0)
    # B starts at zero, A does not (Kaiming-uniform), lambda starts at one.
    layer = next(m for m in model.modules() if isinstance(m, MrLoraLinear))
    assert torch.all(layer.lora_B["default"].weight == 0)
    assert layer.lora_A["default"].weight.abs().min() >= 0 and layer.lora_A["default"].weight.std() > 0
    assert torch.all(layer.lora_mr_lambda["default"] == 1)


@pytest.mark.parametrize("arch", ["bert", "deberta-v2"])
def test_merge_and_unmerge_keep_outputs(tiny_model_dirs, arch):
    model = adapted(tiny_model_dirs, arch).eval()
    randomize_adapters(model)
    inputs = batch(model)
    before = logits(model, inputs)
    base_out = logits(load(tiny_model_dirs, arch), inputs)
    assert (before - base_out).abs().max() > 1e-2  # the adapters do change the output
    layer = next(m for m in model.modules() if isinstance(m, MrLoraLinear))
    w0 = layer.base_layer.weight.detach().clone()

    merge_mrlora(model)
    assert layer.merged and not torch.allclose(layer.base_layer.weight, w0)
    torch.testing.assert_close(logits(model, inputs), before, atol=1e-5, rtol=0)

    unmerge_mrlora(model)
    assert not layer.merged
    torch.testing.assert_close(layer.base_layer.weight, w0, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(model, inputs), before, atol=1e-5, rtol=0)


def test_save_and_load_reproduce_outputs(tiny_model_dirs, tmp_path):
    model = adapted(tiny_model_dirs, "roberta").eval()
    randomize_adapters(model)
    with torch.no_grad():  # the trained head must travel with the adapters
        model.base_model.model.classifier.modules_to_save["default"].out_proj.bias.add_(0.3)
    inputs = batch(model)
    expected = logits(model, inputs)
    path = save_mrlora(model, tmp_path / "adapter.safetensors")
    assert all(".base_layer." not in k and "original_module" not in k for k in mrlora_state_dict(model))

    fresh = adapted(tiny_model_dirs, "roberta").eval()
    assert (logits(fresh, inputs) - expected).abs().max() > 1e-2
    load_mrlora(fresh, path)
    torch.testing.assert_close(logits(fresh, inputs), expected, atol=1e-6, rtol=0)


def test_load_refuses_other_settings_and_broken_files(tiny_model_dirs, tmp_path):
    path = save_mrlora(adapted(tiny_model_dirs, "bert"), tmp_path / "a.safetensors")
    other = adapted(tiny_model_dirs, "bert", MrLoRAConfig(ranks=(4, 1)))
    with pytest.raises(UserError, match="saved with settings"):
        load_mrlora(other, path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="not a readable MrLoRA adapter"):
        load_mrlora(adapted(tiny_model_dirs, "bert"), broken)


def test_adapters_alone_learn_and_base_stays_frozen(tiny_model_dirs):
    """Head frozen too: any fall in loss comes from the MrLoRA blocks (and their lambdas)."""
    model = adapted(tiny_model_dirs, "bert", MrLoRAConfig(dropout=0.0), head=False).train()
    with torch.no_grad():  # the random head (std 0.02) squashes logits; std ~1 lets the adapters show
        model.base_model.model.classifier.weight.mul_(50)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lambdas = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_mr_lambda" in n}
    assert len(lambdas) == 4 and frozen
    inputs = batch(model, n=8, seed=3)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(25):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert all(not torch.equal(dict(model.named_parameters())[n], v) for n, v in lambdas.items())


def test_no_matching_target_is_a_user_error(tiny_model_dirs):
    with pytest.raises(UserError, match=r"match no linear layer.*q_lin"):
        apply_mrlora(load(tiny_model_dirs, "distilbert"), MrLoRAConfig(target_modules=("query", "value")))
    with pytest.raises(UserError, match="modules_to_save"):
        apply_mrlora(load(tiny_model_dirs, "bert"), MrLoRAConfig(), modules_to_save=("score",))


@pytest.mark.parametrize("bad", [{"ranks": ()}, {"ranks": (4, 0)}, {"scaling": "sqrt"}, {"dropout": 1.0},
                                 {"alpha": 0}, {"target_modules": ()}])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError, match="mrlora"):
        MrLoRAConfig(**bad)
