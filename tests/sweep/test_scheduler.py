"""The scheduler on the local executor, with quick fake runs: resume, dependencies, failures,
retries, out-of-memory halving, per-run logs and GPU slots."""

from __future__ import annotations

import json
from pathlib import Path

from kdlora.executors import ExecutorOptions
from kdlora.executors.local import LocalExecutor
from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records, read_record, record_path
from kdlora.sweep.scheduler import run_sweep
from kdlora.strategies import teacher_of


def sweep(grid: Path, results: Path, fn: str = "quick", retries: int = 0, workers: int = 2, **options):
    runs = expand_grid(load_grid(grid))
    executor = LocalExecutor(results, f"sweep_fake_runs:{fn}", ExecutorOptions(workers=workers, **options))
    events = []
    result = run_sweep(runs, results, executor, retries=retries,
                       on_event=lambda *e: events.append(e), poll_s=0.2)
    return runs, result, events


def starts(results: Path) -> list[str]:
    path = results / "starts.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def records(results: Path) -> dict:
    return {r.run_id: r for r in iter_records(results)}


def test_sweep_completes_every_run_once_and_resume_skips_them(small_grid, tmp_path):
    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results)
    ids = {r.run_id for r in runs}
    assert result.ok and set(result.completed) == ids
    recs = records(results)
    assert set(recs) == ids and all(r.status == "completed" for r in recs.values())
    assert sorted(starts(results)) == sorted(ids)  # each run started exactly once
    for run_id in ids:  # each run's output in its own log file
        log = (results / "logs" / f"{run_id}.log").read_text()
        assert f"training {run_id}" in log and "attempt 1" in log
    assert not list((results / "claims").glob("*.claim"))  # claims released

    _, again, events = sweep(small_grid, results)
    assert set(again.skipped) == ids and not again.completed
    assert sorted(starts(results)) == sorted(ids)  # nothing ran again
    assert {e[0] for e in events} == {"skipped"}


def test_kd_runs_start_only_after_their_teacher_completed(small_grid, tmp_path):
    # quick() raises if a KD run starts without its teacher's completed record; 1 worker or 2
    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results, workers=2)
    assert result.ok
    order = starts(results)
    for kd in (r for r in runs if r.strategy == "kd-lora"):
        assert order.index(teacher_of(kd).run_id) < order.index(kd.run_id)
        assert records(results)[kd.run_id].teacher_run_id == teacher_of(kd).run_id


def test_a_run_whose_process_dies_is_recorded_failed_and_the_sweep_goes_on(small_grid, tmp_path):
    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results, fn="dying")
    recs = records(results)
    dora = {r.run_id: r for r in runs if r.variant == "dora"}
    assert set(result.failed) == set(dora)
    for run_id, cfg in dora.items():
        assert recs[run_id].status == "failed"
        expected = "exited with code 3" if cfg.strategy == "lora" else "killed by signal SIGKILL"
        assert expected in recs[run_id].error
    others = [r.run_id for r in runs if r.variant != "dora"]
    assert all(recs[i].status == "completed" for i in others)


def test_failed_teacher_fails_its_students_with_the_reason(small_grid, tmp_path):
    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results, fn="failing_teacher")
    recs = records(results)
    for cfg in runs:
        rec = recs[cfg.run_id]
        if cfg.strategy == "fft":
            assert rec.status == "failed" and rec.error == "RuntimeError: boom"
        elif cfg.strategy == "kd-lora":
            teacher = teacher_of(cfg).run_id
            assert rec.status == "failed" and rec.error == f"teacher {teacher} failed"
            assert cfg.run_id not in starts(results)  # never started
        else:
            assert rec.status == "completed"
    assert len(result.failed) == 6


def test_retries_keep_every_failure_reason(small_grid, tmp_path):
    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results, fn="flaky", retries=1)
    assert result.ok
    for rec in records(results).values():
        assert rec.status == "completed"
        assert any("attempt 1: failed: RuntimeError: flaky first attempt" in n for n in rec.notes)
    # the failed attempts' records are kept aside, not in runs/
    assert len(list((results / "failures").glob("*.json"))) == len(runs)


