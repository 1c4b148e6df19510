"""Shared helpers of the benchmarks: repetitions that alternate sides, medians with their spread,
machine facts and load, and the atomic JSON result every script writes to bench/results/<name>.json.

A benchmark compares two (or more) ways of doing the same work in ONE process run. The sides
alternate (A B, then B A, ...) so that a slow spell of a shared machine hits both sides alike;
every figure is reported as a median with min/max and n, never as a single timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SCHEMA_VERSION = 1
EXIT_COULD_NOT_MEASURE = 1


# ----- set-up -------------------------------------------------------------------------------
def offline_env() -> None:
    """Benchmarks run offline like the tests: the hub is never contacted."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("HF_HUB_DISABLE_TELEMETRY", "1")):
        os.environ.setdefault(key, value)


def quiet() -> None:
    """Progress bars and 'newly initialised head' reports would bury the benchmark's own lines."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def parser(description: str, default_reps: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke run: tiny sizes, figures meaningless, JSON structure real")
    p.add_argument("--reps", type=int, default=None,
                   help=f"repetitions per side (default {default_reps}; 1 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for every side (default 2)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                   help="where <name>.json is written (default bench/results)")
    p.set_defaults(default_reps=default_reps)
    return p


def start(name: str, doc: str, default_reps: int, *, models: bool = True,
          extra: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[argparse.Namespace, Bench, int]:
    """The prologue every benchmark shares: its arguments (the common ones plus `extra`), the
    offline environment, quiet libraries and the torch thread count (for benchmarks that run
    models), the Bench that collects its results, and the repetitions."""
    p = parser(doc.splitlines()[0], default_reps)
    if extra is not None:
        extra(p)
    args = p.parse_args()
    offline_env()
    if models:
        quiet()
        set_threads(args.threads)
    return args, Bench(name, args), reps_of(args)


def reps_of(args: argparse.Namespace) -> int:
    if args.reps is not None:
        return max(1, args.reps)
    return 1 if args.quick else args.default_reps


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# ----- statistics ---------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, Any]:
    """Median, min, max and n of repeated measurements (the spread is min..max)."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "values": vals}


def paired_ratios(numerator: list[float], denominator: list[float]) -> dict[str, Any]:
    """Ratio per repetition pair (rep i of one side over rep i of the other), summarised.
    Pairs ran back to back, so their ratio cancels most of the machine's drift."""
    return summary([a / b for a, b in zip(numerator, denominator) if b])


def best_ratio(numerator: list[float], denominator: list[float]) -> float | None:
    """min ÷ min of two sides' times. Interference on a shared machine only ever adds time, so each
    side's best repetition is its least disturbed one; a robust companion to the paired median."""
    return min(numerator) / min(denominator) if numerator and denominator and min(denominator) else None


