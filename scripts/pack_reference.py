"""Pack the reference study's 742 runs into kdlora's package data (run once, by hand).

    python scripts/pack_reference.py SOURCE_DIR

SOURCE_DIR is the study as published (results/, LICENSE and the original analysis's CSVs). The
archive is byte-for-byte reproducible: members sorted, owner, group and times fixed, gzip header
without a time stamp. The data README and the licence are written beside the archive as well.
"""

from __future__ import annotations

import gzip
import io
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src" / "kdlora" / "examples" / "reference"
KEEP = ("LICENSE", "efficiency_metrics_all.csv", "efficiency_summary_by_variant.csv", "statistical_test_results.csv")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def pack(source: Path, archive: Path, write_licence: bool = True) -> int:
    files = sorted(p for p in (source / "results").rglob("metrics.json"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "README.md", (HERE / "README.md").read_bytes())
        for name in KEEP:
            _add(tar, name, (source / name).read_bytes())
        for path in files:
            _add(tar, path.relative_to(source).as_posix(), path.read_bytes())
    with open(archive, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0,
                                                   filename="") as gz:
        gz.write(buf.getvalue())
    if write_licence:
        (HERE / "LICENSE").write_bytes((source / "LICENSE").read_bytes())
    return len(files)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    n = pack(Path(sys.argv[1]), HERE / "kdlora-cs5483-90028be5.tar.gz")
    print(f"packed {n} runs into {HERE}")