def test_without_retries_a_failure_is_final_and_rerunning_retries_it(small_grid, tmp_path):
    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results, fn="flaky", retries=0)
    fft = [r.run_id for r in runs if r.strategy == "fft"]
    assert set(fft) <= set(result.failed)
    # the same command again (resume) reruns what failed and keeps the earlier reason
    # (the KD runs start for the first time then, so their own first attempt fails: retries=1)
    _, again, _ = sweep(small_grid, results, fn="flaky", retries=1)
    assert again.ok
    rec = read_record(record_path(results, fft[0]))
    assert rec.status == "completed"
    assert any(n.startswith("earlier sweep: failed: RuntimeError: flaky") for n in rec.notes)


def test_out_of_memory_retries_with_more_accumulation_and_the_same_run_id(small_grid, tmp_path):
    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results, fn="oom_until_accum_4", retries=0)
    assert result.ok  # the halving is not a retry: it works with --retries 0
    for cfg in runs:
        rec = read_record(record_path(results, cfg.run_id))
        assert rec.run_id == cfg.run_id and rec.status == "completed"
        assert rec.config["grad_accum"] == 4 and rec.config["batch_size"] == 32
        assert any("retrying with micro-batch 16 x grad_accum 2" in n for n in rec.notes)
        assert any("retrying with micro-batch 8 x grad_accum 4" in n for n in rec.notes)


def test_nan_loss_is_a_result_not_retried(small_grid, tmp_path):
    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results, fn="diverging", retries=2)
    lora = [r.run_id for r in runs if r.strategy == "lora"]
    assert set(result.failed) == set(lora)
    assert sorted(starts(results)).count(lora[0]) == 1
    _, again, _ = sweep(small_grid, results, fn="diverging", retries=2)
    assert set(again.failed) == set(lora) and sorted(starts(results)).count(lora[0]) == 1


def test_each_worker_sees_one_gpu(small_grid, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    results = tmp_path / "results"
    _, result, _ = sweep(small_grid, results, workers=None)
    assert result.ok
    seen = {json.loads(p.read_text())["environment"]["cuda_visible_devices"]
            for p in (results / "runs").glob("*.json")}
    assert seen <= {"3", "5"} and seen


def test_gpus_per_run_0_hides_the_gpus(small_grid, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    results = tmp_path / "results"
    _, result, _ = sweep(small_grid, results, workers=2, gpus_per_run=0)
    assert result.ok
    seen = {json.loads(p.read_text())["environment"]["cuda_visible_devices"]
            for p in (results / "runs").glob("*.json")}
    assert seen == {""}


def test_a_teacher_whose_checkpoint_is_gone_or_changed_is_trained_again(small_grid, tmp_path):
    """Teachers of students still to do are checked against their record's weights fingerprint:
    a deleted or altered checkpoint makes the teacher not done, so the sweep retrains it first."""
    import shutil

    from kdlora.checkpoints import checkpoint_dir

    results = tmp_path / "results"
    runs, result, _ = sweep(small_grid, results)
    assert result.ok
    kd = [r for r in runs if r.strategy == "kd-lora"]
    gone, changed = (teacher_of(kd[0]).run_id, next(teacher_of(r).run_id for r in kd
                                                        if teacher_of(r).run_id != teacher_of(kd[0]).run_id))
    students = [r.run_id for r in kd]
    for run_id in students:  # the students are still to do (say, a new variant was added)
        record_path(results, run_id).unlink()
    shutil.rmtree(checkpoint_dir(results, gone))
    (checkpoint_dir(results, changed) / "model.safetensors").write_text("base weights")
    _, again, events = sweep(small_grid, results)
    assert again.ok and set(again.completed) == {gone, changed, *students}
    retried = {e[1]: e[2] for e in events if e[0] == "retry"}
    assert "checkpoint" in retried[gone] and "missing" in retried[gone]
    assert "does not match" in retried[changed]
    assert any("teacher not usable" in n for n in read_record(record_path(results, gone)).notes)
    order = starts(results)[len(runs):]
    assert max(order.index(gone), order.index(changed)) < min(order.index(s) for s in students)  # 2 workers
