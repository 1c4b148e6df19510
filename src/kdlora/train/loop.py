"""The one training loop. Every strategy and variant runs through it.

It reads top to bottom: build optimizer and schedule, then per micro-batch forward, loss (from the
strategy), backward, and every `grad_accum` micro-batches clip, step, schedule, the variant's
after-step hook, zero. Evaluation is outside the timed part.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from kdlora.train.measure import counting_flops

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


class NanLoss(RuntimeError):
    """The loss became NaN or infinite; the run is recorded as nan_loss."""


@dataclass
class LoopResult:
    steps: int = 0
    samples: int = 0
    tokens: int = 0  # non-padding tokens
    padded_tokens: int = 0  # tokens actually computed on (padding included)
    first_step_flops: int | None = None  # forward+backward of the first micro-batch (FlopCounterMode)
    first_step_tokens: int = 0  # its padded tokens
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    history: list[dict[str, Any]] = field(default_factory=list)


def model_inputs(model, batch: dict) -> dict:
    """The batch keys this model's forward accepts (DistilBERT takes no token_type_ids; idx is ours)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    accepted = inspect.signature(base.forward).parameters
    return {k: v for k, v in batch.items() if k in MODEL_KEYS and k in accepted}


def no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def build_optimizer(model, lr: float, weight_decay: float, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW, without weight decay on biases and LayerNorms. Fused (one pass over the parameters
    per step, as HF Trainer's default adamw_torch_fused) where torch supports it: on a BERT-base
    FFT step the default foreach version spent ~25 % of the step in element-wise optimizer ops and
    took 1.2-1.3x the fused step's time (bench/bench_hw_efficiency.py)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not no_decay(n)], "weight_decay": weight_decay},
        {"params": [p for n, p in params if no_decay(n)], "weight_decay": 0.0},
    ]
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision on GPU only: bf16 where supported ("auto"), fp32 on CPU."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else torch.float16


def optimizer_steps(n_batches: int, grad_accum: int, epochs: float) -> int:
    return max(1, math.ceil(n_batches / grad_accum * epochs))


def train_loop(model, loader, *, cfg, device: torch.device, loss_fn: Callable,
               after_step: Callable[[Any, int], None], total_steps: int,
               on_epoch_end: Callable[[int], dict] | None = None, count_flops: bool = True) -> LoopResult:
    from transformers import get_linear_schedule_with_warmup

    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    amp = autocast_dtype(cfg.precision, device)
    # fp16 needs loss scaling to keep small gradients; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    result = LoopResult()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    micro, epoch = 0, 0
    while result.steps < total_steps:
        epoch_losses = []
        for batch in loader:
            # --- forward: the strategy decides the loss (labels, or labels + teacher) ---
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            mask = batch["attention_mask"]
            # the first micro-batch's FLOPs are counted while it trains: no separate measuring step
            with counting_flops(count_flops and micro == 0) as counted:
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    outputs = model(**model_inputs(model, batch))
                    loss = loss_fn(batch, outputs)
                if not torch.isfinite(loss):
                    raise NanLoss(f"loss became {loss.item()} at optimizer step {result.steps}")
                scaler.scale(loss / cfg.grad_accum).backward()
            if counted:
                result.first_step_flops, result.first_step_tokens = counted["flops"], mask.numel()
            epoch_losses.append(loss.item())
            result.samples += mask.shape[0]
            result.tokens += int(mask.sum())
            result.padded_tokens += mask.numel()
            micro += 1
            if micro % cfg.grad_accum:
                continue
            # --- optimizer step: clip, step, schedule, the variant's hook, zero ---
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            result.steps += 1
            after_step(model, result.steps)  # AdaLoRA reads the gradients here, before zeroing
            optimizer.zero_grad(set_to_none=True)
            if result.steps >= total_steps:
                break
        epoch += 1
        entry = {"epoch": epoch, "train_loss": sum(epoch_losses) / max(1, len(epoch_losses))}
        result.losses.append(entry["train_loss"])
        if on_epoch_end is not None and result.steps < total_steps:
            # per-epoch evaluation is not training time: stop the clock around it
            paused = time.perf_counter()
            entry.update(on_epoch_end(epoch))
            start += time.perf_counter() - paused
            model.train()
        result.history.append(entry)
    if device.type == "cuda":
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - start
    return result
