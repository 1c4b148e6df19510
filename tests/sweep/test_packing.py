"""Several runs per GPU, on CPU: the admission rule with a fake device-memory probe, the fixed-K
placement, peaks learned from records, the local executor placing runs with --runs-per-gpu, and
CUDA MPS started and stopped through a stand-in control binary."""

from __future__ import annotations

import json
import os
import stat

import pytest

from kdlora.config import build_config
from kdlora.errors import UserError
from kdlora.executors import ExecutorOptions
from kdlora.executors.local import LocalExecutor
from kdlora.executors.packing import (CONTEXT_BYTES, GiB, MARGIN_BYTES, GpuPacker, estimate_peak_bytes,
                                      parse_runs_per_gpu)
from kdlora.grid import expand_grid, load_grid
from kdlora.sweep.scheduler import run_sweep


def cfg(strategy="lora", seed=1, family="bert", **extra):
    return build_config(dict(family=family, task="rte", strategy=strategy, seed=seed, **extra))


class FakeProbe:
    """Free bytes per GPU, as a test sets them; counts the calls."""

    def __init__(self, free: dict[str, int | None]) -> None:
        self.free, self.calls = dict(free), 0

    def __call__(self, gpu: str) -> int | None:
        self.calls += 1
        return self.free[gpu]


def test_parse_runs_per_gpu():
    assert parse_runs_per_gpu(None) is None
    assert parse_runs_per_gpu("auto") == "auto"
    assert parse_runs_per_gpu("4") == 4
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(UserError, match="--runs-per-gpu"):
            parse_runs_per_gpu(bad)


def test_fixed_k_fills_the_least_busy_gpu_up_to_k():
    packer = GpuPacker(["0", "1"], 2)
    runs = [cfg(seed=s) for s in range(5)]
    gpus = [packer.place(r) for r in runs[:4]]
    assert sorted(gpus) == ["0", "0", "1", "1"] and packer.capacity == 4
    assert packer.choose(runs[4]) is None
    packer.release(gpus[1], runs[1])
    assert packer.choose(runs[4]) == gpus[1]


def test_estimates_grow_with_what_a_run_holds():
    lora, fft, kd = cfg("lora"), cfg("fft"), cfg("kd-lora")
    assert estimate_peak_bytes(fft) > estimate_peak_bytes(lora)
    assert estimate_peak_bytes(cfg("lora", batch_size=64)) > estimate_peak_bytes(lora)
    # DeBERTa-v3 (no SDPA: attention scores kept) above RoBERTa of the same width and depth
    assert estimate_peak_bytes(cfg("lora", family="deberta")) > estimate_peak_bytes(cfg("lora", family="roberta"))
    assert estimate_peak_bytes(kd) < estimate_peak_bytes(fft)
    assert 0.5 * GiB < estimate_peak_bytes(lora) < 8 * GiB  # BERT-base LoRA, batch 32, length 128


def test_auto_admits_while_free_memory_covers_the_peak_and_margin():
    probe = FakeProbe({"0": 40 * GiB})
    packer = GpuPacker(["0"], "auto", probe=probe, max_per_gpu=16, probe_ttl_s=0)
    runs = [cfg(seed=s) for s in range(20)]
    need = packer.peak_bytes(runs[0])
    placed = 0
    while packer.choose(runs[placed]) is not None:
        packer.place(runs[placed])
        placed += 1
    # the first run always; then each one while 40 GiB minus the booked peaks covers peak + margin
    booked_after = [k * need for k in range(1, 17)]
    expected = 1 + sum(1 for b in booked_after if 40 * GiB - b >= need * 1.1 + MARGIN_BYTES)
    assert placed == min(expected, 16) and 2 <= placed < 16
    # the GPU fills up with someone else's work: nothing more, even after a run ends
    probe.free["0"] = 2 * GiB
    packer.release("0", runs[0])
    assert packer.choose(runs[placed]) is None


