"""Claim files: exclusive, released, and recovered when their owner is gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from kdlora.sweep.claims import ClaimStore


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def foreign_claim(store: ClaimStore, run_id: str, **info) -> None:
    store.path(run_id).write_text(json.dumps({"run_id": run_id, "claimed_at": time.time(), **info}))


def test_a_claim_is_exclusive_until_released(tmp_path):
    a, b = ClaimStore(tmp_path), ClaimStore(tmp_path, owner={"pid": os.getpid(), "host": "other-host"})
    assert a.acquire("run1")
    assert not b.acquire("run1") and b.held_elsewhere("run1")
    a.release("run1")
    assert not a.path("run1").exists()
    assert b.acquire("run1")


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    store = ClaimStore(tmp_path)
    foreign_claim(store, "run1", pid=dead_pid(), host=socket.gethostname())
    assert not store.held_elsewhere("run1")
    assert store.acquire("run1")
    assert json.loads(store.path("run1").read_text())["pid"] == os.getpid()


def test_claim_of_a_reused_pid_is_stale(tmp_path):
    store = ClaimStore(tmp_path)  # our own pid, but "started" long before this process did
    foreign_claim(store, "run1", pid=os.getpid(), host=socket.gethostname(), pid_started=1.0)
    assert store.acquire("run1")


def test_claim_of_a_live_process_is_respected(tmp_path):
    store = ClaimStore(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        foreign_claim(store, "run1", pid=sleeper.pid, host=socket.gethostname())
        assert store.held_elsewhere("run1") and not store.acquire("run1")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert store.acquire("run1")


def test_claim_from_another_host_expires_without_heartbeat(tmp_path):
    store = ClaimStore(tmp_path, stale_after=60)
    foreign_claim(store, "run1", pid=1, host="elsewhere")
    assert store.held_elsewhere("run1") and not store.acquire("run1")
    old = time.time() - 120
    os.utime(store.path("run1"), (old, old))
    assert store.acquire("run1")


def test_heartbeat_keeps_own_claims_fresh(tmp_path):
    store = ClaimStore(tmp_path)
    assert store.acquire("run1")
    old = time.time() - 1000
    os.utime(store.path("run1"), (old, old))
    store.heartbeat()
    assert time.time() - store.path("run1").stat().st_mtime < 60


def test_clear_stale_removes_only_dead_claims(tmp_path):
    store = ClaimStore(tmp_path)
    foreign_claim(store, "dead", pid=dead_pid(), host=socket.gethostname())
    foreign_claim(store, "remote", pid=1, host="elsewhere")
    assert store.acquire("mine")
    assert store.clear_stale() == 1
    assert sorted(p.name for p in store.root.glob("*.claim")) == ["mine.claim", "remote.claim"]
