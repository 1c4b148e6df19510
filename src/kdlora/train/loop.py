"""The one training loop. Every strategy and variant runs through it.

It reads top to bottom: build optimizer and schedule, then per micro-batch forward, loss (from the
strategy), backward, and every `grad_accum` micro-batches clip, step, schedule, the variant's
after-step hook, zero. Evaluation is outside the timed part.

Nothing in a micro-batch waits for the device: the loss and token counts are summed on it, and
the host reads them (one sync) every CHECK_EVERY optimizer steps, on the last step and at each
epoch's end, which is also when a NaN or infinite loss is caught, named by its range of steps.
Batches come in pinned memory (CUDA) and are copied with non_blocking=True; for SDPA models on
CUDA the attention mask is decided from the batch's host copy (sdpa_mask), since transformers
would ask the device whether there is padding at every forward.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from kdlora.train.callbacks import StepLog, TrainCallback
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


def build_optimizer(model, lr: float, weight_decay: float, fused: bool | None = None, extra_params=(),
                    lr_scale: Callable[[str, Any], float] | None = None) -> torch.optim.Optimizer:
    """AdamW, without weight decay on biases and LayerNorms. Fused (one pass over the parameters
    per step, as HF Trainer's default adamw_torch_fused) where torch supports it: on a BERT-base
    FFT step the default foreach version spent ~25 % of the step in element-wise optimizer ops and
    took 1.2-1.3x the fused step's time (bench/bench_hw_efficiency.py).

    `extra_params` ((name, parameter) pairs) are trained with the model (a strategy's projection);
    `lr_scale(name, parameter)` multiplies a parameter's learning rate (a variant's groups: LoRA+)."""
    params = [(n, p) for n, p in [*model.named_parameters(), *extra_params] if p.requires_grad]
    scale = lr_scale or (lambda name, param: 1.0)
    groups: dict[tuple[bool, float], list] = {}  # (weight decay?, lr multiplier) -> parameters
    for n, p in params:
        groups.setdefault((not no_decay(n), float(scale(n, p))), []).append(p)
    ordered = sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))  # decayed first, as before
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in params)
    return torch.optim.AdamW([{"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr": lr * s}
                              for (decay, s), ps in ordered], lr=lr, fused=fused)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision on GPU only: bf16 where supported ("auto"), fp32 on CPU."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else torch.float16


def optimizer_steps(n_batches: int, grad_accum: int, epochs: float) -> int:
    return max(1, math.ceil(n_batches / grad_accum * epochs))


# How often (in optimizer steps) the loop looks at the running loss on the host. Every look is
# a device sync; between looks the GPU runs ahead of Python. A non-finite loss is still caught
# within CHECK_EVERY steps (and on the last step, and at every epoch's end), with its step range.
CHECK_EVERY = 50


class _Running:
    """Sums kept on the device, so that no micro-batch waits for the GPU: the epoch's loss (in
    float64, which adds float32 losses exactly as Python's sum of their .item() values did) and
    the non-padding tokens. Read on the host only every CHECK_EVERY steps and at epoch ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.tokens = torch.zeros((), dtype=torch.int64, device=device)
        self.new_epoch()

    def new_epoch(self) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.micro = 0

    def add(self, loss: torch.Tensor, mask: torch.Tensor) -> None:
        self.loss += loss.detach().double()
        self.tokens += mask.sum()
        self.micro += 1


def check_finite(running: _Running, first_step: int, last_step: int) -> None:
    """One sync: the epoch's loss sum is finite iff every loss in it was (NaN and inf propagate).
    The last check passed, so the bad loss came from an optimizer step in first_step..last_step."""
    total = float(running.loss)
    if not math.isfinite(total):
        where = f"optimizer step {last_step}" if first_step >= last_step else \
            f"optimizer steps {first_step}-{last_step}"
        raise NanLoss(f"loss became {'nan' if math.isnan(total) else 'inf'} in {where} "
                      f"(checked every {CHECK_EVERY} steps)")


def to_device(batch: dict, device: torch.device) -> dict:
    """Model inputs to the device without waiting (pinned host memory makes the copies truly
    asynchronous). "idx", our dataset index, stays on the host where its lookups happen."""
    return {k: v if k == "idx" else v.to(device, non_blocking=True) for k, v in batch.items()}


# Where the SDPA mask is decided on the host (sdpa_mask): where asking the device costs a sync.
HOST_MASK_DEVICES = ("cuda",)


def sdpa_mask(host_mask: torch.Tensor, device_mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask for an SDPA model, decided on the host. transformers asks the device
    whether a 2-D mask has any padding (`mask.all()`: a sync per forward) and drops the mask when
    it has none; the host copy of the batch answers the same question without waiting. A 4-D mask
    (batch, 1, 1, length; True = attend) is used by transformers as it is."""
    if bool(host_mask.all()):  # a host tensor: no device sync
        return None
    return device_mask[:, None, None, :].bool()


def train_loop(model, loader, *, cfg, device: torch.device, loss_fn: Callable,
               after_step: Callable[[Any, int], None], total_steps: int,
               on_epoch_end: Callable[[int], dict] | None = None, count_flops: bool = True,
               callbacks: Sequence[TrainCallback] = (), extra_params=(),
               lr_scale: Callable[[str, Any], float] | None = None) -> LoopResult:
    from transformers import get_linear_schedule_with_warmup

    extra_params = list(extra_params)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, extra_params=extra_params, lr_scale=lr_scale)
    clipped = [*model.parameters(), *(p for _, p in extra_params)]
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    amp = autocast_dtype(cfg.precision, device)
    # fp16 needs loss scaling to keep small gradients; bf16 has fp32's range and does not.
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    # torch.compile (compile: true) wraps the forward; the parameters, and so the optimizer, are shared
    forward = torch.compile(model, dynamic=True) if getattr(cfg, "compile", False) else model
    accepted = set(model_inputs(model, dict.fromkeys(MODEL_KEYS)))  # once, not per micro-batch
    sdpa = device.type in HOST_MASK_DEVICES and getattr(model.config, "_attn_implementation", None) == "sdpa"
    result = LoopResult()
    running = _Running(device)
    log = StepLog(callbacks, device)  # tracking (train/callbacks.py); nothing without callbacks
    model.train()
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    micro, epoch, checked = 0, 0, 0  # checked: optimizer steps whose losses are known finite
    while result.steps < total_steps:
        running.new_epoch()
        for batch in loader:
            # --- forward: the strategy decides the loss (labels, or labels + teacher) ---
            host_mask = batch["attention_mask"]
            batch = to_device(batch, device)
            mask = batch["attention_mask"]
            inputs = {k: v for k, v in batch.items() if k in accepted}
            if sdpa:
                inputs["attention_mask"] = sdpa_mask(host_mask, mask)
            # the first micro-batch's FLOPs are counted while it trains: no separate measuring step
            with counting_flops(count_flops and micro == 0) as counted:
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    outputs = forward(**inputs)
                    loss = loss_fn(batch, outputs)
                scaler.scale(loss / cfg.grad_accum).backward()
            if counted:
                result.first_step_flops, result.first_step_tokens = counted["flops"], mask.numel()
            running.add(loss, mask)  # on the device: no .item(), no int(mask.sum())
            result.samples += mask.shape[0]  # shapes are known on the host
            result.padded_tokens += mask.numel()
            micro += 1
            if micro % cfg.grad_accum:
                continue
            # --- optimizer step: clip, step, schedule, the variant's hook, zero ---
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(clipped, cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            result.steps += 1
            try:
                after_step(model, result.steps)  # AdaLoRA reads the gradients here, before zeroing
            except Exception:  # a NaN not yet checked may be what broke the hook: report the NaN then
                check_finite(running, checked + 1, result.steps)
                raise
            optimizer.zero_grad(set_to_none=True)
            # --- every CHECK_EVERY steps and on the last: one sync to see the loss is finite ---
            if result.steps % CHECK_EVERY == 0 or result.steps >= total_steps:
                check_finite(running, checked + 1, result.steps)
                checked = result.steps
            log.step(result.steps, running, scheduler, synced=checked == result.steps)
            if result.steps >= total_steps:
                break
        epoch += 1
        # a partly accumulated step at the epoch's end belongs to optimizer step steps + 1
        check_finite(running, checked + 1, result.steps + (micro % cfg.grad_accum > 0))
        checked = result.steps
        entry = {"epoch": epoch, "train_loss": float(running.loss) / max(1, running.micro)}
        result.losses.append(entry["train_loss"])
        if on_epoch_end is not None and result.steps < total_steps:
            # per-epoch evaluation is not training time: stop the clock around it
            paused = time.perf_counter()
            entry.update(on_epoch_end(epoch))
            start += time.perf_counter() - paused
            model.train()
        result.history.append(entry)
        log.epoch(entry)
    if device.type == "cuda":
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - start
    result.tokens = int(running.tokens)
    return result
