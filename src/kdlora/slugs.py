"""Task names as run_ids and tables spell them (a leaf module: records and config both use it)."""

from __future__ import annotations

import functools
import re
from pathlib import Path


@functools.lru_cache(maxsize=4096)  # pure; asked once or twice per run_id and per loaded record
def task_slug(task: str) -> str:
    """A short name for a task given as a GLUE name or a YAML path (version-1 records)."""
    name = Path(task).stem if ("/" in task or task.endswith((".yaml", ".yml"))) else task
    return slug(name)


@functools.lru_cache(maxsize=4096)  # pure
def slug(name: str) -> str:
    """A task name as run_ids and tables spell it: lower case, [a-z0-9_]."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "task"
