"""The device check: does kdlora train correctly on a GPU, how fast, how many runs share one GPU
well, and what the paper grid would cost. One command, about 8 minutes on one GPU:

    python bench/gpu_check.py [--out bench/results/gpu.json] [--budget-s 480]
    python bench/gpu_check.py --smoke --out /tmp/gpu.json     # CPU, tiny models: structure only

It writes one JSON with four parts:

- correctness: the demo task (tweets3) on CUDA: MiniLM FFT, LoRA-only and KD-LoRA (variant lora),
  accuracy against the CPU run of the same configs (docs/demo-run.json; within 2 points), the
  records' memory_kind (cuda_max_allocated) and NVML energy (when nvidia-ml-py is installed), and a
  second run of the LoRA config (within 0.5 points of the first).
- speed: training samples/s on GLUE-shaped synthetic data (token ids drawn at GLUE's lengths,
  batch 32) for BERT-base / RoBERTa-base / DeBERTa-v3-base shapes built from their configs: FFT,
  LoRA-only and the KD-LoRA student, in kdlora's loop; HF Trainer + PEFT with
  DataCollatorWithPadding on the same GPU and data for comparison; forward-only samples/s (the
  evaluation's and the teacher-logit pass's speed); a torch.profiler view of one step.
- packing: a 16-run LoRA grid (BERT-base shape on the demo's tweets) swept with --runs-per-gpu
  K = 1, 2, 4, 8: runs/hour.
- projection: the paper grid (configs/paper.yaml, 1053 runs) in GPU-hours from speed and packing
  with GLUE's split sizes, next to the reference study's training time (the sum of train_time in
  its efficiency_metrics_all.csv, read from the packaged reference data).

Every part keeps to a share of --budget-s; a part that runs out of time says so instead of
overrunning. Exit 1 only when nothing could be measured (e.g. no CUDA without --smoke).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "gpu"
DEFAULT_OUT = common.RESULTS_DIR / "gpu.json"
ACCURACY_TOLERANCE, REPEAT_TOLERANCE = 0.02, 0.005  # 2 points against CPU; 0.5 points between repeats
TARGET_GPU_HOURS = 6.0

# GLUE split sizes (examples; nyu-mll/glue dataset card). MNLI's validation is matched + mismatched.
GLUE_TRAIN = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "qqp": 363846, "stsb": 5749, "mnli": 392702,
              "qnli": 104743, "rte": 2490, "wnli": 635}
GLUE_EVAL = {"cola": 1043, "sst2": 872, "mrpc": 408, "qqp": 40430, "stsb": 1500, "mnli": 9815 + 9832,
             "qnli": 5463, "rte": 277, "wnli": 71}
# Approximate mean tokens per training example (WordPiece, special tokens included), from GLUE's
# published length statistics; no GLUE text is reachable offline, so these are typed, not
# measured. Lengths are drawn log-normally around them (sigma LENGTH_SIGMA), cut to 128.
GLUE_MEAN_TOKENS = {"cola": 11, "sst2": 13, "mrpc": 53, "qqp": 30, "stsb": 31, "mnli": 39, "qnli": 51,
                    "rte": 70, "wnli": 37}
LENGTH_SIGMA = 0.45
# The speed part measures three length profiles; every task is projected with the nearest.
PROFILES = {"short": "sst2", "medium": "mnli", "long": "qnli"}

# Shapes from the models' configs (random weights: only time is measured). Teacher, student.
ROBERTA = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
               bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
DEBERTA_V3 = dict(vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
                  position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                  pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7, max_relative_positions=-1,
                  position_biased_input=False, type_vocab_size=0)
SHAPES = {
    "bert": (("BertConfig", {}), ("DistilBertConfig", {})),  # the defaults are bert-base / distilbert-base
    "roberta": (("RobertaConfig", ROBERTA), ("RobertaConfig", {**ROBERTA, "num_hidden_layers": 6})),
    "deberta": (("DebertaV2Config", DEBERTA_V3), ("DebertaV2Config", {**DEBERTA_V3, "num_hidden_layers": 6})),
}
TINY = {"BertConfig": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        "DistilBertConfig": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
        "RobertaConfig": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        "DebertaV2Config": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                position_buckets=16)}
TARGETS = {"BertConfig": ["query", "value"], "DistilBertConfig": ["q_lin", "v_lin"],
           "RobertaConfig": ["query", "value"], "DebertaV2Config": ["query_proj", "value_proj"]}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Budget:
    """Seconds left for the whole check; each part gets a share and stops early when it is spent."""

    def __init__(self, total_s: float) -> None:
        self.start, self.total = time.monotonic(), total_s

    def left(self) -> float:
        return self.total - (time.monotonic() - self.start)

    def until(self, fraction_of_total_used: float) -> float:
        """Deadline (monotonic) at which this fraction of the whole budget is used."""
        return self.start + self.total * fraction_of_total_used


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ----- (a) correctness -------------------------------------------------------------------------------
def correctness(root: Path, device, smoke: bool) -> dict[str, Any]:
    """MiniLM FFT + LoRA-only + KD-LoRA on the demo task on the device; CPU accuracies from the demo's
    recorded CPU run (smoke: tiny configs on CPU, each its own reference: structure only)."""
    from kdlora.runner import run_one

    runs, cpu_accuracy, source = demo_runs(root, smoke)
    out_runs, ok = [], True
    nvml = _has_nvml()
    for cfg in runs:
        rec = run_one(cfg.with_updates(device=device.type), root / "results-a")
        if rec.status != "completed":
            raise RuntimeError(f"{rec.run_id} {rec.status}: {rec.error}")
        eff = rec.efficiency
        acc = rec.metrics["accuracy"]
        ref = acc if cpu_accuracy is None else cpu_accuracy[(cfg.strategy, cfg.variant or "full")]
        row = {"strategy": cfg.strategy, "variant": cfg.variant or "full", "run_id": rec.run_id, "accuracy": acc,
               "cpu_accuracy": ref, "diff_points": 100 * (acc - ref), "within_2_points": abs(acc - ref) <= ACCURACY_TOLERANCE,
               "memory_kind": eff.memory_kind, "peak_memory_bytes": eff.peak_memory_bytes,
               "peak_memory_reserved_bytes": eff.peak_memory_reserved_bytes, "energy_j": eff.energy_j,
               "gpu_util_mean": eff.gpu_util_mean, "train_time_s": eff.train_time_s,
               "train_samples_per_s": eff.train_samples_per_s, "precision": cfg.precision}
        row["memory_kind_ok"] = eff.memory_kind == ("cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss_growth")
        row["energy_ok"] = (eff.energy_j is not None) if (nvml and device.type == "cuda") else None
        ok &= row["within_2_points"] and row["memory_kind_ok"] and row["energy_ok"] is not False
        out_runs.append(row)
        log(f"  (a) {row['strategy']}/{row['variant']}: accuracy {acc:.4f} (CPU {ref:.4f}), "
            f"{eff.memory_kind} {eff.peak_memory_bytes}, energy {eff.energy_j}")
    lora = next(c for c in runs if c.strategy == "lora")
    again = run_one(lora.with_updates(device=device.type), root / "results-a-repeat")
    first = next(r["accuracy"] for r in out_runs if r["strategy"] == "lora")
    second = again.metrics.get("accuracy")
    repeat = {"run_id": again.run_id, "accuracies": [first, second],
              "diff_points": None if second is None else 100 * abs(first - second),
              "within_0_5_points": second is not None and abs(first - second) <= REPEAT_TOLERANCE}
    ok &= repeat["within_0_5_points"]
    return {"device": device.type, "cpu_reference": source, "nvml": nvml, "runs": out_runs, "repeat": repeat,
            "passed": bool(ok)}


def _has_nvml() -> bool:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return False
    return True


def demo_runs(root: Path, smoke: bool):
    """The three configs and their CPU accuracies: (strategy, variant) -> accuracy."""
    from kdlora.demo.study import FULL, Layout, find_grid, prepare

    if smoke:  # tiny model, tiny data; the "CPU reference" is these configs run here on CPU
        from kdlora.config import build_config
        from kdlora.testing.synthetic_data import FIXTURE_WORDS, write_glue_fixture
        from kdlora.testing.tiny import build_tiny_model

        glue = write_glue_fixture(root / "glue", tasks=("sst2",), n_train=32, n_eval=16, seed=0)
        teacher = build_tiny_model("bert", root / "tiny-bert", FIXTURE_WORDS)
        student = build_tiny_model("distilbert", root / "tiny-distil", FIXTURE_WORDS)
        base = dict(family="bert", task="sst2", seed=1, data_dir=str(glue), teacher_model=str(teacher),
                    student_model=str(student), epochs=1, batch_size=8, lr=3e-3, teacher_lr=3e-3)
        runs = [build_config({**base, "strategy": s, "variant": v})
                for s, v in (("fft", None), ("lora", "lora"), ("kd-lora", "lora"))]
        return runs, None, "the smoke run itself (CPU): structure only"
    grid, all_runs = prepare(Layout(root / "demo"), find_grid(), FULL, seeds=[42])
    order = {"fft": 0, "lora": 1, "kd-lora": 2}  # the teacher first: the KD-LoRA run needs it
    runs = sorted((r for r in all_runs if r.strategy == "fft" or r.variant == "lora"), key=lambda r: order[r.strategy])
    demo = json.loads((common.REPO / "docs" / "demo-run.json").read_text())
    acc = {(r["strategy"], r["variant"]): r["accuracy"] for r in demo["runs"] if r["status"] == "completed"}
    return runs, acc, f"docs/demo-run.json (CPU, {demo.get('finished_at', '?')[:16]} UTC)"


# ----- (b) speed ----------------------------------------------------------------------------------
def build_model(cls_name: str, extra: dict, smoke: bool, num_labels: int = 2):
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    kwargs = {**extra, **(TINY[cls_name] if smoke else {})}
    if smoke:
        kwargs["vocab_size"] = 1000
    config = getattr(transformers, cls_name)(num_labels=num_labels, **kwargs)
    torch.manual_seed(0)
    try:
        return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    except ValueError:  # DeBERTa-v2/v3: no SDPA path in transformers (the config now says sdpa: ask for eager)
        return AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")


def synthetic_examples(task: str, n: int, vocab: int, seed: int) -> list[dict]:
    """n examples at the task's GLUE lengths: random token ids, balanced labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mean = GLUE_MEAN_TOKENS[task]
    median = mean / math.exp(LENGTH_SIGMA**2 / 2)
    lengths = np.clip(np.round(rng.lognormal(math.log(median), LENGTH_SIGMA, n)), 4, 128).astype(int)
    return [{"input_ids": [2, *rng.integers(5, vocab, int(k) - 2).tolist(), 3], "labels": int(i % 2), "idx": i}
            for i, k in enumerate(lengths)]


