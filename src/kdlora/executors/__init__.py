"""Executors run a sweep's runs: `local` (a pool of worker processes, the default) and `ray`.

Both register here; the Ray executor imports ray only when it is constructed, so choosing the
local executor never imports ray.
"""

from __future__ import annotations

from pathlib import Path

from kdlora.executors.base import Executor, ExecutorOptions, Finished, Job
from kdlora.registry import Registry

EXECUTORS: Registry[type[Executor]] = Registry("executor")

from kdlora.executors import local, ray_exec  # noqa: E402  (register the built-in executors)

EXECUTORS.add("local", local.LocalExecutor)
EXECUTORS.add("ray", ray_exec.RayExecutor)


def make_executor(name: str, results_dir: Path, run_fn: str, options: ExecutorOptions) -> Executor:
    return EXECUTORS.get(name)(results_dir, run_fn, options)


__all__ = ["EXECUTORS", "Executor", "ExecutorOptions", "Finished", "Job", "make_executor"]
