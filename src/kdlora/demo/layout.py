"""What one demo is and where it lives: its size (data and variants) and its layout under OUT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUMMARY_NAME = "demo_summary.json"


@dataclass(frozen=True)
class DemoSize:
    """How much of the study to run: data sizes, and which variants (None: the grid's six)."""

    name: str
    n_train: int
    n_eval: int
    variants: tuple[str, ...] | None = None


FULL = DemoSize("full", n_train=600, n_eval=400)
# CI's smoke run: the same command and grid, fewer tweets, one variant per strategy.
SMOKE = DemoSize("smoke", n_train=160, n_eval=120, variants=("lora",))


@dataclass(frozen=True)
class Layout:
    """Where everything of one demo lives under OUT."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def grid(self) -> Path:
        return self.out / "grid.yaml"

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    @property
    def summary(self) -> Path:
        return self.out / SUMMARY_NAME

    @property
    def reference_results(self) -> Path:
        return self.out / "reference"

    @property
    def reference_report(self) -> Path:
        return self.out / "reference-report"
