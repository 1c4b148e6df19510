"""Content-addressed identity: a task is its name plus a fingerprint of its data, never its path.
A study copied elsewhere stays complete; editing a task's data makes exactly its runs missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.config import RunConfig
from kdlora.testing.synthetic_data import write_custom_task
from kdlora.errors import UserError
from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records, read_record, write_record
from kdlora.records.schema import SCHEMA_VERSION
from kdlora.executors.child import failure_record
from kdlora.sweep.status import completion_line, run_table
from kdlora.strategies import teacher_of


def completed(cfg: RunConfig):
    return failure_record(cfg, "").model_copy(update={
        "status": "completed", "error": None,
        "metrics": {"accuracy": 0.5, "primary": 0.5, "primary_name": "accuracy"}})


def make_study(root: Path) -> Path:
    """root/grid.yaml over two custom tasks, both saved as task.yaml (as kdlora's task writer names
    them), plus a GLUE task; root/results holds a completed record for every run."""
    write_custom_task(root / "data" / "a", n_train=12, n_eval=6, seed=1)
    b = write_custom_task(root / "data" / "b", n_train=12, n_eval=6, seed=2)
    b.write_text(b.read_text().replace("name: reviews2", "name: other"))
    grid = root / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["minilm"], "tasks": ["data/a/task.yaml", "data/b/task.yaml"],
                                    "seeds": [1], "variants": ["lora"]}))
    for cfg in expand_grid(load_grid(grid)):
        write_record(root / "results", completed(cfg))
    return grid


def status_table(grid: Path):
    return run_table(expand_grid(load_grid(grid)), grid.parent / "results")


def test_two_tasks_saved_as_task_yaml_stay_apart(tmp_path):
    grid = make_study(tmp_path)
    table = status_table(grid)
    assert sorted(set(table["task"])) == ["other", "reviews2"]
    assert len(table) == 6 and completion_line(table) == "6/6 = 100.00 %"


def test_a_study_copied_to_another_folder_is_still_complete(tmp_path):
    grid = make_study(tmp_path / "here")
    shutil.copytree(tmp_path / "here", tmp_path / "elsewhere" / "deeper")
    shutil.rmtree(tmp_path / "here")  # nothing may still point at the old place
    moved = tmp_path / "elsewhere" / "deeper" / grid.name
    result = CliRunner().invoke(app, ["status", str(moved), "--results", str(moved.parent / "results")])
    assert result.exit_code == 0, result.output
    assert "6/6 = 100.00 %" in result.output


def test_editing_one_csv_row_makes_exactly_that_tasks_runs_missing(tmp_path):
    grid = make_study(tmp_path)
    before = {r.run_id: r for r in expand_grid(load_grid(grid))}
    csv = tmp_path / "data" / "a" / "train.csv"
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].replace("positive", "negative") if "positive" in lines[3] else lines[3] + " edited"
    csv.write_text("\n".join(lines) + "\n")

    runs = expand_grid(load_grid(grid))
    table = run_table(runs, tmp_path / "results")
    missing = table[table["status"] == "missing"]
    assert set(missing["task"]) == {"reviews2"} and len(missing) == 3  # fft teacher, lora, kd-lora
    assert set(table[table["task"] == "other"]["status"]) == {"completed"}
    kd = next(r for r in runs if r.strategy == "kd-lora" and r.task_name == "reviews2")
    assert teacher_of(kd).run_id not in before  # the teacher is new too: its data changed
    assert teacher_of(kd).run_id in set(missing["run_id"])


def test_run_id_ignores_where_the_data_lie(tmp_path):
    a = write_custom_task(tmp_path / "one", n_train=8, n_eval=4)
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    ids = [RunConfig(family="bert", task=str(p / "task.yaml"), strategy="lora").run_id
           for p in (tmp_path / "one", tmp_path / "two")]
    assert ids[0] == ids[1] and ids[0].startswith("bert-reviews2-lora-lora-s42-")
    (tmp_path / "one" / "validation.csv").write_text(a.parent.joinpath("validation.csv").read_text() + "x,positive\n")
    assert RunConfig(family="bert", task=str(a), strategy="lora").run_id != ids[1]


def test_glue_data_dir_is_fingerprinted_not_its_path(tmp_path):
    for where in ("g1", "g2"):
        (tmp_path / where / "RTE").mkdir(parents=True)
        for name in ("train.tsv", "dev.tsv"):
            (tmp_path / where / "RTE" / name).write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    ids = [RunConfig(family="bert", task="rte", strategy="fft", data_dir=str(tmp_path / w)).run_id
           for w in ("g1", "g2")]
    hub = RunConfig(family="bert", task="rte", strategy="fft")
    assert ids[0] == ids[1] != hub.run_id
    assert hub.task_identity.fingerprint == "hub:nyu-mll/glue"


def test_two_tasks_with_one_name_and_different_data_are_refused(tmp_path):
    write_custom_task(tmp_path / "a", n_train=8, n_eval=4, seed=1)
    write_custom_task(tmp_path / "b", n_train=8, n_eval=4, seed=2)  # also named reviews2
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["a/task.yaml", "b/task.yaml"],
                                    "seeds": [1], "strategies": ["fft"]}))
    with pytest.raises(UserError, match="both named 'reviews2'"):
        load_grid(grid)
    (tmp_path / "r").mkdir()
    for command in (["status", str(grid), "--results", str(tmp_path / "r")], ["plan", str(grid)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and "both named 'reviews2'" in result.output, result.output


def test_report_refuses_records_of_two_tasks_with_one_name(tmp_path):
    results = tmp_path / "results"
    for seed in (1, 2):
        task = write_custom_task(tmp_path / f"t{seed}", n_train=8, n_eval=4, seed=seed)
        write_record(results, completed(RunConfig(family="bert", task=str(task), strategy="fft", seed=seed)))
    result = CliRunner().invoke(app, ["report", "--results", str(results), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 2 and "reviews2" in result.output, result.output
    assert not (tmp_path / "rep").exists()


def test_records_carry_the_task_identity_and_version_1_records_still_read(tmp_path):
    task = write_custom_task(tmp_path / "data", n_train=8, n_eval=4)
    cfg = RunConfig(family="bert", task=str(task), strategy="fft")
    path = write_record(tmp_path / "results", completed(cfg))
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 2
    assert data["task"] == {"name": "reviews2", "fingerprint": cfg.task_identity.fingerprint}
    old = {k: v for k, v in data.items() if k != "task"} | {"schema_version": 1, "run_id": "bert-task-fft-full-s42-0"}
    old_path = tmp_path / "results" / "runs" / "bert-task-fft-full-s42-0.json"
    old_path.write_text(json.dumps(old))
    rec = read_record(old_path)
    assert rec.schema_version == 1 and rec.task_name == "task"  # the config's file name, as version 1 did
    assert len(list(iter_records(tmp_path / "results"))) == 2
