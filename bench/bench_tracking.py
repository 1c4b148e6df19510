"""Tracking cost: training time with `track: tensorboard` / `track: mlflow` ÷ without, same run.

    python bench/bench_tracking.py [--quick] [--reps N]

One LoRA run of the minilm family (all-MiniLM-L6-v2, offline) on the tweets task, trained again
and again with tracking off, TensorBoard, and MLflow (local sqlite store), sides alternating. The
headline is the in-loop cost: efficiency.train_time_s (the timed training loop, where the per-step
loss/lr hand-over and the trackers' calls happen) with tracking ÷ without, target < 2 % extra.
A tracker's fixed per-run cost outside the loop (opening the event file or MLflow run, logging the
params, the final metrics and the record artifact) is reported apart, in seconds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "tracking"
TARGET = 1.02
FULL = {"n_train": 160, "n_eval": 32}
QUICK = {"n_train": 32, "n_eval": 16}
SIDES = ("none", "tensorboard", "mlflow")


IN_LOOP = {"seconds": 0.0, "calls": 0}


def timed_callbacks() -> None:
    """Time every call the loop makes into the trackers (kdlora.tracking.Tracking)."""
    from kdlora import tracking

    for name in ("on_step", "on_epoch"):
        original = getattr(tracking.Tracking, name)

        def timed(self, *args, _original=original):
            start = time.perf_counter()
            try:
                return _original(self, *args)
            finally:
                IN_LOOP["seconds"] += time.perf_counter() - start
                IN_LOOP["calls"] += 1

        setattr(tracking.Tracking, name, timed)


def run(cfg, results: Path) -> dict:
    from kdlora.runner import run_one

    IN_LOOP.update(seconds=0.0, calls=0)
    start = time.perf_counter()
    rec = run_one(cfg, results)
    wall = time.perf_counter() - start
    if rec.status != "completed":
        raise RuntimeError(f"run {rec.run_id} {rec.status}: {rec.error}")
    train = rec.efficiency.train_time_s
    return {"train_s": train, "wall_s": wall, "steps": rec.efficiency.train_steps,
            "in_loop_s": IN_LOOP["seconds"], "in_loop_calls": IN_LOOP["calls"], "in_loop_share": IN_LOOP["seconds"] / train}


def main() -> Path:
    args, bench, reps = common.start(NAME, __doc__, default_reps=3)
    from kdlora.config import build_config

    timed_callbacks()

    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="kdlora-bench-track-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        task = common.tweets_task(root, sizes["n_train"], sizes["n_eval"])
        model = str(common.bert_from_config(root, common.TINY_SHAPE, name="tiny")) if args.quick else None
        shared = dict(family="minilm", task=str(task), strategy="lora", variant="lora", seed=1, epochs=1,
                      batch_size=16, threads=args.threads, device="cpu", teacher_model=model)
        cfgs = {side: build_config(dict(shared, track=None if side == "none" else side)) for side in SIDES}
        results = {side: root / side for side in SIDES}
        print("warm-up: one run per side (imports, the MLflow store's tables)")
        for side in SIDES:
            run(cfgs[side], results[side])
        rows = common.alternate({side: (lambda rep, s=side: run(cfgs[s], results[s])) for side in SIDES}, reps)
        none = rows["none"]
        bench.data["settings"] = {**sizes, "reps": reps, "threads": args.threads, "batch_size": 16, "epochs": 1,
                                  "model": "tiny random BERT" if args.quick else "all-MiniLM-L6-v2 (lora/lora)",
                                  "steps": none[0]["steps"], "device": "cpu (a loss value every step)"}
        bench.data["results"] = {"runs": rows}
        for side in SIDES[1:]:
            ratio = common.paired_ratios(common.column(rows[side], "train_s"), common.column(none, "train_s"))
            fixed = common.summary([(a["wall_s"] - a["train_s"]) - (b["wall_s"] - b["train_s"])
                                    for a, b in zip(rows[side], none)])
            bench.data["results"][side] = {"train_time_ratio": ratio, "fixed_cost_s": fixed,
                                           "best_train_time_ratio": common.best_ratio(
                                               common.column(rows[side], "train_s"), common.column(none, "train_s"))}
            share = common.summary(common.column(rows[side], "in_loop_share"))
            bench.data["results"][side]["in_loop_share"] = share
            bench.data["headline"].append(common.headline(
                f"{side}: time in the trackers inside the loop / training time", share,
                target=f"<= {TARGET - 1:.2f}", met=share["median"] <= TARGET - 1, unit="x"))
            bench.data["headline"].append(common.headline(
                f"{side}: training time with tracking / without (paired, noisy on a shared machine)", ratio,
                target=None, met=None, unit="x"))
            bench.data["headline"].append(common.headline(
                f"{side}: fixed cost per run outside the loop (open, params, final metrics, artifact)", fixed,
                target=None, met=None, unit="s"))
        bench.note(f"{none[0]['steps']} optimizer steps per run, one loss/lr point per step (CPU); on CUDA the loop "
                   "hands losses over only every 50 steps and at epoch ends, so the in-loop cost is smaller still")
    bench.print_headline()
    return bench.write()


if __name__ == "__main__":
    common.main_guard(main)
