"""What an analysis is: its Settings and the Analysis (every computed table by name).

Renderers (markdown, latex, plots, drawing) take an Analysis from here, so none of them imports
report.py, which runs the analysis and calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from kdlora.analysis import stats


@dataclass(frozen=True)
class Settings:
    policy: str = "glue"
    alpha: float = 0.05
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0  # of the bootstrap generator, so a report is reproducible
    power: float = 0.8

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "metric_policy": self.policy, "alpha": self.alpha,
            "confidence_pct": round(self.confidence * 100, 6), "bootstrap_resamples": self.n_boot,
            "bootstrap_seed": self.seed, "power": self.power,
            "min_wilcoxon_p_3_seeds": stats.min_wilcoxon_p(3),
        }])


@dataclass
class Analysis:
    settings: Settings
    tables: dict[str, pd.DataFrame]
    sources: list[str] = field(default_factory=list)
    grid: str | None = None

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]