def test_an_empty_gpu_always_takes_one_run_and_unknown_memory_takes_no_second():
    packer = GpuPacker(["0"], "auto", probe=FakeProbe({"0": None}), probe_ttl_s=0)
    first = cfg(seed=1)
    assert packer.choose(first) == "0"
    packer.place(first)
    assert packer.choose(cfg(seed=2)) is None
    packer = GpuPacker(["0"], "auto", probe=FakeProbe({"0": 0}), probe_ttl_s=0)
    assert packer.choose(cfg("fft")) == "0"  # no memory reported free, but no run of ours there yet


def test_auto_picks_the_gpu_with_most_room_and_respects_the_cap():
    probe = FakeProbe({"0": 30 * GiB, "1": 90 * GiB})
    packer = GpuPacker(["0", "1"], "auto", probe=probe, max_per_gpu=3, probe_ttl_s=0)
    runs = [cfg(seed=s) for s in range(10)]
    assert [packer.place(r) for r in runs[:2]] == ["0", "1"]  # empty GPUs first
    assert packer.place(runs[2]) == "1"  # then where there is most room
    packer.place(runs[3]), packer.place(runs[4]), packer.place(runs[5])
    assert len(packer.placed["1"]) == 3  # the cap
    assert packer.capacity == 6


def test_measured_peaks_replace_the_estimate():
    packer = GpuPacker(["0"], "auto", probe=FakeProbe({"0": 80 * GiB}), probe_ttl_s=0)
    run = cfg()
    assert packer.peak_bytes(run) == estimate_peak_bytes(run) + CONTEXT_BYTES
    packer.place(run)
    packer.release("0", run, peak_bytes=3 * GiB)
    same_shape = cfg(seed=9)
    assert packer.peak_bytes(same_shape) == 3 * GiB + CONTEXT_BYTES
    assert packer.peak_bytes(cfg(batch_size=64)) == estimate_peak_bytes(cfg(batch_size=64)) + CONTEXT_BYTES


def test_the_probe_is_reused_between_placements():
    probe = FakeProbe({"0": 80 * GiB})
    packer = GpuPacker(["0"], "auto", probe=probe, probe_ttl_s=60)
    packer.place(cfg(seed=0))
    for s in range(1, 50):
        packer.choose(cfg(seed=s))
    assert probe.calls == 1


# ----- the local executor with fake GPUs and quick fake runs ----------------------------------------
def sweep(grid, results, probe=None, **options):
    runs = expand_grid(load_grid(grid))
    executor = LocalExecutor(results, "sweep_fake_runs:quick", ExecutorOptions(**options),
                             **({"probe": probe} if probe else {}))
    return executor, run_sweep(runs, results, executor, poll_s=0.1)


def seen_gpus(results):
    return [json.loads(p.read_text())["environment"]["cuda_visible_devices"] for p in (results / "runs").glob("*.json")]


