"""`kdlora train` as a user types it: offline MiniLM runs end to end, and bad input is refused
with one line, exit code 2 and no record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.testing.synthetic_data import write_custom_task

runner = CliRunner()


@pytest.fixture(scope="module")
def task_yaml(tmp_path_factory):
    return write_custom_task(tmp_path_factory.mktemp("task"), n_train=240, n_eval=80, seed=1)


def train(*args):
    return runner.invoke(app, ["train", *map(str, args)])


def test_minilm_lora_dora_writes_a_complete_record(task_yaml, tmp_path):
    res = train("--family", "minilm", "--task", task_yaml, "--strategy", "lora", "--variant", "dora",
                "--seed", 1, "--results", tmp_path)
    assert res.exit_code == 0, res.output
    records = list((tmp_path / "runs").glob("*.json"))
    assert len(records) == 1 and str(records[0]) in res.output.replace("\n", "")
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "completed"
    assert rec["config"]["variant"] == "dora" and rec["config"]["family"] == "minilm"
    assert 0.0 <= rec["metrics"]["accuracy"] <= 1.0 and rec["metrics"]["primary_name"] == "accuracy"
    eff = rec["efficiency"]
    assert 0 < eff["trainable_params"] < eff["total_params"]
    assert 22_000_000 < eff["total_params"] < 23_500_000  # all-MiniLM-L6-v2 is 22.7M parameters
    for key in ("peak_memory_bytes", "train_time_s", "train_samples_per_s", "train_tokens_per_s",
                "flops_measured", "flops_analytic", "eval_samples_per_s", "eval_latency_ms_b32"):
        assert eff[key] is not None and eff[key] > 0, key


def test_kd_lora_mrlora_trains_its_teacher_first(task_yaml, tmp_path):
    res = train("--family", "minilm", "--task", task_yaml, "--strategy", "kd-lora", "--variant", "mrlora",
                "--train-teacher", "--seed", 1, "--results", tmp_path, "--set", "epochs=2")
    assert res.exit_code == 0, res.output
    recs = {r["config"]["strategy"]: r for r in
            (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json"))}
    assert set(recs) == {"fft", "kd-lora"}
    assert all(r["status"] == "completed" for r in recs.values())
    student, teacher = recs["kd-lora"], recs["fft"]
    assert student["teacher_run_id"] == teacher["run_id"]
    assert student["efficiency"]["total_params"] < teacher["efficiency"]["total_params"] * 0.8  # 3 of 6 layers


def test_kd_lora_hidden_vera_writes_a_completed_record_on_cpu(task_yaml, tmp_path):
    """Hidden-state distillation with VeRA, teacher trained first, the teacher's online cost apart."""
    res = train("--family", "minilm", "--task", task_yaml, "--strategy", "kd-lora-hidden", "--variant", "vera",
                "--train-teacher", "--results", tmp_path, "--set", "epochs=1", "--set", "max_train_samples=96")
    assert res.exit_code == 0, res.output
    recs = {r["config"]["strategy"]: r for r in
            (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json"))}
    assert set(recs) == {"fft", "kd-lora-hidden"} and all(r["status"] == "completed" for r in recs.values())
    eff = recs["kd-lora-hidden"]["efficiency"]
    assert recs["kd-lora-hidden"]["teacher_run_id"] == recs["fft"]["run_id"]
    assert eff["kd_hidden_layer_map"] == [2, 4, 6] and eff["kd_hidden_projection_params"] == 0  # 3 of 6 layers
    # VeRA on query/value of 3 layers of width 384 at r = 8: (8 + 384) each, plus the classifier head
    assert eff["trainable_params"] == 6 * (8 + 384) + (384 * 2 + 2)
    assert eff["teacher_online_s"] > 0 and eff["teacher_online_flops_analytic"] > 0
    assert eff["teacher_total_params"] == recs["fft"]["efficiency"]["total_params"]


BAD_INPUTS = {
    "unknown family": (["--family", "gpt9"], "unknown family 'gpt9'"),
    "unknown strategy": (["--strategy", "distill"], "strategy"),
    "unknown variant": (["--variant", "lokr"], "unknown variant 'lokr'"),
    "unknown task": (["--task", "squad"], "squad"),
    "rank zero": (["--set", "r=0"], "r must be > 0"),
    "negative lr": (["--set", "lr=-1"], "lr must be > 0"),
    "unknown setting": (["--set", "use_dora=true"], "unknown key 'use_dora'"),
    "malformed set": (["--set", "lr"], "key=value"),
    "glue offline": (["--task", "rte"], "data_dir"),
    "missing model": (["--set", "teacher_model=/nonexistent/model"], "cannot load model"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_no_record(case, task_yaml, tmp_path):
    extra, expected = BAD_INPUTS[case]
    base = {"--family": "minilm", "--task": str(task_yaml), "--strategy": "lora", "--variant": "lora"}
    sets = []
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag == "--set":
            sets += [flag, value]
        else:
            base[flag] = value
    args = [x for kv in base.items() for x in kv] + sets + ["--seed", "1", "--results", str(tmp_path / "res")]
    res = runner.invoke(app, ["train", *args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert not (tmp_path / "res" / "runs").exists()


def test_missing_task_file_is_refused(tmp_path):
    res = train("--family", "minilm", "--task", tmp_path / "nope.yaml", "--strategy", "fft", "--results", tmp_path)
    assert res.exit_code == 2
    assert "nope.yaml" in res.stderr


def test_entry_point_is_installed():
    out = subprocess.run([sys.executable, "-m", "kdlora.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("train", "sweep", "status", "plan", "report", "import-legacy"):
        assert command in out.stdout, command
