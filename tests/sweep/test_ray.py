"""The Ray executor on a real local Ray instance (ray.init(num_cpus=2)), not a mock."""

from __future__ import annotations

import pytest

from kdlora.executors import ExecutorOptions
from kdlora.executors.ray_exec import RayExecutor, ray_init_kwargs
from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records
from kdlora.sweep.scheduler import run_sweep
from kdlora.strategies import teacher_of

ray = pytest.importorskip("ray")


def test_a_ray_instance_kdlora_starts_has_no_public_dashboard():
    kwargs = ray_init_kwargs(None, workers=2, cpus_per_run=1.0)
    assert kwargs["include_dashboard"] is False and kwargs["dashboard_host"] == "127.0.0.1"
    assert kwargs["num_cpus"] == 2
    assert ray_init_kwargs("ray://head:10001", None, 1.0) == {"address": "ray://head:10001",
                                                              "log_to_driver": False}


def dashboard_listeners() -> list:
    """Sockets listening on Ray's dashboard port on a non-loopback address."""
    import psutil

    return [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
            and c.laddr.port == 8265 and c.laddr.ip not in ("127.0.0.1", "::1")]


def test_sweep_on_a_ray_instance_it_starts_runs_tasks_and_records_deaths(tmp_path, monkeypatch, fake_env):
    # Ray's worker processes inherit the driver's environment: they must find the fake runs.
    monkeypatch.setenv("PYTHONPATH", fake_env["PYTHONPATH"])
    monkeypatch.setenv("FAKE_SLEEP", "0.05")
    grid = tmp_path / "grid.yaml"  # fft + {lora, dora} x {lora, kd-lora}: the two dora runs die
    grid.write_text("families: [bert]\ntasks: [rte]\nseeds: [1]\nvariants: [lora, dora]\n")
    runs = expand_grid(load_grid(grid))
    results = tmp_path / "results"
    assert not ray.is_initialized()
    # The executor starts a local Ray itself: ray.init(num_cpus=2, no dashboard).
    executor = RayExecutor(results, "sweep_fake_runs:dying", ExecutorOptions(workers=2, gpus_per_run=0))
    try:
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
        assert executor.capacity == 2
        assert not dashboard_listeners()
        result = run_sweep(runs, results, executor, poll_s=0.2)
    finally:
        executor.close()
    assert not ray.is_initialized()  # the instance it started is shut down with it
    recs = {r.run_id: r for r in iter_records(results)}
    dora = {r.run_id for r in runs if r.variant == "dora"}
    assert set(result.failed) == dora
    assert all(recs[i].status == "failed" and "Ray task failed" in recs[i].error for i in dora)
    assert all(recs[r.run_id].status == "completed" for r in runs if r.variant != "dora")
    for run_id in recs:  # per-run logs from inside the Ray workers
        assert (results / "logs" / f"{run_id}.log").read_text().startswith(f"=== kdlora run {run_id}")
    kd = [r for r in runs if r.strategy == "kd-lora" and r.variant == "lora"]
    assert all(recs[r.run_id].teacher_run_id == teacher_of(r).run_id for r in kd)
