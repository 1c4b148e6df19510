"""Sweep overhead: wall time ÷ (Σ run times ÷ workers) for a grid of ~40 real tiny runs.

The runs are real kdlora training runs (tiny random BERT teacher / DistilBERT student, synthetic
GLUE data, FFT + {lora, dora} x {LoRA-only, KD-LoRA}), executed by the local executor with 2
workers. A run's time is the wall time of kdlora.runner.run_one inside its process, so everything
else counts as sweep overhead: forking, logs, records, claims, scheduling gaps, waiting for
teachers, and the tail where one worker idles. Two figures are reported:

- overhead_total: from before the grid is loaded to the end, including the fork server's one-time
  import of torch/transformers/peft (seconds that a single training process would pay too);
- overhead_steady: from the first run's start to the last run's end.

Usage: python bench/bench_sweep.py [--seeds 4] [--workers 2] [--out bench/results/sweep_overhead.json]
Exits non-zero only if it could not measure (a run failed, nothing ran).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TIMES = "bench_run_times.jsonl"


def timed_run_one(cfg, results_dir):
    """kdlora.runner.run_one, timed inside the run's own process (append-only JSONL)."""
    from kdlora.runner import run_one

    start = time.perf_counter()
    start_wall = time.time()
    try:
        return run_one(cfg, results_dir)
    finally:
        line = json.dumps({"run_id": cfg.run_id, "seconds": time.perf_counter() - start,
                           "start": start_wall, "end": time.time()}) + "\n"
        fd = os.open(Path(results_dir) / TIMES, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def build_inputs(root: Path, seeds: int) -> Path:
    """Tiny models, synthetic GLUE data and a grid of 2 tasks x `seeds` seeds x 5 runs."""
    import yaml

    from kdlora.testing.synthetic_data import FIXTURE_WORDS, write_glue_fixture
    from kdlora.testing.tiny import build_tiny_model

    models = {arch: build_tiny_model(arch, root / "models" / arch, FIXTURE_WORDS) for arch in ("bert", "distilbert")}
    glue = write_glue_fixture(root / "glue", tasks=("sst2", "rte"), n_train=128, n_eval=64)
    grid = root / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "bench-sweep", "families": ["bert"], "tasks": ["sst2", "rte"],
        "seeds": list(range(1, seeds + 1)), "variants": ["lora", "dora"],
        "hyperparameters": {"teacher_model": str(models["bert"]), "data_dir": str(glue), "epochs": 2,
                            "batch_size": 16},
        "kd-lora": {"student_model": str(models["distilbert"])},
    }))
    return grid


def measure(grid: Path, results: Path, workers: int) -> dict:
    from kdlora.executors import ExecutorOptions
    from kdlora.executors.local import RUNNER_PRELOAD, LocalExecutor
    from kdlora.grid import expand_grid, load_grid
    from kdlora.sweep.scheduler import run_sweep

    t0 = time.time()
    runs = expand_grid(load_grid(grid))
    executor = LocalExecutor(results, "bench_sweep:timed_run_one",
                             ExecutorOptions(workers=workers, preload=RUNNER_PRELOAD))
    result = run_sweep(runs, results, executor, poll_s=0.5)
    wall = time.time() - t0
    times = [json.loads(line) for line in (results / TIMES).read_text().splitlines()]
    if result.failed or len(times) != len(runs):
        raise SystemExit(f"could not measure: {len(result.failed)} runs failed ({result.failed})")
    total = sum(t["seconds"] for t in times)
    steady = max(t["end"] for t in times) - min(t["start"] for t in times)
    ideal = total / workers
    return {
        "runs": len(runs), "workers": workers, "wall_s": wall, "steady_wall_s": steady,
        # where the overhead goes: before the first run (grid, fork server importing torch) ...
        "startup_s": min(t["start"] for t in times) - t0,
        # ... and per run (fork, log, record checks, process exit), summed over runs
        "per_run_process_overhead_s": (sum(result.run_seconds.values()) - total) / len(runs),
        "sum_run_s": total, "median_run_s": sorted(t["seconds"] for t in times)[len(times) // 2],
        "process_sum_s": sum(result.run_seconds.values()),
        "overhead_total": wall / ideal, "overhead_steady": steady / ideal,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per task (5 runs each; 2 tasks)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "sweep_overhead.json")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))  # the run function is found as bench_sweep:timed_run_one
    from kdlora.records.store import atomic_write_text

    with tempfile.TemporaryDirectory(prefix="kdlora-bench-sweep-") as tmp:
        grid = build_inputs(Path(tmp), args.seeds)
        figures = measure(grid, Path(tmp) / "results", args.workers)
    report = {"benchmark": "sweep_overhead", "target": "overhead <= 1.10",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_avg_1m_at_end": os.getloadavg()[0]},
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **figures,
              "how": "python bench/bench_sweep.py; run time = wall time of run_one inside its process"}
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"sweep overhead {figures['overhead_total']:.3f} total (incl. one-time torch import), "
          f"{figures['overhead_steady']:.3f} steady; {figures['runs']} runs, {args.workers} workers, "
          f"wall {figures['wall_s']:.1f} s, sum of run times {figures['sum_run_s']:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
