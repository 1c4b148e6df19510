"""The local executor: up to N runs at once, each in a process of its own.

Each run gets a fresh process so that a run that dies (os._exit, SIGKILL, a segfault in a CUDA
kernel) takes nothing else with it and leaves no GPU memory behind. Processes come from a
multiprocessing fork server that has already imported torch and the run function, so starting
a run costs a fork, not the several seconds of importing torch. With GPUs, each run sees only
the GPU it was placed on (CUDA_VISIBLE_DEVICES): one run per GPU, or several side by side with
--runs-per-gpu K / auto (executors/packing.py), optionally under CUDA MPS (--mps). On CPU the
cores are shared out between the runs.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.forkserver
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kdlora.executors.base import Executor, ExecutorOptions, Finished, Job
from kdlora.executors.child import DEFAULT_RUN_FN, execute_run
from kdlora.executors.packing import GpuPacker, Probe, measured_peak, nvml_free_bytes, start_mps, stop_mps

# Imported once in the fork server for the real runner: what every run would import anyway.
RUNNER_PRELOAD = ("torch", "transformers", "peft", "kdlora.runner", "kdlora.train.engine")


def visible_gpus() -> list[str]:
    """GPU ids this process may use, found without importing torch (which would cost seconds)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return []
        return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
    return []


def _exit_with_sweep() -> None:
    """Die as soon as the sweep process dies (even by kill -9), so that no orphan run races with
    the next sweep. The fork server itself lives on while its children do, so PR_SET_PDEATHSIG
    would not fire; instead a thread waits on the pipe from the sweep, which closes when it dies."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        mp.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="kdlora-exit-with-sweep", daemon=True).start()


def _child_main(env: dict[str, str], threads: int | None, run_fn: str, cfg_json: str,
                results_dir: str, log_file: str, attempt: int) -> None:
    _exit_with_sweep()
    os.environ.update(env)  # before anything touches CUDA, so the slot's GPU is the only one
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch if it is imported later
        if "torch" in sys.modules:  # preloaded in the fork server: set its pool directly
            sys.modules["torch"].set_num_threads(threads)
    execute_run(run_fn, cfg_json, results_dir, log_file, attempt)


def _start_fork_server(preload: list[str]) -> None:
    """Start the (per-process) fork server with `preload` imported, now, so that its imports
    (seconds, for torch) overlap the sweep's set-up. One already running without these imports
    (an earlier sweep in the same process, e.g. in tests) is restarted; otherwise every run
    would import torch anew."""
    server = getattr(mp.forkserver, "_forkserver", None)
    running = getattr(server, "_forkserver_pid", None) is not None
    if running and not set(preload) <= set(getattr(server, "_preload_modules", ())):
        server._stop()  # waits for the server, which has no children once earlier sweeps closed
    mp.forkserver.set_forkserver_preload(preload)
    mp.forkserver.ensure_running()


def exit_reason(code: int | None) -> str | None:
    if code == 0:
        return None
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"run process killed by signal {name}"
    return f"run process exited with code {code}"


def cpu_threads_per_run(runs_at_once: int) -> int:
    """On CPU, N runs at once each get their share of the cores instead of all fighting for all."""
    return max(1, (os.cpu_count() or 1) // runs_at_once)


class LocalExecutor(Executor):
    def __init__(self, results_dir: Path, run_fn: str, options: ExecutorOptions,
                 probe: Probe = nvml_free_bytes) -> None:
        super().__init__(results_dir, run_fn, options)
        from kdlora.errors import UserError

        if options.ray_address:
            raise UserError("--ray-address needs --executor ray")
        self.gpus = visible_gpus() if options.gpus_per_run != 0 else []
        if (options.runs_per_gpu is not None or options.mps) and not self.gpus:
            raise UserError("--runs-per-gpu and --mps need GPUs (none visible)")
        self.packer = None
        if self.gpus:
            # each run's Python thread launches its own kernels: no more runs per GPU than cores
            per_gpu_cap = min(16, max(1, (os.cpu_count() or 1) // len(self.gpus)))
            # --workers N alone on fewer GPUs shares them out, as before: ceil(N / GPUs) per GPU
            k = options.runs_per_gpu or -(-(options.workers or len(self.gpus)) // len(self.gpus))
            self.packer = GpuPacker(self.gpus, k, probe=probe, max_per_gpu=per_gpu_cap)
            if options.runs_per_gpu == "auto":
                self._learn_peaks()
        self.capacity = max(1, options.workers or (self.packer.capacity if self.packer else 1))
        # one run per GPU keeps torch's own thread count; runs sharing GPUs (or CPU runs) share the cores
        self.threads = None if self.gpus and self.capacity <= len(self.gpus) else cpu_threads_per_run(self.capacity)
        self.mps_env = start_mps() if options.mps else {}
        self.ctx = mp.get_context("forkserver")
        module = run_fn.partition(":")[0] if ":" in run_fn else run_fn.rpartition(".")[0]
        _start_fork_server(["kdlora.executors.child", module, *options.preload,
                            *(RUNNER_PRELOAD if run_fn == DEFAULT_RUN_FN else ())])
        self.running: dict[int, tuple[mp.Process, Job, str | None, float]] = {}

    def _learn_peaks(self) -> None:
        """Peaks measured by earlier runs in this results directory (a resumed sweep)."""
        from kdlora.config import build_config
        from kdlora.records import iter_records

        for rec in iter_records(self.results_dir):
            peak = measured_peak(rec)
            if peak:
                try:
                    self.packer.learn(build_config(rec.config), peak)  # type: ignore[union-attr]
                except Exception:  # a record of an older schema or another grid: no peak from it
                    continue

    def admits(self, cfg) -> bool:
        return self.packer is None or self.packer.choose(cfg) is not None

    def submit(self, job: Job) -> None:
        gpu = self.packer.place(job.cfg) if self.packer else None
        env = {"CUDA_VISIBLE_DEVICES": gpu, **self.mps_env} if gpu is not None else {}
        if self.options.gpus_per_run == 0:
            env = {"CUDA_VISIBLE_DEVICES": ""}  # asked for CPU runs: hide the GPUs
        proc = self.ctx.Process(
            target=_child_main, name=f"kdlora-run-{job.cfg.run_id}",
            args=(env, self.threads, self.run_fn, job.cfg.model_dump_json(), str(self.results_dir),
                  str(job.log_path), job.attempt))
        proc.start()
        self.running[proc.sentinel] = (proc, job, gpu, time.monotonic())

    def _release(self, job: Job, gpu: str | None) -> None:
        if self.packer is None or gpu is None:
            return
        peak = None
        try:
            from kdlora.records import read_record, record_path

            peak = measured_peak(read_record(record_path(self.results_dir, job.cfg.run_id)))
        except Exception:  # no record (the process died) or an unreadable one: no measurement
            pass
        self.packer.release(gpu, job.cfg, peak)

    def wait(self, timeout: float) -> list[Finished]:
        if not self.running:
            time.sleep(timeout)
            return []
        ready = mp.connection.wait(list(self.running), timeout=timeout)
        out = []
        for sentinel in ready:
            proc, job, gpu, started = self.running.pop(sentinel)  # type: ignore[index]
            proc.join()
            self._release(job, gpu)
            out.append(Finished(job, exit_reason(proc.exitcode), time.monotonic() - started))
        return out

    def close(self) -> None:
        for proc, *_ in self.running.values():
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc, *_ in self.running.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.running.clear()
        if self.mps_env:
            stop_mps(self.mps_env)
            self.mps_env = {}