def pad_tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4})


def kdlora_speed(model, examples, strategy: str, device, steps: int, warm: int, precision: str,
                 compile: bool = False) -> dict:
    """Samples/s of kdlora's own loop (train/loop.py) after `warm` warm-up steps (with compile:
    the warm-up also compiles; its time is reported apart)."""
    import datasets
    import torch

    from kdlora.data.tokenize import make_dataloader
    from kdlora.strategies.kd_lora import distillation_loss
    from kdlora.train.loop import train_loop

    ds = datasets.Dataset.from_list([{**e, "attention_mask": [1] * len(e["input_ids"])} for e in examples])
    loader = make_dataloader(ds, pad_tokenizer(), 32, shuffle=True, seed=0, pin_memory=device.type == "cuda")
    teacher = torch.randn(len(examples), 2)

    def loss_fn(batch, outputs):
        if strategy != "kd-lora":
            return outputs.loss
        t = teacher[batch["idx"]].to(outputs.logits.device, non_blocking=True)
        return distillation_loss(outputs.logits, t, outputs.loss, temperature=2.0, alpha=0.5, regression=False)

    cfg = SimpleNamespace(lr=5e-5 if strategy == "fft" else 5e-4, weight_decay=0.01, warmup_ratio=0.06,
                          precision=precision, grad_accum=1, max_grad_norm=1.0, compile=compile)
    model = model.to(device)
    kw = dict(cfg=cfg, device=device, loss_fn=loss_fn, after_step=lambda m, s: None, count_flops=False)
    start = time.perf_counter()
    train_loop(model, loader, total_steps=warm, **kw)  # kernels chosen, allocator warm (and compiled)
    warm_s = time.perf_counter() - start
    res = train_loop(model, loader, total_steps=steps, **kw)
    return {"samples_per_s": res.samples / res.seconds, "steps": res.steps, "seconds": res.seconds,
            "warm_up_s": warm_s, "tokens_per_s": res.tokens / res.seconds,
            "mean_padded_length": res.padded_tokens / res.samples}


