"""Efficiency measurements in absolute units: memory peaks, FLOPs, energy.

Each meter reports None for what the hardware cannot tell, never an estimate in its place.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from kdlora.models import matmul_params


# ----- memory -------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the peak covers training only (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Peak memory of the block. CUDA: max allocated/reserved after a reset.
    CPU: growth of peak RSS over the RSS at the start (VmHWM after resetting it)."""
    out: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize()
        out.update(peak_memory_bytes=torch.cuda.max_memory_allocated(device),
                   peak_memory_reserved_bytes=torch.cuda.max_memory_reserved(device),
                   memory_kind="cuda_max_allocated")
        return
    start = _status_kib("VmRSS")
    ok = _reset_cpu_peak() and start is not None
    yield out
    peak = _status_kib("VmHWM") if ok else None
    if peak is not None and start is not None:
        out.update(peak_memory_bytes=max(0, peak - start) * 1024, memory_kind="cpu_peak_rss_growth")


# ----- energy (NVML) ------------------------------------------------------------------------
@contextmanager
def gpu_energy(device: torch.device, interval_s: float = 0.2) -> Iterator[dict]:
    """Energy (J), mean utilisation (%) and mean power (W) through NVML; nothing on CPU."""
    out: dict = {}
    handle = _nvml_handle(device)
    if handle is None:
        yield out
        return
    import pynvml

    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            samples.append((float(util), pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0))

    energy0 = _energy_mj(handle)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
    energy1 = _energy_mj(handle)
    if energy0 is not None and energy1 is not None:
        out["energy_j"] = (energy1 - energy0) / 1000.0
    if samples:
        out["gpu_util_mean"] = sum(s[0] for s in samples) / len(samples)
        out["gpu_power_mean_w"] = sum(s[1] for s in samples) / len(samples)


def _nvml_handle(device: torch.device):
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except Exception:  # no NVML library or no permission: energy stays unknown
        return None


def _energy_mj(handle) -> float | None:
    import pynvml

    try:
        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except pynvml.NVMLError:
        return None


# ----- FLOPs --------------------------------------------------------------------------------
@contextmanager
def counting_flops(enabled: bool = True) -> Iterator[dict]:
    """FLOPs of the block in out["flops"], counted by FlopCounterMode from the shapes of every
    matmul, convolution and attention call. The engine wraps its first real training step in it,
    so the count costs no extra forward+backward and the step still trains."""
    out: dict = {}
    if not enabled:
        yield out
        return
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        yield out
    out["flops"] = counter.get_total_flops()


def analytic_flops(model, tokens: int, full: bool) -> float:
    """6·N·D for full training; 4·N·D + 6·N_trainable·D with frozen base weights (no weight
    gradients for them). N counts linear-layer weights (embeddings are lookups, not matmuls)."""
    import torch.nn as nn

    n_all = matmul_params(model)
    if full:
        return 6.0 * n_all * tokens
    n_train = sum(m.weight.numel() for m in model.modules()
                  if isinstance(m, nn.Linear) and m.weight.requires_grad)
    return 4.0 * (n_all - n_train) * tokens + 6.0 * n_train * tokens
