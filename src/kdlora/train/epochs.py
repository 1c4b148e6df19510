"""Per-epoch evaluation on the selection and reported splits, and the best epoch's weights.

The training loop calls `epoch_end` between epochs (its clock stopped); the engine calls `finish`
after the last one. With `select_best_epoch` the weights of the epoch with the best primary
metric on the *selection* set are kept and the reported split is evaluated at that epoch: the
reported split never decides anything. See docs/protocol.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from kdlora.data.metrics import primary_metric

SELECTION_PREFIX = "selection_"  # selection-set metrics in the per-epoch history


def with_primary(metrics: dict[str, Any], spec, policy: str, prefixes: tuple[str, ...] = ("",)) -> dict[str, Any]:
    """metrics plus `primary` / `primary_name`. A selection set has no MNLI-style prefixes, so
    its metrics stand in for every reported prefix (the primary is then the same average)."""
    named = {p + k: v for p in prefixes for k, v in metrics.items()}
    name, value = primary_metric(spec.name, named, policy, spec.primary)
    return {**metrics, "primary": value, "primary_name": name}


def score(metrics: dict[str, Any]) -> float:
    value = metrics.get("primary")
    return -math.inf if value is None or math.isnan(value) else float(value)


@dataclass
class Snapshot:
    """A CPU copy of what training changes: trainable parameters and buffers, and the variant's
    own state (AdaLoRA's rank pattern)."""

    tensors: dict[str, Any]
    variant_state: Any = None


def snapshot(model, variant=None) -> Snapshot:
    tensors = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
    tensors.update({n: b.detach().to("cpu", copy=True) for n, b in model.named_buffers()})
    return Snapshot(tensors, variant.training_state(model) if variant else None)


def restore(model, state: Snapshot, variant=None) -> None:
    import torch

    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, value in state.tensors.items():
            tensors[name].copy_(value)
    if variant:
        variant.restore_training_state(model, state.variant_state)


@dataclass
class EpochEvaluator:
    """evaluate_reported() / evaluate_selection() -> metrics with primary (selection: None if the
    run has no selection set)."""

    model: Any
    evaluate_reported: Callable[[], dict[str, Any]]
    evaluate_selection: Callable[[], dict[str, Any]] | None
    keep_best: bool
    variant: Any = None  # the run's Variant plug-in (None: FFT)
    best_epoch: int | None = None
    best_score: float = -math.inf
    best_state: Snapshot | None = field(default=None, repr=False)

    def epoch_end(self, epoch: int) -> dict[str, Any]:
        """One history entry: reported metrics as they are, selection metrics prefixed."""
        reported = self.evaluate_reported()
        selection = self.evaluate_selection() if self.evaluate_selection else {}
        self._consider(epoch, selection, last=False)
        return {**reported, **{SELECTION_PREFIX + k: v for k, v in selection.items()}}

    def _consider(self, epoch: int, selection: dict[str, Any], last: bool) -> None:
        if not self.keep_best or score(selection) <= self.best_score:
            return  # ties keep the earlier epoch
        self.best_epoch, self.best_score = epoch, score(selection)
        self.best_state = None if last else snapshot(self.model, self.variant)

    def finish(self, epoch: int, reported: dict[str, Any], selection: dict[str, Any]) -> dict[str, Any]:
        """After the last epoch (its metrics given): restores the best epoch's weights when it was
        an earlier one. Returns the record's protocol fields."""
        self._consider(epoch, selection, last=True)
        if self.keep_best and self.best_epoch is None:  # no epoch had a primary metric: keep the last
            self.best_epoch = epoch
        out: dict[str, Any] = {"metrics_selection": selection}
        if self.keep_best:
            out.update(best_epoch=self.best_epoch, metrics_last_epoch=reported,
                       metrics_selection_last_epoch=selection)
            if self.best_state is not None:
                restore(self.model, self.best_state, self.variant)
                out["restored"] = True
        return out
