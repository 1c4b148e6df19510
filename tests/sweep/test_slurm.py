"""`kdlora sweep --executor slurm` through a real SLURM (the `slurm` fixture: a one-node SLURM on
loopback), with the fake quick runs: every record once, a scancel'ed job and one that hits its
1-minute time limit rerun and recorded once, a second sweep adopting queued jobs, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records, read_record

pytest.importorskip("submitit")


def kdlora(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from kdlora.cli import main; main()", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def sweep_args(grid: Path, results: Path, fn: str = "quick", *extra: str) -> list[str]:
    return ["sweep", str(grid), "--results", str(results), "--executor", "slurm", "--run-fn",
            f"sweep_fake_runs:{fn}", "--mem-per-run", "200M", *extra]


def starts(results: Path) -> list[str]:
    path = results / "starts.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def job_of(results: Path, run_id: str) -> str | None:
    path = results / "jobs" / f"{run_id}.json"
    return json.loads(path.read_text())["job_id"] if path.exists() else None


@pytest.fixture
def env(slurm, fake_env) -> dict:
    return {**fake_env, **{k: v for k, v in slurm.env().items() if k in ("SLURM_CONF", "PATH")},
            "KDLORA_SLURM_POLL_S": "1", "FAKE_SLEEP": "0.05"}


def grid_file(tmp_path: Path, seeds: list[int], variants: list[str], **extra) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte"], "seeds": seeds, "variants": variants,
                                    **extra}))
    return path


def assert_each_recorded_once(grid: Path, results: Path) -> dict:
    expected = {r.run_id for r in expand_grid(load_grid(grid))}
    files = sorted((results / "runs").glob("*.json"))
    records = {read_record(p).run_id: read_record(p) for p in files}
    assert set(records) == expected and len(files) == len(expected)
    assert all(r.status == "completed" for r in records.values()), {r.run_id: r.error for r in records.values()}
    assert not list((results / "claims").glob("*.claim"))
    return records


def test_a_small_grid_runs_as_job_arrays_with_every_record_once(slurm, env, tmp_path):
    grid = grid_file(tmp_path, [1, 2], ["lora", "dora"], executor={"time_limit": "00:05:00",
                                                                   "partition": slurm.partition})
    results = tmp_path / "results"
    done = kdlora(*sweep_args(grid, results, "quick", "--slurm-runs-per-task", "2"), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = assert_each_recorded_once(grid, results)
    assert sorted(starts(results)) == sorted(records)  # each run ran once
    # KD-LoRA students went out after their teachers (the fake run refuses to start without one)
    jobs = {run_id: job_of(results, run_id) for run_id in records}
    assert all(jobs.values()) and all("_" in j or j.isdigit() for j in jobs.values())
    assert len(set(jobs.values())) == 5  # 10 runs, 2 per array task
    for run_id, rec in records.items():  # per-run logs and SLURM's own job logs in DIR/logs/
        assert (results / "logs" / f"{run_id}.log").read_text().startswith(f"=== kdlora run {run_id}")
        assert rec.environment["host"]
    assert list((results / "logs" / "slurm").glob("*_log.out"))
    status = kdlora("status", str(grid), "--results", str(results), env=env)
    assert status.returncode == 0 and "10/10 = 100.00 %" in status.stdout
    assert "SLURM jobs: none queued or running" in status.stdout


def test_a_cancelled_job_and_one_past_its_time_limit_are_rerun_and_recorded_once(slurm, env, tmp_path):
    # fft sleeps on its first start until the 1-minute limit's warning signal requeues it;
    # lora/lora sleeps on its first start until we scancel its job.
    grid = grid_file(tmp_path, [1], ["lora"])
    results = tmp_path / "results"
    runs = {r.strategy: r.run_id for r in expand_grid(load_grid(grid))}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from kdlora.cli import main; main()",
         *sweep_args(grid, results, "slow_first", "--time-limit", "1")],
        env={**env, "FAKE_SLOW_FIRST": "fft,lora/lora", "FAKE_SLOW": "300"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while starts(results).count(runs["lora"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        cancelled = job_of(results, runs["lora"])
        slurm.run("scancel", cancelled)
        # The requeued fft job waits for SLURM's requeue delay (BeginTime, about 2 min): let it
        # start once it is pending again, so that the test takes one time limit, not three.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            job = job_of(results, runs["fft"])
            state = slurm.run("squeue", "-h", "-r", "-j", job.split("_")[0], "-o", "%i %T", check=False)
            if f"{job} PENDING" in state and starts(results).count(runs["fft"]) == 1:
                slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)
            if starts(results).count(runs["fft"]) >= 2:
                break
            time.sleep(1)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    records = assert_each_recorded_once(grid, results)
    ran = starts(results)
    assert ran.count(runs["fft"]) == 2 and ran.count(runs["lora"]) == 2 and ran.count(runs["kd-lora"]) == 1
    assert any(f"SLURM job {cancelled} CANCELLED" in n and "submitted again" in n for n in records[runs["lora"]].notes)
    fft_log = (results / "logs" / f"{runs['fft']}.log").read_text()
    fft_notes = " | ".join(records[runs["fft"]].notes)
    assert "this job is timed-out" in fft_log, (fft_log, fft_notes)  # submitit's handler, in the run's output
    # SLURM requeued the job, or ended it after submitit had asked for the requeue (a race the
    # executor handles by submitting the run again as a new job, which is then no requeue)
    assert ("was requeued (time limit or preemption)" in fft_log
            or "after submitit requeued it (time limit or preemption); submitted again" in fft_notes), (fft_log, fft_notes)


def test_a_second_sweep_while_jobs_are_queued_submits_nothing_twice(slurm, env, tmp_path):
    grid = grid_file(tmp_path, [1, 2], ["lora"])
    results = tmp_path / "results"
    env = {**env, "FAKE_SLEEP": "4"}
    first = subprocess.Popen([sys.executable, "-c", "from kdlora.cli import main; main()",
                              *sweep_args(grid, results, "quick", "--slurm-array-parallelism", "1")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list((results / "jobs").glob("*.json"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)  # the sweep process dies; its jobs stay queued in SLURM
        first.wait()
    status = kdlora("status", str(grid), "--results", str(results), env=env)
    assert "SLURM jobs:" in status.stdout and "pending" in status.stdout, status.stdout
    assert "queued" in status.stdout
    submitted = {p.stem: json.loads(p.read_text())["job_id"] for p in (results / "jobs").glob("*.json")}
    second = kdlora(*sweep_args(grid, results, "quick"), env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    records = assert_each_recorded_once(grid, results)
    assert sorted(starts(results)) == sorted(records)  # nothing ran twice
    for run_id, job in submitted.items():  # the queued jobs were adopted, not submitted again
        assert job_of(results, run_id) == job


def test_bad_slurm_input_is_one_line_exit_2_and_leaves_no_claims(slurm, env, tmp_path):
    grid = grid_file(tmp_path, [1], ["lora"])
    results = tmp_path / "results"
    cases = {("--partition", "nosuchpart"): "unknown SLURM partition 'nosuchpart'",
             ("--time-limit", "30s"): "bad time limit",
             ("--time-limit", "0:30"): "under SLURM's smallest, 1 minute",
             ("--gpus-per-run", "0.5"): "SLURM gives whole GPUs"}
    for extra, message in cases.items():
        done = kdlora(*sweep_args(grid, results, "quick", *extra), env=env)
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    # a time limit shorter than an earlier record of the same kind of run took
    cfg = next(r for r in expand_grid(load_grid(grid)) if r.strategy == "lora")
    other = cfg.model_copy(update={"seed": 7})
    import sweep_fake_runs

    os.environ["FAKE_SLEEP"] = "600"
    try:
        sweep_fake_runs.write(other, results)
    finally:
        os.environ.pop("FAKE_SLEEP")
    done = kdlora(*sweep_args(grid, results, "quick", "--time-limit", "5"), env=env)
    assert done.returncode == 2 and "shorter than a run can take" in done.stderr and "600 s" in done.stderr
    assert not (results / "claims").exists() or not list((results / "claims").glob("*.claim"))
    assert not (results / "jobs").exists()
    # SLURM options need the SLURM executor
    done = kdlora("sweep", str(grid), "--results", str(results), "--partition", "x", env=env)
    assert done.returncode == 2 and "--partition needs --executor slurm" in done.stderr


def test_without_submitit_the_slurm_executor_says_how_to_install_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kdlora.cli import app

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    grid = grid_file(tmp_path, [1], ["lora"])
    result = CliRunner().invoke(app, ["sweep", str(grid), "--results", str(tmp_path / "r"), "--executor", "slurm"])
    assert result.exit_code == 2
    assert "needs submitit: pip install 'kdlora[slurm]'" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", [["--runs-per-gpu", "2"], ["--mps"]])
def test_gpu_packing_options_are_refused_on_slurm(flag, tmp_path):
    from typer.testing import CliRunner

    from kdlora.cli import app

    grid = grid_file(tmp_path, [1], ["lora"])
    result = CliRunner().invoke(app, ["sweep", str(grid), "--results", str(tmp_path / "r"),
                                      "--executor", "slurm", *flag])
    assert result.exit_code == 2
    assert "are for the local executor; on SLURM each run is a job with whole GPUs" in result.output
    assert not (tmp_path / "r").exists()


def test_a_job_that_dies_gives_its_run_a_failed_record_with_the_jobs_reason(slurm, env, tmp_path):
    grid = grid_file(tmp_path, [1], ["dora"])  # lora/dora: os._exit(3); kd-lora/dora: SIGKILL
    results = tmp_path / "results"
    done = kdlora(*sweep_args(grid, results, "dying"), env=env)
    assert done.returncode == 1, done.stderr[-3000:]
    recs = {r.run_id: r for r in iter_records(results)}
    dead = [r for r in recs.values() if r.config["variant"] == "dora"]
    assert len(dead) == 2 and all(r.status == "failed" for r in dead)
    for rec in dead:
        assert rec.error.startswith(f"SLURM job {job_of(results, rec.run_id)} FAILED"), rec.error
        assert "log logs/slurm/" in rec.error
    assert [r.status for r in recs.values() if r.config["strategy"] == "fft"] == ["completed"]
    assert not list((results / "claims").glob("*.claim"))


def test_status_without_an_answer_from_slurm_still_reports(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kdlora.cli import app
    from kdlora.executors import slurm as slurm_exec

    grid = grid_file(tmp_path, [1], ["lora"])
    results = tmp_path / "results"
    run_id = expand_grid(load_grid(grid))[0].run_id
    slurm_exec.write_job_file(results, run_id, "123_0", 1)
    monkeypatch.setattr(slurm_exec, "_slurm", lambda *args, **kw: None)  # no squeue, no sacct
    result = CliRunner().invoke(app, ["status", str(grid), "--results", str(results)])
    assert result.exit_code == 0, result.output
    assert "0/3 = 0.00 %" in result.output
    assert "SLURM jobs: squeue and sacct do not answer here" in result.output
