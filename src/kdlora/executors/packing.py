"""Several runs on one GPU: which GPU a run goes to, and whether it may start now.

A LoRA run on BERT-base at batch 32 needs a few GB of an 80-141 GB GPU and, with GLUE's short
sequences, leaves it mostly idle between kernel launches; several such runs side by side (each
in its own process) keep it busy. Two ways to say how many:

- `runs_per_gpu=K`: at most K runs per GPU, placed on the GPU running the fewest.
- `runs_per_gpu="auto"`: a run is admitted on a GPU when the GPU's free memory, less what the
  runs already placed there may still claim, exceeds the run's peak plus a margin. The peak is
  the one measured by an earlier run of the same shape (model, strategy, micro-batch, length:
  read from its record), else an estimate from the model's size (ESTIMATE_SHAPES). A GPU with no
  run of ours always takes one, so a sweep can never stall; at most `max_per_gpu` per GPU (each
  run's Python thread launches its own kernels: more runs than CPU cores only queue). The first
  run refused for memory holds its room: later runs start only where both fit, so a large FFT
  run is not kept out for ever by a stream of small LoRA runs.

Nothing here imports torch: free memory comes from an injectable probe (NVML, else nvidia-smi),
so the admission rule is tested on CPU with a fake probe.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Union

from kdlora.strategies import STRATEGIES

GiB = 1024**3
# What a CUDA process holds beyond the allocator's peak: its context and cuBLAS/cuDNN workspaces.
CONTEXT_BYTES = 1 * GiB
MARGIN_FRACTION, MARGIN_BYTES = 0.10, 1 * GiB  # admission margin: 10 % of the peak plus 1 GiB
WAITING_TTL_S = 30.0  # a refused run not asked about for this long no longer holds room

# (parameters, hidden size, layers, attention has SDPA) of the models the families name.
ESTIMATE_SHAPES = {
    "bert-base-uncased": (110e6, 768, 12, True),
    "distilbert-base-uncased": (66e6, 768, 6, True),
    "roberta-base": (125e6, 768, 12, True),
    "distilroberta-base": (82e6, 768, 6, True),
    "microsoft/deberta-v3-base": (184e6, 768, 12, False),
    "microsoft/deberta-v3-small": (141e6, 768, 6, False),
    "<minilm>": (22.7e6, 384, 6, True),
}
UNKNOWN_SHAPE = (184e6, 1024, 12, False)  # a local path we know nothing of: assume a large base model

RunsPerGpu = Union[int, str]
Probe = Callable[[str], Union[int, None]]  # GPU id -> free bytes (None: unknown)


def parse_runs_per_gpu(value: str | int | None) -> RunsPerGpu | None:
    """`--runs-per-gpu K` (K >= 1) or `auto`; None leaves one run per GPU."""
    from kdlora.errors import UserError

    if value is None or value == "auto":
        return value
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = 0
    if k < 1:
        raise UserError(f"--runs-per-gpu takes a whole number >= 1 or 'auto' (got {value!r})")
    return k


def shape_key(cfg) -> tuple:
    """Runs with the same key have the same memory peak: the model trained and how."""
    from kdlora.models import model_names

    teacher, student = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
    model = student if STRATEGIES.get(cfg.strategy).trains_student else teacher
    return (model, cfg.strategy, cfg.variant, cfg.micro_batch_size, cfg.max_length, cfg.precision)


def estimate_peak_bytes(cfg) -> int:
    """A conservative training peak from the model's size: fp32 weights, gradients and AdamW
    state of the trainable part, activations of one micro-batch at full length (bf16, ~34 bytes
    per token, hidden unit and layer; attention scores too where there is no SDPA), and for
    KD-LoRA the teacher's weights (loaded once to build the logit cache)."""
    from kdlora.models import model_names

    teacher, student = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
    model = student if STRATEGIES.get(cfg.strategy).trains_student else teacher
    params, hidden, layers, sdpa = ESTIMATE_SHAPES.get(model, UNKNOWN_SHAPE)
    trainable = 0.05 * params if STRATEGIES.get(cfg.strategy).uses_adapters else params  # adapters + head: a few % at most
    tokens = cfg.micro_batch_size * cfg.max_length
    activations = tokens * hidden * layers * 34
    if not sdpa:
        heads = hidden // 64
        activations += 5 * heads * cfg.max_length * tokens * layers
    total = params * 4 + trainable * 12 + activations
    if STRATEGIES.get(cfg.strategy).teacher_strategy:
        total += ESTIMATE_SHAPES.get(teacher, UNKNOWN_SHAPE)[0] * 4
    return int(total)


