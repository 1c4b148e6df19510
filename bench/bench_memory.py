"""Memory: peak memory of KD-LoRA on the student vs LoRA-only on the teacher-size model vs FFT,
same task (minilm family on the demo's tweets), same hyperparameters.

    python bench/bench_memory.py [--quick] [--reps N]

Each run executes in a fresh process forked from a server that has only imported the libraries,
so no run inherits another's freed-but-retained heap (the allocator keeps freed memory, and a
later run in the same process would show less growth). Two figures per run:
- record: the run record's efficiency.peak_memory_bytes. On CPU this is the growth of the
  process's peak RSS over the training phase (VmHWM after a reset, minus VmRSS at its start): it
  counts activations, gradients and optimizer state, NOT the weights loaded before training.
- process: peak RSS of the whole run above the process's RSS after imports (sampled every
  10 ms from outside): weights + training + evaluation, closest to what a CUDA
  max_memory_allocated figure would count.
The ratios are KD-LoRA ÷ LoRA-only and KD-LoRA ÷ FFT (the reference study reports KD-LoRA using
about 30 % less than LoRA-only, i.e. a ratio near 0.7, on GPU).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from kdlora.strategies import teacher_of

NAME = "memory"
REFERENCE_CLAIM = 0.7  # KD-LoRA ÷ LoRA-only memory claimed by the reference study (~30 % less)
FULL = {"n_train": 128, "n_eval": 64}
QUICK = {"n_train": 16, "n_eval": 16}
SAMPLE_S = 0.01
# Imported once by the fork server; a run's memory is what it adds on top of these.
PRELOAD = ["torch", "transformers", "peft", "datasets", "sklearn.metrics", "torch.utils.flop_counter",
           "transformers.models.bert.modeling_bert", "kdlora.runner", "kdlora.train.engine",
           "kdlora.strategies", "kdlora.variants", "kdlora.data.loading", "kdlora.data.tokenize"]
STRATEGIES = ("kd-lora", "lora", "fft")


def child(cfg_dict: dict, results: str, threads: int, conn) -> None:
    """Runs in a fresh process: report RSS after imports, run, send back the record's figures."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import common as c

        c.offline_env()
        c.quiet()
        c.set_threads(threads)
        import psutil

        from kdlora.config import build_config
        from kdlora.runner import run_one

        cfg = build_config(cfg_dict)
        conn.send(("baseline", psutil.Process().memory_info().rss))
        rec = run_one(cfg, results)
        if rec.status != "completed":
            raise RuntimeError(f"run {rec.run_id} {rec.status}: {rec.error}")
        eff = rec.efficiency
        conn.send(("done", {"record_peak_bytes": eff.peak_memory_bytes, "memory_kind": eff.memory_kind,
                            "trainable_params": eff.trainable_params, "total_params": eff.total_params,
                            "train_time_s": eff.train_time_s, "cache_hit": eff.teacher_cache_hit,
                            "accuracy": rec.metrics.get("accuracy"), "run_id": rec.run_id}))
    except BaseException as exc:  # the parent reports it; a benchmark that cannot measure exits 1
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def measure(cfg_dict: dict, results: Path, threads: int) -> dict:
    """Run one config in a fresh process, sampling its RSS from here until it ends."""
    import psutil

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    parent, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child, args=(cfg_dict, str(results), threads, child_end))
    proc.start()
    ps, peak, baseline, out = psutil.Process(proc.pid), 0, None, None
    while proc.is_alive() or parent.poll():
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            pass
        while parent.poll():
            kind, value = parent.recv()
            if kind == "baseline":
                baseline, peak = value, value
            elif kind == "error":
                raise RuntimeError(f"child run failed: {value}")
            else:
                out = value
        time.sleep(SAMPLE_S)
    proc.join()
    if out is None or baseline is None:
        raise RuntimeError(f"child run ended (exit {proc.exitcode}) without a result")
    return {**out, "process_peak_bytes": peak - baseline, "baseline_rss_bytes": baseline}