def alternate(sides: dict[str, Callable[[int], dict]], reps: int,
              log: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Run every side `reps` times, alternating the order (A B, B A, A B...). Each call gets the
    repetition number and returns a dict of figures; the load average before it is added."""
    names = list(sides)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            load = os.getloadavg()[0]
            start = time.perf_counter()
            result = sides[name](rep)
            result.setdefault("wall_s", time.perf_counter() - start)
            result["loadavg_1m_before"] = load
            out[name].append(result)
            log(f"  rep {rep + 1}/{reps} {name}: {short(result)}")
    return out


def column(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def short(result: dict) -> str:
    keys = [k for k in result if isinstance(result[k], (int, float)) and not isinstance(result[k], bool)]
    return ", ".join(f"{k}={result[k]:.4g}" for k in keys[:6])


# ----- machine ------------------------------------------------------------------------------
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_facts() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "logical_cpus": os.cpu_count(), "flags": {f: f in flags for f in CPU_FLAGS}}


def cpu_speed_probe(reps: int = 5) -> float:
    """Seconds one core takes for a fixed pure-Python loop (best of `reps`). The 2-core machines this
    project is lent differ from session to session (the same report cost 6.0 CPU s one day and 9.5 the
    next); recording the probe beside every benchmark lets a reader tell a slower machine from a slower
    kdlora."""
    best = float("inf")
    for _ in range(reps):
        start, total = time.process_time(), 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.process_time() - start)
    return round(best, 4)


def cpu_speed_probe_both_cores(reps: int = 5) -> float:
    """The same probe run on every core at once (the slowest core's seconds): on the lent VMs two
    busy cores can each run slower than one alone (from -15 % to +35 % in one session's readings),
    which a parallel benchmark (the report's three processes) pays and the one-core probe does not
    show."""
    import multiprocessing

    cores = os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        return max(pool.map(cpu_speed_probe, [reps] * cores))


def machine_info(threads: int) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    versions = {}
    for pkg in ("kdlora", "torch", "transformers", "peft", "datasets"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    mem = None
    try:
        import psutil

        mem = psutil.virtual_memory().total
    except ImportError:
        pass
    return {"cpu": cpu_facts(), "cpu_speed_probe_s": cpu_speed_probe(),
            "cpu_speed_probe_both_cores_s": cpu_speed_probe_both_cores(), "memory_bytes": mem, "torch_threads": threads,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform(), "packages": versions,
            "git_commit": git_commit()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ----- results ------------------------------------------------------------------------------
def headline(metric: str, stats: dict[str, Any], *, target: str | None, met: bool | None,
             unit: str = "") -> dict[str, Any]:
    """One row of the BENCHMARKS.md table: a figure's median, spread and n, against its target."""
    return {"metric": metric, "median": stats["median"], "min": stats["min"], "max": stats["max"],
            "n": stats["n"], "unit": unit, "target": target, "met": met}


class Bench:
    """One benchmark's run: collects settings, results, headline rows and notes, then writes the
    JSON atomically (temp file + rename) so a crash never leaves half a result behind."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name, self.args = name, args
        self.started = dt.datetime.now(dt.timezone.utc)
        self.load_before = list(os.getloadavg())
        self.data: dict[str, Any] = {"settings": {}, "results": {}, "headline": [], "notes": []}

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        print(f"note: {text}")

    def payload(self) -> dict[str, Any]:
        return {"benchmark": self.name, "schema_version": SCHEMA_VERSION, "quick": bool(self.args.quick),
                "command": " ".join(["python", *[os.path.relpath(sys.argv[0], REPO)], *sys.argv[1:]]),
                "started_at": self.started.isoformat(timespec="seconds"),
                "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "duration_s": (dt.datetime.now(dt.timezone.utc) - self.started).total_seconds(),
                "machine": machine_info(self.args.threads),
                "loadavg": {"before": self.load_before, "after": list(os.getloadavg())}, **self.data}

    def write(self) -> Path:
        from kdlora.records import atomic_write_text

        path = Path(self.args.results_dir) / f"{self.name}.json"
        atomic_write_text(path, json.dumps(self.payload(), indent=2, default=_jsonable) + "\n")
        return path

    def print_headline(self) -> None:
        print(f"\n{self.name}:")
        for row in self.data["headline"]:
            verdict = "" if row["met"] is None else ("  [target met]" if row["met"] else "  [target MISSED]")
            target = f" (target {row['target']})" if row["target"] else ""
            print(f"  {row['metric']}: {fmt(row['median'])}{row['unit']} "
                  f"[{fmt(row['min'])}..{fmt(row['max'])}, n={row['n']}]{target}{verdict}")


def fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def main_guard(fn: Callable[[], Path]) -> None:
    """Run a benchmark's main; exit non-zero only when it could not measure (never for a missed
    target: a benchmark reports figures, it does not judge them)."""
    try:
        path = fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # anything that stopped the measurement
        traceback.print_exc()
        print(f"error: could not measure: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(EXIT_COULD_NOT_MEASURE)
    print(f"wrote {path}")


# ----- shared workloads ---------------------------------------------------------------------
def tweets_task(root: Path, n_train: int, n_eval: int) -> Path:
    """The demo's real data (tweets, 3 classes), a stratified split; returns the task YAML."""
    from kdlora.data.tweets import write_tweets_task

    return write_tweets_task(Path(root) / f"tweets_{n_train}_{n_eval}", n_train, n_eval, seed=0)


BERT_BASE_SHAPE = {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072}
TINY_SHAPE = {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64}  # --quick stand-in


def bert_from_config(root: Path, shape: dict[str, int] = BERT_BASE_SHAPE, num_labels: int = 3,
                     name: str = "bert-base-shape") -> Path:
    """A BERT model of the given shape (default BERT-base: 768 hidden, 12 layers, 12 heads, 3072
    FFN) with random weights, built from its config; its WordPiece vocabulary is MiniLM's (the
    bert-base-uncased one), so real text tokenises as it would for bert-base-uncased."""
    from kdlora.models import minilm_path
    from kdlora.testing.tiny import build_tiny_model

    words = (Path(minilm_path()) / "vocab.txt").read_text().split("\n")
    return build_tiny_model("bert", Path(root) / name, words, num_labels=num_labels, **shape)
