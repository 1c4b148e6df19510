"""The demo's quality bar: the FFT teacher beats the majority class by FFT_MARGIN, every adapter
run beats it at all; a run without a completed record fails its check."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

FFT_MARGIN = 0.10  # the FFT teacher must beat the majority class by at least 10 accuracy points


@dataclass(frozen=True)
class Check:
    run_id: str
    strategy: str
    variant: str
    seed: int
    accuracy: float | None
    threshold: float
    rule: str
    passed: bool


def quality_checks(table: pd.DataFrame, majority: float, margin: float = FFT_MARGIN) -> list[Check]:
    """FFT >= majority + margin; every LoRA-only and KD-LoRA run > majority; a run without a
    completed record fails its check (a failed run never counts as a pass)."""
    from kdlora.analysis.methods import is_reference

    checks = []
    for row in table.itertuples(index=False):
        reference = is_reference(row.strategy)  # FFT
        if reference:
            threshold, rule = majority + margin, f">= majority + {margin * 100:g} points"
        else:
            threshold, rule = majority, "> majority"
        acc = None if row.status != "completed" or pd.isna(row.accuracy) else float(row.accuracy)
        ok = acc is not None and (acc >= threshold - 1e-12 if reference else acc > threshold)
        checks.append(Check(row.run_id, row.strategy, row.variant, int(row.seed), acc, threshold,
                            rule if acc is not None else f"{rule} (run {row.status})", ok))
    return checks
