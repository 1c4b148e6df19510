"""Status against a grid: records matched by run_id, or by key when they came from elsewhere;
and the real 742 legacy runs against configs/paper.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.grid import expand_grid, load_grid
from kdlora.records import write_record
from kdlora.executors.child import failure_record
from kdlora.sweep.status import completion_line, run_table

REPO = Path(__file__).resolve().parents[2]


def completed(cfg):
    return failure_record(cfg, "").model_copy(update={"status": "completed", "error": None})


def test_records_with_other_settings_count_by_key_only_when_the_key_is_unambiguous(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte"], "seeds": [1], "variants": ["lora"],
                                    "kd-lora": {"kd_temperature": [1, 4]}}))
    runs = expand_grid(load_grid(grid))  # fft, lora, kd T=1, kd T=4
    fft, lora, kd1, _ = runs
    results = tmp_path / "results"
    write_record(results, completed(fft))  # exact
    write_record(results, completed(lora.with_updates(metric_policy="legacy")))  # same key, other run_id
    write_record(results, completed(kd1.with_updates(kd_temperature=2.0)))  # key shared by 2 runs: ambiguous
    table = run_table(runs, results)
    assert list(table["status"]) == ["completed", "completed", "missing", "missing"]
    assert list(table["matched"])[:2] == ["run_id", "key"]
    assert completion_line(table) == "2/4 = 50.00 %"


def test_status_of_the_legacy_runs_against_the_paper_grid(tmp_path):
    from kdlora.examples import write_reference
    from kdlora.records.legacy import import_legacy

    results = tmp_path / "legacy"
    import_legacy(write_reference(tmp_path / "reference"), results)
    result = CliRunner().invoke(app, ["status", str(REPO / "configs" / "paper.yaml"), "--results", str(results),
                                      "--missing", str(tmp_path / "missing.csv")])
    assert result.exit_code == 0, result.output
    assert "completion: 742/1053 = 70.47 %" in result.output
    assert "wrote 311 runs still to do" in result.output
