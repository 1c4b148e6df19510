"""What the training loop tells its callbacks (tracking: TensorBoard, MLflow; kdlora/tracking.py).

A callback sees each optimizer step's training loss and learning rate, and each epoch's entry of
the run's history (its train_loss and, with per-epoch evaluation, its metrics). The loop never
waits for the GPU for them: on CUDA the loss is handed over only where the loop reads it anyway
(every CHECK_EVERY steps, the last step, epoch ends), as the mean micro-batch loss since the last
hand-over; on CPU, where reading a loss costs nothing, every step. Without callbacks nothing is done.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence


class TrainCallback(Protocol):
    def on_step(self, step: int, values: dict[str, float]) -> None:
        """values: "train/loss" (mean micro-batch loss since the last call) and "train/lr"."""

    def on_epoch(self, epoch: int, entry: dict[str, Any]) -> None:
        """entry: the history entry of the epoch that just ended (epoch, train_loss, metrics)."""


class StepLog:
    """The loop's side of the callbacks: turns its running loss sums into per-step values."""

    def __init__(self, callbacks: Sequence[TrainCallback], device) -> None:
        self.callbacks = list(callbacks)
        self.every_step = getattr(device, "type", "cpu") != "cuda"
        self.seen = (0.0, 0)  # (loss sum, micro-batches) of the epoch at the last hand-over
        self.pending: tuple | None = None  # the last step not yet handed over

    def step(self, step: int, running, scheduler, synced: bool) -> None:
        """After optimizer step `step`; `synced`: the loop has just read the loss (no extra sync)."""
        if not self.callbacks:
            return
        self.pending = (step, running, scheduler)
        if synced or self.every_step:
            self._hand_over()

    def epoch(self, entry: dict[str, Any]) -> None:
        """At an epoch's end (the loop has just read its loss): the steps not yet handed over, then the entry."""
        if not self.callbacks:
            return
        if self.pending is not None:
            self._hand_over()
        self.seen = (0.0, 0)  # the loop starts the next epoch's sums from zero
        for cb in self.callbacks:
            cb.on_epoch(int(entry["epoch"]), entry)

    def _hand_over(self) -> None:
        step, running, scheduler = self.pending
        self.pending = None
        total, micro = float(running.loss), running.micro
        if micro <= self.seen[1]:
            return
        loss = (total - self.seen[0]) / (micro - self.seen[1])
        self.seen = (total, micro)
        values = {"train/loss": loss, "train/lr": float(scheduler.get_last_lr()[0])}
        for cb in self.callbacks:
            cb.on_step(step, values)
