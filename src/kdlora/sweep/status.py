"""Where a sweep stands against its grid: completion, done counts, failures, what is missing.

A run counts as done when RESULTS/runs/<run_id>.json exists with status completed. A record with
another run_id but the same family, task, strategy, variant and seed also counts when that key
names exactly one run of the grid: records imported from elsewhere (legacy results, other model
paths or metric policy) then count as the analysis counts them. Such matches are marked
`matched = key`. The task in the key is the task's name (its `name:`, not its file name); a record
that carries a data fingerprint (schema version 2) only matches a run over the same data, so
editing a task's data makes its runs missing. Records that belong to no run of the grid are
ignored here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from kdlora.config import RunConfig
from kdlora.grid import run_row
from kdlora.records import iter_records
from kdlora.records.store import atomic_write_text
from kdlora.strategies import STRATEGIES
from kdlora.sweep.claims import ClaimStore

MISSING_COLUMNS = ["family", "task", "strategy", "variant", "seed", "run_id"]
STATUS_RANK = {"completed": 0, "nan_loss": 1, "oom": 2, "failed": 3}  # best outcome first


def run_key(config: dict[str, Any], task: str) -> tuple:
    return (config.get("family"), task, config.get("strategy"),
            config.get("variant") if _takes_variant(config.get("strategy")) else None, config.get("seed"))


def _takes_variant(strategy) -> bool:
    return strategy not in STRATEGIES or STRATEGIES.get(strategy).uses_adapters


def config_key(cfg: RunConfig) -> tuple:
    return run_key(cfg.model_dump(), cfg.task_name)


def record_key(rec) -> tuple:
    return run_key(rec.config, rec.task_name)


def run_table(runs: list[RunConfig], results_dir: str | Path) -> pd.DataFrame:
    """One row per expected run: its identity, status (completed, failed, oom, nan_loss, running,
    missing), error, and how its record was matched (run_id or key)."""
    results_dir = Path(results_dir)
    claims = ClaimStore(results_dir) if (results_dir / "claims").is_dir() else None
    errors: list[str] = []
    by_id = {rec.run_id: rec for rec in iter_records(results_dir, errors)}
    expected_ids = {cfg.run_id for cfg in runs}
    counts = Counter(config_key(c) for c in runs)
    fingerprints = {config_key(c): c.task_identity.fingerprint for c in runs if counts[config_key(c)] == 1}
    by_key: dict[tuple, Any] = {}
    for rec in by_id.values():
        key = record_key(rec)
        same_data = rec.task_fingerprint in (None, fingerprints.get(key))
        if rec.run_id not in expected_ids and key in fingerprints and same_data:
            best = by_key.get(key)
            if best is None or STATUS_RANK.get(rec.status, 9) < STATUS_RANK.get(best.status, 9):
                by_key[key] = rec
    rows = []
    for cfg in runs:
        rec, matched = by_id.get(cfg.run_id), "run_id"
        if rec is None:
            rec, matched = by_key.get(config_key(cfg)), "key"
        status, error = (rec.status, rec.error) if rec is not None else ("missing", None)
        if status != "completed" and claims is not None and claims.held_elsewhere(cfg.run_id):
            status = "running"
        rows.append({**run_row(cfg), "status": status, "error": error,
                     "matched": matched if rec is not None else None})
    table = pd.DataFrame(rows, columns=[*MISSING_COLUMNS, "status", "error", "matched"])
    table.attrs["unreadable"] = errors  # record files that are not valid records
    return table


def completion(table: pd.DataFrame) -> tuple[int, int, float]:
    done = int((table["status"] == "completed").sum())
    total = len(table)
    return done, total, (100.0 * done / total if total else 0.0)


def completion_line(table: pd.DataFrame) -> str:
    done, total, pct = completion(table)
    return f"{done}/{total} = {pct:.2f} %"


def done_matrix(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(done, expected) counts with rows strategy/variant and columns task, in the grid's order."""
    keys = ["strategy", "variant"]
    tasks = list(dict.fromkeys(table["task"]))
    rows = list(dict.fromkeys(zip(table["strategy"], table["variant"])))
    table = table.assign(done=(table["status"] == "completed").astype(int))
    index = pd.MultiIndex.from_tuples(rows, names=keys)
    expected = table.pivot_table(index=keys, columns="task", values="run_id", aggfunc="count", fill_value=0)
    done = table.pivot_table(index=keys, columns="task", values="done", aggfunc="sum", fill_value=0)
    return (done.reindex(index=index, columns=tasks, fill_value=0),
            expected.reindex(index=index, columns=tasks, fill_value=0))


def failures(table: pd.DataFrame) -> pd.DataFrame:
    bad = table[table["status"].isin(["failed", "oom", "nan_loss"])]
    return bad[["run_id", "status", "error"]].reset_index(drop=True)


def write_missing(table: pd.DataFrame, path: str | Path) -> int:
    """Write the runs still to do (not completed) as CSV; returns how many."""
    missing = table[table["status"] != "completed"][MISSING_COLUMNS]
    atomic_write_text(path, missing.to_csv(index=False))
    return len(missing)


def plot_heatmap(table: pd.DataFrame, path: str | Path) -> None:
    """A PNG heatmap of the fraction done per strategy/variant x task, cells annotated done/expected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done, expected = done_matrix(table)
    frac = done / expected.where(expected > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(frac.columns), 1.0 + 0.4 * len(frac.index)))
    image = ax.imshow(frac.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(frac.columns)), list(frac.columns), rotation=45, ha="right")
    ax.set_yticks(range(len(frac.index)), [f"{s} / {v}" for s, v in frac.index])
    for i in range(len(frac.index)):
        for j in range(len(frac.columns)):
            ax.text(j, i, f"{done.iat[i, j]}/{expected.iat[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if (frac.iat[i, j] or 0) < 0.5 else "black")
    ax.set_title(f"Completion {completion_line(table)}")
    fig.colorbar(image, ax=ax, label="fraction done")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
