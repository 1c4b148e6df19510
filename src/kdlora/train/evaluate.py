"""Evaluation on every eval split of a task, and the trained model's inference cost, measured on
the evaluation's own forward passes (no extra passes are spent on measuring)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from kdlora.train.loop import model_inputs


@dataclass
class Predictions:
    logits: np.ndarray
    labels: np.ndarray
    seconds: float
    batch_ms: list[tuple[int, float]] = field(default_factory=list)  # (batch size, forward wall ms)


@torch.no_grad()
def predict(model, loader, device) -> Predictions:
    """Logits and labels over a loader in eval mode, with each batch's forward time."""
    model.eval()
    logits, labels, batch_ms = [], [], []
    start = time.perf_counter()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        t0 = time.perf_counter()
        out = model(**model_inputs(model, {**batch, "labels": None})).logits
        if device.type == "cuda":
            torch.cuda.synchronize()
        batch_ms.append((len(batch["labels"]), (time.perf_counter() - t0) * 1000))
        logits.append(out.float().cpu())
        labels.append(batch["labels"].cpu())
    return Predictions(torch.cat(logits).numpy(), torch.cat(labels).numpy(), time.perf_counter() - start, batch_ms)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    samples_per_s: float
    latency_ms: float | None  # median forward time of the full batches of `latency_batch`


def evaluate(model, loaders: dict[str, object], spec, device, latency_batch: int = 32) -> Evaluation:
    """Task metrics over every eval split (MNLI: matched_ and mismatched_), samples/s, and the
    median forward time of a full batch (None when no split has one)."""
    metrics: dict[str, float] = {}
    samples, seconds, full = 0, 0.0, []
    for prefix, loader in loaders.items():
        p = predict(model, loader, device)
        preds = p.logits[:, 0] if spec.is_regression else p.logits
        metrics.update(spec.compute_metrics(preds, p.labels, prefix=prefix))
        samples, seconds = samples + len(p.labels), seconds + p.seconds
        full += [ms for n, ms in p.batch_ms if n == latency_batch]
    return Evaluation(metrics, samples / seconds if seconds > 0 else float("nan"),
                      statistics.median(full) if full else None)
