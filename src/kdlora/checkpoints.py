"""Checkpoints under RESULTS/checkpoints/<run_id>: their fingerprint, and whether a teacher is usable.

Every run's record stores `weights_fingerprint`, the sha256 over the checkpoint folder's files
(relative names and bytes: weights, config, tokenizer). A KD-LoRA student uses its FFT teacher
only when the teacher's record is completed, its checkpoint is there and the checkpoint still has
the recorded fingerprint; otherwise the teacher counts as not done (the sweep and
`kdlora train --train-teacher` retrain it). Training a teacher outside a sweep holds
RESULTS/locks/<teacher run_id>.lock, so concurrent students wait for one teacher.
No torch here: the sweep checks teachers before it starts anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator

from kdlora.hashing import file_sha256
from kdlora.records.store import read_record, record_path

CHECKPOINTS_DIR = "checkpoints"
LOCKS_DIR = "locks"


def checkpoint_dir(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / CHECKPOINTS_DIR / run_id


def fingerprint(folder: str | Path) -> str:
    """sha256 over every file of a checkpoint folder (names relative to it, and bytes)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    parts = {str(p.relative_to(folder)): file_sha256(p) for p in files}
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def teacher_problem(results_dir: str | Path, run_id: str):
    """(record, None) when the teacher can be used, else (record or None, why it cannot)."""
    path = record_path(results_dir, run_id)
    if not path.is_file():
        return None, "no record"
    try:
        record = read_record(path)
    except ValueError:
        return None, "its record is not readable"
    if record.status != "completed":
        return record, f"its record says {record.status}"
    ckpt = checkpoint_dir(results_dir, run_id)
    if not ckpt.is_dir() or not any(ckpt.iterdir()):
        return record, f"its checkpoint {ckpt} is missing"
    expected = getattr(record, "weights_fingerprint", None)
    if not expected:
        return record, "its record has no weights fingerprint to check the checkpoint against"
    if fingerprint(ckpt) != expected:
        return record, f"its checkpoint {ckpt} does not match the fingerprint in its record (changed or corrupt)"
    return record, None


@contextlib.contextmanager
def teacher_lock(results_dir: str | Path, run_id: str, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold RESULTS/locks/<run_id>.lock; `waiting()` is called once if another process holds it."""
    from filelock import FileLock, Timeout

    path = Path(results_dir) / LOCKS_DIR / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if waiting is not None:
            waiting()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
