"""Matched parameter budgets: every adapter sized to the reference's trainable-parameter count.

`param_budget: {reference: lora, r: 8}` asks each adapter run for the size (the variant's own knob:
LoRA's r, AdaLoRA's initial rank, MrLoRA's rank chain; `Variant.size_updates`) whose trainable
parameters on the model it adapts (the teacher-size model for LoRA-only, the student for KD-LoRA)
come closest to the reference variant's at rank r on that same model. Counts are exact: the
model is instantiated on the meta device (no weights, no memory) and the variant applied to it.
A budget that no size meets within the tolerance (±15 %) is refused.

Counting needs torch, so the sizes a grid chose are saved beside its results (SIZES_FILE, written
by `kdlora sweep` and `kdlora plan --results`): `kdlora report --grid` reads them back (`Sizes`)
and rebuilds the same runs, run_ids included, without torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from kdlora.config import EXECUTION_FIELDS, RunConfig, build_config
from kdlora.errors import UserError
from kdlora.strategies import STRATEGIES

MAX_SIZE = 1024
ADALORA_STEPS = 1000  # AdaLoRA's schedule needs a step count; its parameter count does not

# Architectures of the paper's hub models (their config.json widths), so that plans and tests
# need no network. Only shapes matter: embeddings are frozen, so the vocabulary size does not.
KNOWN_CONFIGS = {
    "bert-base-uncased": ("bert", {}),
    "distilbert-base-uncased": ("distilbert", {}),
    "roberta-base": ("roberta", {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1}),
    "distilroberta-base": ("roberta", {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1,
                                       "num_hidden_layers": 6}),
    "microsoft/deberta-v3-base": ("deberta-v2", {
        "vocab_size": 128100, "relative_attention": True, "pos_att_type": ["p2c", "c2p"],
        "max_relative_positions": -1, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
        "share_att_key": True, "position_biased_input": False, "type_vocab_size": 0}),
    "microsoft/deberta-v3-small": ("deberta-v2", {
        "vocab_size": 128100, "relative_attention": True, "pos_att_type": ["p2c", "c2p"],
        "max_relative_positions": -1, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
        "share_att_key": True, "position_biased_input": False, "type_vocab_size": 0, "num_hidden_layers": 6}),
}
# Settings that change the adapter's shape; every other field is left out of the count's cache key.
NOT_SHAPE = {"family", "task", "strategy", "seed", "lr", "epochs", "batch_size", "max_length", "warmup_ratio",
             "weight_decay", "max_grad_norm", "group_by_length", "eval_every_epoch", "max_train_samples",
             "max_eval_samples", "precision", "kd_temperature", "kd_alpha", "teacher_lr", "teacher_epochs",
             "teacher_batch_size", "selection_fraction", "select_best_epoch", "param_budget", "data_dir",
             "metric_policy", "lora_alpha", "lora_dropout", "teacher_model", "student_model"}


@dataclass(frozen=True)
class Match:
    variant: str
    model: str  # the model the adapters go on (hub id or path)
    size: int
    count: int  # the run's trainable parameters
    reference_count: int

    @property
    def ratio(self) -> float:
        return self.count / self.reference_count


def adapted_model(cfg: RunConfig) -> tuple[str, tuple[int, ...] | None]:
    """(model name, layers kept) of the model a run puts its adapters on."""
    from kdlora.models import model_names, student_layers
    from kdlora.strategies import STRATEGIES

    teacher, student = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
    if STRATEGIES.get(cfg.strategy).trains_student:
        return student, student_layers(cfg.family, cfg.student_model)
    return teacher, None


def arch_config(name: str, layers: tuple[int, ...] | None, num_labels: int):
    from transformers import AutoConfig, CONFIG_MAPPING

    if name in KNOWN_CONFIGS:
        model_type, kwargs = KNOWN_CONFIGS[name]
        config = CONFIG_MAPPING[model_type](**kwargs)
    else:
        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise UserError(f"param_budget: cannot read the architecture of {name!r} (not a local directory, not "
                            "in the Hugging Face cache); give a local path") from exc
    if layers is not None:
        setattr(config, "n_layers" if hasattr(config, "n_layers") else "num_hidden_layers", len(layers))
    config.num_labels = num_labels
    return config


def _shape_key(cfg: RunConfig) -> str:
    return json.dumps({k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_SHAPE}, sort_keys=True)


def trainable_count(cfg: RunConfig, num_labels: int) -> int:
    """Exact trainable parameters of `cfg`'s adapters (and head) on its model, on the meta device."""
    name, layers = adapted_model(cfg)
    return _count(name, layers, num_labels, _shape_key(cfg), cfg)


_COUNTS: dict[tuple, int] = {}  # (model, layers, labels, adapter shape) -> trainable parameters


def _count(name, layers, num_labels, key, cfg) -> int:
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from kdlora.models import count_params, head_modules, target_modules
    from kdlora.variants import VARIANTS, AdapterTargets

    cache_key = (name, layers, num_labels, key)
    if cache_key not in _COUNTS:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            with torch.device("meta"):
                model = AutoModelForSequenceClassification.from_config(arch_config(name, layers, num_labels))
                targets = AdapterTargets(target_modules(model, cfg.target_modules), head_modules(model))
                model = VARIANTS.get(cfg.variant).apply(model, cfg, targets, ADALORA_STEPS)
        finally:
            hf_logging.set_verbosity(verbosity)
        _COUNTS[cache_key] = count_params(model)[0]
    return _COUNTS[cache_key]


def sized(cfg: RunConfig, variant: str, size: int) -> RunConfig:
    from kdlora.variants import VARIANTS

    base = cfg.model_copy(update={"variant": variant})
    return base.model_copy(update=VARIANTS.get(variant).size_updates(base, size))


