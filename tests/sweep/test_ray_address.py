"""`kdlora sweep --executor ray --ray-address HOST:PORT` joins a Ray cluster it did not start: a
real head from `ray start --head` on 127.0.0.1 (loopback ports, no dashboard, token auth), stopped
again by its PID; and an address that refuses the connection is one line, exit 2, no claims."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records

pytest.importorskip("ray")
RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1, as a cluster's own `ray start --head` would run it."""
    here = Path(__file__).resolve().parent
    token = os.urandom(16).hex()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env = {**os.environ, **auth,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # the node's IP is 127.0.0.1, not the outward one
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--include-dashboard=false", "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats",
           f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
           "--min-worker-port=20000", "--max-worker-port=20100", "--object-store-memory=200000000",
           f"--temp-dir={temp}"]
    log = open(temp / "head.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert head.poll() is None, (temp / "head.log").read_text()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        yield f"127.0.0.1:{port}", auth
    finally:
        head.terminate()  # `ray start --block` stops the processes it started when it stops
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()


def kdlora(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from kdlora.cli import main; main()", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_sweep_joins_a_ray_head_by_address(ray_head, tmp_path, fake_env):
    address, auth = ray_head
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte"], "seeds": [1], "variants": ["lora"]}))
    results = tmp_path / "results"
    done = kdlora("sweep", str(grid), "--results", str(results), "--executor", "ray", "--ray-address", address,
                  "--gpus-per-run", "0", "--run-fn", "sweep_fake_runs:quick", env={**fake_env, **auth})
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {r.run_id for r in expand_grid(load_grid(grid))}
    records = {r.run_id: r for r in iter_records(results)}
    assert set(records) == expected and all(r.status == "completed" for r in records.values())
    assert sorted(line.split()[0] for line in (results / "starts.log").read_text().splitlines()) == sorted(expected)
    # the runs ran in the head's worker processes, not in the sweep's
    assert all((results / "logs" / f"{run_id}.log").is_file() for run_id in expected)
    assert not list((results / "claims").glob("*.claim"))


def test_a_ray_address_that_refuses_the_connection_is_one_line_exit_2(tmp_path, fake_env):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte"], "seeds": [1], "variants": ["lora"]}))
    results = tmp_path / "results"
    start = time.monotonic()
    done = kdlora("sweep", str(grid), "--results", str(results), "--executor", "ray", "--ray-address",
                  f"127.0.0.1:{free_port()}", "--run-fn", "sweep_fake_runs:quick", env=fake_env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error: cannot connect to Ray at '127.0.0.1:") and "refused" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - start < 60
    assert not (results / "claims").exists()