def hf_speed(model, examples, device, steps: int, warm: int, bf16: bool) -> dict:
    """Samples/s of HF Trainer + PEFT (already applied to `model`), DataCollatorWithPadding, timed from
    the end of step `warm` to the end of training."""
    import datasets
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    ds = datasets.Dataset.from_list([{"input_ids": e["input_ids"], "attention_mask": [1] * len(e["input_ids"]),
                                      "labels": e["labels"]} for e in examples])
    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warm:
                sync(device)
                marks["t0"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            sync(device)
            marks["t1"] = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="kdlora-gpu-hf-") as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=32, max_steps=warm + steps,
                                 learning_rate=5e-4, weight_decay=0.01, warmup_steps=int(0.06 * (warm + steps)),
                                 lr_scheduler_type="linear",
                                 bf16=bf16, eval_strategy="no", save_strategy="no", logging_strategy="no",
                                 report_to="none", use_cpu=device.type != "cuda", disable_tqdm=True,
                                 dataloader_num_workers=0, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(pad_tokenizer()),
                          callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # no metrics dict printed at the end
        trainer.train()
    seconds = marks["t1"] - marks["t0"]
    return {"samples_per_s": steps * 32 / seconds, "steps": steps, "seconds": seconds}


def forward_speed(model, examples, device, batches: int, precision: str) -> dict:
    """Forward-only samples/s (evaluation, and the teacher pass that fills a KD logit cache)."""
    import datasets
    import torch

    from kdlora.data.tokenize import make_dataloader
    from kdlora.train.loop import autocast_dtype, to_device

    ds = datasets.Dataset.from_list([{**e, "attention_mask": [1] * len(e["input_ids"])} for e in examples])
    loader = make_dataloader(ds, pad_tokenizer(), 32, shuffle=False, seed=0, pin_memory=device.type == "cuda")
    amp = autocast_dtype(precision, device)
    model = model.to(device).eval()
    n, start = 0, None
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        for i, batch in enumerate(loader):
            if i == 2:
                sync(device)
                start, n = time.perf_counter(), 0
            batch = to_device(batch, device)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            n += batch["input_ids"].shape[0]
            if i >= batches + 2:
                break
    sync(device)
    return {"samples_per_s": n / (time.perf_counter() - start)}


