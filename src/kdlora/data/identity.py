"""What a task *is*, independent of where its files lie: its name plus a fingerprint of its data.

The run_id hashes this identity, never a path, so editing a task's data gives new run_ids (and a
new teacher), while copying a study to another folder or mounting it elsewhere keeps them:

- a custom task YAML: its `name:` and the sha256 of the bytes of each split file, together with
  the fields that give those bytes their meaning (text and label columns, label names, metrics);
  the file names, the YAML's own path and `majority_baseline` (informational) are not part of it;
- a GLUE task with `data_dir`: the sha256 of the files the loader reads there (the TSV split
  files, or every file of the save_to_disk folder), with their paths relative to that folder;
- a GLUE task without `data_dir`, read from the hub or its cache: the plain GLUE name. Nothing
  local pins those bytes, and the hub copy (`nyu-mll/glue`) is the same everywhere.

No torch, datasets or pandas here: the CLI computes identities while it validates a grid. File
hashes are cached by (path, size, mtime, inode), so a 1,000-run grid reads each file once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from kdlora import hashing
from kdlora.errors import UserError

HUB_FINGERPRINT = "hub:nyu-mll/glue"


@dataclass(frozen=True)
class TaskIdentity:
    name: str  # the task's own name (GLUE name or the YAML's `name:`)
    fingerprint: str  # "sha256:<hex>" of its data, or HUB_FINGERPRINT

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "fingerprint": self.fingerprint}


@functools.lru_cache(maxsize=4096)
def _file_sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return hashing.file_sha256(path)  # size, mtime and inode only key the cache


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (cached while the file is unchanged)."""
    p = str(Path(path).resolve())
    try:
        st = os.stat(p)
    except OSError as exc:
        raise UserError(f"cannot read {p}: {exc.strerror}") from None
    return _file_sha256(p, st.st_size, st.st_mtime_ns, st.st_ino)


def _combine(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def custom_identity(path: str | Path) -> TaskIdentity:
    from kdlora.data.tasks import load_task_file

    spec = load_task_file(path)
    meaning = {"text_fields": list(spec.text_fields), "label_field": spec.label_field,
               "label_names": None if spec.label_names is None else list(spec.label_names),
               "metrics": list(spec.metrics), "primary": spec.primary}
    data = {split: file_sha256(file) for split, file in sorted(spec.files.items())}
    return TaskIdentity(spec.name, _combine({"task": meaning, "data": data}))


def glue_identity(name: str, data_dir: str | None) -> TaskIdentity:
    if data_dir is None:
        return TaskIdentity(name, HUB_FINGERPRINT)
    from kdlora.data.loading import glue_source_files  # pandas; only when a local copy is named

    root, files = glue_source_files(name, Path(data_dir).expanduser())
    data = {str(f.relative_to(root)): file_sha256(f) for f in files}
    return TaskIdentity(name, _combine({"glue": name, "data": data}))


def task_identity(task: str, data_dir: str | None = None) -> TaskIdentity:
    """The identity of `task` (a GLUE name or a task YAML path); a UserError if it cannot be read."""
    from kdlora.data.tasks import GLUE

    if task.lower() in GLUE:
        return glue_identity(task.lower(), data_dir)
    return custom_identity(task)


def check_unique_names(identities: dict[str, TaskIdentity], where: str) -> None:
    """Refuse two different tasks (by data) that share a name: results would merge by name.
    `identities` maps each task's source (path or GLUE name + data_dir) to its identity."""
    by_name: dict[str, tuple[str, TaskIdentity]] = {}
    for source, ident in identities.items():
        seen = by_name.setdefault(ident.name, (source, ident))
        if seen[1].fingerprint != ident.fingerprint:
            raise UserError(
                f"{where}: two different tasks are both named {ident.name!r} ({seen[0]} and {source} hold "
                "different data); give one of them another `name:` or use one copy of the data")
