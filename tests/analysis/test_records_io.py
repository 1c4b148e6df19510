"""iter_records reads a results directory without a Path per file; what it yields and reports
must be what sorted(glob) + read_record gave, bad files included. record_nonfinite's fast check
must agree with the full one."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kdlora.records import read_record, write_record
from kdlora.records.schema import Efficiency, nonfinite, record_nonfinite
from kdlora.records.store import iter_records
from kdlora.testing.synthetic_records import grid_configs, make_record


def old_iter_records(results_dir, errors):
    runs = Path(results_dir) / "runs"
    for path in sorted(runs.glob("*.json")) if runs.is_dir() else []:
        try:
            yield read_record(path)
        except ValueError as exc:
            errors.append(str(exc))


def test_iter_records_yields_and_reports_what_glob_and_read_record_did(tmp_path):
    rng = np.random.default_rng(0)
    records = [make_record(cfg, rng) for cfg in grid_configs(families=("bert",), tasks=("rte", "cola"), seeds=(1,))]
    for rec in records:
        write_record(tmp_path, rec)
    runs = tmp_path / "runs"
    text = (runs / f"{records[0].run_id}.json").read_text()
    (runs / "another-name.json").write_text(text)  # a record under another run's name
    (runs / ".json").write_text(text)  # a hidden file: no stem to compare with
    (runs / "a..json").write_text(text)
    (runs / "broken.json").write_text("{not json")
    (runs / "empty.json").write_text("{}")
    (runs / "latin1.json").write_bytes(b'{"run_id": "\xe9"}')
    (runs / "folder.json").mkdir()
    (runs / "notes.txt").write_text("not a record")
    (runs / "Z-upper.json").write_text(text)
    new_errors: list[str] = []
    old_errors: list[str] = []
    new = [r.model_dump() for r in iter_records(tmp_path, new_errors)]
    old = [r.model_dump() for r in old_iter_records(tmp_path, old_errors)]
    assert new == old and len(new) == len(records) + 1  # the hidden ".json" is read as a record
    assert new_errors == old_errors and len(new_errors) == 7
    assert list(iter_records(tmp_path / "nowhere", new_errors)) == []


def test_fast_nonfinite_check_agrees_with_the_full_one():
    rng = np.random.default_rng(0)
    rec = make_record(grid_configs(families=("bert",), tasks=("rte",), seeds=(1,))[0], rng)
    assert record_nonfinite(rec) == []
    for where, value in (("metrics", math.nan), ("metrics_selection", math.inf), ("efficiency", -math.inf),
                         ("extra", math.nan), ("metrics", 1e308)):
        if where == "efficiency":
            changed = rec.model_copy(update={"efficiency": Efficiency(**{**rec.efficiency.model_dump(),
                                                                          "train_time_s": value})})
        elif where == "extra":
            changed = rec.model_copy(update={"efficiency": Efficiency(**rec.efficiency.model_dump(), custom=value)})
        else:
            changed = rec.model_copy(update={where: {**getattr(rec, where), "accuracy": value, "f1": value}})
        full = (nonfinite(changed.metrics) + nonfinite(changed.metrics_selection, "selection ")
                + nonfinite(changed.efficiency.model_dump(), "efficiency."))
        assert record_nonfinite(changed) == full
        assert bool(full) == (not math.isfinite(value)), where