def with_lora(model, cls_name: str, kdlora_side: bool):
    """LoRA r=8 on the query/value projections: kdlora's variant, or plain PEFT for HF Trainer."""
    if kdlora_side:
        from kdlora.config import build_config
        from kdlora.strategies.lora import with_adapters

        cfg = build_config(dict(family="bert", task="sst2", strategy="lora", variant="lora", r=8, lora_alpha=16,
                                target_modules=TARGETS[cls_name]))
        return with_adapters(model, SimpleNamespace(cfg=cfg, total_steps=1000))
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.05,
                                            target_modules=TARGETS[cls_name]))


def profile_step(model, examples, device, precision: str) -> dict:
    """torch.profiler over a few steady steps: the share of wall time the device spends in kernels
    (low: launch-bound, the host cannot issue kernels fast enough), and the top operators."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from kdlora.data.tokenize import make_dataloader
    from kdlora.train.loop import train_loop
    import datasets

    ds = datasets.Dataset.from_list([{**e, "attention_mask": [1] * len(e["input_ids"])} for e in examples])
    loader = make_dataloader(ds, pad_tokenizer(), 32, shuffle=True, seed=0, pin_memory=device.type == "cuda")
    cfg = SimpleNamespace(lr=5e-5, weight_decay=0.01, warmup_ratio=0.0, precision=precision, grad_accum=1,
                          max_grad_norm=1.0, compile=False)
    kw = dict(cfg=cfg, device=device, loss_fn=lambda b, o: o.loss, after_step=lambda m, s: None, count_flops=False)
    model = model.to(device)
    train_loop(model, loader, total_steps=3, **kw)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = 5
    with profile(activities=acts) as prof:
        start = time.perf_counter()
        train_loop(model, loader, total_steps=steps, **kw)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    attr = "device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    busy_us = sum(getattr(e, "self_device_time_total", 0) or 0 for e in events) if device.type == "cuda" else None
    top = sorted(events, key=lambda e: getattr(e, attr, 0) or 0, reverse=True)[:8]
    total = sum(getattr(e, attr, 0) or 0 for e in events) or 1
    return {"steps": steps, "wall_ms_per_step": 1000 * wall / steps,
            "device_busy_fraction": None if busy_us is None else busy_us / 1e6 / wall,
            "top_ops": [{"name": e.key, "ms_per_step": (getattr(e, attr, 0) or 0) / 1000 / steps,
                         "share": (getattr(e, attr, 0) or 0) / total} for e in top]}


def speed(device, smoke: bool, deadline: float) -> dict:
    steps, warm = (3, 1) if smoke else (40, 8)
    precision = "auto"
    bf16 = device.type == "cuda"
    out: dict[str, Any] = {"batch_size": 32, "steps_timed": steps, "warm_up_steps": warm, "precision": precision,
                           "length_profiles": {p: {"task": t, "mean_tokens": GLUE_MEAN_TOKENS[t]} for p, t in PROFILES.items()},
                           "families": {}, "skipped": [],
                           "notes": ["kdlora: train/loop.py on a per-batch padded DataLoader (pinned on CUDA), fused AdamW, "
                                     "bf16 autocast on CUDA; HF Trainer: PEFT LoRA (r 8, q/v), DataCollatorWithPadding, "
                                     "its defaults (fused AdamW, pinned memory), bf16=True on CUDA",
                                     "kd-lora: kdlora's student adds the KL term against cached teacher logits; the HF "
                                     "side trains the same student with LoRA on cross-entropy only (the KL over 2 "
                                     "logits costs next to nothing)",
                                     "random weights from each model's config: only time is meaningful"]}
    n_examples = 32 * (steps + warm + 4)
    for family, ((t_cls, t_extra), (s_cls, s_extra)) in SHAPES.items():
        fam: dict[str, Any] = {"teacher_config": t_cls, "student_config": s_cls, "profiles": {}}
        teacher_base = build_model(t_cls, t_extra, smoke)
        student_base = build_model(s_cls, s_extra, smoke)
        vocab = teacher_base.config.vocab_size
        for profile, task in PROFILES.items():
            if smoke and profile != "medium":
                continue  # structure only: one profile is enough
            if time.monotonic() > deadline:
                out["skipped"].append(f"{family}/{profile}: out of time")
                continue
            ex = synthetic_examples(task, n_examples, vocab, seed=1)
            row: dict[str, Any] = {}
            for strategy in ("fft", "lora", "kd-lora"):
                base = student_base if strategy == "kd-lora" else teacher_base
                cls_name = s_cls if strategy == "kd-lora" else t_cls
                m = copy.deepcopy(base)
                if strategy != "fft":
                    m = with_lora(m, cls_name, kdlora_side=True)
                row[strategy] = {"kdlora": kdlora_speed(m, ex, strategy, device, steps, warm, precision)}
                del m
                if profile == "medium":  # the HF Trainer comparison at the grid's typical length
                    m = copy.deepcopy(base).to(device)
                    if strategy != "fft":
                        m = with_lora(m, cls_name, kdlora_side=False)
                    row[strategy]["hf_trainer"] = hf_speed(m, ex, device, steps, warm, bf16)
                    row[strategy]["speedup_vs_hf"] = (row[strategy]["kdlora"]["samples_per_s"]
                                                      / row[strategy]["hf_trainer"]["samples_per_s"])
                    del m
                _free(device)
            row["forward_teacher"] = forward_speed(copy.deepcopy(teacher_base), ex, device, steps, precision)
            row["forward_student"] = forward_speed(copy.deepcopy(student_base), ex, device, steps, precision)
            fam["profiles"][profile] = row
            log(f"  (b) {family}/{profile}: " + ", ".join(
                f"{s} {row[s]['kdlora']['samples_per_s']:.0f}/s" for s in ("fft", "lora", "kd-lora")))
        if family == "bert" and time.monotonic() < deadline:
            fam["profile_fft_step"] = profile_step(copy.deepcopy(teacher_base),
                                                   synthetic_examples("mnli", 32 * 12, vocab, seed=2), device, precision)
        out["families"][family] = fam
        del teacher_base, student_base
        _free(device)
    # last, so that compiling (a minute or more) never takes time from the families
    bert = SHAPES["bert"][0]
    eager = out["families"].get("bert", {}).get("profiles", {}).get("medium")
    out["compile"] = compile_speed(lambda: build_model(*bert, smoke), device, steps, warm, precision, smoke,
                                   deadline, eager)
    return out


def compile_speed(make_model, device, steps, warm, precision, smoke: bool, deadline: float, eager) -> dict:
    """compile: true against eager, BERT-base FFT and LoRA at the medium profile (compiling takes
    a minute or more: only with that much of the part's time left; never in --smoke on CPU)."""
    if smoke or eager is None:
        return {"skipped": "smoke: compiling on CPU takes minutes" if smoke else "no eager figure to compare"}
    if deadline - time.monotonic() < 150:
        return {"skipped": "not enough time left in the speed part's budget"}
    out = {}
    base = make_model()
    ex = synthetic_examples(PROFILES["medium"], 32 * (steps + warm + 4), base.config.vocab_size, seed=1)
    for strategy in ("fft", "lora"):
        m = copy.deepcopy(base)
        if strategy == "lora":
            m = with_lora(m, "BertConfig", kdlora_side=True)
        try:
            got = kdlora_speed(m, ex, strategy, device, steps, warm, precision, compile=True)
        except Exception as exc:  # a compiler failure is a finding, not a crash of the check
            out[strategy] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        finally:
            del m
            _free(device)
        eager_sps = eager[strategy]["kdlora"]["samples_per_s"]
        out[strategy] = {**got, "eager_samples_per_s": eager_sps, "speedup": got["samples_per_s"] / eager_sps}
    return out


def _free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----- (c) packing ----------------------------------------------------------------------------------
def packing(root: Path, device, smoke: bool, deadline: float) -> dict:
    """Runs/hour of a 16-run LoRA grid at K runs per GPU (smoke: K workers on CPU, a 4-run grid)."""
    import yaml

    from kdlora.executors import ExecutorOptions
    from kdlora.executors.child import DEFAULT_RUN_FN
    from kdlora.executors.local import LocalExecutor
    from kdlora.grid import expand_grid, load_grid
    from kdlora.sweep.scheduler import run_sweep

    ks, n_runs = ((1, 2), 2) if smoke else ((1, 2, 4, 8), 16)
    if smoke:
        from kdlora.testing.synthetic_data import FIXTURE_WORDS
        from kdlora.testing.tiny import build_tiny_model

        model = build_tiny_model("bert", root / "pack-model", FIXTURE_WORDS, num_labels=3)
        task = common.tweets_task(root, 16, 16)
    else:
        model = common.bert_from_config(root, num_labels=3)
        task = common.tweets_task(root, 320, 160)
    grid = root / "pack-grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "gpu-check-packing", "families": ["bert"], "tasks": [str(task)], "seeds": list(range(1, n_runs + 1)),
        "strategies": ["lora"], "variants": ["lora"],
        "hyperparameters": {"teacher_model": str(model), "epochs": 1, "batch_size": 32, "max_length": 64,
                            "device": device.type}}))
    runs = expand_grid(load_grid(grid))
    out: dict[str, Any] = {"runs": n_runs, "model": "BERT-base shape (random weights)" if not smoke else "tiny BERT",
                           "task": f"tweets3 ({'320' if not smoke else '16'} train examples, 1 epoch, batch 32)",
                           "by_k": {}, "skipped": []}
    def options(k: int):
        return ExecutorOptions(workers=k, gpus_per_run=0) if device.type != "cuda" else ExecutorOptions(runs_per_gpu=k)

    # one run first, untimed: the fork server imports torch/transformers/peft once for all that follow
    if not smoke:
        run_sweep(runs[:1], root / "pack-warm-up",
                  LocalExecutor(root / "pack-warm-up", DEFAULT_RUN_FN, options(1)), poll_s=0.05)
    for k in ks:
        if time.monotonic() > deadline:
            out["skipped"].append(f"K={k}: out of time")
            continue
        results = root / f"pack-k{k}"
        executor = LocalExecutor(results, DEFAULT_RUN_FN, options(k))
        start = time.perf_counter()
        result = run_sweep(runs, results, executor, poll_s=0.05)
        wall = time.perf_counter() - start
        from kdlora.records import iter_records

        recs = [r for r in iter_records(results) if r.status == "completed"]
        train = [r.efficiency.train_time_s for r in recs]
        out["by_k"][str(k)] = {"wall_s": wall, "completed": len(result.completed), "failed": len(result.failed),
                               "runs_per_hour": 3600 * len(result.completed) / wall,
                               "mean_train_time_s": sum(train) / max(1, len(train)),
                               "peak_memory_bytes_max": max((r.efficiency.peak_memory_bytes or 0 for r in recs), default=None)}
        log(f"  (c) K={k}: {len(result.completed)}/{n_runs} in {wall:.1f} s = "
            f"{out['by_k'][str(k)]['runs_per_hour']:.0f} runs/hour")
    base = out["by_k"].get("1", {}).get("runs_per_hour")
    for row in out["by_k"].values():
        row["speedup_vs_k1"] = row["runs_per_hour"] / base if base else None
    if out["by_k"]:
        best = max(out["by_k"].items(), key=lambda kv: kv[1]["runs_per_hour"])
        out["best_k"], out["best_speedup"] = int(best[0]), best[1]["speedup_vs_k1"]
        k1 = out["by_k"].get("1")
        if k1:  # what a run costs beyond its training loop: start, load, evaluate, save
            out["per_run_overhead_s"] = max(0.0, k1["wall_s"] / max(1, k1["completed"]) - k1["mean_train_time_s"])
    return out


