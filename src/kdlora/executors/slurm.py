"""The SLURM executor: runs go out as SLURM job arrays through submitit.

submitit is imported only when this executor is constructed (an optional extra:
`pip install kdlora[slurm]`). Each array task runs one run, or `runs_per_task` runs one after
another when runs are short; the scheduler in the `kdlora sweep` process decides what may be
submitted (KD-LoRA students go out in waves, once their teacher's completed record exists),
retries failures and keeps claims, exactly as for the other executors. Results, claims and logs
live in the results directory, which must be on a filesystem the compute nodes share.

What happens to a job that does not end by itself:
- time limit or preemption with a warning signal: submitit's checkpointing requeues the job
  (`scontrol requeue`, up to 3 time-outs); the requeued task skips the runs it already finished
  and starts the interrupted run again from the beginning (a run writes its record only at its
  end, atomically, so it is recorded once).
- cancelled from outside (scancel, PREEMPTED, NODE_FAIL): submitted again, up to 3 times, the
  run's record keeping a note of it. `kdlora sweep` itself cancels its jobs when interrupted.
- the `kdlora sweep` process dies: the jobs go on; every submission is written to
  DIR/jobs/<run_id>.json, and the same command afterwards adopts the jobs still queued or
  running instead of submitting them again.
SLURM is asked about jobs with squeue (ended jobs stay there for MinJobAge), then sacct.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from kdlora.errors import UserError
from kdlora.executors.base import Executor, ExecutorOptions, Finished, Job, SlurmSettings
from kdlora.records import record_path
from kdlora.records.store import atomic_write_text

JOBS_DIR = "jobs"  # DIR/jobs/<run_id>.json: the SLURM job that runs it (for adoption and status)
SUBMITIT_DIR = Path("logs") / "slurm"  # submitit's scripts, pickles and the jobs' own stdout/stderr
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT",
          "POWER_UP_NODE", "UPDATE_DB"}
RESUBMIT = {"CANCELLED", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "REVOKED"}  # not the run's doing
MAX_RESUBMITS = 3
MAX_TIMEOUTS = 3  # submitit requeues a timed-out job this many times
POLL_S = float(os.environ.get("KDLORA_SLURM_POLL_S", "5"))  # how often squeue is asked
ENDED_GRACE_S = 20.0  # an ended job (other than COMPLETED) must stay ended this long to count


# ----- talking to SLURM -----------------------------------------------------------------------
def _slurm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess | None:
    """Run a SLURM command; None when it is not installed or does not answer."""
    exe = shutil.which(args[0])
    if exe is None:
        return None
    try:
        return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class JobState:
    state: str  # PENDING, RUNNING, COMPLETED, TIMEOUT, CANCELLED, ...
    reason: str = ""


def job_states(job_ids: Iterable[str]) -> dict[str, JobState] | None:
    """State of each job ("123" or array task "123_4") that squeue or sacct knows; None when
    neither answers (no SLURM commands here, or the controller is down)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    bases = sorted({i.split("_")[0] for i in ids})
    states: dict[str, JobState] = {}
    answered = False
    out = _slurm("squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r", "-j", ",".join(bases))
    if out is not None and out.returncode == 0:
        answered = True
        for line in out.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2:
                states[parts[0]] = JobState(parts[1], parts[2] if len(parts) > 2 else "")
    missing = [i for i in ids if i not in states]
    if missing:
        out = _slurm("sacct", "-n", "-P", "-X", "-o", "JobID,State,Reason", "-j",
                     ",".join(sorted({i.split("_")[0] for i in missing})))
        if out is not None and out.returncode == 0:
            answered = True
            for line in out.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) >= 2 and parts[0] in missing:
                    states[parts[0]] = JobState(parts[1].split()[0], parts[2] if len(parts) > 2 else "")
    return states if answered else None


def partitions() -> dict[str, int | None]:
    """Partition name -> its MaxTime in minutes (None: unlimited)."""
    out = _slurm("sinfo", "-h", "-o", "%P|%l")
    if out is None:
        raise UserError("--executor slurm needs SLURM's commands (sinfo, sbatch, squeue) on PATH")
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or ["no answer"])[0]
        raise UserError(f"cannot reach SLURM: sinfo: {first}")
    found: dict[str, int | None] = {}
    for line in out.stdout.split():
        name, _, limit = line.partition("|")
        try:
            found[name.rstrip("*")] = parse_time_limit(limit) if limit not in ("infinite", "UNLIMITED", "") else None
        except UserError:
            found[name.rstrip("*")] = None
    return found


