"""Search in the grid: candidates per method, tied settings (zip), equal budgets in `kdlora plan`,
and KD-LoRA students distilled from the FFT candidate the protocol selects."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.errors import UserError
from kdlora.grid import expand_grid, grid_budgets, load_grid, pending_students

HERE = Path(__file__).resolve().parent
runner = CliRunner()
LRS = [1e-4, 1e-3, 1e-2]


def write_grid(tmp_path: Path, **data) -> Path:
    base = {"families": ["bert"], "tasks": ["rte"], "seeds": [1, 2], "variants": ["lora", "dora"],
            "strategies": ["lora", "kd-lora"], "hyperparameters": {"selection_fraction": 0.1}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**base, **data}, sort_keys=False))
    return path


def test_each_candidate_is_a_run_and_budgets_are_equal(tmp_path):
    grid = load_grid(write_grid(tmp_path, search={"lora": {"lr": LRS}, "kd-lora": {"lr": LRS}}))
    runs = expand_grid(grid)
    assert Counter(r.strategy for r in runs) == {"fft": 2, "lora": 12, "kd-lora": 12}
    assert sorted({r.lr for r in runs if r.strategy == "lora"}) == LRS
    budget = {b.method: b for b in grid_budgets(grid)}
    assert set(budget) == {"lora/lora", "lora/dora", "kd-lora/lora", "kd-lora/dora"}
    assert {b.candidates for b in budget.values()} == {3}
    assert budget["lora/lora"].steps == budget["kd-lora/dora"].steps == 2 * 3 * 3 * 71  # 2241 of 2490 / 32
    result = runner.invoke(app, ["plan", str(tmp_path / "grid.yaml")])
    assert result.exit_code == 0, result.output
    assert "tuning budget per method" in result.output and "lr [0.0001, 0.001, 0.01]" in result.output


def test_per_variant_search_and_unequal_budgets_are_refused(tmp_path):
    path = write_grid(tmp_path, search={"lora": {"lr": LRS}, "kd-lora": {"lr": LRS},
                                        "per_variant": {"dora": {"lr": [1e-3, 3e-3]}}})
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert "unequal tuning budgets: lora/dora gets 2 candidate run(s) per cell" in result.output
    assert len(result.output.strip().splitlines()[-1]) > 0
    grid = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**grid, "allow_unequal_budget": True}))
    assert runner.invoke(app, ["plan", str(path)]).exit_code == 0
    runs = expand_grid(load_grid(path))
    assert sorted({r.lr for r in runs if r.variant == "dora" and r.strategy == "lora"}) == [1e-3, 3e-3]


def test_zip_ties_settings_instead_of_crossing_them(tmp_path):
    grid = load_grid(write_grid(tmp_path, strategies=["lora"], variants=["lora"],
                                zip=[{"r": 8, "lora_alpha": 16}, {"r": 16, "lora_alpha": 32}]))
    pairs = {(r.r, r.lora_alpha) for r in expand_grid(grid) if r.strategy == "lora"}
    assert pairs == {(8, 16.0), (16, 32.0)}


@pytest.mark.parametrize("extra,match", [
    ({"search": {"lora": {"lr": []}}}, "search.lora.lr is an empty list"),
    ({"search": {"lora": {"lr": 1e-3}}}, "search.lora.lr must be a list"),
    ({"search": {"lora": {"lrr": [1e-3]}}}, "unknown hyperparameter 'lrr'"),
    ({"search": {"qlora": {"lr": [1e-3]}}}, "unknown search method 'qlora'"),
    ({"search": {"fft": {"warmup_ratio": [0.1, 0.2]}}}, "search.fft may only search lr, epochs, batch_size"),
    ({"zip": [{"r": 8}, {"lora_alpha": 4}]}, "every zip entry must set the same"),
    ({"hyperparameters": {}, "search": {"fft": {"lr": [1e-5, 2e-5]}}}, "needs a selection split"),
    ({"hyperparameters": {"selection_fraction": 0.7}}, "selection_fraction must be in"),
])
def test_bad_search_is_one_line(tmp_path, extra, match):
    path = write_grid(tmp_path, **extra)
    with pytest.raises(UserError, match=match):
        load_grid(path)
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_teachers_every_distils_from_each_fft_candidate(tmp_path):
    grid = load_grid(write_grid(tmp_path, variants=["lora"], teachers="every", allow_unequal_budget=True,
                                search={"fft": {"lr": [1e-5, 2e-5]}, "lora": {"lr": LRS}, "kd-lora": {"lr": LRS}}))
    kd = [r for r in expand_grid(grid) if r.strategy == "kd-lora"]
    assert len(kd) == 2 * 3 * 2 and {r.teacher_lr for r in kd} == {1e-5, 2e-5}


def test_sweep_selects_the_teacher_then_runs_its_students(tmp_path, monkeypatch):
    """FFT candidates run first; each KD-LoRA student then distils from the FFT setting with the
    best mean selection score over seeds (2e-5 in the fake runs), and only from it."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", f"{HERE}:{Path(sys.modules['kdlora'].__file__).parents[1]}")
    search = {"fft": {"lr": [1e-5, 2e-5, 5e-5]}, "lora": {"lr": LRS}, "kd-lora": {"lr": LRS}}
    path = write_grid(tmp_path, strategies=["fft", "lora", "kd-lora"], variants=["lora"], search=search)
    grid = load_grid(path)
    assert len(pending_students(grid)) == 6 and not any(r.strategy == "kd-lora" for r in expand_grid(grid))
    plan = runner.invoke(app, ["plan", str(path)])
    assert plan.exit_code == 0, plan.output
    assert "best mean selection metric" in plan.output
    results = tmp_path / "results"
    out = runner.invoke(app, ["sweep", str(path), "--results", str(results), "--workers", "1",
                              "--run-fn", "protocol_fake_runs:scored"])
    assert out.exit_code == 0, out.output
    from kdlora.records import iter_records

    records = list(iter_records(results))
    kd = [r for r in records if r.config["strategy"] == "kd-lora"]
    assert len(kd) == 6 and {r.config["teacher_lr"] for r in kd} == {2e-5}
    assert len(records) == 6 + 6 + 6
    status = runner.invoke(app, ["status", str(path), "--results", str(results)])
    assert status.exit_code == 0, status.output
    assert "completion: 18/18" in status.output

    # the same study kept in two directories, the teachers in the second: the report's --grid
    # expects the same runs (the students of the chosen teacher), whichever directory comes first
    from kdlora.analysis.report import expected_from_grid
    from kdlora.records import record_path

    whole = expected_from_grid(path, [results])
    students = tmp_path / "students"
    (students / "runs").mkdir(parents=True)
    for rec in kd:
        record_path(results, rec.run_id).rename(record_path(students, rec.run_id))
    assert expected_from_grid(path, [students, results]).equals(whole)


def test_status_counts_students_that_wait_for_their_teacher(tmp_path):
    search = {"fft": {"lr": [1e-5, 2e-5, 5e-5]}, "lora": {"lr": LRS}, "kd-lora": {"lr": LRS}}
    path = write_grid(tmp_path, strategies=["fft", "lora", "kd-lora"], variants=["lora"], search=search)
    (tmp_path / "empty").mkdir()
    status = runner.invoke(app, ["status", str(path), "--results", str(tmp_path / "empty")])
    assert status.exit_code == 0, status.output
    assert "completion: 0/18" in status.output
