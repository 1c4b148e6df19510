"""Load a task's splits as a `datasets.DatasetDict` with uniform columns.

Every source gives the same columns: the task's text fields, "label" (int, or float32 for
regression) and "idx", the example's position in the full original split. idx survives
subsampling because distillation caches teacher logits by it.

GLUE sources, first match wins: `data_dir` in the original GLUE TSV layout; `data_dir` holding
a DatasetDict saved with `save_to_disk` (per-task subfolder or the folder itself); with no
`data_dir`, the HF hub copy `nyu-mll/glue` (online or cached only). Custom tasks read the CSV,
TSV or JSONL files their task YAML names.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from kdlora.data.tasks import TaskSpec
from kdlora.errors import UserError

log = logging.getLogger(__name__)

HUB_NAME = "nyu-mll/glue"

# Original GLUE layout: folder, whether the TSVs have a header, and the TSV column -> our column.
# CoLA's files have no header: source, label, original label mark, sentence.
GLUE_TSV: dict[str, tuple[str, bool, dict[str, str]]] = {
    "cola": ("CoLA", False, {"sentence": "sentence", "label": "label"}),
    "sst2": ("SST-2", True, {"sentence": "sentence", "label": "label"}),
    "mrpc": ("MRPC", True, {"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"}),
    "qqp": ("QQP", True, {"question1": "question1", "question2": "question2", "is_duplicate": "label"}),
    "stsb": ("STS-B", True, {"sentence1": "sentence1", "sentence2": "sentence2", "score": "label"}),
    "mnli": ("MNLI", True, {"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"}),
    "qnli": ("QNLI", True, {"question": "question", "sentence": "sentence", "label": "label"}),
    "rte": ("RTE", True, {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
    "wnli": ("WNLI", True, {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
}
COLA_COLUMNS = ["source", "label", "original_label", "sentence"]
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv",
               "validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv"}


def split_names(spec: TaskSpec) -> list[str]:
    """The files a task reads: train, its reported split(s), and a selection file if it has one."""
    names = ["train"] + [name for name, _ in spec.eval_splits]
    return names + ([spec.selection_file] if spec.selection_file else [])


# ----- labels ---------------------------------------------------------------------------------

def label_ids(values: pd.Series, spec: TaskSpec, where: str) -> np.ndarray:
    """Labels as class ids (from names or ids 0..n-1) or float32 scores for regression."""
    if spec.is_regression:
        scores = pd.to_numeric(values, errors="coerce")
        if scores.isna().any():
            bad = values[scores.isna()].astype(str).unique()[:5].tolist()
            raise UserError(f"{where}: regression labels must be numbers; found {bad}")
        return scores.to_numpy(dtype=np.float32)
    names = list(spec.label_names or ())
    text = values.astype(str).str.strip()
    if text.isin(names).all():
        return text.map({n: i for i, n in enumerate(names)}).to_numpy(dtype=np.int64)
    ids = pd.to_numeric(text, errors="coerce")
    valid = text.isin(names) | (ids.notna() & (ids == ids.round()) & ids.between(0, len(names) - 1))
    if not valid.all():
        bad = text[~valid].unique()[:5].tolist()
        raise UserError(f"{where}: labels {bad} are neither label names {names} nor ids 0..{len(names) - 1}; "
                        "fix the file or the task's `labels`")
    mapped = text.map({n: i for i, n in enumerate(names)})
    return mapped.fillna(ids).to_numpy(dtype=np.int64)


def _to_dataset(frame: pd.DataFrame, spec: TaskSpec, where: str):
    import datasets

    out = pd.DataFrame({f: frame[f].fillna("").astype(str) for f in spec.text_fields})
    out["label"] = label_ids(frame["label"], spec, where)
    out["idx"] = np.arange(len(out), dtype=np.int64)
    label_type = datasets.Value("float32") if spec.is_regression else datasets.Value("int64")
    features = datasets.Features({**{f: datasets.Value("string") for f in spec.text_fields},
                                  "label": label_type, "idx": datasets.Value("int64")})
    return datasets.Dataset.from_pandas(out, features=features, preserve_index=False)


# ----- GLUE: TSV layout -----------------------------------------------------------------------

def _tsv_dir(spec: TaskSpec, data_dir: Path) -> Path | None:
    folder = GLUE_TSV[spec.name][0]
    for cand in (data_dir / folder, data_dir / spec.name, data_dir):
        if (cand / "train.tsv").is_file():
            return cand
    return None


def read_glue_tsv(spec: TaskSpec, path: Path) -> pd.DataFrame:
    """One original GLUE TSV as a frame with our column names; rows with no label are dropped."""
    _, header, columns = GLUE_TSV[spec.name]
    # GLUE's TSVs are not CSV-quoted (MNLI texts contain bare quotes): QUOTE_NONE, as GLUE's reader.
    # The dtype=str / no NA parsing keeps texts like "null" or "NA" verbatim.
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                        encoding="utf-8-sig", header=0 if header else None,
                        names=None if header else COLA_COLUMNS, on_bad_lines="warn")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing} of the GLUE {spec.name} layout; "
                        f"columns present: {list(frame.columns)}")
    frame = frame[list(columns)].rename(columns=columns)
    keep = frame["label"].astype(str).str.strip().ne("") & frame["label"].notna()
    if (~keep).any():  # QQP's train.tsv has a few broken lines
        log.warning("%s: skipped %d row(s) without a label", path, int((~keep).sum()))
    return frame[keep].reset_index(drop=True)


def _load_tsv(spec: TaskSpec, folder: Path):
    import datasets

    out = {}
    for split in split_names(spec):
        path = folder / SPLIT_FILES[split]
        if not path.is_file():
            raise UserError(f"GLUE {spec.name}: {path} not found; the TSV layout needs "
                            f"{', '.join(SPLIT_FILES[s] for s in split_names(spec))} in {folder}")
        out[split] = _to_dataset(read_glue_tsv(spec, path), spec, str(path))
    return datasets.DatasetDict(out)


# ----- GLUE: save_to_disk and hub -----------------------------------------------------------

def _saved_dir(spec: TaskSpec, data_dir: Path) -> Path | None:
    for cand in (data_dir / spec.name, data_dir / GLUE_TSV[spec.name][0], data_dir):
        if (cand / "dataset_dict.json").is_file():
            return cand
    return None


def _normalise(dd, spec: TaskSpec, where: str):
    """Keep train + eval splits, check columns, add idx if absent, cast the label."""
    import datasets

    missing = [s for s in split_names(spec) if s not in dd]
    if missing:
        raise UserError(f"{where}: split(s) {missing} missing for task {spec.name}; found {list(dd)}")
    out = {}
    for split in split_names(spec):
        ds = dd[split]
        cols = [c for c in (*spec.text_fields, "label") if c not in ds.column_names]
        if cols:
            raise UserError(f"{where}: split {split} lacks column(s) {cols} for task {spec.name}; "
                            f"columns present: {ds.column_names}")
        if "idx" not in ds.column_names:
            ds = ds.add_column("idx", list(range(len(ds))))
        ds = ds.select_columns([*spec.text_fields, "label", "idx"])
        if spec.is_regression:
            ds = ds.cast_column("label", datasets.Value("float32"))
        elif not isinstance(ds.features["label"], datasets.ClassLabel):
            ds = ds.cast_column("label", datasets.Value("int64"))
        out[split] = ds
    return datasets.DatasetDict(out)


def _load_hub(spec: TaskSpec):
    import datasets

    try:
        dd = datasets.load_dataset(HUB_NAME, spec.name)
    except Exception as exc:  # offline, not cached, hub down: all end in the same advice
        folder = GLUE_TSV[spec.name][0]
        raise UserError(
            f"GLUE task {spec.name!r} is not available: {HUB_NAME} could not be loaded "
            f"({type(exc).__name__}; offline and not cached?). Pass --set data_dir=DIR with the original GLUE "
            f"TSV layout (DIR/{folder}/train.tsv, DIR/{folder}/dev.tsv) or a DatasetDict saved with "
            f"save_to_disk (DIR/{spec.name}/dataset_dict.json)") from exc
    return _normalise(dd, spec, HUB_NAME)


def glue_source_files(name: str, data_dir: Path) -> tuple[Path, list[Path]]:
    """The folder and files `_load_glue` reads for GLUE task `name` under data_dir (for its fingerprint)."""
    from kdlora.data.tasks import GLUE

    spec = GLUE[name]
    if (folder := _tsv_dir(spec, data_dir)) is not None:
        return folder, [folder / SPLIT_FILES[s] for s in split_names(spec) if (folder / SPLIT_FILES[s]).is_file()]
    if (saved := _saved_dir(spec, data_dir)) is not None:
        return saved, sorted(p for p in saved.rglob("*") if p.is_file() and not p.name.startswith("."))
    raise _no_glue_data(spec, data_dir)


def _no_glue_data(spec: TaskSpec, root: Path) -> UserError:
    folder = GLUE_TSV[spec.name][0]
    return UserError(f"no data for GLUE task {spec.name!r} under data_dir {root}: expected the GLUE TSV layout "
                     f"({root}/{folder}/train.tsv and dev.tsv) or a save_to_disk DatasetDict "
                     f"({root}/{spec.name}/dataset_dict.json)")


def _load_glue(spec: TaskSpec, data_dir: str | None):
    import datasets

    if data_dir is None:
        return _load_hub(spec)
    root = Path(data_dir).expanduser()
    if (folder := _tsv_dir(spec, root)) is not None:
        return _load_tsv(spec, folder)
    if (saved := _saved_dir(spec, root)) is not None:
        return _normalise(datasets.load_from_disk(str(saved)), spec, str(saved))
    raise _no_glue_data(spec, root)


# ----- custom tasks ---------------------------------------------------------------------------

def read_table(path: str | Path) -> pd.DataFrame:
    from kdlora.data.tasks import check_header

    path = Path(path)
    check_header(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".tsv", ".tab"):
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=True, dtype=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from exc
    raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")


def _load_custom(spec: TaskSpec):
    import datasets

    out = {}
    for split in split_names(spec):
        path = spec.files[split]
        frame = read_table(path)
        needed = [*spec.text_fields, spec.label_field]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise UserError(f"{path}: column(s) {missing} not found (columns present: {list(frame.columns)}); "
                            f"fix the file or the task's text/label keys in {spec.source}")
        if len(frame) == 0:
            raise UserError(f"{path}: no rows")
        frame = frame[[*spec.text_fields]].assign(label=frame[spec.label_field])
        out[split] = _to_dataset(frame, spec, path)
    return datasets.DatasetDict(out)


# ----- entry point ----------------------------------------------------------------------------

# Fixed seeds that do not depend on the run: every method, seed and strategy of a task selects on,
# and is evaluated on, exactly the same examples, so paired comparisons compare like with like.
SELECTION_SEED = 20_240_601
EVAL_SEED = 0
SELECTION = "selection"  # the split name of the selection set in the loaded DatasetDict


def subsample(ds, k: int | None, seed: int):
    """A seeded selection of k rows, in their original order; idx is untouched."""
    if k is None or k >= len(ds):
        return ds
    if k <= 0:
        raise UserError(f"max samples must be positive, got {k}")
    rows = np.sort(np.random.default_rng(seed).choice(len(ds), size=k, replace=False))
    return ds.select(rows.tolist())


def selection_rows(labels, fraction: float, stratify: bool, seed: int = SELECTION_SEED) -> np.ndarray:
    """Sorted positions of the selection set: `fraction` of the rows, per label when stratified
    (each class keeps its share, rounded, at least one row of a class that has two or more)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if stratify else [np.arange(len(labels))]
    picked = []
    for rows in groups:
        k = int(round(fraction * len(rows)))
        k = min(max(k, 1 if len(rows) > 1 else 0), len(rows) - 1)  # never take a whole class
        picked.append(rng.permutation(rows)[:k])
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)


