"""The Ray executor: each run is a Ray task with declared resources, on a cluster or a local Ray.

ray is imported only when this executor is constructed (it is an optional extra:
`pip install kdlora[ray]`). Results land in the same results directory, which on a cluster must
be a shared filesystem. Ray's own task retries are off: the sweep's scheduler retries, keeping
each failure's reason. A Ray instance kdlora starts itself has no dashboard, bound or not, so
nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

from kdlora.errors import UserError
from kdlora.executors.base import Executor, ExecutorOptions, Finished, Job
from kdlora.executors.child import execute_run


def ray_init_kwargs(address: str | None, workers: int | None, cpus_per_run: float) -> dict[str, Any]:
    """Arguments for ray.init: connect to `address`, or start a private local instance."""
    if address:
        return {"address": address, "log_to_driver": False}
    # address "local": always a new private instance, never a cluster that `ray start` left behind.
    # Node IP 127.0.0.1 (with loopback_cluster) makes GCS, raylet, workers and driver listen on
    # loopback only; no dashboard.
    kwargs: dict[str, Any] = {"address": "local", "include_dashboard": False, "dashboard_host": "127.0.0.1",
                              "log_to_driver": False, "_node_ip_address": "127.0.0.1"}
    if workers:
        kwargs["num_cpus"] = max(1, int(workers * max(cpus_per_run, 1)))
    return kwargs


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of "host:port" or "ray://host:port"; None for "auto" and other forms."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Try a plain TCP connection first: ray.init retries a refused address for minutes."""
    hp = host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UserError(f"cannot connect to Ray at {address!r}: {why.lower()} (is `ray start --head` "
                        "running there, and is the port the head's --port?)") from None


@contextlib.contextmanager
def loopback_cluster(address: str | None):
    """Joining a head that listens on 127.0.0.1 only, or starting the private local instance
    (address None): Ray would otherwise replace a loopback address by this machine's outward IP
    (where nothing listens) and bind its servers to every interface."""
    hp = host_port(address) if address else None
    if address and (hp is None or hp[0] not in LOOPBACK):
        yield
        return
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # services.get_node_ip_address then answers 127.0.0.1
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _ray_run(run_fn: str, cfg_json: str, results_dir: str, log_file: str, attempt: int) -> None:
    execute_run(run_fn, cfg_json, results_dir, log_file, attempt)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'kdlora[ray]'") from None
    return ray


class RayExecutor(Executor):
    def __init__(self, results_dir: Path, run_fn: str, options: ExecutorOptions) -> None:
        super().__init__(results_dir, run_fn, options)
        if options.runs_per_gpu is not None or options.mps:
            raise UserError("--runs-per-gpu and --mps are for the local executor; on Ray, share GPUs with "
                            "--gpus-per-run 1/K (e.g. 0.25 for 4 runs per GPU; docs/sweeps.md)")
        ray = self.ray = _import_ray()
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            if options.ray_address:
                check_reachable(options.ray_address)
            try:
                with loopback_cluster(options.ray_address):
                    ray.init(**ray_init_kwargs(options.ray_address, options.workers, options.cpus_per_run))
            except ConnectionError as exc:
                raise UserError(f"cannot connect to Ray at {options.ray_address!r}: {exc}") from None
        resources = ray.cluster_resources()
        gpus = options.gpus_per_run
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        if gpus > resources.get("GPU", 0):
            raise UserError(f"--gpus-per-run {gpus} but the Ray cluster has {resources.get('GPU', 0)} GPUs")
        self.task = ray.remote(_ray_run).options(num_gpus=gpus, num_cpus=options.cpus_per_run, max_retries=0)
        fits = min(resources.get("CPU", 1) / max(options.cpus_per_run, 1e-9),
                   resources.get("GPU", 0) / gpus if gpus else float("inf"))
        self.capacity = max(1, options.workers or int(fits))
        self.pending: dict[Any, tuple[Job, float]] = {}

    def submit(self, job: Job) -> None:
        ref = self.task.remote(self.run_fn, job.cfg.model_dump_json(), str(self.results_dir.resolve()),
                               str(job.log_path.resolve()), job.attempt)
        self.pending[ref] = (job, time.monotonic())

    def wait(self, timeout: float) -> list[Finished]:
        if not self.pending:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        if ready:  # collect everything else that is already done as well
            ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
        out = []
        for ref in ready:
            job, started = self.pending.pop(ref)
            out.append(Finished(job, self._crash(ref), time.monotonic() - started))
        return out

    def _crash(self, ref: Any) -> str | None:
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return f"Ray task failed: {type(exc).__name__}: {first}"[:500]
        return None

    def close(self) -> None:
        for ref in list(self.pending):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
        self.pending.clear()
        if self.started_ray:
            self.ray.shutdown()
