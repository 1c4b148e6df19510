"""run_ids are content addresses in every stored record: these digests pin them (and each
student's teacher run_id) for the paper grid, a grid with every kind of axis, and the packaged
legacy study. A change here means every existing results directory goes stale: never update the
digests to make a speed-up pass."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from kdlora.grid import expand_grid, load_grid
from kdlora.strategies import teacher_run_id

REPO = Path(__file__).resolve().parents[2]


def digest(runs) -> str:
    lines = sorted(f"{r.run_id} {teacher_run_id(r)}" for r in runs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def test_paper_grid_run_ids_are_stable():
    runs = expand_grid(load_grid(REPO / "configs" / "paper.yaml"))
    assert len(runs) == 1053
    assert digest(runs) == "ab0c605e4d16bf76"


def test_axes_grid_run_ids_are_stable(tmp_path):
    grid = {
        "families": ["bert", "roberta"], "tasks": ["rte", "stsb"], "seeds": [1, 2],
        "variants": ["lora", "dora", "mrlora"],
        "hyperparameters": {"epochs": [1, 2], "max_length": 64},
        "fft": {"lr": [1e-5, 5e-5]},
        "adapters": {"r": [4, 8], "mrlora_ranks": [8, 4, 2, 1]},
        "kd-lora": {"kd_temperature": [1, 2]},
        "per_variant": {"dora": {"lr": 3e-4}, "kd-lora/mrlora": {"lora_dropout": 0.1}},
        "zip": [{"warmup_ratio": 0.0, "weight_decay": 0.0}, {"warmup_ratio": 0.1, "weight_decay": 0.01}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    runs = expand_grid(load_grid(path))
    assert len(runs) == len({r.run_id for r in runs})
    assert digest(runs) == "3da60441ca478360"


def test_legacy_study_run_ids_are_stable(tmp_path):
    from kdlora.examples import write_reference
    from kdlora.records.legacy import iter_legacy_records

    root = write_reference(tmp_path / "ref")
    problems: list[str] = []
    records = list(iter_legacy_records(root, problems))
    lines = sorted(f"{r.run_id} {r.teacher_run_id} {','.join(r.assumed_settings)}" for r in records)
    assert len(records) == 742
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16] == "f4e918c83b5e0656"
