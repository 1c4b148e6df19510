"""Hardware efficiency: model FLOPs per second of kdlora's training step (BERT-base shape, seq 128,
FLOPs counted by torch.utils.flop_counter.FlopCounterMode) ÷ this machine's measured fp32 matmul
rate (torch.matmul of large square matrices, same thread count). FFT and LoRA steps; and what bf16
autocast does on this CPU (matmul rate, step throughput, and the loss/logit/gradient differences
against fp32 on the same batch of the pretrained MiniLM).

    python bench/bench_hw_efficiency.py [--quick] [--reps N]

A step is kdlora's own training loop (kdlora.train.loop.train_loop: forward, loss, backward,
gradient clipping, AdamW, schedule) on fixed batches of random token ids, all 128 long (no
padding, so every FLOP counted is useful work). FLOPs per step are forward+backward as counted
by FlopCounterMode (AdamW's elementwise work is not counted; it is a small part of the time).
Matmul and training steps alternate, so both see the same machine load.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "hw_efficiency"
TARGET = 0.7
FULL = {"batch": 8, "seq": 128, "matmul_n": 2048, "bf16_matmul_n": 512, "bf16_batch": 4, "bf16_seq": 64}
QUICK = {"batch": 2, "seq": 16, "matmul_n": 256, "bf16_matmul_n": 64, "bf16_batch": 2, "bf16_seq": 8}


# ----- matmul peak -------------------------------------------------------------------------------
def matmul_rate(n: int, dtype_name: str, repeats: int = 3) -> dict:
    """FLOP/s of an n×n @ n×n matmul: best of `repeats` after one warm-up (a peak is a best case)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return {"flops_per_s": 2.0 * n**3 / min(times), "n": n, "dtype": dtype_name}


# ----- kdlora's training step ------------------------------------------------------------------
def make_model(model_dir: Path, strategy: str):
    from kdlora.config import build_config
    from kdlora.models import head_modules, load_classifier, target_modules
    from kdlora.variants import VARIANTS, AdapterTargets

    cfg = build_config(dict(family="minilm", task="sst2", strategy=strategy, teacher_model=str(model_dir)))
    model = load_classifier(str(model_dir), 2)
    if strategy == "lora":
        targets = AdapterTargets(target_modules(model), head_modules(model))
        model = VARIANTS.get("lora").apply(model, cfg, targets, total_steps=1000)
    return model, cfg


def batches(model, batch: int, seq: int, n: int, seed: int = 0) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    return [{"input_ids": torch.randint(5, vocab, (batch, seq), generator=g),
             "attention_mask": torch.ones(batch, seq, dtype=torch.long),
             "token_type_ids": torch.zeros(batch, seq, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch,), generator=g)} for _ in range(n)]


def step_flops(model, batch: dict) -> int:
    from kdlora.strategies.base import model_loss
    from kdlora.train import measure
    from kdlora.train.loop import model_inputs

    flops, _ = measure.step_flops(model, batch, model_loss, model_inputs)
    return flops


def timed_steps(model, cfg, data: list[dict]) -> float:
    """Seconds per optimizer step of kdlora's loop over `data` (one step per batch)."""
    import torch

    from kdlora.strategies.base import model_loss
    from kdlora.train.loop import train_loop

    result = train_loop(model, data, cfg=cfg, device=torch.device("cpu"), loss_fn=model_loss,
                        after_step=lambda m, s: None, total_steps=len(data))
    return result.seconds / result.steps


