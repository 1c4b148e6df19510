"""Records store the host's load; the report marks efficiency measured under contention."""

from __future__ import annotations

import subprocess
import sys
import time

from kdlora.analysis.report import build
from kdlora.host import host_load, host_snapshot
from kdlora.records import write_record
from kdlora.testing.synthetic_records import grid_configs, make_records


def test_host_load_from_two_snapshots_by_hand():
    start = {"time": 10.0, "load": [0.5, 0.4, 0.3], "busy": 100.0, "own": 20.0}
    end = {"time": 20.0, "load": [2.5, 1.0, 0.5], "busy": 130.0, "own": 30.0}  # 30 CPU s busy, 10 ours
    assert host_load(start, end, cpus=4) == {"load_avg_start": [0.5, 0.4, 0.3], "load_avg_end": [2.5, 1.0, 0.5],
                                             "cpu_count": 4, "other_cpus_busy": 2.0, "contended": True}
    quiet = {**end, "busy": 111.0}  # 11 CPU s busy, 10 ours: 0.1 CPU of other work
    assert host_load(start, quiet, cpus=4)["contended"] is False
    unknown = {**end, "busy": None}  # not measurable: the load average decides
    assert host_load(start, unknown, cpus=2)["other_cpus_busy"] is None
    assert host_load(start, unknown, cpus=2)["contended"] is True and host_load(start, unknown, cpus=4)["contended"] is False


def test_a_busy_neighbour_is_measured():
    import psutil

    start = host_snapshot()
    # The neighbour must be outside this process tree: a child's CPU time, once waited for, counts
    # as our own (children_user). `sh ... &` orphans it, as another user's job would be.
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    out = subprocess.run(["sh", "-c", f"'{sys.executable}' -c '{spin}' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    pid, deadline = int(out.stdout), time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    load = host_load(start, host_snapshot())
    assert load["other_cpus_busy"] >= 0.5 and load["contended"] is True


def test_the_runner_records_host_load(tmp_path, monkeypatch):
    from kdlora.config import build_config
    from kdlora.runner import run_one
    from kdlora.train import engine

    monkeypatch.setattr(engine, "execute", lambda cfg, spec, results_dir, device, **_: {
        "metrics": {"accuracy": 0.5, "primary": 0.5, "primary_name": "accuracy"},
        "efficiency": {"train_time_s": 1.0}, "teacher_run_id": None, "history": []})
    rec = run_one(build_config({"family": "bert", "task": "rte", "strategy": "lora", "device": "cpu"}), tmp_path)
    assert set(rec.host_load) == {"load_avg_start", "load_avg_end", "cpu_count", "other_cpus_busy", "contended"}
    assert len(rec.host_load["load_avg_start"]) == 3


def test_the_report_marks_runs_measured_under_contention(tmp_path):
    cfgs = [c for c in grid_configs(families=("bert",), tasks=("rte",), seeds=(1, 2), variants=("lora",))]
    recs = list(make_records(cfgs, collapse_rate=0))
    for i, rec in enumerate(recs):
        load = {"load_avg_start": [3.0, 2, 1], "load_avg_end": [3.5, 2, 1], "cpu_count": 2,
                "other_cpus_busy": 1.4 if i < 2 else 0.0, "contended": i < 2}
        write_record(tmp_path / "res", rec.model_copy(update={"host_load": load}))
    analysis = build([tmp_path / "res"], "glue")
    runs = analysis["runs"]
    assert sorted(runs.loc[runs["contended"].eq(True), "run_id"]) == sorted(r.run_id for r in recs[:2])
    limits = analysis["limitations"]
    row = limits[limits["rule"] == "contended"]
    assert len(row) == 1 and row["value"].item() == 2 and "runs.csv" in row["text"].item()