def default_partition() -> str | None:
    out = _slurm("sinfo", "-h", "-o", "%P")
    names = out.stdout.split() if out is not None and out.returncode == 0 else []
    return next((n.rstrip("*") for n in names if n.endswith("*")), None)


# ----- settings -------------------------------------------------------------------------------
def parse_time_limit(value: str | int | float) -> int:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> whole minutes."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise UserError(f"bad time limit {text!r}: give minutes or HH:MM:SS / D-HH:MM:SS")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # minutes
        seconds = a * 60
    if seconds < 60:
        raise UserError(f"time limit {text!r} is under SLURM's smallest, 1 minute")
    return math.ceil(seconds / 60)


def parse_mem(value: str | int | float) -> int:
    """Memory per run: 16G, 1600M, 1T or a number of GB -> MB."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", str(value).strip(), re.IGNORECASE)
    if not m:
        raise UserError(f"bad memory {value!r}: give e.g. 16G or 1600M")
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024, "": 1024}[m.group(2).upper()]
    return max(1, math.ceil(float(m.group(1)) * scale))


# ----- what runs inside a job -----------------------------------------------------------------
@dataclass
class SlurmTask:
    """One array task: its runs, one after another. submitit pickles it; on a time-out or a
    preemption signal it calls `checkpoint`, pickling the task as it stands (the runs already
    finished included) for the requeued job."""

    run_fn: str
    results_dir: str
    items: list[tuple[str, str, str, int]]  # (run_id, config json, log file, attempt)
    finished: set[str] = field(default_factory=set)

    def __call__(self) -> list[str]:
        from kdlora.records.store import load_completed
        from kdlora.executors.child import execute_run

        requeued = bool(os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0"))
        for run_id, cfg_json, log_file, attempt in self.items:
            if run_id in self.finished or load_completed(self.results_dir, run_id) is not None:
                continue  # done before this job was requeued
            if requeued:
                with open(log_file, "a") as log:
                    log.write(f"=== SLURM job {slurm_job_id()} was requeued (time limit or preemption): "
                              "this run starts again from the beginning\n")
            execute_run(self.run_fn, cfg_json, self.results_dir, log_file, attempt)
            self.finished.add(run_id)
        return sorted(self.finished)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def slurm_job_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "?")


# ----- the executor ---------------------------------------------------------------------------
@dataclass
class Tracked:
    """One SLURM job (array task) and the runs it holds that have not been reported yet."""

    job_id: str
    paths: Any  # submitit JobPaths: stdout, stderr, result pickle
    runs: dict[str, Job]
    submitted: float
    resubmits: int = 0
    unknown_polls: int = 0
    notes: list[str] = field(default_factory=list)
    state: str = "SUBMITTED"
    ended_since: float | None = None  # when polls began to see it ended (a requeue passes through
    # COMPLETING/FAILED/CANCELLED for a moment before PENDING)


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install 'kdlora[slurm]'") from None
    return submitit


class SlurmExecutor(Executor):
    def __init__(self, results_dir: Path, run_fn: str, options: ExecutorOptions) -> None:
        super().__init__(results_dir, run_fn, options)
        if options.ray_address:
            raise UserError("--ray-address needs --executor ray")
        if options.runs_per_gpu is not None or options.mps:
            # SLURM hands each job whole GPUs; packing runs onto one GPU is the local executor's job
            raise UserError("--runs-per-gpu and --mps are for the local executor; on SLURM each run is a job "
                            "with whole GPUs (--gpus-per-run N)")
        self.submitit = _import_submitit()
        self.settings = s = options.slurm
        known = partitions()
        self.partition = s.partition or default_partition()
        if s.partition and s.partition not in known:
            raise UserError(f"unknown SLURM partition {s.partition!r}; partitions here: {', '.join(known) or 'none'}")
        gpus = options.gpus_per_run or 0
        if gpus != int(gpus):
            raise UserError(f"--gpus-per-run {gpus}: SLURM gives whole GPUs to a job")
        self.gpus = int(gpus)
        if options.cpus_per_run != int(options.cpus_per_run) or options.cpus_per_run < 1:
            raise UserError(f"--cpus-per-run {options.cpus_per_run}: SLURM gives whole CPUs to a job")
        self.runs_per_task = max(1, s.runs_per_task)
        self.time_min = (s.time_limit_min or 60) * self.runs_per_task
        max_time = known.get(self.partition) if self.partition else None
        if max_time is not None and self.time_min > max_time:
            raise UserError(f"time limit {self.time_min} min (per array task) is over partition "
                            f"{self.partition!r}'s MaxTime of {max_time} min")
        # Everything that may start is submitted (SLURM queues it); --workers caps the runs out at once.
        self.capacity = options.workers * self.runs_per_task if options.workers else 100_000
        self.folder = Path(results_dir).resolve() / SUBMITIT_DIR
        self.jobs_dir = Path(results_dir) / JOBS_DIR
        self.pending: list[Job] = []
        self.tracked: dict[str, Tracked] = {}
        self.next_poll = 0.0
        self.closing = False
        self._executor(1)  # submitit checks the job parameters now, before anything is claimed
        self.adoptable = self._adoptable()

    # ----- checks that need the runs --------------------------------------------------------
    def check_runs(self, runs: list) -> None:
        """Refuse a time limit shorter than earlier records of the same kind of run took."""
        limit_s = (self.settings.time_limit_min or 60) * 60
        fastest = fastest_known_runs(self.results_dir)
        for cfg in runs:
            seconds, run_id = fastest.get(kind_of(cfg.model_dump()), (None, None))
            if seconds is not None and seconds > limit_s:
                raise UserError(
                    f"time limit {limit_s // 60} min is shorter than a run can take: a {cfg.strategy} "
                    f"{cfg.variant or ''} run of {cfg.family} on {cfg.task} trained for {seconds:.0f} s in record "
                    f"{run_id} (the fastest of its kind here); raise --time-limit".replace("  ", " "))

    # ----- submitting -----------------------------------------------------------------------
    def _executor(self, n_tasks: int):
        ex = self.submitit.SlurmExecutor(folder=str(self.folder), max_num_timeout=MAX_TIMEOUTS)
        params: dict[str, Any] = {
            "job_name": "kdlora", "time": self.time_min, "cpus_per_task": int(self.options.cpus_per_run),
            # the warning signal (submitit requeues on it): 90 s before the limit, less for short
            # limits, as slurmctld sends it on a ~30 s timer, that early again: never in a job's
            # first 20 s, before submitit's handler is set (a 1-minute limit: 10 s)
            "signal_delay_s": int(min(90, max(10, self.time_min * 60 - 50))),
            "array_parallelism": max(1, min(n_tasks, self.settings.array_parallelism or n_tasks)),  # SLURM's %N
            "setup": [f"export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-{int(self.options.cpus_per_run)}}}"],
        }
        for key in ("partition", "account", "qos"):
            value = self.partition if key == "partition" else getattr(self.settings, key)
            if value:
                params[key] = value
        if self.settings.mem_mb:
            params["mem"] = f"{self.settings.mem_mb}M"
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        ex.update_parameters(**params)
        return ex

    def submit(self, job: Job) -> None:
        adopted = self.adoptable.pop(job.cfg.run_id, None)
        if adopted is not None:  # a job from an earlier `kdlora sweep` still queued or running
            task = self.tracked.get(adopted)
            if task is None:
                paths = self.submitit.SlurmJob(folder=str(self.folder), job_id=adopted).paths
                task = self.tracked[adopted] = Tracked(adopted, paths, {}, time.monotonic())
            task.runs[job.cfg.run_id] = job
            return
        self.pending.append(job)

    def _flush(self) -> None:
        if not self.pending:
            return
        jobs, self.pending = self.pending, []
        chunks = [jobs[i:i + self.runs_per_task] for i in range(0, len(jobs), self.runs_per_task)]
        self._submit_chunks(chunks)

    def _submit_chunks(self, chunks: list[list[Job]], resubmits: int = 0, notes: list[str] | None = None) -> list[str]:
        ex = self._executor(len(chunks))
        tasks = [SlurmTask(self.run_fn, str(Path(self.results_dir).resolve()),
                           [(j.cfg.run_id, j.cfg.model_dump_json(), str(Path(j.log_path).resolve()), j.attempt)
                            for j in chunk]) for chunk in chunks]
        try:
            with ex.batch():
                handles = [ex.submit(t) for t in tasks]
        except Exception as exc:  # noqa: BLE001 - sbatch refused: bad account, QoS, resources, ...
            msg = " ".join(str(exc).split())
            m = re.search(r"sbatch: error: ([^\n]+)", str(exc))
            raise UserError(f"SLURM refused the jobs: {m.group(1).strip() if m else msg[:300]}") from None
        now = time.monotonic()
        for handle, chunk in zip(handles, chunks):
            self.tracked[handle.job_id] = Tracked(handle.job_id, handle.paths, {j.cfg.run_id: j for j in chunk}, now,
                                                  resubmits, notes=list(notes or []))
            for j in chunk:
                write_job_file(self.results_dir, j.cfg.run_id, handle.job_id, j.attempt)
        return [h.job_id for h in handles]

    # ----- watching -------------------------------------------------------------------------
    def wait(self, timeout: float) -> list[Finished]:
        self._flush()
        deadline = time.monotonic() + timeout
        while True:
            out = self._poll() if time.monotonic() >= self.next_poll else []
            if out or time.monotonic() >= deadline or not self.tracked:
                if not self.tracked and not out:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                return out
            time.sleep(max(0.0, min(deadline, self.next_poll) - time.monotonic()))

    def _poll(self) -> list[Finished]:
        self.next_poll = time.monotonic() + POLL_S
        out: list[Finished] = []
        states = job_states(self.tracked) if self.tracked else {}
        for task in list(self.tracked.values()):
            # runs of a chunk are done as soon as their record exists, while the task goes on
            for run_id in [r for r in task.runs if record_path(self.results_dir, r).is_file()]:
                out.append(self._finished(task, run_id, None))
            if not task.runs:
                self.tracked.pop(task.job_id, None)
                continue
            state = (states or {}).get(task.job_id)
            if state is None:
                task.unknown_polls += 1
                if states is None or task.unknown_polls < 3:
                    continue  # SLURM does not answer (or not yet): ask again
                state = JobState("UNKNOWN", "gone from squeue and sacct")
            else:
                task.unknown_polls = 0
            if state.state != task.state:
                self._log_state(task, state)
            if state.state in ACTIVE:
                task.ended_since = None
                continue
            task.ended_since = task.ended_since or time.monotonic()
            if state.state != "COMPLETED" and time.monotonic() - task.ended_since < ENDED_GRACE_S:
                continue  # ended, or a requeue in passing: look again before believing it
            self.tracked.pop(task.job_id, None)
            reason = self._reason(task, state)
            requeue_lost = state.state != "COMPLETED" and _asked_for_requeue(task)
            if requeue_lost:  # submitit requeued it, yet SLURM ended it (a requeue racing the job's end)
                reason = f"SLURM job {task.job_id} {state.state} after submitit requeued it (time limit or preemption)"
            if (state.state in RESUBMIT or requeue_lost) and not self.closing and task.resubmits < MAX_RESUBMITS:
                note = f"{reason}; submitted again"
                new = self._submit_chunks([list(task.runs.values())], task.resubmits + 1, task.notes + [note])
                self.tracked[new[0]].notes[-1] = f"{note} as SLURM job {new[0]}"
                continue
            for run_id in list(task.runs):
                out.append(self._finished(task, run_id, reason))
        return out

    def _log_state(self, task: Tracked, state: JobState) -> None:
        """DIR/logs/slurm/states.log: every state change of every job, for whoever wonders."""
        task.state = state.state
        line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {task.job_id} {state.state}"
                f"{' (' + state.reason + ')' if state.reason and state.reason != 'None' else ''} "
                f"runs {' '.join(sorted(task.runs))}\n")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / "states.log", "a") as log:
                log.write(line)
        except OSError:
            pass

    def _finished(self, task: Tracked, run_id: str, crash: str | None) -> Finished:
        job = task.runs.pop(run_id)
        return Finished(job, crash, time.monotonic() - task.submitted, tuple(task.notes))

    def _reason(self, task: Tracked, state: JobState) -> str:
        what = {"TIMEOUT": f"hit its time limit ({self.time_min} min; requeued at most {MAX_TIMEOUTS} times)",
                "OUT_OF_MEMORY": "ran out of memory (raise --mem-per-run)"}.get(state.state, "")
        reason = f"SLURM job {task.job_id} {state.state}"
        if what:
            reason += f": {what}"
        if state.reason and state.reason not in ("None", "(null)"):
            reason += f" ({state.reason})"
        error = _submitit_error(task.paths)
        if error:
            reason += f": {error}"
        return f"{reason}; log {_relative(task.paths.stderr, self.results_dir)}"[:500]

    def _adoptable(self) -> dict[str, str]:
        """Runs whose job, submitted by an earlier sweep on this directory, is still queued or running."""
        files = read_job_files(self.results_dir)
        states = job_states(f["job_id"] for f in files.values()) or {}
        return {run_id: f["job_id"] for run_id, f in files.items()
                if states.get(f["job_id"], JobState("?")).state in ACTIVE}

    def close(self) -> None:
        """An interrupted sweep cancels the jobs it still has (a finished one has none)."""
        self.closing = True
        ids = sorted(self.tracked)
        if ids:
            _slurm("scancel", *ids)
        self.tracked.clear()
        self.pending.clear()


def _asked_for_requeue(task: Tracked) -> bool:
    """Whether the job's last attempt at one of its runs ended with submitit's requeue (its messages
    land in the run's log, which holds the process's output while a run runs)."""
    for job in task.runs.values():
        try:
            with open(job.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 8192))
                tail = log.read().decode(errors="replace")
        except OSError:
            continue
        last = tail.rsplit("=== kdlora run ", 1)[-1]
        if "Requeued job" in last and "Exiting gracefully after preemption/timeout" in last:
            return True
    return False


def _submitit_error(paths: Any) -> str:
    """The last line of the error submitit pickled for a job that raised (e.g. timed out too often)."""
    try:
        from submitit.core.utils import pickle_load

        if not paths.result_pickle.exists():
            return ""
        outcome, value = pickle_load(paths.result_pickle)
    except Exception:  # noqa: BLE001 - unreadable: say nothing rather than fail the sweep
        return ""
    if outcome != "error":
        return ""
    lines = [ln.strip() for ln in str(value).strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


# ----- job files: which SLURM job runs which run ----------------------------------------------
def write_job_file(results_dir: Path, run_id: str, job_id: str, attempt: int) -> None:
    atomic_write_text(Path(results_dir) / JOBS_DIR / f"{run_id}.json",
                      json.dumps({"run_id": run_id, "job_id": job_id, "attempt": attempt, "submitted_at": time.time(),
                                  "submitted_by": {"pid": os.getpid(), "host": os.uname().nodename,
                                                   "python": sys.executable}}))


def read_job_files(results_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((Path(results_dir) / JOBS_DIR).glob("*.json")):
        try:
            info = json.loads(path.read_text())
            out[info["run_id"]] = info
        except (OSError, ValueError, KeyError):
            continue
    return out


def queue_states(results_dir: Path) -> dict[str, JobState] | None:
    """run_id -> its SLURM job's state, for runs whose job is known; None when SLURM does not answer."""
    files = read_job_files(results_dir)
    if not files:
        return {}
    states = job_states(f["job_id"] for f in files.values())
    if states is None:
        return None
    return {run_id: states[f["job_id"]] for run_id, f in files.items() if f["job_id"] in states}


# ----- earlier run times, for the time-limit check --------------------------------------------
def kind_of(config: dict[str, Any]) -> tuple:
    """Runs of one kind take about as long: same model, task, strategy, variant and amount of training."""
    keys = ("family", "task", "strategy", "variant", "teacher_model", "student_model", "epochs", "batch_size",
            "max_train_samples", "max_length", "device")
    return tuple(str(config.get(k)) for k in keys)


def fastest_known_runs(results_dir: Path) -> dict[tuple, tuple[float, str]]:
    from kdlora.records import iter_records

    fastest: dict[tuple, tuple[float, str]] = {}
    if not (Path(results_dir) / "runs").is_dir():
        return fastest
    for rec in iter_records(results_dir, []):
        seconds = rec.efficiency.train_time_s if rec.status == "completed" else None
        if seconds:
            key = kind_of(rec.config)
            if key not in fastest or seconds < fastest[key][0]:
                fastest[key] = (seconds, rec.run_id)
    return fastest
