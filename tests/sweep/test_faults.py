"""Faults a shared results directory meets: empty claims, a full or read-only disk, a record
under the wrong file name, and file modes that must follow the umask."""

from __future__ import annotations

import errno
import os
import shutil
import stat

import pytest
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.executors import ExecutorOptions
from kdlora.executors.local import LocalExecutor
from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records, record_path, write_record
from kdlora.sweep import claims as claims_mod
from kdlora.sweep.claims import ClaimStore
from kdlora.sweep.scheduler import run_sweep
from kdlora.sweep.status import run_table

runner = CliRunner()


def sweep(grid, results, fn="quick"):
    runs = expand_grid(load_grid(grid))
    return runs, run_sweep(runs, results, LocalExecutor(results, f"sweep_fake_runs:{fn}", ExecutorOptions(workers=2)),
                           poll_s=0.2)


def sweep_cli(grid, results, fn="quick"):
    return runner.invoke(app, ["sweep", str(grid), "--results", str(results), "--workers", "2",
                               "--run-fn", f"sweep_fake_runs:{fn}"])


def test_an_empty_or_unreadable_claim_is_stale_at_once(small_grid, tmp_path):
    results = tmp_path / "results"
    runs = expand_grid(load_grid(small_grid))
    store = ClaimStore(results)
    store.path(runs[0].run_id).write_text("")  # what a full disk left behind
    store.path(runs[1].run_id).write_bytes(b"\x00\xff{")
    assert store.is_stale(runs[0].run_id) and store.is_stale(runs[1].run_id)
    _, result = sweep(small_grid, results)
    assert result.ok and {runs[0].run_id, runs[1].run_id} <= set(result.completed)


def test_a_claim_that_cannot_be_written_leaves_nothing(tmp_path, monkeypatch):
    def full(path, text):
        with open(path, "x") as f:
            f.write(text[:3])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(claims_mod, "write_claim", full)
    store = ClaimStore(tmp_path)
    with pytest.raises(OSError):
        store.acquire("some-run")
    assert list((tmp_path / "claims").iterdir()) == [] or \
        [p.name for p in (tmp_path / "claims").iterdir()] == [".takeover.lock"]


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_a_full_or_read_only_disk_stops_the_sweep_with_one_line(code, words, small_grid, tmp_path, monkeypatch):
    results = tmp_path / "results"

    def refuse(path, text):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(claims_mod, "write_claim", refuse)
    result = sweep_cli(small_grid, results)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and words in lines[0] and str(results / "claims") in lines[0], result.output
    assert "Traceback" not in result.output and "rerun" in lines[0]
    assert not list((results / "claims").glob("*.claim"))


def test_a_read_only_disk_while_writing_a_record_stops_cleanly(small_grid, tmp_path, monkeypatch):
    """The teacher fails (fake), so the sweep itself writes its students' records: refused."""
    from kdlora.sweep import scheduler

    results = tmp_path / "results"
    real = scheduler.write_record

    def read_only(results_dir, record):
        if record.config.get("strategy") == "kd-lora":
            raise OSError(errno.EROFS, "Read-only file system", str(record_path(results_dir, record.run_id)))
        return real(results_dir, record)

    monkeypatch.setattr(scheduler, "write_record", read_only)
    result = sweep_cli(small_grid, results, fn="failing_teacher")
    assert result.exit_code == 2 and "read-only" in result.output and "Traceback" not in result.output
    assert not list((results / "claims").glob("*.claim"))


def test_a_record_under_another_runs_name_is_reported_and_rerun(small_grid, tmp_path):
    results = tmp_path / "results"
    runs, result = sweep(small_grid, results)
    assert result.ok
    real, victim = runs[1].run_id, runs[2].run_id
    shutil.copy(record_path(results, real), record_path(results, victim))  # victim.json now holds `real`
    table = run_table(runs, results)
    assert table.set_index("run_id").loc[victim, "status"] == "missing"
    assert table.set_index("run_id").loc[real, "status"] == "completed"
    assert any(victim in u and real in u for u in table.attrs["unreadable"])
    errors: list[str] = []
    assert real in {r.run_id for r in iter_records(results, errors)} and len(errors) == 1

    _, again = sweep(small_grid, results)
    assert again.completed == [victim] and again.ok  # exactly what was really missing
    assert {r.run_id for r in iter_records(results)} == {r.run_id for r in runs}

    from kdlora.analysis.report import build

    shutil.copy(record_path(results, real), record_path(results, victim))
    analysis = build([results], "glue")
    assert real in set(analysis["runs"]["run_id"])  # the real record is kept, never dropped as a duplicate
    assert any(victim in p for p in analysis["problems"]["problem"])


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_records_and_checkpoints_honour_the_umask(umask, file_mode, dir_mode, tmp_path, tiny_model_dirs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdlora.config import build_config
    from kdlora.executors.child import failure_record
    from kdlora.train.engine import save_weights

    cfg = build_config({"family": "bert", "task": "rte", "strategy": "fft"})
    old = os.umask(umask)
    try:
        path = write_record(tmp_path, failure_record(cfg, "x"))
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dirs["bert"])
        save_weights(model, None, AutoTokenizer.from_pretrained(tiny_model_dirs["bert"]), tmp_path, cfg)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == file_mode
    ckpt = tmp_path / "checkpoints" / cfg.run_id
    assert stat.S_IMODE(ckpt.stat().st_mode) == dir_mode
    assert {stat.S_IMODE(p.stat().st_mode) for p in ckpt.iterdir()} == {file_mode}
