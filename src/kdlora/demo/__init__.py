"""The embedded default study behind `kdlora demo`: a real, small KD-LoRA study on CPU, offline.

Modules: layout (its size and folders), study (inputs, the sweep, the report, run_demo), quality
(the quality bar), summary (the runs table, best per strategy, demo_summary.json), console (the
one-screen summary), reference (the reference study's re-analysis).
"""

from kdlora.demo.quality import FFT_MARGIN, Check, quality_checks
from kdlora.demo.study import (DATA_SEED, FULL, GRID_NAME, SMOKE, DemoSize, Layout, build_report, data_info,
                               default_workers, find_grid, parse_seeds, prepare, run_demo, run_sweep_local)
from kdlora.demo.summary import (SUMMARY_NAME, SUMMARY_VERSION, DemoResult, add_pct_of_teacher,
                                 best_per_strategy, runs_table, write_summary)

__all__ = [
    "DATA_SEED", "FFT_MARGIN", "FULL", "GRID_NAME", "SMOKE", "SUMMARY_NAME", "SUMMARY_VERSION", "Check",
    "DemoResult", "DemoSize", "Layout", "add_pct_of_teacher", "best_per_strategy", "build_report", "data_info",
    "default_workers", "find_grid", "parse_seeds", "prepare", "quality_checks", "run_demo", "run_sweep_local",
    "runs_table", "write_summary",
]
