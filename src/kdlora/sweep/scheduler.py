"""The sweep scheduler: which run may start now, and what to do when one ends.

It is the only place that knows about resume (a completed record means done), dependencies
(a KD-LoRA run waits for its FFT teacher's completed record), claims (never two sweeps on one
run), retries (up to K, each failure's reason kept in the final record's notes) and the
out-of-memory remedy (same run, twice the gradient accumulation, half the micro-batch). The
executor only starts processes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kdlora.checkpoints import teacher_problem
from kdlora.config import RunConfig
from kdlora.errors import storage_error
from kdlora.executors.base import Executor, Finished, Job
from kdlora.records import RunRecord, read_record, record_path, write_record
from kdlora.executors.child import failure_record, log_path
from kdlora.sweep.claims import ClaimStore
from kdlora.strategies import teacher_run_id

FAILURES_DIR = "failures"  # earlier failed attempts' records, kept for inspection
RETRYABLE = ("failed", "oom")  # nan_loss is a result of the configuration, not bad luck

Event = Callable[[str, str, str], None]  # (kind, run_id, detail): started | done | failed | retry | skipped


@dataclass
class SweepResult:
    expected: int
    skipped: list[str] = field(default_factory=list)  # completed before this sweep
    completed: list[str] = field(default_factory=list)  # completed by this sweep (or another, meanwhile)
    failed: dict[str, str] = field(default_factory=dict)  # run_id -> reason
    run_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each attempt that ran

    @property
    def ok(self) -> bool:
        return not self.failed


def _load(results_dir: Path, run_id: str) -> RunRecord | None:
    path = record_path(results_dir, run_id)
    if not path.is_file():
        return None
    try:
        return read_record(path)
    except ValueError:
        return None  # not a valid record (an older schema): the run is done again


class Scheduler:
    def __init__(self, runs: list[RunConfig], results_dir: Path, executor: Executor, retries: int = 0,
                 on_event: Event | None = None, poll_s: float = 1.0, claims: ClaimStore | None = None) -> None:
        self.runs = {r.run_id: r for r in runs}
        self.order = [r.run_id for r in runs]
        self.results_dir = Path(results_dir)
        self.executor = executor
        self.retries = retries
        self.on_event = on_event or (lambda kind, run_id, detail: None)
        self.poll_s = poll_s
        self.claims = claims or ClaimStore(self.results_dir)
        self.result = SweepResult(expected=len(runs))
        self.history: dict[str, list[str]] = {}  # run_id -> reasons of earlier attempts
        self.failures: dict[str, int] = {}  # failed attempts that count against --retries
        self.attempts: dict[str, int] = {}
        self.todo: list[str] = []
        self.retry_queue: list[RunConfig] = []
        self.running: set[str] = set()
        self.teachers = {r.run_id: t for r in runs if (t := teacher_run_id(r)) is not None}

    # ----- state of a run ---------------------------------------------------------------------
    def _finished(self, run_id: str) -> bool:
        return run_id in self.result.failed or run_id in self.result.completed or run_id in self.result.skipped

    def _teacher_state(self, cfg: RunConfig) -> tuple[str, str]:
        """('ready'|'wait'|'failed', teacher run_id) for a run with a teacher (KD-LoRA)."""
        teacher = self.teachers[cfg.run_id]
        if teacher in self.result.completed or teacher in self.result.skipped:
            return "ready", teacher
        if teacher in self.result.failed:
            return "failed", teacher
        if teacher in self.runs:
            return "wait", teacher
        _, problem = teacher_problem(self.results_dir, teacher)  # outside this sweep: must already exist
        return ("ready" if problem is None else "failed"), teacher

    # ----- the loop ---------------------------------------------------------------------------
    def run(self) -> SweepResult:
        self.claims.clear_stale()
        self._scan()
        self.claims.start_heartbeat()
        try:
            while self.todo or self.running or self.retry_queue:
                started = self._fill()
                finished = self.executor.wait(self.poll_s if not started else 0.05)
                for item in finished:
                    self._handle(item)
        except OSError as exc:  # a full or read-only disk stops the sweep: one line, claims released
            error = storage_error(exc)
            if error is None:
                raise
            raise error from None
        finally:
            self.executor.close()
            self.claims.stop_heartbeat()
            self.claims.release_all()
        return self.result

    def _scan(self) -> None:
        """Resume: completed runs are skipped; a nan_loss record is a result and stays."""
        for run_id in self.order:
            rec = _load(self.results_dir, run_id)
            if rec is not None and rec.status == "completed":
                self.result.skipped.append(run_id)
                self.on_event("skipped", run_id, "")
            elif rec is not None and rec.status == "nan_loss":
                self.result.failed[run_id] = f"nan_loss (earlier sweep): {rec.error}"
                self.on_event("failed", run_id, self.result.failed[run_id])
            else:
                if rec is not None:
                    self.history[run_id] = [f"earlier sweep: {rec.status}: {rec.error}"]
                self.todo.append(run_id)
        self._check_teachers()

    def _check_teachers(self) -> None:
        """A completed teacher whose checkpoint is missing or fails its fingerprint is not done: it
        is trained again (its old record set aside, the reason noted), before the students that
        still need it; a student's nan_loss over such a teacher is no result and runs again."""
        students: dict[str, list[str]] = {}
        for run_id, teacher in self.teachers.items():
            if run_id not in self.result.skipped:
                students.setdefault(teacher, []).append(run_id)
        redo: set[str] = set()
        for teacher, waiting in students.items():
            if teacher not in self.result.skipped:
                continue
            _, problem = teacher_problem(self.results_dir, teacher)
            if problem is None:
                continue
            note = f"teacher not usable ({problem}): trained again"
            self.result.skipped.remove(teacher)
            self._set_aside(teacher)
            self.history.setdefault(teacher, []).append(note)
            self.on_event("retry", teacher, note)
            redo.add(teacher)
            for student in waiting:
                if self.result.failed.pop(student, None) is not None:
                    self.history.setdefault(student, []).append(f"earlier result over an unusable teacher: {note}")
                    redo.add(student)
        if redo:
            todo = set(self.todo) | redo
            self.todo = [r for r in self.order if r in todo]

    def _fill(self) -> bool:
        """Start whatever may start now; True if anything changed."""
        changed = False
        while self.retry_queue and self._room(self.retry_queue[0]):
            self._submit(self.retry_queue.pop(0))
            changed = True
        remaining = []
        for run_id in self.todo:
            if not self._room(self.runs[run_id]) or not self._try_start(run_id):
                remaining.append(run_id)
            else:
                changed = True
        self.todo = remaining
        return changed

    def _room(self, cfg: RunConfig) -> bool:
        return len(self.running) < self.executor.capacity and self.executor.admits(cfg)

    def _try_start(self, run_id: str) -> bool:
        """Start (or settle) one waiting run; False if it must keep waiting."""
        cfg = self.runs[run_id]
        if run_id in self.teachers:
            state, teacher = self._teacher_state(cfg)
            if state == "wait":
                return False
            if state == "failed":
                return self._settle_without_running(cfg, f"teacher {teacher} failed")
        if not self.claims.acquire(run_id):
            return self._adopt_foreign_outcome(run_id)
        rec = _load(self.results_dir, run_id)
        if rec is not None and rec.status == "completed":  # finished by another sweep meanwhile
            self.claims.release(run_id)
            self._mark_completed(run_id, "completed elsewhere")
            return True
        if rec is not None:
            self._set_aside(run_id)
        self._submit(cfg)
        return True

    def _adopt_foreign_outcome(self, run_id: str) -> bool:
        """Another live sweep holds this run: wait; take its outcome once it has one."""
        rec = _load(self.results_dir, run_id)
        if rec is None or self.claims.held_elsewhere(run_id):
            return False
        if rec.status == "completed":
            self._mark_completed(run_id, "completed elsewhere")
        else:
            self._mark_failed(run_id, f"{rec.status} in another sweep: {rec.error}")
        return True

    def _settle_without_running(self, cfg: RunConfig, reason: str) -> bool:
        if not self.claims.acquire(cfg.run_id):
            return self._adopt_foreign_outcome(cfg.run_id)
        self._set_aside(cfg.run_id)
        write_record(self.results_dir, failure_record(cfg, reason, notes=self.history.get(cfg.run_id, [])))
        self.claims.release(cfg.run_id)
        self._mark_failed(cfg.run_id, reason)
        return True

    def _submit(self, cfg: RunConfig) -> None:
        n = self.attempts[cfg.run_id] = self.attempts.get(cfg.run_id, 0) + 1
        self.running.add(cfg.run_id)
        self.executor.submit(Job(cfg, n, log_path(self.results_dir, cfg.run_id)))
        self.on_event("started", cfg.run_id, f"attempt {n}")

    # ----- outcomes ---------------------------------------------------------------------------
    def _handle(self, item: Finished) -> None:
        cfg, run_id = item.job.cfg, item.job.cfg.run_id
        self.running.discard(run_id)
        if item.notes:
            self.history.setdefault(run_id, []).extend(item.notes)
        self.result.run_seconds[f"{run_id}#{item.job.attempt}"] = item.seconds
        rec = _load(self.results_dir, run_id)
        if rec is not None and rec.status == "completed":
            self._finalize(rec)
            self._mark_completed(run_id, f"{item.seconds:.1f} s")
            return
        if rec is None:  # the process died before the run could write anything
            reason = item.crash or "the run ended without writing a record"
            rec = failure_record(cfg, reason)
            write_record(self.results_dir, rec)
        self._after_failure(cfg, rec)

    def _after_failure(self, cfg: RunConfig, rec: RunRecord) -> None:
        run_id = cfg.run_id
        note = f"attempt {self.attempts[run_id]}: {rec.status}: {rec.error}"
        self.history.setdefault(run_id, []).append(note)
        retry = self._retry_config(cfg, rec)
        if retry is not None:
            self._set_aside(run_id)
            self.retry_queue.append(retry)
            self.on_event("retry", run_id, note)
            return
        self._finalize(rec)
        self.claims.release(run_id)
        self._mark_failed(run_id, f"{rec.status}: {rec.error}")

    def _retry_config(self, cfg: RunConfig, rec: RunRecord) -> RunConfig | None:
        if rec.status == "oom" and cfg.batch_size % (2 * cfg.grad_accum) == 0:
            # Not counted against --retries: the remedy changes how the run executes.
            halved = cfg.model_copy(update={"grad_accum": cfg.grad_accum * 2})
            self.history[cfg.run_id].append(
                f"out of memory at micro-batch {cfg.micro_batch_size}: retrying with micro-batch "
                f"{halved.micro_batch_size} x grad_accum {halved.grad_accum} (same effective batch "
                f"{cfg.batch_size})")
            return halved
        if rec.status not in RETRYABLE:
            return None
        self.failures[cfg.run_id] = self.failures.get(cfg.run_id, 0) + 1
        return cfg if self.failures[cfg.run_id] <= self.retries else None

    def _finalize(self, rec: RunRecord) -> None:
        """Keep the reasons of earlier attempts in the final record."""
        notes = self.history.get(rec.run_id)
        if notes:
            merged = rec.notes + [n for n in notes if n not in rec.notes]
            write_record(self.results_dir, rec.model_copy(update={"notes": merged}))

    def _set_aside(self, run_id: str) -> None:
        """Move a failed attempt's record out of runs/, so the next record is the new attempt's."""
        src = record_path(self.results_dir, run_id)
        if src.is_file():
            dst = self.results_dir / FAILURES_DIR / f"{run_id}.{time.time_ns()}.json"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)

    def _mark_completed(self, run_id: str, detail: str) -> None:
        self.claims.release(run_id)
        self.result.completed.append(run_id)
        self.on_event("done", run_id, detail)

    def _mark_failed(self, run_id: str, reason: str) -> None:
        self.result.failed[run_id] = reason
        self.on_event("failed", run_id, reason)


def run_sweep(runs: list[RunConfig], results_dir: str | Path, executor: Executor, retries: int = 0,
              on_event: Event | None = None, poll_s: float = 1.0) -> SweepResult:
    """Run every run not yet completed; returns what happened. See Scheduler."""
    return Scheduler(runs, Path(results_dir), executor, retries, on_event, poll_s).run()
