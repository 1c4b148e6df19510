"""A local Ray instance that kdlora starts listens on loopback only: every listening socket of its
processes (driver, GCS, raylet, agents, workers) is on 127.0.0.1 / ::1."""

from __future__ import annotations

import ipaddress

import pytest

from kdlora.executors import ExecutorOptions
from kdlora.executors.ray_exec import RayExecutor

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def ray_processes(session_dir: str) -> list:
    """This instance's processes: the driver and everything started with its session directory."""
    procs = [psutil.Process()]
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != procs[0].pid and any(session_dir in part for part in p.info["cmdline"] or []):
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return procs


def test_a_local_ray_instance_listens_on_loopback_only(tmp_path):
    assert not ray.is_initialized()
    executor = RayExecutor(tmp_path, "kdlora.runner:run_one", ExecutorOptions(workers=1, gpus_per_run=0))
    try:
        pid = ray.get(ray.remote(lambda: __import__("os").getpid()).remote())  # a worker is up
        session = ray._private.worker._global_node.get_session_dir_path()
        procs = ray_processes(session)
        names = {p.name() for p in procs}
        assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names
        assert pid in {p.pid for p in procs} or any(pid in {c.pid for c in p.children(recursive=True)} for p in procs)
        listening = []
        for p in procs:
            try:
                listening += [(p.name(), c.laddr) for c in p.net_connections(kind="inet")
                              if c.status == psutil.CONN_LISTEN]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        assert listening, "found no listening sockets: the test would prove nothing"
        public = [(name, f"{a.ip}:{a.port}") for name, a in listening if not is_loopback(a.ip)]
        assert not public, f"Ray listens beyond loopback: {public}"
    finally:
        executor.close()