def op_profile(model, cfg, data: list[dict], top: int = 12) -> list[dict]:
    """Where one training step's time goes: torch.profiler's operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        timed_steps(model, cfg, data[:1])
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]


# ----- bf16 autocast ------------------------------------------------------------------------------
def bf16_effects(model_path: str, batch: int, seq: int) -> dict:
    """fp32 vs bf16 autocast on the same weights and batch: one forward+backward each, timed, and
    the differences in logits, loss and gradient direction."""
    import torch
    import torch.nn.functional as F

    from kdlora.models import load_classifier

    torch.manual_seed(0)
    model = load_classifier(model_path, 3)
    model.eval()  # no dropout: the two passes must see the same function
    data = batches(model, batch, seq, 1, seed=1)[0]
    data["labels"] = data["labels"] % 3
    out = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            res = model(**data)
        res.loss.backward()
        seconds = time.perf_counter() - start
        grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        out[name] = {"seconds": seconds, "logits": res.logits.detach().float(), "loss": float(res.loss.detach()),
                     "grad": grads}
    f, b = out["fp32"], out["bf16"]
    return {"fp32_step_s": f["seconds"], "bf16_step_s": b["seconds"], "slowdown": b["seconds"] / f["seconds"],
            "logits_max_abs_diff": float((f["logits"] - b["logits"]).abs().max()),
            "logits_fp32_max_abs": float(f["logits"].abs().max()),
            "loss_fp32": f["loss"], "loss_bf16": b["loss"], "loss_abs_diff": abs(f["loss"] - b["loss"]),
            "same_argmax": float((f["logits"].argmax(-1) == b["logits"].argmax(-1)).float().mean()),
            "grad_cosine": float(F.cosine_similarity(f["grad"], b["grad"], dim=0)),
            "batch": batch, "seq": seq, "model": "all-MiniLM-L6-v2 (pretrained) + fresh 3-class head"}


# ----- main ---------------------------------------------------------------------------------------
def main() -> Path:
    args = common.parser(__doc__.splitlines()[0], default_reps=3).parse_args()
    common.offline_env()
    common.quiet()
    common.set_threads(args.threads)
    from kdlora.models import minilm_path

    sizes = QUICK if args.quick else FULL
    bench = common.Bench(NAME, args)
    reps = common.reps_of(args)
    root = Path(tempfile.mkdtemp(prefix="kdlora-bench-hw-"))
    try:
        shape = common.TINY_SHAPE if args.quick else common.BERT_BASE_SHAPE
        model_dir = common.bert_from_config(root, shape, num_labels=2, name="model")
        models = {s: make_model(model_dir, s) for s in ("fft", "lora")}
        data = {s: batches(models[s][0], sizes["batch"], sizes["seq"], 2) for s in models}
        flops = {s: step_flops(models[s][0], data[s][0]) for s in models}
        for s, (model, cfg) in models.items():  # warm-up: first steps allocate optimizer state, pick kernels
            timed_steps(model, cfg, data[s][:1])

        def step_side(strategy: str):
            model, cfg = models[strategy]
            return lambda rep: {"step_s": timed_steps(model, cfg, data[strategy])}

        rows = common.alternate({"matmul_fp32": lambda rep: matmul_rate(sizes["matmul_n"], "float32"),
                                 "fft": step_side("fft"), "lora": step_side("lora")}, reps)
        peak = common.column(rows["matmul_fp32"], "flops_per_s")
        results: dict = {"matmul_fp32_flops_per_s": common.summary(peak), "flops_per_step": flops}
        for s in ("fft", "lora"):
            steps = common.column(rows[s], "step_s")
            achieved = [flops[s] / t for t in steps]
            results[s] = {"step_s": common.summary(steps), "flops_per_s": common.summary(achieved),
                          "fraction_of_matmul_peak": common.paired_ratios(achieved, peak)}
        # Where the time goes (one profiled step each); filled whatever the figure, so a miss is explained.
        results["profile"] = {s: op_profile(models[s][0], models[s][1], data[s]) for s in models}

        print("bf16: matmul rate and autocast effects (this CPU has no bf16 matrix units if avx512_bf16/amx "
              "are absent from its flags)")
        bf16_mm = matmul_rate(sizes["bf16_matmul_n"], "bfloat16", repeats=2)
        fp32_mm_same_n = matmul_rate(sizes["bf16_matmul_n"], "float32", repeats=2)
        model_path = str(model_dir) if args.quick else minilm_path()
        results["bf16"] = {"matmul": bf16_mm, "matmul_fp32_same_n": fp32_mm_same_n,
                           "matmul_bf16_over_fp32": bf16_mm["flops_per_s"] / fp32_mm_same_n["flops_per_s"],
                           "autocast": bf16_effects(model_path, sizes["bf16_batch"], sizes["bf16_seq"])}
        results["runs"] = rows
        bench.data["results"] = results
        bench.data["settings"] = {**sizes, "reps": reps, "threads": args.threads,
                                  "model": "BERT-base shape from config (768/12/12/3072), random weights"
                                  if not args.quick else "tiny random BERT",
                                  "step": "kdlora.train.loop.train_loop, AdamW, 1 optimizer step per batch",
                                  "flops": "FlopCounterMode, forward+backward of one step",
                                  "peak": "best of 3 n x n fp32 torch.matmul per repetition"}
        label = "tiny BERT" if args.quick else "BERT-base shape"
        for s in ("fft", "lora"):
            frac = results[s]["fraction_of_matmul_peak"]
            bench.data["headline"].append(common.headline(
                f"{s.upper()} step model FLOP/s / fp32 matmul peak ({label}, batch {sizes['batch']} x seq "
                f"{sizes['seq']})", frac,
                target=f">= {TARGET}" if s == "fft" else None, met=frac["median"] >= TARGET if s == "fft" else None,
                unit="x"))
            bench.data["headline"].append(common.headline(f"{s.upper()} step time", results[s]["step_s"],
                                                          target=None, met=None, unit="s"))
        bench.data["headline"].append(common.headline("fp32 matmul peak", {
            k: (v / 1e9 if k in ("median", "min", "max") else v) for k, v in results["matmul_fp32_flops_per_s"].items()},
            target=None, met=None, unit=" GFLOP/s"))
        ac = results["bf16"]["autocast"]
        bench.data["headline"].append(common.headline("bf16 autocast step time / fp32 (MiniLM)",
                                                      common.summary([ac["slowdown"]]), target=None, met=None,
                                                      unit="x"))
        bench.data["headline"].append(common.headline("bf16 / fp32 matmul rate",
                                                      common.summary([results["bf16"]["matmul_bf16_over_fp32"]]),
                                                      target=None, met=None, unit="x"))
        top = results["profile"]["fft"][:5]
        bench.note("FFT step, top operators by self CPU time: " +
                   ", ".join(f"{o['op']} {o['share']:.0%}" for o in top))
        bench.note(f"bf16 autocast vs fp32 on the same batch: logits max |diff| {ac['logits_max_abs_diff']:.3g} "
                   f"(max |logit| {ac['logits_fp32_max_abs']:.3g}), loss diff {ac['loss_abs_diff']:.3g}, "
                   f"same argmax {ac['same_argmax']:.0%}, gradient cosine {ac['grad_cosine']:.4f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    bench.print_headline()
    return bench.write()


if __name__ == "__main__":
    common.main_guard(main)
