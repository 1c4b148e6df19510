"""Grid files: validation with clear errors, and an expansion that counts runs correctly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from kdlora.testing.synthetic_data import write_custom_task
from kdlora.errors import UserError
from kdlora.grid import expand_grid, load_grid
from kdlora.strategies import teacher_of

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper.yaml"


def write_grid(tmp_path: Path, **data) -> Path:
    base = {"families": ["bert"], "tasks": ["rte"], "seeds": [1]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**base, **data}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def paper_runs():
    return expand_grid(load_grid(PAPER))


def test_paper_grid_expects_1053_runs(paper_runs):
    counts = Counter(r.strategy for r in paper_runs)
    assert len(paper_runs) == 1053
    assert counts == {"fft": 81, "lora": 486, "kd-lora": 486}
    assert len({r.run_id for r in paper_runs}) == 1053
    fft = [r for r in paper_runs if r.strategy == "fft"]
    assert {(r.family, r.task, r.seed) for r in fft} == {
        (f, t, s) for f in ("bert", "roberta", "deberta")
        for t in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli") for s in (42, 123, 2024)}


def test_paper_hyperparameters_per_strategy(paper_runs):
    by = {(r.strategy, r.variant): r for r in paper_runs if (r.family, r.task, r.seed) == ("bert", "cola", 42)}
    assert by[("fft", None)].lr == 5e-5
    assert by[("lora", "dora")].lr == 5e-4 and by[("kd-lora", "dora")].lr == 5e-4
    assert by[("kd-lora", "lora")].kd_temperature == 2.0 and by[("kd-lora", "lora")].kd_alpha == 0.5
    assert by[("lora", "mrlora")].mrlora_ranks == (8, 4, 2, 1)
    assert all(r.epochs == 3 and r.batch_size == 32 and r.r == 8 for r in by.values())


def test_every_kd_run_of_paper_finds_its_fft_teacher_earlier(paper_runs):
    position = {r.run_id: i for i, r in enumerate(paper_runs)}
    fft_ids = {r.run_id for r in paper_runs if r.strategy == "fft"}
    kd = [r for r in paper_runs if r.strategy == "kd-lora"]
    assert kd
    for run in kd:
        teacher = teacher_of(run).run_id
        assert teacher in fft_ids
        assert position[teacher] < position[run.run_id]
        assert (run.teacher_lr, run.teacher_epochs, run.teacher_batch_size) == (5e-5, 3, 32)


def test_student_only_axis_does_not_multiply_teachers(tmp_path):
    path = write_grid(tmp_path, seeds=[1, 2], variants=["lora", "dora"],
                      **{"kd-lora": {"kd_temperature": [1, 2, 4]}, "adapters": {"r": [4, 8]}})
    runs = expand_grid(load_grid(path))
    counts = Counter(r.strategy for r in runs)
    # fft: 2 seeds; lora: 2 seeds x 2 variants x 2 ranks; kd: that x 3 temperatures.
    assert counts == {"fft": 2, "lora": 8, "kd-lora": 24}
    assert {r.kd_temperature for r in runs if r.strategy == "kd-lora"} == {1.0, 2.0, 4.0}
    fft_ids = {r.run_id for r in runs if r.strategy == "fft"}
    assert {teacher_of(r).run_id for r in runs if r.strategy == "kd-lora"} == fft_ids


def test_shared_axis_pairs_each_student_with_its_own_teacher(tmp_path):
    path = write_grid(tmp_path, variants=["lora"], hyperparameters={"epochs": [1, 2]})
    runs = expand_grid(load_grid(path))
    assert Counter(r.strategy for r in runs) == {"fft": 2, "lora": 2, "kd-lora": 2}
    fft = {r.run_id: r for r in runs if r.strategy == "fft"}
    for kd in (r for r in runs if r.strategy == "kd-lora"):
        assert fft[teacher_of(kd).run_id].epochs == kd.epochs


def test_teacher_axis_multiplies_kd_runs_but_not_lora(tmp_path):
    path = write_grid(tmp_path, variants=["lora"], fft={"lr": [1e-5, 5e-5]})
    runs = expand_grid(load_grid(path))
    assert Counter(r.strategy for r in runs) == {"fft": 2, "lora": 1, "kd-lora": 2}


def test_teachers_are_added_when_fft_is_not_listed(tmp_path):
    path = write_grid(tmp_path, strategies=["kd-lora"], variants=["lora", "rslora"])
    runs = expand_grid(load_grid(path))
    assert [r.strategy for r in runs] == ["fft", "kd-lora", "kd-lora"]
    assert teacher_of(runs[1]).run_id == runs[0].run_id


def test_sequence_fields_take_a_list_as_one_value_and_a_list_of_lists_as_an_axis(tmp_path):
    one = expand_grid(load_grid(write_grid(tmp_path, strategies=["lora"], variants=["mrlora"],
                                           adapters={"mrlora_ranks": [4, 2]})))
    assert [r.mrlora_ranks for r in one] == [(4, 2)]
    two = expand_grid(load_grid(write_grid(tmp_path, strategies=["lora"], variants=["mrlora"],
                                           adapters={"mrlora_ranks": [[4, 2], [8, 4, 2, 1]]})))
    assert sorted(r.mrlora_ranks for r in two) == [(4, 2), (8, 4, 2, 1)]


def test_custom_task_path_is_relative_to_the_grid_and_model_paths_resolve(tmp_path):
    write_custom_task(tmp_path / "tasks", n_train=8, n_eval=4).rename(tmp_path / "tasks" / "reviews.yaml")
    (tmp_path / "teacher").mkdir()
    sub = tmp_path / "grids"
    sub.mkdir()
    path = write_grid(sub, families=["minilm"], tasks=["../tasks/reviews.yaml"], strategies=["fft"],
                      hyperparameters={"teacher_model": "../teacher"})
    (run,) = expand_grid(load_grid(path))
    assert run.task == str((tmp_path / "tasks" / "reviews.yaml").resolve())
    assert run.teacher_model == str((tmp_path / "teacher").resolve())
    assert run.run_id.startswith("minilm-reviews2-fft-full-s1-")  # the task's `name:`, not its file name


@pytest.mark.parametrize("data, message", [
    ({"families": ["gpt2"]}, "unknown family 'gpt2'"),
    ({"tasks": ["rtee"]}, "unknown task 'rtee'"),
    ({"variants": ["qlora"]}, "unknown variant 'qlora'"),
    ({"strategies": ["distill"]}, "unknown strategy 'distill'"),
    ({"seeds": []}, "'seeds' must list at least one value"),
    ({"hyperparameters": {"learning_rate": 1e-4}}, "unknown hyperparameter 'learning_rate'"),
    ({"kd-lora": {"kd_temp": [1, 2]}}, "did you mean 'kd_temperature'"),
    ({"kd-lora": {"teacher_lr": 1e-4}}, "set it under fft:"),
    ({"lora": {"variant": "dora"}}, "'variant' is a grid axis"),
    ({"epochs": 3}, "unknown key 'epochs'"),
    ({"adapters": {"r": [8, 0]}}, "run bert/rte/lora/lora: r must be > 0"),
    ({"adapters": {"r": []}}, "empty list"),
    ({"fft": {"warmup_ratio": 0.1}}, "teacher would differ from the grid's FFT run in warmup_ratio"),
])
def test_bad_grids_are_refused_with_the_bad_key(tmp_path, data, message):
    with pytest.raises(UserError) as info:
        load_grid(write_grid(tmp_path, **data))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_kd_for_a_family_without_student_is_refused(tmp_path, monkeypatch):
    import kdlora.grid as grid_mod

    monkeypatch.setattr(grid_mod, "known_families", lambda: {"bert": False})
    with pytest.raises(UserError, match="family 'bert' has no student model"):
        load_grid(write_grid(tmp_path))
    # the same grid without kd-lora is fine
    assert load_grid(write_grid(tmp_path, strategies=["fft", "lora"]))


def test_missing_or_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_grid(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("families: [bert\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_grid(bad)


def test_demo_shaped_grid_minilm_custom_task_13_runs(tmp_path):
    write_custom_task(tmp_path / "tweets", n_train=8, n_eval=4)
    path = write_grid(tmp_path, families=["minilm"], tasks=["tweets/task.yaml"], seeds=[0],
                      fft={"lr": 5e-5}, adapters={"lr": 5e-4})
    runs = expand_grid(load_grid(path))
    assert Counter(r.strategy for r in runs) == {"fft": 1, "lora": 6, "kd-lora": 6}
    assert {teacher_of(r).run_id for r in runs if r.strategy == "kd-lora"} == {runs[0].run_id}


# A valid non-default value for every hyperparameter a grid may set.
NON_DEFAULT = {"teacher_model": "some/teacher", "student_model": "some/student", "data_dir": "/data/glue",
               "metric_policy": "legacy", "lr": 1e-4, "epochs": 2.0, "batch_size": 16, "max_length": 64,
               "warmup_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 0.5, "group_by_length": True,
               "eval_every_epoch": True, "max_train_samples": 100, "max_eval_samples": 50, "precision": "fp32",
               "r": 4, "lora_alpha": 8.0, "lora_dropout": 0.1, "target_modules": ["query"],
               "mrlora_ranks": [4, 2], "mrlora_scaling": "standard", "adalora_init_r": 16,
               "adalora_tinit": 0.2, "adalora_tfinal": 0.3, "adalora_delta_t": 5, "kd_temperature": 3.0,
               "kd_alpha": 0.3, "grad_accum": 2, "threads": 1, "device": "cpu", "selection_fraction": 0.1,
               "select_best_epoch": True, "compile": True, "param_budget": {"reference": "lora", "r": 4},
               "track": "tensorboard", "tracking_uri": "sqlite:///mlflow.db"}
NEEDS = {"select_best_epoch": {"selection_fraction": 0.1}}  # what a value is valid only with


def _plugin_non_defaults() -> dict:
    """Fields a plug-in declared after this table was written: a valid non-default number from its
    declared default (a new variant or strategy needs no line here)."""
    from kdlora.config import PLUGIN_FIELDS, RunConfig

    out = {}
    for name in sorted(PLUGIN_FIELDS - set(NON_DEFAULT)):
        default = RunConfig.model_fields[name].default
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue  # left for the table above
        out[name] = default + 1 if isinstance(default, int) else default * 1.5
    return out


NON_DEFAULT.update(_plugin_non_defaults())


def test_every_shared_hyperparameter_keeps_students_paired_with_the_grid_teacher(tmp_path):
    from kdlora.grid import HYPERPARAMETERS

    assert set(NON_DEFAULT) == set(HYPERPARAMETERS), "a new RunConfig field: give it a value here"
    glue = tmp_path / "glue" / "RTE"  # data_dir must hold the task's data: its files are fingerprinted
    glue.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (glue / name).write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    for key, value in {**NON_DEFAULT, "data_dir": str(glue.parent)}.items():
        settings = {key: value, **NEEDS.get(key, {})}
        runs = expand_grid(load_grid(write_grid(tmp_path, variants=["lora"], hyperparameters=settings)))
        fft = [r for r in runs if r.strategy == "fft"]
        kd = [r for r in runs if r.strategy == "kd-lora"]
        assert len(fft) == 1 and len(kd) == 1, key
        assert teacher_of(kd[0]).run_id == fft[0].run_id, key