# ----- (d) projection ----------------------------------------------------------------------------------
def reference_train_hours() -> dict:
    """The reference study's training time: the sum of train_time (seconds) in its
    efficiency_metrics_all.csv, read from the reference data packaged with kdlora."""
    import io
    import tarfile

    import pandas as pd

    from kdlora.examples import REFERENCE_SOURCE, reference_archive

    with tarfile.open(reference_archive(), "r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("efficiency_metrics_all.csv"))
        frame = pd.read_csv(io.BytesIO(tar.extractfile(member).read()))
    return {"train_hours": float(frame["train_time"].sum()) / 3600, "runs": int(len(frame)),
            "source": f"sum of train_time in {member.name} ({REFERENCE_SOURCE}; kdlora.examples)"}


def nearest_profile(task: str, measured) -> str | None:
    """The measured length profile closest to the task's mean length."""
    options = [p for p in PROFILES if p in measured]
    return min(options, key=lambda p: abs(GLUE_MEAN_TOKENS[PROFILES[p]] - GLUE_MEAN_TOKENS[task]), default=None)


def projection(speed_part: dict, packing_part: dict) -> dict:
    """Paper-grid GPU-hours: per run, training samples / measured samples/s, evaluation and (per
    teacher) the logit pass at forward speed, plus the per-run overhead; then divided by the
    packing speed-up measured in (c)."""
    from kdlora.grid import expand_grid, load_grid

    runs = expand_grid(load_grid(common.REPO / "configs" / "paper.yaml"))
    fams = speed_part["families"]
    overhead = packing_part.get("per_run_overhead_s") or 0.0
    seconds = {"train": 0.0, "evaluate": 0.0, "teacher_logits": 0.0, "overhead": 0.0}
    missing = set()
    teachers = set()
    for cfg in runs:
        measured = fams.get(cfg.family, {}).get("profiles", {})
        prof = nearest_profile(cfg.task, measured)
        if prof is None:
            missing.add(cfg.family)
            continue
        row = measured[prof]
        sps = row[cfg.strategy]["kdlora"]["samples_per_s"]
        fwd = row["forward_student" if cfg.strategy == "kd-lora" else "forward_teacher"]["samples_per_s"]
        seconds["train"] += GLUE_TRAIN[cfg.task] * cfg.epochs / sps
        seconds["evaluate"] += GLUE_EVAL[cfg.task] / fwd
        seconds["overhead"] += overhead
        if cfg.strategy == "kd-lora" and (cfg.family, cfg.task, cfg.seed) not in teachers:
            teachers.add((cfg.family, cfg.task, cfg.seed))
            seconds["teacher_logits"] += GLUE_TRAIN[cfg.task] / row["forward_teacher"]["samples_per_s"]
    one_per_gpu = sum(seconds.values()) / 3600
    speedup = packing_part.get("best_speedup") or 1.0
    ref = reference_train_hours()
    ref_per_run = ref["train_hours"] / ref["runs"]
    projected = one_per_gpu / speedup
    return {"runs": len(runs), "hours_by_part_one_run_per_gpu": {k: v / 3600 for k, v in seconds.items()},
            "gpu_hours_one_run_per_gpu": one_per_gpu, "packing_k": packing_part.get("best_k"),
            "packing_speedup": speedup, "gpu_hours": projected, "target_gpu_hours": TARGET_GPU_HOURS,
            "meets_target": projected <= TARGET_GPU_HOURS if not missing else None,
            "reference": {**ref, "hours_per_run": ref_per_run, "hours_for_this_grid": ref_per_run * len(runs)},
            "per_run_speedup_vs_reference": (ref_per_run * len(runs)) / projected if projected else None,
            "families_not_measured": sorted(missing),
            "assumptions": [
                "every variant trains at the measured LoRA speed (DoRA, AdaLoRA and MrLoRA cost somewhat more)",
                "the packing speed-up measured on LoRA runs applies to every run (FFT runs pack less densely)",
                "each task is timed at the nearest measured length profile (short sst2, medium mnli, long qnli)",
                "GLUE lengths are typed approximations (GLUE_MEAN_TOKENS); split sizes are GLUE's",
            ]}


def limits(speed_part: dict) -> str | None:
    prof = speed_part.get("families", {}).get("bert", {}).get("profile_fft_step")
    if not prof or prof.get("device_busy_fraction") is None:
        return None
    busy = prof["device_busy_fraction"]
    if busy < 0.6:
        return (f"launch-bound: the GPU computes {100 * busy:.0f} % of a BERT-base FFT step's wall time; "
                "the host issuing kernels is the limit (more runs per GPU, torch.compile or CUDA graphs help)")
    return f"compute-bound: the GPU computes {100 * busy:.0f} % of a BERT-base FFT step's wall time"


# ----- main ------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models, seconds: structure only")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes (default bench/results/gpu.json)")
    p.add_argument("--budget-s", type=float, default=480.0, help="time for the whole check (default 480)")
    args = p.parse_args(argv)
    if args.smoke and args.out.is_file():
        try:
            real = not json.loads(args.out.read_text()).get("meta", {}).get("smoke", True)
        except (OSError, ValueError):
            real = False
        if real:
            p.error(f"{args.out} holds a GPU measurement; a --smoke run would replace it: pass another --out")
    return args


def run(args: argparse.Namespace) -> Path:
    common.offline_env()
    common.quiet()
    import torch

    if args.smoke:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible; run with --smoke for the CPU structure check")
    else:
        device = torch.device("cuda")
    budget = Budget(args.budget_s)
    started = dt.datetime.now(dt.timezone.utc)
    data: dict[str, Any] = {"meta": {
        "check": NAME, "smoke": bool(args.smoke), "started_at": started.isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory if device.type == "cuda" else None,
        "cuda": torch.version.cuda, "machine": common.machine_info(torch.get_num_threads()),
        "command": " ".join(["python", os.path.relpath(sys.argv[0], common.REPO), *sys.argv[1:]]),
        "budget_s": args.budget_s}}
    errors = {}
    with tempfile.TemporaryDirectory(prefix="kdlora-gpu-check-") as tmp:
        root = Path(tmp)
        parts = (("correctness", lambda: correctness(root, device, args.smoke)),
                 ("speed", lambda: speed(device, args.smoke, budget.until(0.55))),
                 ("packing", lambda: packing(root, device, args.smoke, budget.until(0.92))))
        for name, fn in parts:
            log(f"{name} ({budget.left():.0f} s of the budget left)")
            try:
                data[name] = fn()
            except Exception as exc:  # keep the other parts: a partial check still says something
                traceback.print_exc()
                errors[name] = f"{type(exc).__name__}: {exc}"
                data[name] = {"error": errors[name]}
    try:
        data["projection"] = projection(data["speed"], data["packing"])
        data["projection"]["limits"] = limits(data["speed"])
    except Exception as exc:
        traceback.print_exc()
        errors["projection"] = f"{type(exc).__name__}: {exc}"
        data["projection"] = {"error": errors["projection"]}
    data["meta"].update(finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        duration_s=time.monotonic() - budget.start, errors=errors)
    from kdlora.records import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(data, indent=2, default=common._jsonable) + "\n")
    if len(errors) == 4:
        raise RuntimeError(f"nothing could be measured: {errors}")
    proj = data["projection"]
    if "gpu_hours" in proj:
        log(f"projection: paper grid {proj['gpu_hours']:.1f} GPU-hours (reference "
            f"{proj['reference']['train_hours']:.1f} h for its {proj['reference']['runs']} runs)")
    return args.out


def main() -> None:
    args = parse_args()
    common.main_guard(lambda: run(args))


if __name__ == "__main__":
    main()
