"""The training loop without per-micro-batch host syncs: the same losses and metrics as the loop
it replaced (numbers recorded from it, to 1e-6), a non-finite loss still caught with its step
range, host syncs only every CHECK_EVERY steps, SDPA attention where the architecture has it,
and `compile: true` as an execution-only switch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kdlora.config import build_config
from kdlora.testing.synthetic_data import write_glue_fixture
from kdlora.runner import run_one
from kdlora.train import loop
from kdlora.strategies import teacher_of

REFERENCE = Path(__file__).with_name("loop_reference.json")
# The runs whose numbers loop_reference.json holds (each key there): FFT, DoRA with gradient
# accumulation, AdaLoRA (the after-step hook) on a regression task, KD-LoRA (the teacher cache).
CASES = {
    "fft_sst2": dict(task="sst2", strategy="fft", epochs=3, lr=3e-3),
    "lora_dora_accum2": dict(task="sst2", strategy="lora", variant="dora", epochs=2, lr=6e-2, grad_accum=2),
    "lora_adalora_stsb": dict(task="stsb", strategy="lora", variant="adalora", epochs=3, lr=6e-2,
                              adalora_init_r=6, r=2),
    "kd_lora": dict(task="sst2", strategy="kd-lora", variant="lora", epochs=2, lr=6e-2, teacher_lr=3e-3,
                    teacher_epochs=2),
}


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_fixture(tmp_path_factory.mktemp("glue"), tasks=("sst2", "stsb"), n_train=64, n_eval=32,
                              seed=0)


def case_config(name, dirs, glue_dir):
    base = dict(family="bert", seed=7, data_dir=str(glue_dir), teacher_model=str(dirs["bert"]),
                student_model=str(dirs["distilbert"]), batch_size=16)
    return build_config({**base, **CASES[name]})


def record_reference(dirs, glue_dir, results) -> dict:
    """What loop_reference.json holds, computed with the loop of this checkout."""
    out = {}
    for name in CASES:
        cfg = case_config(name, dirs, glue_dir)
        if cfg.strategy == "kd-lora":
            assert run_one(teacher_of(cfg), results).status == "completed"
        rec = run_one(cfg, results)
        assert rec.status == "completed", rec.error
        out[name] = {"losses": [h["train_loss"] for h in rec.history],
                     "metrics": {k: v for k, v in rec.metrics.items() if isinstance(v, float)},
                     "steps": rec.efficiency.train_steps, "samples": rec.efficiency.train_samples}
    return out


def test_same_losses_and_metrics_as_the_loop_before(tiny_model_dirs, glue_dir, tmp_path):
    expected = json.loads(REFERENCE.read_text())
    got = record_reference(tiny_model_dirs, glue_dir, tmp_path)
    for name in CASES:
        want, have = expected[name], got[name]
        assert (have["steps"], have["samples"]) == (want["steps"], want["samples"]), name
        assert have["losses"] == pytest.approx(want["losses"], abs=1e-6), name
        assert have["metrics"].keys() == want["metrics"].keys(), name
        for key, value in want["metrics"].items():
            assert have["metrics"][key] == pytest.approx(value, abs=1e-6), (name, key)


def test_host_decided_sdpa_mask_gives_the_same_numbers(tiny_model_dirs, glue_dir, tmp_path, monkeypatch):
    """On CUDA the SDPA mask is decided from the host copy of the batch (no sync); forced on CPU
    here, the recorded runs come out the same."""
    monkeypatch.setattr(loop, "HOST_MASK_DEVICES", ("cuda", "cpu"))
    calls = []
    real = loop.sdpa_mask
    monkeypatch.setattr(loop, "sdpa_mask", lambda h, d: calls.append(1) or real(h, d))
    expected = json.loads(REFERENCE.read_text())
    got = record_reference(tiny_model_dirs, glue_dir, tmp_path)  # BERT and (KD-LoRA) DistilBERT, both SDPA
    assert calls
    for name in CASES:
        assert got[name]["losses"] == pytest.approx(expected[name]["losses"], abs=1e-6), name
        for key, value in expected[name]["metrics"].items():
            assert got[name]["metrics"][key] == pytest.approx(value, abs=1e-6), (name, key)


def test_sdpa_mask_drops_a_mask_without_padding():
    full = torch.ones(2, 5, dtype=torch.long)
    assert loop.sdpa_mask(full, full) is None
    padded = torch.tensor([[1, 1, 1], [1, 1, 0]])
    m = loop.sdpa_mask(padded, padded)
    assert m.shape == (2, 1, 1, 3) and m.dtype == torch.bool and m[1, 0, 0].tolist() == [True, True, False]


# ----- the loop on a toy model: nan detection, sync counting ---------------------------------------
class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(20, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, input_ids, attention_mask, labels):
        h = (self.emb(input_ids) * attention_mask[..., None]).sum(1)
        logits = self.head(h)
        return SimpleNamespace(logits=logits, loss=torch.nn.functional.cross_entropy(logits, labels))


def toy_batches(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        length = 3 + i % 4
        mask = torch.ones(4, length, dtype=torch.long)
        mask[0, -1] = 0
        out.append({"input_ids": torch.randint(0, 20, (4, length), generator=g), "attention_mask": mask,
                    "labels": torch.randint(0, 2, (4,), generator=g), "idx": torch.arange(4) + 4 * i})
    return out


def toy_cfg(**extra):
    data = dict(lr=1e-2, weight_decay=0.0, warmup_ratio=0.0, precision="fp32", grad_accum=1, max_grad_norm=1.0)
    data.update(extra)
    return SimpleNamespace(**data)


def run_toy(batches, steps, bad_micro=None, **cfg):
    calls = {"n": 0}

    def loss_fn(batch, outputs):
        calls["n"] += 1
        return outputs.loss * float("nan") if calls["n"] == bad_micro else outputs.loss

    return loop.train_loop(Toy(), batches, cfg=toy_cfg(**cfg), device=torch.device("cpu"), loss_fn=loss_fn,
                           after_step=lambda m, s: None, total_steps=steps, count_flops=False)


@pytest.mark.parametrize("bad_micro,check_every,where", [
    (7, 5, "optimizer steps 6-10"),   # caught at the 10th step's check
    (3, 50, "optimizer steps 1-10"),  # caught at the epoch's end (10 micro-batches per epoch)
    (12, 50, "optimizer steps 11-12"),  # caught on the last step (12 of 12)
])
def test_nan_is_caught_with_its_step_range(monkeypatch, bad_micro, check_every, where):
    monkeypatch.setattr(loop, "CHECK_EVERY", check_every)
    with pytest.raises(loop.NanLoss, match=f"loss became nan in {where}"):
        run_toy(toy_batches(10), steps=12, bad_micro=bad_micro)


def test_nan_in_a_partly_accumulated_step_names_that_step(monkeypatch):
    monkeypatch.setattr(loop, "CHECK_EVERY", 1)
    # 5 micro-batches, 2 per step: steps 1, 2 and half of 3 in the first epoch; micro-batch 5 is in step 3
    with pytest.raises(loop.NanLoss, match="loss became nan in optimizer step 3 "):
        run_toy(toy_batches(5), steps=6, bad_micro=5, grad_accum=2)


def test_a_hook_that_fails_on_nan_weights_reports_the_nan(monkeypatch):
    monkeypatch.setattr(loop, "CHECK_EVERY", 50)
    calls = {"n": 0}

    def hook(model, step):  # like a variant whose after-step code cannot cope with NaN weights
        if any(not torch.isfinite(p).all() for p in model.parameters()):
            raise RuntimeError("svd did not converge")

    def loss_fn(batch, outputs):
        calls["n"] += 1
        return outputs.loss * float("nan") if calls["n"] == 4 else outputs.loss

    with pytest.raises(loop.NanLoss, match="loss became nan in optimizer steps 1-4"):
        loop.train_loop(Toy(), toy_batches(10), cfg=toy_cfg(), device=torch.device("cpu"), loss_fn=loss_fn,
                        after_step=hook, total_steps=10, count_flops=False)


def test_loss_and_token_sums_match_per_batch_values():
    batches = toy_batches(6)
    result = run_toy(batches, steps=12)
    assert result.steps == 12 and len(result.losses) == 2
    assert result.tokens == 2 * sum(int(b["attention_mask"].sum()) for b in batches)
    assert result.padded_tokens == 2 * sum(b["attention_mask"].numel() for b in batches)
    assert result.samples == 48
    assert all(math.isfinite(x) for x in result.losses)


def test_host_reads_only_at_checks_and_epoch_ends(monkeypatch):
    """Every tensor -> Python value conversion is a device sync on CUDA; count them on CPU."""
    monkeypatch.setattr(loop, "CHECK_EVERY", 10)
    reads = []
    for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    run_toy(toy_batches(20), steps=40)  # 40 steps, 2 epochs
    monkeypatch.undo()
    # per epoch: one check at step 10 and 20 (or 30, 40), one at the epoch's end, the mean loss;
    # and the token total once at the end
    assert len(reads) <= 2 * 4 + 1, reads


def test_idx_stays_on_the_host():
    batch = toy_batches(1)[0]
    moved = loop.to_device(batch, torch.device("cpu"))
    assert moved["idx"] is batch["idx"]


# ----- SDPA and torch.compile ---------------------------------------------------------------------
def test_sdpa_where_the_architecture_has_it(tiny_model_dirs):
    from kdlora.models import load_classifier

    assert load_classifier(str(tiny_model_dirs["bert"]), 2).config._attn_implementation == "sdpa"
    assert load_classifier(str(tiny_model_dirs["roberta"]), 2).config._attn_implementation == "sdpa"
    # DeBERTa-v2/v3 has no SDPA path in transformers: it loads with its own attention
    assert load_classifier(str(tiny_model_dirs["deberta-v2"]), 2).config._attn_implementation == "eager"


def test_compile_is_execution_only_and_wraps_the_forward(monkeypatch):
    cfg = build_config(dict(family="bert", task="sst2", strategy="lora"))
    assert cfg.with_updates(compile=True).run_id == cfg.run_id
    wrapped = []

    def fake_compile(model, **kwargs):
        wrapped.append((model, kwargs))
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = run_toy(toy_batches(4), steps=4, compile=True)
    assert len(wrapped) == 1 and isinstance(wrapped[0][0], Toy) and result.steps == 4
