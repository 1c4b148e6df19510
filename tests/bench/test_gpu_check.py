"""bench/gpu_check.py --smoke on CPU: the device check's JSON has its four parts with the figures
the renderers read, the reference's training hours are the sum from its CSV, and BENCHMARKS.md /
the README say "pending" until a real GPU run exists, then which GPU and when."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    assert not list(out.parent.glob(".*.tmp")), "a temporary file was left behind"
    return json.loads(out.read_text())


@pytest.mark.slow
def test_smoke_writes_the_four_parts(smoke):
    assert {"correctness", "speed", "packing", "projection"} <= set(smoke)
    assert smoke["meta"]["smoke"] is True and smoke["meta"]["errors"] == {}
    cor = smoke["correctness"]
    assert [(r["strategy"], r["variant"]) for r in cor["runs"]] == [("fft", "full"), ("lora", "lora"),
                                                                     ("kd-lora", "lora")]
    assert all(r["memory_kind"] == "cpu_peak_rss_growth" and r["memory_kind_ok"] for r in cor["runs"])
    assert len(cor["repeat"]["accuracies"]) == 2 and cor["repeat"]["within_0_5_points"]  # CPU runs are deterministic
    for family in ("bert", "roberta", "deberta"):
        row = smoke["speed"]["families"][family]["profiles"]["medium"]
        for strategy in ("fft", "lora", "kd-lora"):
            assert row[strategy]["kdlora"]["samples_per_s"] > 0
            assert row[strategy]["hf_trainer"]["samples_per_s"] > 0 and row[strategy]["speedup_vs_hf"] > 0
        assert row["forward_teacher"]["samples_per_s"] > 0
    assert "skipped" in smoke["speed"]["compile"]
    prof = smoke["speed"]["families"]["bert"]["profile_fft_step"]
    assert prof["wall_ms_per_step"] > 0 and prof["top_ops"]
    pk = smoke["packing"]
    assert set(pk["by_k"]) == {"1", "2"} and all(r["completed"] == pk["runs"] for r in pk["by_k"].values())
    assert pk["by_k"]["1"]["speedup_vs_k1"] == 1.0 and pk["best_k"] in (1, 2)
    proj = smoke["projection"]
    assert proj["runs"] == 1053 and proj["gpu_hours"] > 0 and proj["families_not_measured"] == []
    parts = proj["hours_by_part_one_run_per_gpu"]
    assert parts["train"] > 0 and parts["teacher_logits"] > 0
    assert proj["gpu_hours"] == pytest.approx(proj["gpu_hours_one_run_per_gpu"] / proj["packing_speedup"])


@pytest.mark.slow
def test_reference_hours_are_the_sum_of_its_train_time(smoke):
    import pandas as pd

    from kdlora.examples import reference_archive

    with tarfile.open(reference_archive(), "r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("efficiency_metrics_all.csv"))
        frame = pd.read_csv(io.BytesIO(tar.extractfile(member).read()))
    ref = smoke["projection"]["reference"]
    assert ref["runs"] == len(frame) == 742
    assert ref["train_hours"] == pytest.approx(frame["train_time"].sum() / 3600)
    assert 85 < ref["train_hours"] < 92  # the "88 GPU-hours"


@pytest.mark.slow
def test_render_says_pending_for_smoke_and_names_the_gpu_otherwise(smoke, tmp_path):
    render = bench_module("render")
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(smoke))
    assert render.load_gpu(path) is None  # a smoke run is not a GPU measurement
    assert "**pending**" in render.gpu_section(None) and "**pending**" in render.gpu_readme(path)
    real = json.loads(json.dumps(smoke))
    real["meta"].update(smoke=False, gpu="NVIDIA H200", gpu_memory_bytes=141 * 1024**3, cuda="12.8",
                        finished_at="2026-12-02T10:00:00+00:00")
    path.write_text(json.dumps(real))
    assert render.load_gpu(path) is not None
    section = render.gpu_section(render.load_gpu(path))
    assert "NVIDIA H200" in section and "2026-12-02T10:00 UTC" in section and "pending" not in section
    assert "GPU-hours" in section and "| bert | fft |" in section and "| 2 |" in section
    readme = render.gpu_readme(path)
    assert "NVIDIA H200" in readme and "BENCHMARKS.md#gpu" in readme


def test_nearest_profile_and_bad_arguments(tmp_path):
    check = bench_module("gpu_check")
    measured = {"short": {}, "medium": {}, "long": {}}
    assert check.nearest_profile("cola", measured) == "short"
    assert check.nearest_profile("qqp", measured) == "medium"
    assert check.nearest_profile("rte", measured) == "long"
    assert check.nearest_profile("rte", {"medium": {}}) == "medium"
    assert check.nearest_profile("rte", {}) is None
    assert set(check.GLUE_TRAIN) == set(check.GLUE_EVAL) == set(check.GLUE_MEAN_TOKENS)
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--budget-s", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--budget-s" in proc.stderr
    real = tmp_path / "gpu.json"
    real.write_text(json.dumps({"meta": {"smoke": False, "gpu": "NVIDIA H200"}}))
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--smoke", "--out", str(real)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "holds a GPU measurement" in proc.stderr
    assert json.loads(real.read_text())["meta"]["gpu"] == "NVIDIA H200"