def test_runs_per_gpu_k_on_one_gpu(small_grid, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    executor, result = sweep(small_grid, tmp_path / "r", runs_per_gpu=3)
    assert result.ok and executor.capacity == 3
    assert set(seen_gpus(tmp_path / "r")) == {"7"}


def test_runs_per_gpu_auto_with_a_fake_probe(small_grid, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)  # up to 4 runs per GPU (one core each)
    probe = FakeProbe({"0": 100 * GiB, "1": 100 * GiB})
    executor, result = sweep(small_grid, tmp_path / "r", probe=probe, runs_per_gpu="auto")
    assert result.ok and probe.calls > 0 and executor.capacity == 8
    assert set(seen_gpus(tmp_path / "r")) == {"0", "1"}


def test_runs_per_gpu_needs_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(UserError, match="need GPUs"):
        LocalExecutor(tmp_path, "sweep_fake_runs:quick", ExecutorOptions(runs_per_gpu=2))


def test_mps_daemon_started_for_the_sweep_and_stopped_after(small_grid, tmp_path, monkeypatch):
    bin_dir, log = tmp_path / "bin", tmp_path / "mps.log"
    bin_dir.mkdir()
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text(f'#!/bin/sh\necho "args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY stdin=$(cat)" >> {log}\n')
    control.chmod(control.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    executor, result = sweep(small_grid, tmp_path / "r", runs_per_gpu=2, mps=True)
    assert result.ok
    lines = log.read_text().splitlines()
    assert lines[0].startswith("args=-d pipe=") and "kdlora-mps-" in lines[0]
    assert lines[-1].startswith("args= pipe=") and lines[-1].endswith("stdin=quit")
    assert not executor.mps_env


def test_mps_without_the_daemon_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(UserError, match="--mps needs CUDA MPS"):
        LocalExecutor(tmp_path, "sweep_fake_runs:quick", ExecutorOptions(mps=True))


def test_cli_refuses_a_bad_runs_per_gpu_in_one_line(small_grid, tmp_path):
    from typer.testing import CliRunner

    from kdlora.cli import app

    out = CliRunner().invoke(app, ["sweep", str(small_grid), "--results", str(tmp_path / "r"),
                                   "--runs-per-gpu", "two", "--run-fn", "sweep_fake_runs:quick"])
    assert out.exit_code == 2, out.output
    assert "--runs-per-gpu takes a whole number >= 1 or 'auto'" in out.output
    assert not (tmp_path / "r" / "runs").exists()


def test_a_resumed_auto_sweep_knows_the_peaks_its_records_measured(tmp_path, monkeypatch):
    import sweep_fake_runs

    from kdlora.records import write_record

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    run = cfg(seed=3)
    rec = sweep_fake_runs.write(run, tmp_path)
    rec.efficiency.memory_kind, rec.efficiency.peak_memory_reserved_bytes = "cuda_max_allocated", 5 * GiB
    write_record(tmp_path, rec)
    executor = LocalExecutor(tmp_path, "sweep_fake_runs:quick", ExecutorOptions(runs_per_gpu="auto"),
                             probe=FakeProbe({"0": 80 * GiB}))
    try:
        assert executor.packer.peak_bytes(cfg(seed=4)) == 5 * GiB + CONTEXT_BYTES  # same shape, other seed
    finally:
        executor.close()


def test_runs_sharing_a_gpu_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    one = LocalExecutor(tmp_path, "sweep_fake_runs:quick", ExecutorOptions())
    four = LocalExecutor(tmp_path, "sweep_fake_runs:quick", ExecutorOptions(runs_per_gpu=4))
    try:
        assert (one.capacity, one.threads) == (2, None)  # one run per GPU: torch's own thread count
        assert (four.capacity, four.threads) == (8, 2)
    finally:
        one.close(), four.close()


def test_a_big_run_refused_for_memory_is_not_starved_by_small_ones():
    probe = FakeProbe({"0": 30 * GiB})
    packer = GpuPacker(["0"], "auto", probe=probe, max_per_gpu=16, probe_ttl_s=0)
    lora = [cfg(seed=s) for s in range(10)]
    fft = cfg("fft", family="deberta")
    packer.place(lora[0])
    packer.place(lora[1])
    small, big = packer.peak_bytes(lora[2]), packer.peak_bytes(fft)
    need_small = small + int(small * 0.1) + MARGIN_BYTES
    assert big + int(big * 0.1) + MARGIN_BYTES > need_small + GiB // 2
    probe.free["0"] = 2 * small + need_small + GiB // 2  # besides the two booked: one more small run, not the big one
    assert packer.choose(fft) is None  # refused: now it holds its room
    assert packer.choose(lora[2]) is None  # would fit alone, but not beside the big one's room
    packer.release("0", lora[0])
    packer.release("0", lora[1])
    assert packer.choose(fft) == "0"  # the GPU emptied: the big run goes first
    packer.place(fft)
    probe.free["0"] = 80 * GiB
    assert packer.choose(lora[2]) == "0" and big > small
