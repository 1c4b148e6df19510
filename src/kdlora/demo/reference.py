"""The demo's second part: the statistics on real data.

The demo's own study has one seed, so its paired tests cannot decide anything. After it, the demo
re-analyses the reference study shipped with kdlora (742 GPU runs, kdlora.examples) exactly as
`kdlora report --results OUT/reference --grid configs/paper.yaml --metric-policy legacy` does, into
OUT/reference-report/, and reads back from that report's CSVs, per variant, the reference's own
conclusion (its pooled Welch test of LoRA-only vs KD-LoRA) beside the paired one (matched on
family, task and seed: verdict, effect and its CI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlora.errors import UserError

PAPER_GRID = "paper.yaml"


@dataclass
class ReferenceResult:
    """What the closing screen and demo_summary.json say about the reference study."""

    results: Path
    report: Path
    grid: Path | None
    runs: int
    alpha: float
    confidence_pct: float
    rows: list[dict[str, Any]]  # one per variant, from legacy_tests.csv and statistical_tests.csv
    seconds: float

    def summary(self) -> dict[str, Any]:
        from kdlora.examples import REFERENCE_SOURCE

        return {"source": REFERENCE_SOURCE, "results": str(self.results), "report": str(self.report),
                "grid": None if self.grid is None else str(self.grid), "runs": self.runs, "alpha": self.alpha,
                "confidence_pct": self.confidence_pct, "seconds": round(self.seconds, 1),
                "lora_vs_kd": self.rows}


def find_paper_grid() -> Path | None:
    """configs/paper.yaml in the working directory or the source tree (None: no completion rate)."""
    cwd = Path.cwd()
    for path in (cwd / "configs" / PAPER_GRID, Path(__file__).resolve().parents[3] / "configs" / PAPER_GRID):
        if path.is_file():  # the report names it as a user would type it: configs/paper.yaml
            return path.relative_to(cwd) if path.is_relative_to(cwd) else path
    return None


def reference_runs(folder: Path) -> Path:
    """The packaged reference study in `folder`, written there once and reused on a rerun."""
    from kdlora.examples import REFERENCE_RUNS, write_reference

    if folder.exists():
        found = sum(1 for _ in (folder / "results").rglob("metrics.json")) if (folder / "results").is_dir() else 0
        if found == REFERENCE_RUNS:
            return folder
        raise UserError(f"{folder} holds {found} of the reference study's {REFERENCE_RUNS} runs; delete it and rerun")
    return write_reference(folder)


def reanalyse(results_dir: Path, report_dir: Path, grid: Path | None = None) -> ReferenceResult:
    """Write the reference study's report and read its LoRA-only vs KD-LoRA conclusions back."""
    import time

    from kdlora.analysis.report import build, write_report

    start = time.monotonic()
    results = reference_runs(results_dir)
    analysis = build([results], "legacy", grid)
    report = write_report(analysis, report_dir)
    return conclusions(report_dir, results, report, grid, time.monotonic() - start)


def conclusions(report_dir: Path, results: Path, report: Path, grid: Path | None, seconds: float) -> ReferenceResult:
    """Per variant, from the written report's CSVs: the reference's Welch p and what it concluded,
    the paired verdict with its effect and CI."""
    import pandas as pd

    settings = pd.read_csv(report_dir / "settings.csv").iloc[0]
    alpha, conf = float(settings["alpha"]), float(settings["confidence_pct"])
    welch = pd.read_csv(report_dir / "legacy_tests.csv")
    welch = welch[welch["test_family"] == "lora_vs_kd"].set_index("comparison")
    paired = pd.read_csv(report_dir / "statistical_tests.csv")
    paired = paired[paired["test_family"] == "lora_vs_kd"]
    runs = int(len(pd.read_csv(report_dir / "runs.csv", usecols=["run_id"])))
    rows = []
    for r in paired.itertuples():
        variant = r.comparison
        w = welch.loc[variant] if variant in welch.index else None
        p = None if w is None else float(w["p"])
        rows.append({
            "variant": variant,
            "reference_p": p,
            "reference_says": None if p is None else ("significant" if p < alpha else "no significant difference"),
            "pairs": int(r.n_pairs), "verdict": r.verdict, "verdict_text": verdict_text(r.verdict),
            "effect": _num(r.effect), "effect_ci_low": _num(r.effect_ci_low), "effect_ci_high": _num(r.effect_ci_high),
            "deciding_test": getattr(r, "deciding_test", None),
        })
    return ReferenceResult(results, report, grid, runs, alpha, conf, rows, seconds)


def verdict_text(verdict: str) -> str:
    """'a better' -> 'LoRA-only better' for a LoRA-only (a) vs KD-LoRA (b) comparison."""
    return {"a better": "LoRA-only better", "b better": "KD-LoRA better"}.get(verdict, verdict)


def _num(value) -> float | None:
    import math

    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
