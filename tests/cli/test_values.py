"""Values: every numeric setting range-checked when the config is built (one line, exit 2,
nothing written); flags and --set that disagree, a --results file, a missing target module and a
duplicated CSV header are refused before anything trains."""

from __future__ import annotations

import types
import typing

import pytest
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.config import RANGES, RunConfig
from kdlora.testing.synthetic_data import write_custom_task

runner = CliRunner()
NOT_NUMBERS = {"mrlora_ranks"}  # a tuple of ranks, checked on its own (all > 0)


@pytest.fixture(scope="module")
def task_yaml(tmp_path_factory):
    return write_custom_task(tmp_path_factory.mktemp("task"), n_train=16, n_eval=8, seed=1)


def _numeric(annotation) -> bool:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return any(a in (int, float) for a in (typing.get_args(annotation) if union else (annotation,)))


def test_every_numeric_setting_has_a_range():
    numeric = {f for f, info in RunConfig.model_fields.items() if _numeric(info.annotation)} - NOT_NUMBERS
    assert numeric <= set(RANGES), f"give these a range in config.RANGES: {sorted(numeric - set(RANGES))}"


BAD = [("max_grad_norm", "0"), ("max_grad_norm", "-1"), ("warmup_ratio", "1.5"), ("warmup_ratio", "-0.1"),
       ("weight_decay", "-0.01"), ("lora_alpha", "0"), ("threads", "-1"), ("threads", "0"), ("max_length", "1"),
       ("seed", "-1"), ("lr", ".nan"), ("epochs", ".inf"), ("kd_alpha", "2"), ("adalora_tinit", "1"),
       ("max_train_samples", "0"), ("teacher_lr", "-1")]


def train(task_yaml, tmp_path, *extra):
    return runner.invoke(app, ["train", "--family", "minilm", "--task", str(task_yaml), "--strategy", "kd-lora",
                               "--variant", "lora", "--results", str(tmp_path / "res"), *extra])


def one_line(res, *words):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(w in lines[0] for w in words), res.stderr


@pytest.mark.parametrize("key, value", BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_an_out_of_range_value_is_one_line_and_nothing_written(key, value, task_yaml, tmp_path):
    one_line(train(task_yaml, tmp_path, "--set", f"{key}={value}"), key)
    assert not (tmp_path / "res").exists()


def test_a_negative_seed_flag_is_refused(task_yaml, tmp_path):
    one_line(train(task_yaml, tmp_path, "--seed", "-1"), "seed")


def test_set_contradicting_a_flag_is_refused(task_yaml, tmp_path):
    one_line(train(task_yaml, tmp_path, "--set", "strategy=fft"), "strategy", "--strategy")
    one_line(train(task_yaml, tmp_path, "--seed", "1", "--set", "seed=2"), "seed")
    assert not (tmp_path / "res").exists()


def test_results_naming_a_file_is_refused_before_training(task_yaml, tmp_path):
    (tmp_path / "res").write_text("mine")
    one_line(train(task_yaml, tmp_path), "is a file")
    assert (tmp_path / "res").read_text() == "mine"
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"families: [minilm]\ntasks: [{task_yaml}]\nseeds: [1]\nstrategies: [fft]\n")
    res = runner.invoke(app, ["sweep", str(grid), "--results", str(tmp_path / "res")])
    one_line(res, "is a file")


def test_a_missing_target_module_is_refused_at_check_time(task_yaml, tmp_path):
    one_line(train(task_yaml, tmp_path, "--set", "target_modules=[query,nope]"), "nope", "not found")
    assert not (tmp_path / "res").exists()
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"families: [minilm]\ntasks: [{task_yaml}]\nseeds: [1]\nstrategies: [lora]\nvariants: [lora]\n"
                    "adapters: {target_modules: [nope]}\n")
    one_line(runner.invoke(app, ["sweep", str(grid), "--results", str(tmp_path / "r2")]), "nope")
    assert not (tmp_path / "r2").exists()


def test_a_duplicated_csv_header_is_refused_by_name(tmp_path):
    task = write_custom_task(tmp_path / "t", n_train=8, n_eval=4)
    csv = task.parent / "train.csv"
    lines = csv.read_text().splitlines()
    lines[0] = lines[0] + ",label"
    csv.write_text("\n".join([lines[0]] + [line + ",x" for line in lines[1:]]) + "\n")
    res = runner.invoke(app, ["train", "--family", "minilm", "--task", str(task), "--strategy", "lora",
                              "--results", str(tmp_path / "res")])
    one_line(res, "'label'", "header")
    assert not (tmp_path / "res").exists()
