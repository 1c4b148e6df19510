"""The one file hash: sha256 of files' bytes, read in 1 MiB blocks (task data, checkpoints, caches)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(*paths: str | Path) -> str:
    """SHA-256 of the files' contents, read in order as one stream."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
