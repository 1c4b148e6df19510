"""The configuration of one run: frozen, validated, and hashed into a stable run_id.

A RunConfig holds everything needed to re-run an experiment. Defaults that depend on the
strategy (learning rate, which hyperparameters matter at all) are resolved when the config is
built, so two spellings of the same experiment get the same run_id. Fields that only say *how*
a run executes (threads, device, gradient accumulation, torch.compile) are left out of the hash: a run retried
with half the micro-batch after an out-of-memory error is still the same experiment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import operator
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from kdlora.data.identity import TaskIdentity, task_identity
from kdlora.errors import UserError
from kdlora.slugs import slug, task_slug  # noqa: F401  (kdlora.config.task_slug, as before)
from kdlora.strategies import STRATEGIES
from kdlora.variants import VARIANTS

# Fields shared by every strategy that takes a variant (adapters); a strategy's and a variant's
# own fields are declared by the plug-in (Strategy.fields, Variant.fields) and added below.
ADAPTER_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules")
# The evaluation protocol (docs/protocol.md): hashed only when set, so runs made before these
# fields existed keep their run_id.
PROTOCOL_DEFAULTS: dict[str, Any] = {"selection_fraction": 0.0, "select_best_epoch": False, "param_budget": None}


class ParamBudget(BaseModel):
    """Match every adapter's trainable parameters to `reference` (a variant) at rank `r`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: str = "lora"
    r: int = 8
    tolerance: float = 0.15  # refuse when no size comes within this fraction of the reference
# How a run executes, not what it computes: excluded from the run_id.
EXECUTION_FIELDS = ("grad_accum", "threads", "device", "compile", "track", "tracking_uri")
# What a teacher run does not share with its student: the identity of the student's method and
# the optimisation settings the strategy gives the teacher (teacher_lr -> lr, ...).
NOT_SHARED_WITH_TEACHER = ("strategy", "variant", "lr", "epochs", "batch_size", "grad_accum", "param_budget")
MIN_MAX_LENGTH = 8  # [CLS] + [SEP] (x2 for pairs) leave room for a few tokens of text

# The valid range of every numeric setting: (low, low included, high, high included); None = open.
# Checked when a config is built (one line, exit 2, nothing written); a new numeric field adds a line
# here, or, a plug-in's own field, in its declaration (Strategy/Variant.fields: the 4th element).
RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "seed": (0, True, 2**32 - 1, True),  # numpy's seed range
    "lr": (0, False, None, False),
    "epochs": (0, False, None, False),
    "batch_size": (0, False, None, False),
    "max_length": (MIN_MAX_LENGTH, True, None, False),
    "warmup_ratio": (0, True, 1, True),
    "weight_decay": (0, True, None, False),
    "max_grad_norm": (0, False, None, False),  # <= 0 would flip or zero the gradient
    "max_train_samples": (0, False, None, False),
    "max_eval_samples": (0, False, None, False),
    "selection_fraction": (0, True, 0.5, True),
    "r": (0, False, None, False),
    "lora_alpha": (0, False, None, False),
    "lora_dropout": (0, True, 1, False),
    "grad_accum": (0, False, None, False),
    "threads": (0, False, None, False),
}


def range_text(name: str) -> str:
    low, low_in, high, high_in = RANGES[name]
    if high is None:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def out_of_range(name: str, value: float) -> bool:
    low, low_in, high, high_in = RANGES[name]
    if isinstance(value, float) and not math.isfinite(value):
        return True
    if low is not None and (value < low or (value == low and not low_in)):
        return True
    return high is not None and (value > high or (value == high and not high_in))


