"""A sweep of real tiny training runs through kdlora.runner:run_one (the default run function):
a custom task given by a path relative to the grid, FFT -> LoRA-only and KD-LoRA, then resume."""

from __future__ import annotations

import yaml

from kdlora.testing.synthetic_data import write_custom_task
from kdlora.executors import ExecutorOptions
from kdlora.executors.local import LocalExecutor
from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records
from kdlora.executors.child import DEFAULT_RUN_FN
from kdlora.sweep.scheduler import run_sweep


def test_real_tiny_sweep_trains_teacher_then_students_and_resumes(tmp_path, tiny_model_dirs):
    write_custom_task(tmp_path / "data" / "reviews", n_train=48, n_eval=24)
    grid = tmp_path / "grids" / "tiny.yaml"
    grid.parent.mkdir()
    grid.write_text(yaml.safe_dump({
        "families": ["bert"], "tasks": ["../data/reviews/task.yaml"], "seeds": [7], "variants": ["lora"],
        "hyperparameters": {"teacher_model": str(tiny_model_dirs["bert"]), "epochs": 1, "batch_size": 16},
        "kd-lora": {"student_model": str(tiny_model_dirs["distilbert"])}}))
    runs = expand_grid(load_grid(grid))
    assert [r.strategy for r in runs] == ["fft", "lora", "kd-lora"]
    results = tmp_path / "results"

    result = run_sweep(runs, results, LocalExecutor(results, DEFAULT_RUN_FN, ExecutorOptions(workers=2)),
                       poll_s=0.2)
    assert result.ok, result.failed
    recs = {r.run_id: r for r in iter_records(results)}
    assert set(recs) == {r.run_id for r in runs}
    fft, _, kd = runs
    for cfg in runs:
        rec = recs[cfg.run_id]
        assert rec.status == "completed" and rec.metrics["primary_name"] == "accuracy"
        assert rec.config["task"] == str((tmp_path / "data" / "reviews" / "task.yaml").resolve())
        assert rec.efficiency.trainable_params and (results / "logs" / f"{cfg.run_id}.log").is_file()
    assert recs[kd.run_id].teacher_run_id == fft.run_id
    assert recs[kd.run_id].config["student_model"] == str(tiny_model_dirs["distilbert"])

    again = run_sweep(runs, results, LocalExecutor(results, DEFAULT_RUN_FN, ExecutorOptions(workers=2)))
    assert set(again.skipped) == {r.run_id for r in runs} and not again.completed
