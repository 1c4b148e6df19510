"""The figure workers' pool: the later workers are forked from the first once it is warm (one
warm-up for all), a big result never holds a worker back, and failures come back to the caller
instead of hanging it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from kdlora.analysis.forktree import ForkTree, WorkerDied

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the workers are forked on Linux only")

WARM = False
TIMEOUT = 60


def warm_up(log: str) -> None:
    global WARM
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    WARM = True


def is_warm() -> bool:
    return WARM


def state(pause: float = 0.0) -> tuple[int, bool]:
    time.sleep(pause)  # keeps this worker busy, so that the next task goes to the other one
    return os.getpid(), WARM


def big(n: int) -> bytes:
    return b"x" * n


def touch(path: str) -> str:
    Path(path).write_text("done")
    return path


def fail(message: str) -> None:
    raise ValueError(message)


def die(code: int) -> None:
    os._exit(code)


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever inherited it, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_second_worker_is_forked_warm_and_the_warm_up_runs_once(tmp_path):
    log = tmp_path / "warm-ups"
    tree = ForkTree(2, ready=is_warm)
    try:
        tree.submit(warm_up, str(log))
        seen = {tree.result(task, TIMEOUT) for task in [tree.submit(state, 0.5) for _ in range(4)]}
    finally:
        tree.close()
    assert log.read_text().count("\n") == 1  # one warm-up, in the first worker
    assert {warm for _, warm in seen} == {True}  # both workers warm
    assert len({pid for pid, _ in seen}) == 2 and os.getpid() not in {pid for pid, _ in seen}
    assert not any(alive(pid) for pid, _ in seen)  # a clean close leaves no worker behind


def test_a_big_result_does_not_keep_the_worker_from_its_next_task(tmp_path):
    """Sent through the pipe, a result bigger than the pipe blocked the worker until the caller
    asked for it: the report's inputs (loaded in a worker) held back that worker's warm-up."""
    tree = ForkTree(2, ready=lambda: False)  # one worker only
    try:
        first = tree.submit(big, 4_000_000)
        tree.submit(touch, str(tmp_path / "next"))
        deadline = time.monotonic() + TIMEOUT
        while not (tmp_path / "next").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "next").exists(), "the worker waited for its first result to be read"
        assert tree.result(first, TIMEOUT) == b"x" * 4_000_000
    finally:
        tree.close()
    assert not Path(tree._spill).exists()  # its spill folder is gone


def test_a_failing_task_raises_in_the_caller_and_the_workers_go_on():
    tree = ForkTree(2)
    try:
        with pytest.raises(ValueError) as raised:
            tree.result(tree.submit(fail, "bad input"), TIMEOUT)
        assert str(raised.value) == "bad input"  # the message as raised; where, in a note
        assert any("in a worker process" in note for note in raised.value.__notes__)
        globals()["Later"] = type("Later", (), {"__module__": __name__})
        with pytest.raises(AttributeError, match="Later"):
            tree.result(tree.submit(state, Later()), TIMEOUT)  # noqa: F821 - made just above
        assert tree.result(tree.submit(state), TIMEOUT)[0] != os.getpid()
    finally:
        globals().pop("Later", None)
        tree.close()


@pytest.mark.parametrize("other_busy", [False, True], ids=["either", "the-other-one"])
def test_a_worker_that_dies_fails_the_wait_instead_of_hanging_it(other_busy):
    tree = ForkTree(2, ready=lambda: True)
    try:
        tree.result(tree.submit(state), TIMEOUT)  # the second worker exists now
        if other_busy:
            tree.submit(state, 2.0)
            time.sleep(0.5)  # taken by one worker: the next task goes to the other
        started = time.monotonic()
        with pytest.raises(WorkerDied, match="ended before finishing"):
            tree.result(tree.submit(die, 3), TIMEOUT)
        assert time.monotonic() - started < TIMEOUT / 2
    finally:
        tree.close()


def test_closing_with_tasks_queued_stops_every_worker_at_once():
    tree = ForkTree(2, ready=lambda: True)
    tree.result(tree.submit(state), TIMEOUT)  # the second worker exists now
    pids = {tree.result(task, TIMEOUT)[0] for task in [tree.submit(state, 0.5) for _ in range(2)]}
    for _ in range(6):
        tree.submit(state, 30.0)  # a report that failed with figures still queued
    started = time.monotonic()
    tree.close()
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)
