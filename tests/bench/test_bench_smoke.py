"""The benchmark scripts run from one command and write well-formed JSON; their shared helpers
compute what they claim. Structure only: benchmarks are not tests, and no speed is asserted here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import common  # noqa: E402

# name -> script and extra arguments (--quick, one thread, one repetition are added below)
SCRIPTS = {
    "e2e": ["bench_e2e.py", "--cases", "minilm"],
    "kd_overhead": ["bench_kd_overhead.py"],
    "memory": ["bench_memory.py"],
    "hw_efficiency": ["bench_hw_efficiency.py"],
}


def run_quick(name: str, out: Path) -> dict:
    script, *extra = SCRIPTS[name]
    cmd = [sys.executable, str(BENCH / script), "--quick", "--threads", "1", "--reps", "1",
           "--results-dir", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    path = out / f"{name}.json"
    assert path.is_file(), f"{name} did not write {path}"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    return json.loads(path.read_text())


def check_common(data: dict, name: str) -> None:
    assert data["benchmark"] == name and data["schema_version"] == common.SCHEMA_VERSION and data["quick"] is True
    assert data["command"].startswith("python bench/") and "--quick" in data["command"]
    assert data["machine"]["cpu"]["logical_cpus"] >= 1 and data["machine"]["torch_threads"] == 1
    assert data["machine"]["packages"]["torch"]
    for when in ("before", "after"):
        assert len(data["loadavg"][when]) == 3
    assert data["headline"], "no headline figures"
    for row in data["headline"]:
        assert isinstance(row["metric"], str) and row["n"] >= 1
        assert all(math.isfinite(row[k]) for k in ("median", "min", "max")), row
        assert row["min"] <= row["median"] <= row["max"], row
        if row["met"] is not None:
            assert row["target"], f"a verdict without a target: {row}"


@pytest.mark.slow
def test_e2e_quick(tmp_path):
    data = run_quick("e2e", tmp_path)
    check_common(data, "e2e")
    res = data["results"]["minilm"]
    for side in ("kdlora", "reference"):
        assert 0.0 <= res[side]["accuracy"]["median"] <= 1.0
        assert res[side]["wall_s"]["median"] > 0 and res[side]["train_s"]["median"] > 0
        assert len(res["runs"][side]) == 1
    assert res["wall_ratio"]["n"] == 1 and res["padding"]["reference_padded_length"] == 128
    # kdlora pads per batch: never longer than the reference's fixed 128
    assert res["padding"]["kdlora_mean_padded_length"] <= 128
    assert {"stage_train_loop_s", "stage_evaluate_s"} <= set(res["kdlora"])
    # batching similar lengths together never pads more than random batches (sorting minimises the
    # sum of batch maxima), in training and in evaluation
    pad = res["padding"]
    assert pad["kdlora_grouped_mean_padded_length"] <= pad["kdlora_mean_padded_length"]
    assert pad["eval_mean_padded_length"] <= pad["eval_unsorted_mean_padded_length"]
    assert res["kdlora_grouped"]["wall_s"]["n"] == 1 and res["wall_ratio_grouped"]["n"] == 1


@pytest.mark.slow
def test_kd_overhead_quick(tmp_path):
    data = run_quick("kd_overhead", tmp_path)
    check_common(data, "kd_overhead")
    res = data["results"]
    assert res["cold_run"]["cache_hit"] is False and res["cache_build_s"]["median"] > 0
    assert all(r["cache_hit"] is True for r in res["runs"]["kd-lora"])
    kd, lora = res["runs"]["kd-lora"][0], res["runs"]["lora"][0]
    assert (kd["trainable_params"], kd["total_params"]) == (lora["trainable_params"], lora["total_params"])


@pytest.mark.slow
def test_memory_quick(tmp_path):
    data = run_quick("memory", tmp_path)
    check_common(data, "memory")
    by = data["results"]["by_strategy"]
    assert set(by) == {"kd-lora", "lora", "fft"}
    for s in by.values():
        assert s["record_peak_bytes"]["median"] > 0 and s["process_peak_bytes"]["median"] > 0
    # FFT trains every parameter; LoRA-only trains a small fraction of the same model
    assert by["fft"]["trainable_params"]["median"] == by["fft"]["total_params"]["median"]
    assert by["lora"]["trainable_params"]["median"] < by["lora"]["total_params"]["median"]
    assert data["results"]["runs"]["kd-lora"][0]["cache_hit"] is True


@pytest.mark.slow
def test_hw_efficiency_quick(tmp_path):
    data = run_quick("hw_efficiency", tmp_path)
    check_common(data, "hw_efficiency")
    res = data["results"]
    # LoRA computes no gradients for frozen weights: fewer FLOPs per step than full fine-tuning
    assert res["flops_per_step"]["fft"] > res["flops_per_step"]["lora"] > 0
    assert res["matmul_fp32_flops_per_s"]["median"] > 0
    assert res["profile"]["fft"] and 0 < res["profile"]["fft"][0]["share"] <= 1
    ac = res["bf16"]["autocast"]
    assert ac["logits_max_abs_diff"] >= 0 and -1.0 <= ac["grad_cosine"] <= 1.0 + 1e-9
    assert ac["slowdown"]["n"] == 1 and res["bf16"]["matmul"]["bf16_over_fp32"]["median"] > 0


# ----- helpers ------------------------------------------------------------------------------------
def test_summary_is_median_with_spread():
    s = common.summary([3.0, 1.0, 2.0, 10.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 10.0, 4)
    assert common.summary([])["n"] == 0


def test_paired_ratios_pair_by_repetition():
    r = common.paired_ratios([4.0, 9.0, 2.0], [2.0, 3.0, 2.0])
    assert r["values"] == [2.0, 3.0, 1.0] and r["median"] == 2.0


def test_alternate_reverses_the_order_every_repetition():
    order = []
    sides = {name: (lambda rep, name=name: order.append((rep, name)) or {"x": rep}) for name in "ABC"}
    rows = common.alternate(sides, reps=3, log=lambda line: None)
    assert [n for _, n in order] == list("ABCCBAABC")
    assert [r["x"] for r in rows["B"]] == [0, 1, 2]
    assert all("loadavg_1m_before" in r and r["wall_s"] >= 0 for r in rows["A"])


def test_a_benchmark_that_cannot_measure_exits_1(capsys):
    def broken():
        raise RuntimeError("no model")

    with pytest.raises(SystemExit) as exc:
        common.main_guard(broken)
    assert exc.value.code == common.EXIT_COULD_NOT_MEASURE
    assert "could not measure: RuntimeError: no model" in capsys.readouterr().err


def test_bad_arguments_exit_2_and_write_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "bench_e2e.py"), "--quick", "--cases", "gpt",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--cases" in proc.stderr
    assert not list(tmp_path.iterdir())
