"""This machine: the clock, installed packages, the git commit, and host telemetry (CPU time,
load average) — what run records and the demo summary say about where they ran."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each distribution (None where it is not installed)."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for pkg in names:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


def environment(device) -> dict[str, Any]:
    import torch

    versions = package_versions(("kdlora", "torch", "transformers", "peft", "datasets", "numpy"))
    env = {"packages": versions, "python": platform.python_version(), "platform": platform.platform(),
           "device": str(device), "torch_threads": torch.get_num_threads(), "git_commit": git_commit()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine(),
            "python": platform.python_version(),
            "packages": package_versions(("kdlora", "torch", "transformers", "peft"))}


def cpu_seconds() -> float | None:
    """CPU time (user + system) of this process and every process under it, including finished
    runs (the executor's fork server reaps them, so they count in its children's times). Unlike
    the wall time it barely depends on what else the machine is doing: CPU seconds / cores is
    about the wall time on an otherwise idle machine."""
    import psutil

    try:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:  # ended meanwhile: its time is in its parent's children times
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return round(total, 1)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


CONTENDED_CPUS = 0.5  # other work keeping half a CPU busy on average makes timings suspect


def host_snapshot() -> dict[str, Any]:
    """What host_load compares: the clock, the load average, the machine's busy CPU seconds and
    this process tree's own CPU seconds."""
    import time

    import psutil

    try:
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    except (psutil.Error, OSError):
        busy = None
    return {"time": time.monotonic(), "load": load_average(), "busy": busy, "own": cpu_seconds()}


def host_load(start: dict[str, Any], end: dict[str, Any], cpus: int | None = None) -> dict[str, Any]:
    """The host's load over a measurement: load average at start and end, and the CPUs kept busy
    by other work on average (machine busy CPU time minus our own, over the wall time; None when
    not measurable). `contended` when that is >= CONTENDED_CPUS, or, unmeasurable, when the load
    average exceeded the CPU count."""
    cpus = cpus or os.cpu_count()
    wall = end["time"] - start["time"]
    other = None
    if None not in (start["busy"], end["busy"], start["own"], end["own"]) and wall > 0:
        other = max(0.0, ((end["busy"] - start["busy"]) - (end["own"] - start["own"])) / wall)
        other = round(other, 2)
    loads = [x[0] for x in (start["load"], end["load"]) if x]
    if other is not None:
        contended = other >= CONTENDED_CPUS
    else:
        contended = bool(loads and cpus and max(loads) > cpus)
    return {"load_avg_start": start["load"], "load_avg_end": end["load"], "cpu_count": cpus,
            "other_cpus_busy": other, "contended": contended}
