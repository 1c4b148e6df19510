"""What an analysis is: its Settings and the Analysis (every computed table by name).

Renderers (markdown, latex, plots, drawing) take an Analysis from here, so none of them imports
report.py, which runs the analysis and calls them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from kdlora.analysis import stats
from kdlora.analysis.tidy import SETTINGS
from kdlora.errors import UserError

GLUE_AVERAGES = ("no-wnli", "all")
MIN_BLOCKS_TEST = 3  # fewer matched blocks: "not testable"
MIN_BLOCKS_BOOTSTRAP = 5  # fewer: no bootstrap CI


@dataclass(frozen=True)
class Settings:
    policy: str = "glue"
    alpha: float = 0.05
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0  # of the bootstrap generator, so a report is reproducible
    power: float = 0.8
    pool: tuple[str, ...] = ()  # settings whose values are pooled instead of forming arms
    equivalence_margin: float = 0.01  # TOST margin in the primary metric
    equivalence_margin_norm: float = 0.02  # TOST margin in FFT-normalised units
    glue_average: str = "no-wnli"  # the per-task tables' average: "no-wnli" (BERT/RoBERTa papers) or "all"
    select: str | None = None  # protocol selection: "selection" (selection split) or "reported" (biased)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool", check_pool(self.pool))
        for name in ("equivalence_margin", "equivalence_margin_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise UserError(f"--{name.replace('_', '-')} must be a number > 0 (got {value})")
        if self.select not in (None, "selection", "reported"):
            raise UserError(f"--select must be selection or reported (got {self.select!r})")
        if self.glue_average not in GLUE_AVERAGES:
            raise UserError(f"--glue-average must be one of {', '.join(GLUE_AVERAGES)} (got {self.glue_average!r})")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "metric_policy": self.policy, "alpha": self.alpha,
            "confidence_pct": round(self.confidence * 100, 6), "bootstrap_resamples": self.n_boot,
            "bootstrap_seed": self.seed, "power": self.power,
            "min_wilcoxon_p_3_seeds": stats.min_wilcoxon_p(3),
            "pooled_settings": ", ".join(self.pool), "equivalence_margin": self.equivalence_margin,
            "equivalence_margin_norm": self.equivalence_margin_norm, "glue_average": self.glue_average,
            "min_blocks_test": MIN_BLOCKS_TEST, "min_blocks_bootstrap": MIN_BLOCKS_BOOTSTRAP,
            "select": self.select or "",
        }])


def check_pool(pool) -> tuple[str, ...]:
    """`--pool` values: each must name a setting column (one clear line otherwise)."""
    out = []
    for name in (str(f).strip() for f in pool or ()):
        if not name:
            raise UserError("--pool needs a setting name (a RunConfig field such as r or kd_temperature)")
        if name not in SETTINGS:
            raise UserError(f"--pool {name!r} is not a setting; choose one of: {', '.join(SETTINGS)}")
        out.append(name)
    return tuple(dict.fromkeys(out))


@dataclass
class Analysis:
    settings: Settings
    tables: dict[str, pd.DataFrame]
    sources: list[str] = field(default_factory=list)
    grid: str | None = None

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]
