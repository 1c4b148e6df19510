"""Synthetic fixture data: GLUE tasks in the original TSV layout, and custom task folders.

Used by the tests and benchmarks (no network). Texts use only FIXTURE_WORDS, the tiny test
tokenizers' vocabulary. Labels are learnable: a cue word decides the class (positive words ->
positive / entailment / duplicate, negative words -> the other class, MNLI's neutral cue words ->
neutral); STS-B scores follow the word overlap of the two sentences, so a tiny model's loss falls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import yaml

from kdlora.data.metrics import GLUE_TASKS
from kdlora.records.store import atomic_write_text

# Words the synthetic fixture data are made of; the tiny tokenizers' vocabulary.
FIXTURE_WORDS = (
    "the a movie film plot actor story was is it this that very really quite not good great fine "
    "excellent wonderful bad awful terrible poor boring dull and but so of to in on with man woman "
    "cat dog sat ran park city house question answer what why how where who does did sentence "
    "entails contradicts neutral same different yes no one two three"
).split()

POSITIVE = ("good", "great")
NEGATIVE = ("bad", "awful")
NEUTRAL_CUES = ("neutral", "same")
FILLER = tuple(w for w in FIXTURE_WORDS if w not in POSITIVE + NEGATIVE + NEUTRAL_CUES)

# Folder and exact header of each original GLUE TSV (CoLA has none).
GLUE_DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
             "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return [str(w) for w in rng.choice(FILLER, size=n)]


def _with_cue(rng: np.random.Generator, cues: Sequence[str]) -> str:
    words = _words(rng, int(rng.integers(3, 9)))
    words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cues)))
    return " ".join(words)


def _binary(rng) -> tuple[int, str]:
    label = int(rng.integers(0, 2))
    return label, _with_cue(rng, POSITIVE if label else NEGATIVE)


def _parse(text: str) -> str:
    return "( " + " ".join(f"( {w} )" for w in text.split()) + " )"


# ----- one row per task: (label, fields in file order) -------------------------------------

def _row_cola(rng, i, split):
    label, s = _binary(rng)
    return [f"src{i % 7}", str(label), "" if label else "*", s]


def _row_sst2(rng, i, split):
    label, s = _binary(rng)
    return [s, str(label)]


def _row_mrpc(rng, i, split):
    label, s2 = _binary(rng)
    return [str(label), str(1000 + i), str(2000 + i), " ".join(_words(rng, 6)), s2]


def _row_qqp(rng, i, split):
    label, q2 = _binary(rng)
    return [str(i), str(2 * i), str(2 * i + 1), " ".join(_words(rng, 6)), q2, str(label)]


def _row_stsb(rng, i, split):
    s1 = _words(rng, 8)
    shared = int(rng.integers(0, 9))
    s2 = s1[:shared] + _words(rng, 8 - shared)
    score = float(np.clip(5 * shared / 8 + rng.normal(0, 0.3), 0, 5))
    return [str(i), "main-captions", "MSRvid", "2012", str(i), "none", "none",
            " ".join(s1), " ".join(s2), f"{score:.3f}"]


MNLI_LABELS = ("entailment", "neutral", "contradiction")


def _row_mnli(rng, i, split):
    k = int(rng.integers(0, 3))
    s1 = " ".join(_words(rng, 7))
    s2 = _with_cue(rng, (POSITIVE, NEUTRAL_CUES, NEGATIVE)[k])
    labels = [MNLI_LABELS[k]] * (1 if split == "train" else 5)
    return [str(i), str(i), f"{i}e", "fiction", _parse(s1), _parse(s2), _parse(s1), _parse(s2), s1, s2,
            *labels, MNLI_LABELS[k]]


def _row_qnli(rng, i, split):  # labels: entailment (0) / not_entailment (1), as in GLUE's files
    label, s = _binary(rng)
    return [str(i), "what " + " ".join(_words(rng, 5)), s, "entailment" if label else "not_entailment"]


def _row_rte(rng, i, split):
    label, s2 = _binary(rng)
    return [str(i), " ".join(_words(rng, 7)), s2, "entailment" if label else "not_entailment"]


def _row_wnli(rng, i, split):
    label, s2 = _binary(rng)
    return [str(i), " ".join(_words(rng, 7)), s2, str(label)]


ROWS: dict[str, Callable] = {"cola": _row_cola, "sst2": _row_sst2, "mrpc": _row_mrpc, "qqp": _row_qqp,
                             "stsb": _row_stsb, "mnli": _row_mnli, "qnli": _row_qnli, "rte": _row_rte,
                             "wnli": _row_wnli}
HEADERS: dict[str, list[str] | None] = {
    "cola": None,
    "sst2": ["sentence", "label"],
    "mrpc": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "qqp": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    "stsb": ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
             "sentence2", "score"],
    "mnli": None,  # depends on the split (train: label1; dev: label1..label5)
    "qnli": ["index", "question", "sentence", "label"],
    "rte": ["index", "sentence1", "sentence2", "label"],
    "wnli": ["index", "sentence1", "sentence2", "label"],
}


def _header(task: str, split: str) -> list[str] | None:
    if task == "mnli":
        labels = ["label1"] if split == "train" else [f"label{j}" for j in range(1, 6)]
        return [*MNLI_HEAD, *labels, "gold_label"]
    return HEADERS[task]


def _tsv(rows: list[list[str]], header: list[str] | None) -> str:
    lines = ([header] if header else []) + rows
    return "".join("\t".join(r) + "\n" for r in lines)


def write_glue_fixture(root, tasks: Sequence[str] = GLUE_TASKS, n_train: int = 64, n_eval: int = 32,
                       seed: int = 0) -> Path:
    """Write root/<GLUE folder>/train.tsv and dev.tsv (MNLI: dev_matched/dev_mismatched.tsv)."""
    root = Path(root)
    for t_i, task in enumerate(tasks):
        rng = np.random.default_rng([seed, t_i])
        evals = ("dev_matched", "dev_mismatched") if task == "mnli" else ("dev",)
        for split, n in (("train", n_train), *((e, n_eval) for e in evals)):
            rows = [ROWS[task](rng, i, split) for i in range(n)]
            atomic_write_text(root / GLUE_DIRS[task] / f"{split}.tsv", _tsv(rows, _header(task, split)))
    return root


# ----- custom tasks ---------------------------------------------------------------------------

def _custom_rows(rng, n: int, pair: bool, regression: bool) -> dict[str, list]:
    cols: dict[str, list] = {"sentence1": [], "sentence2": []} if pair else {"text": []}
    cols["label"] = []
    for _ in range(n):
        if regression:
            k = int(rng.integers(0, 4))
            text = " ".join(_words(rng, 4) + [str(rng.choice(POSITIVE))] * k)
            label: float | int = round(float(k + rng.normal(0, 0.2)), 3)
        else:
            label, text = _binary(rng)
        if pair:
            cols["sentence1"].append(" ".join(_words(rng, 5)))
            cols["sentence2"].append(text)
        else:
            cols["text"].append(text)
        cols["label"].append(label)
    return cols


def write_custom_task(root, n_train: int = 200, n_eval: int = 80, seed: int = 0, pair: bool = False,
                      regression: bool = False) -> Path:
    """train.csv, validation.csv and task.yaml under root; returns the YAML's path.

    The single-text classification case writes exactly the reviews2 YAML of docs/tasks.md.
    """
    import pandas as pd

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("validation", n_eval)):
        frame = pd.DataFrame(_custom_rows(rng, n, pair, regression))
        atomic_write_text(root / f"{split}.csv", frame.to_csv(index=False))
    task = {
        "name": ("pairs" if pair else "reviews") + ("_score" if regression else "2"),
        "train": "train.csv",
        "validation": "validation.csv",
        "text": ["sentence1", "sentence2"] if pair else "text",
        "label": "label",
        "labels": None if regression else ["negative", "positive"],
        "metric": ["pearson", "spearman"] if regression else ["accuracy", "f1"],
        "primary": "pearson" if regression else "accuracy",
    }
    path = root / "task.yaml"
    atomic_write_text(path, yaml.safe_dump(task, sort_keys=False, default_flow_style=None))
    return path
