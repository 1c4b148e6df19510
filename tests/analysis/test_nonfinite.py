"""Numbers are finite or reported: a NaN/inf metric is a failed run named in problems.csv, never
averaged; a legacy `Infinity` likewise; the report prints no RuntimeWarning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kdlora.analysis.report import build
from kdlora.records import record_path, write_record
from kdlora.testing.synthetic_records import grid_configs, make_records

SRC = Path(__file__).resolve().parents[2] / "src"


def study(root: Path) -> list:
    cfgs = [c for c in grid_configs(families=("bert",), tasks=("rte",), seeds=(1, 2, 3), variants=("lora", "dora"))
            if c.strategy != "kd-lora"]
    recs = list(make_records(cfgs, collapse_rate=0))
    for rec in recs:
        write_record(root, rec)
    return recs


def poison(root: Path, run_id: str, value: str) -> None:
    """Write the record's accuracy and primary as a bare JSON token (Infinity, NaN, null)."""
    path = record_path(root, run_id)
    data = json.loads(path.read_text())
    data["metrics"]["accuracy"] = data["metrics"]["primary"] = "@@"
    path.write_text(json.dumps(data).replace('"@@"', value))


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "null"])
def test_a_non_finite_metric_is_a_problem_never_an_average(value, tmp_path):
    recs = study(tmp_path / "res")
    bad = next(r for r in recs if r.config["strategy"] == "lora" and r.config["variant"] == "dora")
    poison(tmp_path / "res", bad.run_id, value)
    analysis = build([tmp_path / "res"], "glue")
    assert bad.run_id not in set(analysis["runs"]["run_id"])  # never a statistic's input
    if value != "null":  # NaN/inf: a failed run, listed as such
        failed = analysis["failed_runs"]
        assert failed.loc[failed["run_id"] == bad.run_id, "status"].tolist() == ["failed"]
    problems = list(analysis["problems"]["problem"])
    assert any(bad.run_id in p for p in problems), problems
    for frame in (analysis[name] for name in analysis.tables if isinstance(analysis[name], pd.DataFrame)):
        numeric = frame.select_dtypes("number")
        assert not numeric.isin([float("inf"), float("-inf")]).any().any()


def test_the_runner_records_a_nan_metric_as_failed(tmp_path, monkeypatch):
    from kdlora.config import build_config
    from kdlora.records import read_record
    from kdlora.runner import run_one
    from kdlora.train import engine

    def fake_execute(cfg, spec, results_dir, device, **_):
        return {"metrics": {"accuracy": float("nan"), "primary": float("nan"), "primary_name": "accuracy"},
                "efficiency": {"train_time_s": 1.0}, "teacher_run_id": None, "history": []}

    monkeypatch.setattr(engine, "execute", fake_execute)
    cfg = build_config({"family": "bert", "task": "rte", "strategy": "lora", "device": "cpu"})
    rec = run_one(cfg, tmp_path)
    assert rec.status == "failed" and "accuracy=nan" in rec.error
    on_disk = read_record(record_path(tmp_path, cfg.run_id))
    assert on_disk.status == "failed" and on_disk.metrics["accuracy"] is None


def test_legacy_infinity_is_skipped_and_listed(legacy_dir, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from kdlora.cli import app

    copy = tmp_path / "legacy"
    shutil.copytree(legacy_dir, copy)
    victim = sorted(copy.rglob("metrics.json"))[0]
    raw = json.loads(victim.read_text())
    key = next(k for k in raw if k in ("eval_accuracy", "eval_matthews_correlation", "eval_pearson", "matched_accuracy"))
    raw[key] = float("inf")
    victim.write_text(json.dumps(raw))  # json writes Infinity
    result = CliRunner().invoke(app, ["import-legacy", str(copy), "--results", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    problems = pd.read_csv(tmp_path / "out" / "problems.csv")
    assert any(str(victim.parent) in p and "inf" in p for p in problems["problem"]), list(problems["problem"])
    analysis = build([copy], "legacy")
    assert any("inf" in p for p in analysis["problems"]["problem"])


def test_report_prints_no_runtime_warning(tmp_path):
    recs = study(tmp_path / "res")
    poison(tmp_path / "res", recs[1].run_id, "Infinity")
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, "-c", "from kdlora.cli import app; app()", "report", "--results", str(tmp_path / "res"),
                          "--out", str(tmp_path / "rep"), "--no-figures"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning" not in out.stderr + out.stdout, out.stderr