def nvml_free_bytes(gpu: str) -> int | None:
    """Free memory of GPU `gpu` (an index as in CUDA_VISIBLE_DEVICES) through NVML or nvidia-smi."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(int(gpu))).free)
    except Exception:  # no nvidia-ml-py, no driver, or a GPU UUID: ask nvidia-smi
        pass
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--id={gpu}", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
        return int(float(out.stdout.strip().splitlines()[0])) * 1024**2
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass
class GpuPacker:
    gpus: list[str]
    runs_per_gpu: RunsPerGpu = 1
    probe: Probe = nvml_free_bytes
    max_per_gpu: int = 8
    measured: dict[tuple, int] = field(default_factory=dict)  # shape key -> peak bytes seen
    placed: dict[str, dict[str, int]] = field(default_factory=dict)  # gpu -> {run_id: booked bytes}

    probe_ttl_s: float = 2.0  # a probe (an NVML call, or an nvidia-smi process) serves this long
    _probed: dict[str, tuple[float, int | None]] = field(default_factory=dict)
    _waiting: tuple[str, int, float] | None = None  # (run_id, bytes it needs, when it last asked)

    def __post_init__(self) -> None:
        self.placed = {g: {} for g in self.gpus}

    def _free(self, gpu: str) -> int | None:
        """The probe's answer, reused for probe_ttl_s: a scheduler asks for every waiting run."""
        now = time.monotonic()
        hit = self._probed.get(gpu)
        if hit is None or now - hit[0] > self.probe_ttl_s:
            hit = self._probed[gpu] = (now, self.probe(gpu))
        return hit[1]

    @property
    def capacity(self) -> int:
        per_gpu = self.runs_per_gpu if isinstance(self.runs_per_gpu, int) else self.max_per_gpu
        return max(1, len(self.gpus) * per_gpu)

    def peak_bytes(self, cfg) -> int:
        """The measured peak of this shape (plus the CUDA context), else the estimate."""
        seen = self.measured.get(shape_key(cfg))
        return seen + CONTEXT_BYTES if seen is not None else estimate_peak_bytes(cfg) + CONTEXT_BYTES

    def choose(self, cfg) -> str | None:
        """The GPU this run would start on now, or None if it must wait."""
        if not self.gpus:
            return None
        if isinstance(self.runs_per_gpu, int):
            gpu = min(self.gpus, key=lambda g: len(self.placed[g]))
            return gpu if len(self.placed[gpu]) < self.runs_per_gpu else None
        need = self.peak_bytes(cfg)
        need += int(need * MARGIN_FRACTION) + MARGIN_BYTES
        held = self._held_for_other(cfg)
        best, best_room = None, None
        for gpu in self.gpus:
            ours = self.placed[gpu]
            if len(ours) >= self.max_per_gpu:
                continue
            if not ours:  # an empty GPU always takes one run
                return gpu
            free = self._free(gpu)
            if free is None:
                continue  # cannot tell: no second run on it
            # Runs placed here may not have allocated yet: count each one's whole peak again,
            # on top of what the GPU already reports in use (safe, at the price of admitting less).
            room = free - sum(ours.values())
            if room >= need + held and (best_room is None or room > best_room):
                best, best_room = gpu, room
        if best is None and self._waiting is None and any(len(self.placed[g]) < self.max_per_gpu for g in self.gpus):
            # refused for memory: hold its room, so that smaller runs cannot keep it out forever
            self._waiting = (cfg.run_id, need, time.monotonic())
        return best

    def _held_for_other(self, cfg) -> int:
        """Room held for the run refused first (a big FFT run among small LoRA ones): others are
        admitted only where both fit, until it starts or stops asking (WAITING_TTL_S)."""
        if self._waiting is None:
            return 0
        run_id, need, asked = self._waiting
        if run_id == cfg.run_id:
            self._waiting = (run_id, need, time.monotonic())
            return 0
        if time.monotonic() - asked > WAITING_TTL_S:  # it no longer waits (settled, or taken elsewhere)
            self._waiting = None
            return 0
        return need

    def place(self, cfg) -> str:
        gpu = self.choose(cfg)
        if gpu is None:
            raise RuntimeError(f"no GPU has room for {cfg.run_id}; ask choose() first")
        self.placed[gpu][cfg.run_id] = self.peak_bytes(cfg)
        self._probed.pop(gpu, None)
        if self._waiting is not None and self._waiting[0] == cfg.run_id:
            self._waiting = None
        return gpu

    def release(self, gpu: str, cfg, peak_bytes: int | None = None) -> None:
        """The run ended; a measured peak (its record's CUDA peak) serves later runs of its shape."""
        self.placed[gpu].pop(cfg.run_id, None)
        self._probed.pop(gpu, None)
        if peak_bytes:
            self.learn(cfg, peak_bytes)

    def learn(self, cfg, peak_bytes: int) -> None:
        key = shape_key(cfg)
        self.measured[key] = max(peak_bytes, self.measured.get(key, 0))


def measured_peak(record) -> int | None:
    """A record's CUDA peak (reserved if known: what the process held), else None."""
    eff = getattr(record, "efficiency", None)
    if eff is None or eff.memory_kind != "cuda_max_allocated":
        return None
    return eff.peak_memory_reserved_bytes or eff.peak_memory_bytes


# ----- CUDA MPS ------------------------------------------------------------------------------
MPS_CONTROL = "nvidia-cuda-mps-control"


def start_mps() -> dict[str, str]:
    """Start a private CUDA MPS control daemon for this sweep (runs sharing a GPU then share one
    CUDA context scheduler, so their kernels overlap instead of time-slicing). Returns the
    environment every run needs to reach it. Needs the daemon binary of the NVIDIA driver."""
    import os
    import tempfile

    from kdlora.errors import UserError

    exe = shutil.which(MPS_CONTROL)
    if exe is None:
        raise UserError(f"--mps needs CUDA MPS: {MPS_CONTROL} (part of the NVIDIA driver) is not on PATH")
    root = tempfile.mkdtemp(prefix="kdlora-mps-")  # short: the pipe is a unix socket (108-byte paths)
    env = {"CUDA_MPS_PIPE_DIRECTORY": os.path.join(root, "pipe"), "CUDA_MPS_LOG_DIRECTORY": os.path.join(root, "log")}
    for path in env.values():
        os.makedirs(path, exist_ok=True)
    done = subprocess.run([exe, "-d"], env={**os.environ, **env}, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30)
    if done.returncode != 0:
        raise UserError(f"could not start CUDA MPS ({MPS_CONTROL} -d): {(done.stderr or done.stdout).strip()}")
    return env


def stop_mps(env: dict[str, str]) -> None:
    import os

    exe = shutil.which(MPS_CONTROL)
    if exe is not None:
        subprocess.run([exe], input="quit\n", env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    shutil.rmtree(os.path.dirname(env["CUDA_MPS_PIPE_DIRECTORY"]), ignore_errors=True)
