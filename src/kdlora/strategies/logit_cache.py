"""Teacher logits computed once and shared, keyed by dataset index.

A cache entry is what one teacher produced on one tokenised split: `<key>.safetensors` (the
dataset `idx` of every row and the logits) plus `<key>.json` (the key parts, row count, class
count and the data file's sha256). The key is a content hash of everything that produced the
logits, so every variant and seed distilled from the same teacher on the same data finds the
same entry, and a different teacher, tokenisation or dataset gets its own.

Rows are looked up by dataset idx, never by batch position: a shuffled student batch must meet
its own teacher rows (the published KD-LoRA code paired shuffled batches with the rows of
another order). `assert_aligned` checks exactly that and is meant for tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from kdlora.errors import UserError
from kdlora.hashing import file_sha256
from kdlora.records.store import atomic_replace, atomic_write_text

FORMAT = 1


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cache key part of type {type(obj).__name__} is not JSON: {obj!r}")


def canonical_parts(parts: dict) -> dict:
    """The key parts as they read back from JSON (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(parts, sort_keys=True, default=_jsonable))


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of what produced the logits (teacher weights, task, split,
    tokenizer, max_length, dataset size and a fingerprint of the examples)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_computed(idx, logits, parts: dict):
    import torch

    if idx.dim() != 1 or logits.dim() != 2 or len(idx) != len(logits):
        raise ValueError(f"teacher logits must be idx [N] and logits [N, C], got {tuple(idx.shape)} and "
                         f"{tuple(logits.shape)}")
    if torch.unique(idx).numel() != idx.numel():
        raise ValueError("teacher logits have repeated dataset idx; every example must appear once")
    if "size" in parts and len(idx) != parts["size"]:
        raise ValueError(f"teacher produced {len(idx)} rows for a dataset of size {parts['size']}")
    return idx.long().contiguous(), logits.float().contiguous()


class TeacherLogitCache:
    def __init__(self, path: Path, idx, logits, *, built: bool, build_seconds: float,
                 stored_build_seconds: float) -> None:
        import torch

        order = torch.argsort(idx)
        self.path = path
        self._sorted_idx = idx[order]
        self._logits = logits[order]
        self.built = built  # True if this call computed the logits
        self.build_seconds = build_seconds  # time in compute() by this call; 0 when loaded
        self.stored_build_seconds = stored_build_seconds  # what building this entry once cost

    def __len__(self) -> int:
        return len(self._sorted_idx)

    @property
    def num_labels(self) -> int:
        return self._logits.shape[1]

    @classmethod
    def build_or_load(cls, cache_dir: str | Path, key_parts: dict,
                      compute: Callable[[], tuple[Any, Any]]) -> "TeacherLogitCache":
        """The valid entry for `key_parts`, computing it with `compute()` -> (idx [N], logits [N, C])
        only when none exists. A lock per key makes concurrent builders wait for one build."""
        from filelock import FileLock

        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = cache_key(**key_parts)
        data, side = cache_dir / f"{key}.safetensors", cache_dir / f"{key}.json"
        with FileLock(str(cache_dir / f"{key}.lock")):
            loaded = _load_valid(data, side, key, canonical_parts(key_parts))
            if loaded is not None:
                idx, logits, stored = loaded
                return cls(data, idx, logits, built=False, build_seconds=0.0, stored_build_seconds=stored)
            start = time.perf_counter()
            idx, logits = compute()
            seconds = time.perf_counter() - start
            idx, logits = _check_computed(idx, logits, key_parts)
            _write(data, side, key, canonical_parts(key_parts), idx, logits, seconds)
            return cls(data, idx, logits, built=True, build_seconds=seconds, stored_build_seconds=seconds)

    def lookup(self, idx):
        """Teacher rows for exactly these dataset indices, in this order."""
        import torch

        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        pos = torch.searchsorted(self._sorted_idx, idx).clamp(max=len(self) - 1)
        missing = idx[self._sorted_idx[pos] != idx]
        if missing.numel():
            raise UserError(f"teacher-logit cache {self.path.name} has no rows for dataset idx "
                            f"{missing[:5].tolist()} (it holds {len(self)} examples); the batch comes from "
                            "data the teacher logits were not computed on")
        return self._logits[pos]


def _write(data: Path, side: Path, key: str, parts: dict, idx, logits, seconds: float) -> None:
    """Data file first, sidecar last: the sidecar (with the data file's hash) marks a finished entry."""
    from safetensors.torch import save_file

    side.unlink(missing_ok=True)
    atomic_replace(data, lambda tmp: save_file({"idx": idx, "logits": logits}, tmp))
    meta = {"format": FORMAT, "key": key, "parts": parts, "rows": len(idx), "num_labels": logits.shape[1],
            "sha256": file_sha256(data), "build_seconds": seconds}
    atomic_write_text(side, json.dumps(meta, indent=2, sort_keys=True))


def _load_valid(data: Path, side: Path, key: str, parts: dict):
    """(idx, logits, build_seconds) if the entry exists and agrees with the key, else None."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        meta = json.loads(side.read_text())
        if (meta.get("format") != FORMAT or meta.get("key") != key or meta.get("parts") != parts
                or meta.get("sha256") != file_sha256(data)):
            return None
        tensors = load_file(str(data))
    except (OSError, ValueError, SafetensorError):
        return None
    idx, logits = tensors.get("idx"), tensors.get("logits")
    if idx is None or logits is None or idx.dim() != 1 or logits.dim() != 2:
        return None
    rows = parts.get("size", meta.get("rows"))
    if not (len(idx) == len(logits) == meta.get("rows") == rows and logits.shape[1] == meta.get("num_labels")):
        return None
    return idx, logits, float(meta.get("build_seconds", 0.0))


def assert_aligned(cache: TeacherLogitCache, idx, reference_logits, atol: float = 1e-5) -> None:
    """Fail unless the cache's rows for `idx` equal the teacher's logits computed directly on those
    same examples (`reference_logits`, row k for idx[k]); names the first misaligned example."""
    import torch

    got = cache.lookup(idx)
    ref = torch.as_tensor(reference_logits, dtype=got.dtype)
    if got.shape != ref.shape:
        raise AssertionError(f"cache rows have shape {tuple(got.shape)}, reference {tuple(ref.shape)}")
    bad = ((got - ref).abs() > atol).any(dim=1).nonzero().flatten()
    if bad.numel():
        k = int(bad[0])
        raise AssertionError(f"teacher logits misaligned for {bad.numel()} of {len(ref)} examples; first: "
                             f"idx {int(torch.as_tensor(idx).reshape(-1)[k])} got {got[k].tolist()}, "
                             f"teacher gives {ref[k].tolist()}")