class _RunConfigBase(BaseModel):
    """The fields every run has; RunConfig (below) adds those its plug-ins declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # what is trained
    family: str
    task: str
    strategy: str  # a name in kdlora.strategies.STRATEGIES
    variant: str | None = "lora"
    seed: int = 42
    teacher_model: str | None = None  # hub id or local path; default from the family table
    data_dir: str | None = None  # local GLUE directory (TSV layout or save_to_disk)
    metric_policy: Literal["glue", "legacy"] = "glue"

    # optimisation (shared by every strategy)
    lr: float | None = None
    epochs: float = 3.0
    batch_size: int = 32  # effective batch per optimizer step
    max_length: int = 128
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    group_by_length: bool = False
    eval_every_epoch: bool = False
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    # evaluation protocol: a selection set carved out of train (never trained on), best epoch on it
    selection_fraction: float = 0.0
    select_best_epoch: bool = False
    param_budget: ParamBudget | None = None  # adapter size matched in trainable params (docs/protocol.md)

    # adapters
    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None

    # execution only (not hashed)
    grad_accum: int = 1
    threads: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False  # torch.compile the model's forward (train/loop.py); same numbers, maybe faster
    track: str | None = None  # training curves to "tensorboard" and/or "mlflow" (comma-separated; kdlora/tracking.py)
    tracking_uri: str | None = None  # MLflow tracking URI [default: sqlite:///RESULTS/mlflow.db]

    @model_validator(mode="before")
    @classmethod
    def _resolve_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        strategy = STRATEGIES.get(data["strategy"]) if data.get("strategy") in STRATEGIES else None
        if strategy is not None and not strategy.uses_adapters:
            data["variant"] = None
        elif data.get("variant") is None:
            data["variant"] = "lora"
        if strategy is not None:
            if data.get("lr") is None:
                data["lr"] = strategy.default_lr
            data = strategy.resolve(data)
        if data.get("variant") in VARIANTS:
            data = VARIANTS.get(data["variant"]).resolve(data)
        for key in SEQUENCE_FIELDS:
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        return data

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; choose one of: {', '.join(STRATEGIES)}")
        return v

    @field_validator("track", mode="before")
    @classmethod
    def _known_trackers(cls, v: Any) -> str | None:
        if v is None:  # parse_track(None), the usual case, without the import statement per config
            return None
        from kdlora.tracking import parse_track

        return parse_track(",".join(v) if isinstance(v, (list, tuple)) else v)

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, v: str | None) -> str | None:
        if v is not None and v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose one of: {', '.join(VARIANTS)}")
        return v

    @model_validator(mode="after")
    def _check_values(self) -> RunConfig:
        _check_ranges(self.__dict__)
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.param_budget is not None:
            if self.param_budget.reference not in VARIANTS:
                raise ValueError(f"param_budget.reference {self.param_budget.reference!r} is not a variant; "
                                 f"choose one of: {', '.join(VARIANTS)}")
            if self.param_budget.r <= 0 or not 0 < self.param_budget.tolerance < 1:
                raise ValueError("param_budget needs r > 0 and a tolerance in (0, 1)")
        if self.select_best_epoch and self.selection_fraction == 0 and not task_has_selection_file(self.task):
            raise ValueError("select_best_epoch needs a selection split: set selection_fraction > 0 "
                             "(or give the task a test: file, making validation the selection split)")
        STRATEGIES.get(self.strategy).validate(self)
        if self.variant is not None:
            VARIANTS.get(self.variant).validate(self)
        return self

    # ----- identity -------------------------------------------------------------------------
    @functools.cached_property
    def task_identity(self) -> TaskIdentity:
        """The task's name and data fingerprint (data/identity.py); never its path."""
        return task_identity(self.task, self.data_dir)

    @property
    def task_name(self) -> str:
        """The task's short name in run_ids, tables and status (from its `name:`, not its file name)."""
        return slug(self.task_identity.name)

    def canonical(self) -> dict[str, Any]:
        """The fields that define the experiment, irrelevant groups dropped. The task is its
        identity (name + data fingerprint) and data_dir is folded into it: no path is hashed."""
        data = self.model_dump(mode="json")
        keep = self._hashed_fields(data)
        data["task"] = self.task_identity.as_dict()
        return {k: data[k] for k in keep}

    def hashed_fields(self) -> list[str]:
        """The names of the fields canonical() keeps (reads no task file), sorted."""
        return self._hashed_fields(self.model_dump(mode="json"))

    def _hashed_fields(self, data: dict[str, Any]) -> list[str]:
        """hashed_fields() of this config's model_dump(mode="json") `data` (dumped once by canonical)."""
        strategy = STRATEGIES.get(self.strategy)
        variant = VARIANTS.get(self.variant) if self.variant else None
        try:
            kept = _kept_fields(strategy, variant, tuple(data))
        except TypeError:  # a plug-in object that is not hashable (it defines __eq__ only): not cached
            kept = _kept_fields.__wrapped__(strategy, variant, tuple(data))
        return [k for k in kept if k not in PROTOCOL_DEFAULTS or data[k] != PROTOCOL_DEFAULTS[k]]

    @functools.cached_property  # a frozen model: computed once (a 1,000-run grid asks ~5 times per run)
    def run_id(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        parts = [self.family, self.task_name, self.strategy, self.variant or "full", f"s{self.seed}"]
        return "-".join(parts) + "-" + digest

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> RunConfig:
        copy = super().model_copy(update=update, deep=deep)
        for cached in ("run_id", "task_identity"):  # cached values belong to the original's fields
            copy.__dict__.pop(cached, None)
        return copy

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum

    def own_fields(self) -> tuple[str, ...]:
        """The plug-in fields that belong to this run: its strategy's, and its variant's."""
        own = tuple(STRATEGIES.get(self.strategy).fields)
        return own + (tuple(VARIANTS.get(self.variant).fields) if self.variant else ())

    def shared_with_teacher(self) -> dict[str, Any]:
        """The settings a teacher run takes from its student: every field that belongs to no
        plug-in, to no adapter, and is not the student's own method or optimisation."""
        names, values = _shared_with_teacher(type(self))
        return dict(zip(names, values(self.__dict__)))

    def with_updates(self, **changes: Any) -> RunConfig:
        data = self.model_dump()
        data.update(changes)
        return build_config(data)


# Tuples of range-checked values (RANGES order) that passed: a grid's thousands of configs repeat a
# few such tuples, and the check is a pure function of the values and RANGES, which is complete
# once RunConfig exists (plugin_fields adds the plug-ins' ranges at import). A failure is never
# stored, so its message is always made afresh. Bounded: cleared when full.
_RANGES_OK: set[tuple] = set()


@functools.lru_cache(maxsize=None)
def _range_values(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple]:
    """The values of `names` (RANGES' keys, say) in a config's field dict, as one tuple."""
    if len(names) == 1:
        return lambda fields: (fields[names[0]],)
    return operator.itemgetter(*names)


def _check_ranges(fields: dict[str, Any]) -> None:
    """Refuse a value out of its RANGES range (out_of_range, inlined: ~25 fields per config)."""
    try:
        key = _range_values(tuple(RANGES))(fields)
    except KeyError:  # not every field set (not a validated config): each read as getattr would
        key = tuple(fields.get(name) for name in RANGES)
    try:
        if key in _RANGES_OK:
            return
    except TypeError:  # an unhashable value (not a number): checked below, as always
        key = None
    isfinite = math.isfinite
    for (name, (low, low_in, high, high_in)), value in zip(RANGES.items(), key or [fields.get(n) for n in RANGES]):
        if value is None:
            continue
        if (isinstance(value, float) and not isfinite(value)) or (
                low is not None and (value < low or (value == low and not low_in))) or (
                high is not None and (value > high or (value == high and not high_in))):
            raise ValueError(f"{name} must be {range_text(name)} (got {value})")
    if key is not None:
        if len(_RANGES_OK) > 4096:
            _RANGES_OK.clear()
        _RANGES_OK.add(key)


@functools.lru_cache(maxsize=None)
def _shared_with_teacher(cls: type) -> tuple[tuple[str, ...], Callable[[dict[str, Any]], tuple]]:
    """The fields RunConfig.shared_with_teacher() copies, in field order, and a reader of their
    values from a config's field dict (every field is set on a config)."""
    skip = PLUGIN_FIELDS | set(ADAPTER_FIELDS) | set(NOT_SHARED_WITH_TEACHER)
    names = tuple(k for k in cls.model_fields if k not in skip)
    return names, _range_values(names)


@functools.lru_cache(maxsize=None)
def _kept_fields(strategy: Any, variant: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    """The sorted field names a run of this strategy and variant (plug-in objects, so a plug-in
    registered again under the same name gets its own entry) hashes, before the protocol fields
    that hold their defaults are dropped. `names`: the fields of the config's dump (every field)."""
    own = set(strategy.fields) | (set(variant.fields) if variant is not None else set())
    drop: set[str] = {*EXECUTION_FIELDS, "data_dir"} | (PLUGIN_FIELDS - own)
    if not strategy.uses_adapters:
        drop |= {"variant", "param_budget", *ADAPTER_FIELDS}
    return tuple(sorted(k for k in names if k not in drop))


def plugin_fields() -> dict[str, tuple[Any, Any]]:
    """Every field the registered strategies and variants declare, as pydantic field definitions.
    Two plug-ins may share a field (kd-lora-hidden takes kd-lora's) only with one definition."""
    out: dict[str, tuple[Any, Any]] = {}
    seen: dict[str, tuple] = {}
    plugins = [STRATEGIES.get(n) for n in STRATEGIES] + [VARIANTS.get(n) for n in VARIANTS]
    for plugin in plugins:
        for name, spec in plugin.fields.items():
            if name in _RunConfigBase.model_fields:
                raise ValueError(f"{plugin.name} declares {name!r}, a field every run has")
            if name in seen and seen[name] != spec:
                raise ValueError(f"{name!r} is declared twice, differently ({plugin.name})")
            seen[name] = spec
            kind, default, help_text, *valid = spec
            out[name] = (kind, Field(default, description=help_text))
            if valid:
                RANGES[name] = valid[0]
    return out


RunConfig = create_model("RunConfig", __base__=_RunConfigBase, __module__=__name__, **plugin_fields())
RunConfig.__doc__ = "One run's configuration: the shared fields plus those of every registered plug-in."
PLUGIN_FIELDS = frozenset(RunConfig.model_fields) - frozenset(_RunConfigBase.model_fields)
# Fields whose single value is itself a list (a grid axis of them is a list of lists).
SEQUENCE_FIELDS = tuple(n for n, f in RunConfig.model_fields.items() if "tuple" in str(f.annotation))


@functools.lru_cache(maxsize=256)
def task_has_selection_file(task: str) -> bool:
    """Whether a task YAML names a test file (its validation file is then the selection split).
    An unreadable file answers True: resolving the task reports what is wrong with it."""
    if not task.endswith((".yaml", ".yml")):
        return False
    try:
        data = yaml.safe_load(Path(task).expanduser().read_text())
    except (OSError, yaml.YAMLError):
        return True
    return not isinstance(data, dict) or bool(data.get("test"))


def build_config(data: dict[str, Any]) -> RunConfig:
    """Validate a dict into a RunConfig, turning pydantic's report into one clear line."""
    try:
        return RunConfig(**data)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r}; check its spelling (see docs/configuration.md)"
    if err["type"] == "missing":
        return f"missing required key {loc!r}"
    return f"bad value for {loc!r}: {msg}" if loc != "config" else msg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe-load a YAML mapping, with one clear line for every way it can be wrong."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of keys to values at the top level")
    return data


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars/lists (lr=1e-4, ranks=[8,4])."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UserError(f"--set {key}: cannot parse value {raw!r}") from None
    return out
