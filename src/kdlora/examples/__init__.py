"""Example data shipped with kdlora: the reference study's 742 runs (reference/README.md).

    from kdlora.examples import write_reference
    write_reference("ref")          # ref/results/... in the legacy layout, ref/LICENSE, ref/README.md

Standard library only: `kdlora example reference` and the tests import nothing heavy.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from kdlora.errors import UserError

REFERENCE = "kdlora-cs5483-90028be5"  # the study's name: repository and commit
REFERENCE_SOURCE = "congfeng4/KD-LoRA-CS5483 at commit 90028be5 (2026-01-27), MIT licence"
REFERENCE_RUNS = 742


def reference_archive() -> Path:
    """The packaged .tar.gz of the reference study."""
    path = Path(str(resources.files(__package__) / "reference" / f"{REFERENCE}.tar.gz"))
    if not path.is_file():  # a broken install, not bad input
        raise FileNotFoundError(f"kdlora's packaged reference study is missing: {path}")
    return path


def write_reference(out: str | os.PathLike) -> Path:
    """Write the reference study into `out` in its legacy layout (results/.../metrics.json), with
    its LICENSE, README and the original analysis's CSVs; returns `out`.

    `out` must not exist or be empty. The files appear all at once: they are unpacked into a
    temporary folder beside `out`, which is then renamed.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{str(out)!r} already exists and is not an empty folder; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tarfile.open(reference_archive(), "r:gz") as tar:
            members = tar.getmembers()
            for m in members:  # our own archive, but never write outside the folder
                if not m.isfile() or m.name.startswith(("/", "..")) or "/../" in m.name:
                    raise ValueError(f"unexpected member in the packaged archive: {m.name}")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kwargs)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
