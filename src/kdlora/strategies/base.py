"""The strategy plug-in interface: which model is trained and what its loss is.

The training loop is the same for every strategy; a strategy hands it a model and a loss
function, and the variant hands it an after-step hook. No `is_kd` flag lives in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from kdlora.registry import Registry

if TYPE_CHECKING:
    import torch

    from kdlora.config import RunConfig
    from kdlora.data.tasks import TaskSpec


@dataclass
class RunContext:
    """What a strategy may use to build its model and loss."""

    cfg: RunConfig
    spec: TaskSpec
    results_dir: Path
    splits: Any  # raw DatasetDict (text, label, idx)
    train_data: Any  # tokenised train split of the trained model's tokenizer
    total_steps: int
    device: torch.device


def model_loss(batch: dict, outputs) -> torch.Tensor:
    """The model's own loss: cross-entropy, or MSE for regression (plus any variant regulariser)."""
    return outputs.loss


@dataclass
class Setup:
    model: torch.nn.Module
    loss: Callable[[dict, Any], torch.Tensor] = model_loss
    # Extra efficiency fields (e.g. the teacher's cost for KD-LoRA) and the teacher's run_id.
    efficiency: dict[str, Any] = field(default_factory=dict)
    teacher_run_id: str | None = None


class Strategy:
    name = "base"
    trains_student = False  # True: the small student model is trained, else the teacher-size one

    def check(self, cfg: RunConfig) -> None:
        """Refuse what cannot run, before anything is loaded."""

    def setup(self, ctx: RunContext) -> Setup:
        raise NotImplementedError


STRATEGIES: Registry[Strategy] = Registry("strategy")


def register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES.add(cls.name, cls())
    return cls
