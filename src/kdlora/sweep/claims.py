"""Claim files: two sweeps on one results directory never run the same run at the same time.

A sweep claims a run by creating RESULTS/claims/<run_id>.claim with O_CREAT|O_EXCL (atomic on
local filesystems and NFS), holding its pid, host and time. While it runs, the sweep touches its
claims (a heartbeat in the file's mtime). A claim is stale when its process is gone (same host:
the pid is dead or belongs to a newer process) or when its heartbeat is older than
`stale_after` (another host: we cannot see its processes). Taking over a stale claim happens
under a lock so two sweeps cannot both take it over.

A claim is written whole into a temp file and hard-linked into place (link fails if the claim
exists: as atomic as O_EXCL), so a claim is never seen half-written: an empty or unreadable claim
(a full disk, a damaged file) is stale at once, and a write that fails leaves no claim behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

CLAIMS_DIR = "claims"
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}  # filesystems without link()
STALE_AFTER_S = 600.0  # a claim from another host without heartbeat for this long is abandoned
HEARTBEAT_S = 30.0


def write_claim(path: Path, text: str) -> None:
    with open(path, "x") as f:
        f.write(text)


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def owner_info() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_started": _process_started(pid),
            "claimed_at": time.time()}


@dataclass
class ClaimStore:
    results_dir: Path
    stale_after: float = STALE_AFTER_S
    owner: dict[str, Any] = field(default_factory=owner_info)
    held: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.root = Path(self.results_dir) / CLAIMS_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.root / ".takeover.lock"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.claim"

    # ----- acquiring and releasing -----------------------------------------------------------
    def acquire(self, run_id: str) -> bool:
        """Claim a run; False when another live sweep holds it."""
        if self._create(run_id):
            return True
        with self._lock:  # only one sweep at a time may judge and remove a stale claim
            if not self.is_stale(run_id):
                return False
            self.path(run_id).unlink(missing_ok=True)
        return self._create(run_id)

    def _create(self, run_id: str) -> bool:
        tmp = self.root / f".{run_id}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            write_claim(tmp, json.dumps({**self.owner, "run_id": run_id, "claimed_at": time.time()}))
            try:
                os.link(tmp, self.path(run_id))
            except OSError as exc:
                if exc.errno not in NO_HARD_LINKS:
                    raise
                write_claim(self.path(run_id), tmp.read_text())  # O_EXCL: briefly empty while written
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.held.add(run_id)
        return True

    def release(self, run_id: str) -> None:
        with contextlib.suppress(OSError):  # a read-only or full filesystem must not hide the first error
            if run_id in self.held and self._is_mine(self.read(run_id)):
                self.path(run_id).unlink(missing_ok=True)
        self.held.discard(run_id)

    def release_all(self) -> None:
        for run_id in list(self.held):
            self.release(run_id)

    def clear_stale(self) -> int:
        """Remove claims left by dead sweeps (e.g. on runs that completed just before a kill -9)."""
        removed = 0
        with self._lock:
            for path in self.root.glob("*.claim"):
                run_id = path.name[: -len(".claim")]
                if run_id not in self.held and self.is_stale(run_id):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # ----- inspecting ------------------------------------------------------------------------
    def read(self, run_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(run_id).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written right now, or damaged: judged by its age alone

    def _is_mine(self, info: dict[str, Any] | None) -> bool:
        return bool(info) and info.get("pid") == self.owner["pid"] and info.get("host") == self.owner["host"]

    def is_stale(self, run_id: str) -> bool:
        info = self.read(run_id)
        if info is None:
            return True  # released meanwhile
        if not info:
            return True  # empty or unreadable: claims are never seen half-written, so no sweep holds it
        try:
            age = time.time() - self.path(run_id).stat().st_mtime
        except FileNotFoundError:
            return True
        if info.get("host") == self.owner["host"] and isinstance(info.get("pid"), int):
            return not self._alive(info)
        return age > self.stale_after

    @staticmethod
    def _alive(info: dict[str, Any]) -> bool:
        started = _process_started(info["pid"])
        if started is None:
            return False
        recorded = info.get("pid_started")
        # A pid reused by a newer process is not the claimant.
        return recorded is None or abs(started - recorded) < 1.0

    def held_elsewhere(self, run_id: str) -> bool:
        """True when another live sweep holds this run's claim."""
        info = self.read(run_id)
        return info is not None and not self._is_mine(info) and not self.is_stale(run_id)

    # ----- heartbeat -------------------------------------------------------------------------
    def heartbeat(self) -> None:
        now = time.time()
        for run_id in list(self.held):
            try:
                os.utime(self.path(run_id), (now, now))
            except OSError:  # gone, or the filesystem refuses: the sweep's own writes will say so
                pass

    def start_heartbeat(self, every: float = HEARTBEAT_S) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                self.heartbeat()

        self._thread = threading.Thread(target=loop, name="kdlora-claims-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