def carve_selection(train, spec: TaskSpec, fraction: float):
    """(train without the selection set, the selection set): drawn from the full training split
    with SELECTION_SEED, so it is the same examples for every run of the task."""
    rows = selection_rows(train["label"], fraction, stratify=not spec.is_regression)
    if len(rows) == 0 or len(rows) == len(train):
        raise UserError(f"task {spec.name}: selection_fraction {fraction} of {len(train)} training examples "
                        "leaves no selection set or no training set")
    keep = np.setdiff1d(np.arange(len(train)), rows)
    return train.select(keep.tolist()), train.select(rows.tolist())


def load_splits(spec: TaskSpec, data_dir: str | None = None, *, max_train_samples: int | None = None,
                max_eval_samples: int | None = None, seed: int = 0, selection_fraction: float = 0.0):
    """train, the reported split(s), and "selection" when the run has one: the task's validation
    file when the task names a test file, else `selection_fraction` of train. The selection set
    is carved before the run's own (seeded) train subsample, and every evaluation subset is drawn
    with EVAL_SEED, so neither depends on the run's seed."""
    dd = _load_glue(spec, data_dir) if spec.is_glue else _load_custom(spec)
    if spec.selection_file:
        dd[SELECTION] = dd.pop(spec.selection_file)
    elif selection_fraction > 0:
        dd["train"], dd[SELECTION] = carve_selection(dd["train"], spec, selection_fraction)
    for split in dd:
        dd[split] = subsample(dd[split], max_train_samples if split == "train" else max_eval_samples,
                              seed if split == "train" else EVAL_SEED)
    return dd
