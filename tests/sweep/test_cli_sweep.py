"""The commands as a user runs them: plan, sweep (killed with -9 and resumed, two at once on one
results directory), status; the local executor never imports ray."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records, read_record

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def kdlora_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from kdlora.cli import main; main()", *args]


def sweep_args(grid: Path, results: Path, fn: str = "quick", workers: int = 2) -> list[str]:
    return ["sweep", str(grid), "--results", str(results), "--workers", str(workers),
            "--run-fn", f"sweep_fake_runs:{fn}"]


def starts(results: Path) -> list[tuple[str, str]]:
    path = results / "starts.log"
    return [tuple(line.split()[:2]) for line in path.read_text().splitlines()] if path.exists() else []


def test_plan_paper_says_1053():
    result = runner.invoke(app, ["plan", str(REPO / "configs" / "paper.yaml")])
    assert result.exit_code == 0, result.output
    assert "1053 runs expected" in result.output
    assert "81 fft, 486 lora, 486 kd-lora" in result.output


def test_plan_writes_the_expected_runs_csv(small_grid, tmp_path):
    out = tmp_path / "plan.csv"
    result = runner.invoke(app, ["plan", str(small_grid), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["family", "task", "strategy", "variant", "seed", "run_id"]
    assert len(table) == 10


def test_bad_grid_is_refused_before_anything_runs(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte"], "seeds": [1],
                                    "variants": ["lora", "qlora"]}))
    results = tmp_path / "results"
    result = runner.invoke(app, sweep_args(grid, results))
    assert result.exit_code == 2
    assert "error:" in result.output and "unknown variant 'qlora'" in result.output
    assert not (results / "runs").exists()
    bad_fn = runner.invoke(app, sweep_args(tmp_path / "nope.yaml", results))
    assert bad_fn.exit_code == 2 and "not found" in bad_fn.output


def test_status_reports_completion_failures_missing_and_heatmap(small_grid, tmp_path):
    results = tmp_path / "results"
    swept = runner.invoke(app, sweep_args(small_grid, results, fn="dying"))
    assert swept.exit_code == 1  # some runs failed for good
    missing, png = tmp_path / "missing.csv", tmp_path / "status.png"
    result = runner.invoke(app, ["status", str(small_grid), "--results", str(results),
                                 "--plot", str(png), "--missing", str(missing)])
    assert result.exit_code == 0, result.output
    assert "6/10 = 60.00 %" in result.output
    assert "killed by signal SIGKILL" in result.output and "exited with code 3" in result.output
    table = pd.read_csv(missing)
    assert list(table.columns) == ["family", "task", "strategy", "variant", "seed", "run_id"]
    assert set(table["variant"]) == {"dora"} and len(table) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kill_9_then_the_same_command_finishes_every_run_exactly_once(tmp_path, fake_env):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte"], "seeds": [1, 2, 3],
                                    "variants": ["lora", "dora"]}))
    expected = {r.run_id for r in expand_grid(load_grid(grid))}
    results = tmp_path / "results"
    seed = int(os.environ.get("KDLORA_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    env = {**fake_env, "FAKE_SLEEP": "0.15"}
    proc = subprocess.Popen(kdlora_cmd(*sweep_args(grid, results)), env={**env, "FAKE_PHASE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = rng.randint(1, 12)  # kill after a random number of runs started, plus a random delay
    deadline = time.monotonic() + 60
    while len(starts(results)) < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # its runs die with it (they watch the sweep process)
    done_before_kill = set()
    for path in (results / "runs").glob("*.json"):
        rec = read_record(path)  # raises if half-written
        if rec.status == "completed":
            done_before_kill.add(rec.run_id)
    assert done_before_kill != expected, f"seed {seed}: the sweep ended before the kill"

    final = subprocess.run(kdlora_cmd(*sweep_args(grid, results)), env={**env, "FAKE_PHASE": "2"},
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-2000:]}"
    files = sorted((results / "runs").glob("*.json"))
    records = [read_record(p) for p in files]  # every file is a whole, valid record
    assert {r.run_id for r in records} == expected and len(files) == len(expected), f"seed {seed}"
    assert all(r.status == "completed" for r in records), f"seed {seed}"
    rerun = {run_id for run_id, phase in starts(results) if phase == "2"} & done_before_kill
    assert not rerun, f"seed {seed}: finished runs ran again: {rerun}"
    assert not list((results / "claims").glob("*.claim"))


def test_two_sweeps_on_one_results_dir_never_run_a_run_twice(small_grid, tmp_path, fake_env):
    results = tmp_path / "results"
    env = {**fake_env, "FAKE_SLEEP": "0.2"}
    # The first one also checks that the local executor never imports ray.
    check = ("import sys; from kdlora.cli import app\n"
             "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
             "assert 'ray' not in sys.modules, 'local executor imported ray'\nsys.exit(code)")
    procs = [subprocess.Popen([sys.executable, "-c", check, *sweep_args(small_grid, results)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
             subprocess.Popen(kdlora_cmd(*sweep_args(small_grid, results)), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = [run_id for run_id, _ in starts(results)]
    expected = {r.run_id for r in expand_grid(load_grid(small_grid))}
    assert sorted(ran) == sorted(expected), "a run was started twice (or never)"
    assert {r.run_id for r in iter_records(results) if r.status == "completed"} == expected


def test_sweep_saves_budget_sizes_and_report_expects_its_runs_without_torch(tmp_path):
    """A param_budget grid: the sweep saves the sizes in DIR/param_budget.json; the report's grid
    expansion, in a process that cannot import torch, expects exactly the runs the sweep recorded."""
    from transformers import CONFIG_MAPPING

    CONFIG_MAPPING["bert"](vocab_size=1000, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                           num_hidden_layers=2).save_pretrained(tmp_path / "teacher")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte"], "seeds": [1], "strategies": ["lora"],
                                    "variants": ["lora", "dora", "mrlora"], "param_budget": {"reference": "lora", "r": 8},
                                    "hyperparameters": {"teacher_model": str(tmp_path / "teacher")}}))
    results = tmp_path / "results"
    done = runner.invoke(app, sweep_args(grid, results, workers=1))
    assert done.exit_code == 0, done.output
    assert (results / "param_budget.json").is_file()
    recorded = sorted(r.run_id for r in iter_records(results))
    code = ("import sys\n"
            "class NoTorch:\n"  # as on a laptop without torch: `import torch` fails
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.partition('.')[0] == 'torch':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from kdlora.analysis.report import expected_from_grid\n"
            "print(' '.join(sorted(expected_from_grid(sys.argv[1], [sys.argv[2]])['run_id'])))\n")
    out = subprocess.run([sys.executable, "-c", code, str(grid), str(results)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == recorded and len(recorded) == 3
