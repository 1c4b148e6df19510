"""Training strategies as plug-ins behind one registry: fft, lora (LoRA-only), kd-lora, kd-lora-hidden.
Adding one = a module here + its import below."""

from kdlora.strategies import fft, kd_lora, kd_lora_hidden, lora  # noqa: F401  (registration)
from kdlora.strategies.base import (STRATEGIES, RunContext, Setup, Strategy, TeacherRunIds, ordered_strategies,
                                    reference_strategy, teacher_of, teacher_run_id)

__all__ = ["STRATEGIES", "RunContext", "Setup", "Strategy", "TeacherRunIds", "ordered_strategies", "reference_strategy", "teacher_of", "teacher_run_id"]
