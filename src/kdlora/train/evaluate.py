"""Evaluation on every eval split of a task, and the trained model's inference cost."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from kdlora.train.loop import model_inputs


@torch.no_grad()
def predict(model, loader, device) -> tuple[np.ndarray, np.ndarray, float]:
    """(logits, labels, seconds) over a loader, in eval mode."""
    model.eval()
    logits, labels = [], []
    start = time.perf_counter()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits.append(model(**model_inputs(model, {**batch, "labels": None})).logits.float().cpu())
        labels.append(batch["labels"].cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), time.perf_counter() - start


def evaluate(model, loaders: dict[str, object], spec, device) -> tuple[dict[str, float], float]:
    """Task metrics over every eval split (MNLI: matched_ and mismatched_), and samples/s."""
    metrics: dict[str, float] = {}
    samples, seconds = 0, 0.0
    for prefix, loader in loaders.items():
        logits, labels, secs = predict(model, loader, device)
        preds = logits[:, 0] if spec.is_regression else logits
        metrics.update(spec.compute_metrics(preds, labels, prefix=prefix))
        samples, seconds = samples + len(labels), seconds + secs
    return metrics, samples / seconds if seconds > 0 else float("nan")


@torch.no_grad()
def batch_latency_ms(model, batch: dict, device, repeats: int = 10) -> float:
    """Median wall time of one forward pass on a batch (of 32), after a warm-up pass."""
    model.eval()
    batch = model_inputs(model, {k: v.to(device) for k, v in batch.items() if k != "labels"})
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        model(**batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first pass warms caches and kernels
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
