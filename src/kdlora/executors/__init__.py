"""Executors run a sweep's runs: `local` (a pool of worker processes, the default), `ray` and `slurm`.

All register here; the Ray and SLURM executors import ray / submitit only when they are constructed,
so choosing the local executor never imports either.
"""

from __future__ import annotations

from pathlib import Path

from kdlora.executors.base import Executor, ExecutorOptions, Finished, Job, SlurmSettings
from kdlora.registry import Registry

EXECUTORS: Registry[type[Executor]] = Registry("executor")

from kdlora.executors import local, ray_exec, slurm  # noqa: E402  (register the built-in executors)

EXECUTORS.add("local", local.LocalExecutor)
EXECUTORS.add("ray", ray_exec.RayExecutor)
EXECUTORS.add("slurm", slurm.SlurmExecutor)


def make_executor(name: str, results_dir: Path, run_fn: str, options: ExecutorOptions) -> Executor:
    return EXECUTORS.get(name)(results_dir, run_fn, options)


__all__ = ["EXECUTORS", "Executor", "ExecutorOptions", "Finished", "Job", "SlurmSettings", "make_executor"]
