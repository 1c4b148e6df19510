"""Atomic storage of run records under a results directory.

Layout: DIR/runs/<run_id>.json. Every write goes to a temp file in the same directory and is
renamed into place, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from pydantic import ValidationError

from kdlora.records.schema import RunRecord

RUNS_DIR = "runs"


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc), else by setting
    and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, directory: bool = False) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the mode an ordinary
    open()/mkdir() would have: group-readable by default, as a shared results directory needs."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_replace(path: str | Path, write: Callable[[str], None]) -> Path:
    """Create `path` all at once: `write(tmp)` fills a temp file in the same directory, which is
    then renamed over `path`; on any error the temp file goes and `path` is left as it was.
    The file gets the mode the umask gives (not mkstemp's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_replace(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def record_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / RUNS_DIR / f"{run_id}.json"


def write_record(results_dir: str | Path, record: RunRecord) -> Path:
    path = record_path(results_dir, record.run_id)
    atomic_write_text(path, record.model_dump_json(indent=2))
    return path


def read_record(path: str | Path) -> RunRecord:
    """Parse one record; raises ValueError naming the file if it is not a valid record, or if a
    file in RESULTS/runs holds another run than its name says (copied or renamed by hand)."""
    path = Path(path)
    try:
        record = RunRecord.model_validate_json(path.read_text())
    except (ValidationError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a valid run record ({type(exc).__name__})") from exc
    if path.parent.name == RUNS_DIR and path.suffix == ".json" and path.stem != record.run_id:
        raise ValueError(f"{path}: holds run {record.run_id}, not the run its file name says; not used "
                         f"(the run {path.stem} counts as missing; move the file to {record.run_id}.json "
                         "if it is that run's record)")
    return record


def iter_records(results_dir: str | Path, errors: list[str] | None = None) -> Iterator[RunRecord]:
    """Every valid record under DIR/runs; invalid files are reported into `errors`, not raised."""
    runs = Path(results_dir) / RUNS_DIR
    folder = str(runs)
    for name in _json_names(folder) if runs.is_dir() else []:
        try:
            yield _read_listed(folder, name)
        except ValueError as exc:
            if errors is not None:
                errors.append(str(exc))


def _json_names(folder: str) -> list[str]:
    """The names sorted(Path(folder).glob("*.json")) lists, without a Path per file (10,000 records:
    0.3 s of path parsing and comparing). Siblings sort as their names do; `*.json` matches every
    name ending so, hidden ones too; an unreadable folder lists nothing, as glob does."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.name.endswith(".json"))
    except PermissionError:
        return []


def _read_listed(folder: str, name: str) -> RunRecord:
    """read_record(Path(folder) / name) for a name _json_names listed, its file read as read_text
    reads it. Anything wrong: read_record itself reads the file again, so the error is its own."""
    path = os.path.join(folder, name)  # == str(Path(folder) / name)
    try:
        with open(path) as f:  # Path.read_text(): locale encoding, universal newlines
            record = RunRecord.model_validate_json(f.read())
    except (ValidationError, ValueError, OSError):
        return read_record(path)
    if len(name) > 5 and name[:-5] != record.run_id:  # Path(name).suffix is "" only for ".json" itself
        return read_record(path)
    return record


def load_completed(results_dir: str | Path, run_id: str) -> RunRecord | None:
    path = record_path(results_dir, run_id)
    if not path.is_file():
        return None
    try:
        rec = read_record(path)
    except ValueError:
        return None
    return rec if rec.status == "completed" else None
