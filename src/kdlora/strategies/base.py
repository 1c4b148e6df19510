"""The strategy plug-in interface: which model is trained, what its loss is, and what it is.

The training loop is the same for every strategy; a strategy hands it a model and a loss
function (plus, if it needs them, extra trainable modules and an online teacher), and the variant
hands it an after-step hook. No `is_kd` flag lives in the loop.

A strategy also says what it is, so that no module outside strategies/ tests its name: its
config fields (hashed only into its own runs' run_ids), default learning rate, whether it takes a
variant, its teacher run (`teacher(cfg)`), whether it trains the small student, its display label
and report order, and which comparisons it takes part in. All of it is importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from kdlora.registry import Registry

# kdlora.config.RunConfig, not imported: config builds RunConfig from these plug-ins' declarations,
# so the plug-ins take a config without depending on config.py.
RunConfig = Any

if TYPE_CHECKING:
    import torch

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
    # Modules trained with the model but not part of it (a projection between hidden widths):
    # their parameters join the optimizer and the trainable count.
    extra_modules: dict[str, torch.nn.Module] = field(default_factory=dict)
    # A teacher that runs online in this process (its outputs cannot be cached): moved to the
    # device, kept in eval mode with gradients off; the loss function calls it.
    teacher: torch.nn.Module | None = None
    # Efficiency fields known only after training (the online teacher's measured cost).
    measured: Callable[[], dict[str, Any]] | None = None


# A config field a plug-in declares: (type, default, help). config.py adds it to RunConfig; a
# strategy's fields are hashed only into its own runs, a variant's only into runs of that variant.
# An optional 4th element is its valid range (low, low included, high, high included), None = open,
# checked when a config is built (config.RANGES).
FieldSpec = tuple[Any, ...]


class Strategy:
    name = "base"
    label = "base"  # how reports, tables and figures name it
    short_label = ""  # a shorter one for narrow tables (default: label)
    order = 99  # its place in reports (lower first)
    color = "#7f7f7f"  # in figures: its points and bars, and the colour map of its variants' shades
    colormap = "Greens"
    default_lr = 5e-4
    uses_adapters = True  # takes a variant (adapters); False: every weight trains (FFT)
    trains_student = False  # True: the small student model is trained, else the teacher-size one
    reference = False  # the baseline every other strategy is compared with ("<method> vs FFT")
    compare_with: str | None = None  # per variant, "this vs <that strategy>" (distilled vs LoRA-only)
    teacher_strategy: str | None = None  # the strategy of its teacher run (see teacher())
    teacher_fields: dict[str, str] = {}  # own field -> the teacher run's field it sets
    fields: dict[str, FieldSpec] = {}
    in_default_grid = True  # run by a grid that lists no strategies (new plug-ins opt in by being listed)

    def resolve(self, data: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults that depend on other settings, before validation (returns a new dict)."""
        return data

    def validate(self, cfg: RunConfig) -> None:
        """Refuse impossible values of this strategy's fields (raise ValueError)."""

    def teacher_inputs(self, cfg: RunConfig) -> dict[str, Any] | None:
        """The fields the teacher run is built (validated) from: teacher(cfg) is
        type(cfg)(**teacher_inputs(cfg)). None: no teacher."""
        return None

    def teacher(self, cfg: RunConfig) -> RunConfig | None:
        """The run whose trained model teaches this one (None: no teacher). A strategy says what
        its teacher is built from (teacher_inputs); one that overrides this method instead still
        works, only TeacherRunIds cannot share the work of its students' teachers."""
        inputs = self.teacher_inputs(cfg)
        return None if inputs is None else type(cfg)(**inputs)

    def check(self, cfg: RunConfig) -> None:
        """Refuse what cannot run, before anything is loaded."""

    def setup(self, ctx: RunContext) -> Setup:
        raise NotImplementedError


STRATEGIES: Registry[Strategy] = Registry("strategy")


def register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES.add(cls.name, cls())
    return cls


def teacher_of(cfg: RunConfig) -> RunConfig | None:
    """The run that teaches `cfg` (None when its strategy has no teacher)."""
    return STRATEGIES.get(cfg.strategy).teacher(cfg)


def teacher_run_id(cfg: RunConfig) -> str | None:
    teacher = teacher_of(cfg)
    return None if teacher is None else teacher.run_id


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _tagged(value: Any) -> Any:
    """`value` with the type of every part, so that 1, 1.0 and True (equal in Python, dumped
    differently into a run_id) are different cache keys."""
    if isinstance(value, (tuple, list)):
        return type(value), tuple(_tagged(v) for v in value)
    return type(value), value


class TeacherRunIds:
    """teacher_run_id(cfg) for many configs, each distinct teacher built and hashed once.

    A grid or a study has many students per teacher (every variant of a cell distils from one FFT
    run); building each student's teacher config again (pydantic validation + canonical JSON +
    sha256) was a third of a large grid's expansion. The teacher is a function of
    teacher_inputs(cfg) alone (Strategy.teacher builds exactly type(cfg)(**inputs), validated as
    always), so equal inputs -- same keys, values and types -- give the same run_id. Use one per
    expansion or load: the teacher's run_id also hashes its task's data fingerprint, which a
    long-lived cache could hold after the task's files changed."""

    def __init__(self) -> None:
        self._ids: dict[Any, str] = {}

    def __call__(self, cfg: RunConfig) -> str | None:
        strategy = STRATEGIES.get(cfg.strategy)
        if type(strategy).teacher is not Strategy.teacher:  # teacher() overridden: not from teacher_inputs
            return teacher_run_id(cfg)
        inputs = strategy.teacher_inputs(cfg)
        if inputs is None:
            return None
        try:
            values = tuple(inputs.values())
            types = tuple(map(type, values))
            if not _SCALARS.issuperset(types):  # a tuple's items: their types too
                types = tuple(_tagged(v) for v in values)
            key = (type(cfg), tuple(inputs), values, types)
            run_id = self._ids.get(key)
        except TypeError:  # an unhashable value: built every time
            return type(cfg)(**inputs).run_id
        if run_id is None:
            run_id = self._ids[key] = type(cfg)(**inputs).run_id
        return run_id


def ordered_strategies() -> list[Strategy]:
    """Every registered strategy in report order."""
    return sorted((STRATEGIES.get(n) for n in STRATEGIES), key=lambda s: s.order)


def reference_strategy() -> str | None:
    """The name of the strategy the others are compared with (FFT), if one is registered."""
    return next((s.name for s in ordered_strategies() if s.reference), None)