def reference_count(cfg: RunConfig, num_labels: int) -> int:
    budget = cfg.param_budget
    return trainable_count(sized(cfg, budget.reference, budget.r), num_labels)


SEARCH_LABELS = 2  # the head is the same for every variant: sizes are chosen at one label count


def match(cfg: RunConfig, num_labels: int) -> Match:
    """The size of cfg's variant closest in trainable parameters to the reference's. The head
    (trained in full by every variant) adds the same count to both sides, so the size is searched
    at SEARCH_LABELS and both counts are then moved by the head's difference for num_labels."""
    target = reference_count(cfg, SEARCH_LABELS)

    def count(size: int) -> int:
        return trainable_count(sized(cfg, cfg.variant, size), SEARCH_LABELS)

    # Counts grow with the size (affinely for LoRA-like variants): aim with two sizes, then walk.
    r = cfg.param_budget.r
    c1, c2 = count(r), count(2 * r)
    slope = max((c2 - c1) / r, 1e-9)
    best = min(MAX_SIZE, max(1, round(r + (target - c1) / slope)))
    gap = abs(count(best) - target)
    for step in (-1, 1):
        while 1 <= best + step <= MAX_SIZE and abs(count(best + step) - target) < gap:
            best += step
            gap = abs(count(best) - target)
    head = 0 if num_labels == SEARCH_LABELS else reference_count(cfg, num_labels) - target
    name, _ = adapted_model(cfg)
    return Match(cfg.variant, name, best, count(best) + head, target + head)


SIZES_FILE = "param_budget.json"  # in a results directory: the sizes its sweep chose
SIZES_VERSION = 1


class Sizes:
    """The Match of every budgeted adapter by what decides it (the model it adapts, its layers,
    the label count, the adapter's shape settings and the budget): what resolve() counted, or
    read back from SIZES_FILE. `on_miss(cfg)` is called before a size is counted (torch)."""

    def __init__(self, entries: dict[str, Match] | None = None,
                 on_miss: Callable[[RunConfig], None] | None = None) -> None:
        self.entries: dict[str, Match] = dict(entries or {})
        self.on_miss = on_miss

    @staticmethod
    def key(cfg: RunConfig, num_labels: int) -> str:
        name, layers = adapted_model(cfg)
        return json.dumps({"model": name, "layers": None if layers is None else list(layers), "labels": num_labels,
                           "shape": {k: v for k, v in json.loads(_shape_key(cfg)).items() if k not in EXECUTION_FIELDS},
                           "budget": cfg.param_budget.model_dump(mode="json")},
                          sort_keys=True)

    @classmethod
    def read(cls, dirs: Iterable[str | Path], on_miss: Callable[[RunConfig], None] | None = None) -> Sizes:
        """The sizes saved in each directory's SIZES_FILE (absent files are skipped)."""
        entries: dict[str, Match] = {}
        for d in dirs:
            path = Path(d) / SIZES_FILE
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text())
                if data.get("version") != SIZES_VERSION:
                    raise ValueError(f"version {data.get('version')!r}, expected {SIZES_VERSION}")
                for row in data["sizes"]:
                    entries[json.dumps(row["key"], sort_keys=True)] = Match(**row["match"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{path}: not a param_budget sizes file ({exc}); delete it and rewrite it with "
                                "`kdlora plan GRID --results DIR`") from None
        return cls(entries, on_miss)

    def write(self, directory: str | Path) -> Path | None:
        """Save the sizes into directory/SIZES_FILE, merged with those already there (atomic);
        nothing is written when there are none."""
        from kdlora.records.store import atomic_write_text

        if not self.entries:
            return None
        path = Path(directory) / SIZES_FILE
        merged = {**Sizes.read([directory]).entries, **self.entries} if path.is_file() else dict(self.entries)
        rows = [{"key": json.loads(k), "match": asdict(m)} for k, m in sorted(merged.items())]
        atomic_write_text(path, json.dumps({"version": SIZES_VERSION, "sizes": rows}, indent=1) + "\n")
        return path


def resolve(cfg: RunConfig, num_labels: int | None = None,
            sizes: Sizes | None = None) -> tuple[RunConfig, Match | None]:
    """cfg with its adapter sized to the budget (unchanged without one, or for FFT); refuses a
    budget no size meets within its tolerance. Idempotent: a resolved config resolves to itself.
    With `sizes`, a size already there is reused (no torch) and a counted one is added."""
    if cfg.param_budget is None or not STRATEGIES.get(cfg.strategy).uses_adapters:
        return cfg, None
    if num_labels is None:
        from kdlora.data.tasks import resolve_task

        num_labels = resolve_task(cfg.task).num_labels
    key = Sizes.key(cfg, num_labels) if sizes is not None else None
    m = sizes.entries.get(key) if sizes is not None else None
    if m is None:
        if sizes is not None and sizes.on_miss is not None:
            sizes.on_miss(cfg)
        m = match(cfg, num_labels)
        if sizes is not None:
            sizes.entries[key] = m
    tol = cfg.param_budget.tolerance
    if abs(m.ratio - 1) > tol:
        b = cfg.param_budget
        raise UserError(f"param_budget {{reference: {b.reference}, r: {b.r}}}: no size of {cfg.variant} on {m.model} "
                        f"comes within ±{tol:.0%} of the reference's {m.reference_count:,} trainable parameters "
                        f"(closest: size {m.size} with {m.count:,}, {m.ratio:.2f}x)")
    from kdlora.variants import VARIANTS

    updates = VARIANTS.get(cfg.variant).size_updates(cfg, m.size)
    return build_config({**cfg.model_dump(), **updates}), m
