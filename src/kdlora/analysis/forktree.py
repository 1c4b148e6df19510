"""A pool of forked worker processes whose first member warms up once for all of them.

multiprocessing's Pool forks every worker from the caller, so each one that needs a costly
warm-up (for the figure workers: matplotlib's imports and fonts, ~0.4 CPU s) pays it again on
the same cores. Here the caller forks one worker; it takes tasks alone until `ready()` says it
is warm, then forks the others from itself, and they start warm. Every worker takes the next
task from one shared pipe, so none idles while another has a queue.

    tree = ForkTree(2, initializer=settle, ready=lambda: WARM)
    job = tree.submit(load_inputs, paths)      # the first worker starts on it
    tree.submit(warm_up)                       # ... then warms up, then forks the second
    inputs = tree.result(job)                  # re-raises what the task raised
    tree.close()                               # graceful with nothing pending, else killed

Tasks and results are pickled through pipes (keep them small: name a file for big data).
Standard library only; Linux (fork) only.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

_STOP = None  # the task that ends a worker
_FORKED = -1  # the "task" whose outcome lists the later workers' pids


class WorkerDied(RuntimeError):
    """Every worker ended while a result was still awaited."""


class ForkTree:
    def __init__(self, size: int, initializer: Callable[[], None] | None = None,
                 ready: Callable[[], bool] = lambda: True):
        ctx = multiprocessing.get_context("fork")
        self.size = size
        self._tasks_out, self._tasks_in = ctx.Pipe(duplex=False)  # workers read, this process writes
        self._results_out, self._results_in = ctx.Pipe(duplex=False)  # this process reads, workers write
        self._read_lock, self._write_lock = ctx.Lock(), ctx.Lock()
        self._ids = itertools.count()
        self._spill = tempfile.mkdtemp(prefix="kdlora-results-")  # results too big for the pipe
        self._waiting: set[int] = set()  # submitted, no outcome received yet
        self._done: dict[int, tuple[bool, Any]] = {}  # outcomes received, not yet asked for
        self._later: list[int] = []  # the pids of the workers the first one forked
        self._first = ctx.Process(target=self._lead, args=(size - 1, initializer, ready), daemon=True)
        self._first.start()
        self._results_in.close()  # only the workers write results: EOF here means all of them ended
        self._tasks_out.close()
        self.closed = False

    # ----- the caller's side ---------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any) -> int:
        """fn(*args) in the first free worker; the task's id, for `result`."""
        task = next(self._ids)
        # pickled here, so that a task the worker cannot unpickle fails as that task, not the worker
        self._tasks_in.send((task, pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)))
        self._waiting.add(task)
        return task

    def result(self, task: int, timeout: float) -> Any:
        """The task's return value (re-raising what it raised), waiting at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while task not in self._done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"a worker gave no result in {timeout:g} s")
            if not self._receive(min(left, 0.5)):
                self._check_workers()
        ok, value = self._done.pop(task)
        if isinstance(value, _Spilled):
            value = value.load()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Stop the workers: killed if a task is still running or queued (a failed report), else
        each ends on reading its stop task (and the first waits for the others)."""
        if self.closed:
            return
        self.closed = True
        try:
            while self._waiting and self._receive(0):
                pass
        except WorkerDied:
            pass
        if self._waiting or not self._first.is_alive():
            self._kill()
        else:
            for _ in range(self.size):
                self._tasks_in.send(_STOP)
            self._first.join(10)
            if self._first.is_alive():
                self._kill()
        self._tasks_in.close()
        self._results_out.close()
        shutil.rmtree(self._spill, ignore_errors=True)

    def _receive(self, timeout: float) -> bool:
        """One outcome into `_done`, if one comes within `timeout` s."""
        if timeout < 0 or not self._results_out.poll(timeout):
            return False
        try:
            task, outcome = self._results_out.recv()
        except EOFError:
            raise WorkerDied("the worker processes ended before finishing their tasks (the first one's exit "
                             f"code: {self._first.exitcode})") from None
        if task == _FORKED:
            self._later = outcome
        else:
            self._waiting.discard(task)
            self._done[task] = outcome
        return True

    def _check_workers(self) -> None:
        """A later worker that died would leave its task unanswered (the first still holds the
        results pipe open): say so instead of waiting for the timeout."""
        dead = [pid for pid in self._later if not _running(pid)]
        if dead or not self._first.is_alive():
            raise WorkerDied(f"a worker process ({dead[0] if dead else self._first.pid}) ended before "
                             "finishing its tasks")

    def _kill(self) -> None:
        self._first.kill()  # the later workers die with it (_die_with_parent)
        self._first.join()

    # ----- the workers' side -----------------------------------------------------------------------------
    def _lead(self, others: int, initializer: Callable[[], None] | None, ready: Callable[[], bool]) -> None:
        """The first worker: serve tasks; once `ready()`, fork `others` more that serve beside it."""
        self._tasks_in.close()
        self._results_out.close()
        if initializer is not None:
            initializer()
        children: list[int] = []
        while self._serve_one():
            if others and not children and ready():
                children = [self._fork() for _ in range(others)]
                self._send(_FORKED, children)
        for pid in children:
            os.waitpid(pid, 0)

    def _fork(self) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # a later worker: serve until told to stop, then leave at once
            code = 1
            try:
                _die_with_parent(parent)
                while self._serve_one():
                    pass
                code = 0
            finally:
                os._exit(code)
        return pid

    def _serve_one(self) -> bool:
        """Take one task and send its outcome; False once told to stop (or the caller is gone)."""
        with self._read_lock:
            try:
                message = self._tasks_out.recv()
            except EOFError:
                return False
        if message is _STOP:
            return False
        task, payload = message
        try:
            fn, args = pickle.loads(payload)
            outcome = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            outcome = (False, _with_traceback(exc))
        try:
            outcome = _Spilled.maybe(outcome, Path(self._spill) / f"{task}.pickle")
        except Exception as exc:  # noqa: BLE001 - an outcome that does not pickle
            outcome = (False, RuntimeError(f"a worker's result could not be sent: {exc!r}"))
        self._send(task, outcome)
        return True

    def _send(self, task: int, outcome: Any) -> None:
        with self._write_lock:
            self._results_in.send((task, outcome))


class _Spilled:
    """A result bigger than the pipe holds, in a file. Sent through the pipe, it would block the
    worker until the caller reads it, and the caller reads only when it asks for the result:
    loading a report's inputs, the worker that should be warming up meanwhile sat idle."""

    LIMIT = 32 * 1024  # bytes; a pipe holds 64 KiB

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def maybe(cls, outcome: tuple[bool, Any], path: Path) -> tuple[bool, Any]:
        ok, value = outcome
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= cls.LIMIT:
            return outcome
        path.write_bytes(data)
        return ok, cls(path)

    def load(self) -> Any:
        try:
            return pickle.loads(self.path.read_bytes())
        finally:
            self.path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Alive: neither gone nor a zombie (dead, its parent not having waited for it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _die_with_parent(parent: int) -> None:
    """A later worker is killed with the first (Linux's PR_SET_PDEATHSIG): one left alone would
    wait for ever on the task pipe's lock if the first died holding it."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the first died before the line above took effect
        os._exit(1)


def _with_traceback(exc: BaseException) -> BaseException:
    """The exception, with where the worker raised it as a note (tracebacks do not pickle)."""
    try:
        exc.add_note("in a worker process:\n" + "".join(traceback.format_exception(exc)).rstrip())
    except Exception:  # noqa: BLE001 - a note is a courtesy
        pass
    return exc