def configs(task: Path, threads: int, quick: bool, teacher: str | None) -> dict[str, dict]:
    from kdlora.config import build_config

    shared = dict(family="minilm", task=str(task), seed=1, epochs=1, batch_size=32, threads=threads,
                  device="cpu", teacher_model=teacher)
    cfgs = {"kd-lora": dict(shared, strategy="kd-lora", variant="lora"),
            "lora": dict(shared, strategy="lora", variant="lora"),
            "fft": dict(shared, strategy="fft")}
    if quick:  # the tiny stand-in teacher has no layers to cut: its student is itself
        cfgs["kd-lora"]["student_model"] = teacher
    # The FFT run doubles as the KD-LoRA run's teacher: same config, same run_id.
    if teacher_of(build_config(cfgs["kd-lora"])).run_id != build_config(cfgs["fft"]).run_id:
        raise RuntimeError("the FFT run is not the KD-LoRA run's teacher (run_ids differ)")
    return cfgs


def main() -> Path:
    args, bench, reps = common.start(NAME, __doc__, default_reps=3, models=False)  # runs are in child processes
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="kdlora-bench-mem-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        task = common.tweets_task(root, sizes["n_train"], sizes["n_eval"])
        teacher = str(common.bert_from_config(root, common.TINY_SHAPE, name="tiny")) if args.quick else None
        cfgs = configs(task, args.threads, args.quick, teacher)
        results = root / "runs"
        print("set-up: FFT teacher run, then a KD-LoRA run that builds the teacher-logit cache (both unmeasured)")
        measure(cfgs["fft"], results, args.threads)
        cold = measure(cfgs["kd-lora"], results, args.threads)
        rows = common.alternate({s: (lambda rep, s=s: measure(cfgs[s], results, args.threads))
                                 for s in STRATEGIES}, reps)
        summaries = {s: {k: common.summary(common.column(rows[s], k)) for k in
                         ("record_peak_bytes", "process_peak_bytes", "total_params", "trainable_params")}
                     for s in STRATEGIES}
        ratios = {f"kd-lora/{other}": {kind: common.paired_ratios(common.column(rows["kd-lora"], kind),
                                                                  common.column(rows[other], kind))
                                       for kind in ("record_peak_bytes", "process_peak_bytes")}
                  for other in ("lora", "fft")}
        ratios["lora/fft"] = {kind: common.paired_ratios(common.column(rows["lora"], kind),
                                                         common.column(rows["fft"], kind))
                              for kind in ("record_peak_bytes", "process_peak_bytes")}
        bench.data["settings"] = {**sizes, "reps": reps, "threads": args.threads, "batch_size": 32, "epochs": 1,
                                  "max_length": 128, "padding": "per batch (kdlora default)",
                                  "sample_interval_s": SAMPLE_S, "isolation": "one process per run, forked from an import-only server",
                                  "memory_kind": "cpu_peak_rss_growth (record) and process peak RSS above "
                                                 "post-import RSS (process)"}
        bench.data["results"] = {"by_strategy": summaries, "ratios": ratios, "cold_kd_run": cold, "runs": rows}
        for pair in ("kd-lora/lora", "kd-lora/fft", "lora/fft"):
            target = f"reference study: ~{REFERENCE_CLAIM}" if pair == "kd-lora/lora" else None
            for kind, label in (("record_peak_bytes", "training peak RSS growth (record)"),
                                ("process_peak_bytes", "whole-run peak RSS above imports")):
                bench.data["headline"].append(common.headline(f"memory {pair}, {label}", ratios[pair][kind],
                                                              target=target, met=None, unit="x"))
        for s in STRATEGIES:
            for kind in ("record_peak_bytes", "process_peak_bytes"):
                bench.data["headline"].append(common.headline(
                    f"{s} {kind.replace('_bytes', '')} (MiB)",
                    {k: (v / 2**20 if isinstance(v, (int, float)) and k != "n" else v)
                     for k, v in summaries[s][kind].items() if k != "values"}, target=None, met=None))
        bench.note("CPU memory: the record's figure is peak RSS growth during training (weights loaded "
                   "before training are not in it); the process figure includes them")
        bench.note("the engine counts FLOPs during its first training step, inside the memory meter, "
                   "so no earlier measuring pass leaves freed activations that hide part of the training peak")
    bench.print_headline()
    return bench.write()


if __name__ == "__main__":
    common.main_guard(main)
