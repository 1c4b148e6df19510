"""The demo's results: one row per expected run, the best variant per strategy, and
OUT/demo_summary.json (DemoResult.summary())."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kdlora.demo.quality import FFT_MARGIN, Check
from kdlora.host import machine_info

from kdlora.demo.layout import SUMMARY_NAME, DemoSize, Layout  # noqa: F401  (SUMMARY_NAME: as before)
SUMMARY_VERSION = 1


def runs_table(runs: list, results_dir: Path, run_seconds: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per expected run, from its record (status 'missing' when there is none)."""
    from kdlora.records.store import read_record, record_path

    rows = []
    for cfg in runs:
        path = record_path(results_dir, cfg.run_id)
        rec = read_record(path) if path.is_file() else None
        m = rec.metrics if rec else {}
        eff = rec.efficiency if rec else None
        rows.append({
            "run_id": cfg.run_id, "strategy": cfg.strategy, "variant": cfg.variant or "full", "seed": cfg.seed,
            "lr": cfg.lr, "status": rec.status if rec else "missing", "error": rec.error if rec else None,
            "accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1"),
            "trainable_params": eff.trainable_params if eff else None,
            "total_params": eff.total_params if eff else None,
            "train_time_s": eff.train_time_s if eff else None,
            "run_wall_s": _wall(run_seconds or {}, cfg.run_id),
            "teacher_run_id": rec.teacher_run_id if rec else None,
        })
    return pd.DataFrame(rows)


def _wall(run_seconds: dict[str, float], run_id: str) -> float | None:
    """Seconds of every attempt of a run in this sweep (the scheduler keys them run_id#attempt)."""
    times = [t for key, t in run_seconds.items() if key.partition("#")[0] == run_id]
    return round(sum(times), 1) if times else None


def add_pct_of_teacher(table: pd.DataFrame, teacher_student: pd.DataFrame) -> pd.DataFrame:
    """Student-as-%-of-teacher for KD-LoRA rows, taken from the report's own table."""
    pct = teacher_student.set_index("run_id")["pct_of_teacher"] if len(teacher_student) else pd.Series(dtype=float)
    return table.assign(pct_of_teacher=table["run_id"].map(pct))


def best_per_strategy(table: pd.DataFrame) -> pd.DataFrame:
    """Per strategy, the variant(s) with the highest mean accuracy over seeds (completed runs only)."""
    done = table[table["status"] == "completed"]
    if done.empty:
        return pd.DataFrame(columns=["strategy", "variant", "runs", "accuracy", "macro_f1", "trainable_params",
                                     "train_time_s", "pct_of_teacher"])
    means = (done.groupby(["strategy", "variant"], sort=False)
             .agg(runs=("run_id", "size"), accuracy=("accuracy", "mean"), macro_f1=("macro_f1", "mean"),
                  trainable_params=("trainable_params", "median"), train_time_s=("train_time_s", "median"),
                  pct_of_teacher=("pct_of_teacher", "mean"))
             .reset_index())
    top = means[means["accuracy"] == means.groupby("strategy", sort=False)["accuracy"].transform("max")]
    # a tie names every tied variant ("lora = olora") rather than one picked by row order
    rest = {c: (c, "first") for c in means.columns if c not in ("strategy", "variant")}
    return top.groupby("strategy", sort=False).agg(variant=("variant", " = ".join), **rest).reset_index()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: NaN becomes null."""
    return [{k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]


@dataclass
class DemoResult:
    """Everything `kdlora demo` reports; `summary()` is what OUT/demo_summary.json holds."""

    size: DemoSize
    layout: Layout
    command: str
    workers: int
    threads_per_run: int | None
    majority_baseline: float
    table: pd.DataFrame
    best: pd.DataFrame
    checks: list[Check]
    report: Path | None
    sweep_counts: dict[str, int]
    timings_s: dict[str, float]
    started_at: str
    finished_at: str
    load_avg_start: list[float] | None
    load_avg_end: list[float] | None
    data_info: dict[str, Any] = field(default_factory=dict)
    reference: Any = None  # kdlora.demo.reference.ReferenceResult: the reference study re-analysed

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def fresh(self) -> bool:
        """True when every run was trained by this invocation (its wall time is the study's)."""
        return self.sweep_counts["skipped"] == 0

    def summary(self) -> dict[str, Any]:
        return {
            "summary_version": SUMMARY_VERSION, "command": self.command, "mode": self.size.name,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "wall_time_s": self.timings_s["total"], "timings_s": self.timings_s, "fresh": self.fresh,
            "out": str(self.layout.out), "grid": str(self.layout.grid),
            "report": None if self.report is None else str(self.report),
            "data": {"task": "tweets3", "n_train": self.size.n_train, "n_eval": self.size.n_eval,
                     "majority_baseline": self.majority_baseline, **self.data_info},
            "sweep": {**self.sweep_counts, "workers": self.workers, "threads_per_run": self.threads_per_run},
            "machine": {**machine_info(), "load_avg_start": self.load_avg_start, "load_avg_end": self.load_avg_end},
            "runs": _records(self.table),
            "best_per_strategy": _records(self.best),
            "quality": {"passed": self.passed, "fft_margin": FFT_MARGIN,
                        "checks": [asdict(c) for c in self.checks]},
            "reference": None if self.reference is None else self.reference.summary(),
        }


def write_summary(result: DemoResult) -> Path:
    import json

    from kdlora.records.store import atomic_write_text

    atomic_write_text(result.layout.summary, json.dumps(result.summary(), indent=2) + "\n")
    return result.layout.summary
