"""Grid files: a study as one YAML file, expanded into the exact list of runs it expects.

A grid names the axes of a study (families x tasks x seeds x strategies x variants) and the
hyperparameters, shared or per strategy. Any hyperparameter given as a list becomes one more axis
(`kd_temperature: [1, 2, 4]`). Expansion builds every RunConfig and keeps one run per run_id:
because a run_id only hashes the fields that matter to its strategy, an FFT teacher is never
multiplied by a student-only axis, and a LoRA-only run never by a KD axis. See docs/sweeps.md.
"""

from __future__ import annotations

import difflib
import itertools
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, create_model,
                      field_validator)

from kdlora.config import SEQUENCE_FIELDS, RunConfig, describe_validation_error, read_yaml
from kdlora.data.metrics import GLUE_TASKS
from kdlora.errors import UserError
from kdlora.strategies import STRATEGIES, ordered_strategies, teacher_of
from kdlora.variants import VARIANTS

# Sections of hyperparameters, from the most general to the most specific; later ones win.
# Every strategy has a section of its own, named as the strategy (fft:, lora:, kd-lora:, ...).
ADAPTER_STRATEGIES = tuple(s.name for s in ordered_strategies() if s.uses_adapters)
SECTION_SCOPE = {
    "hyperparameters": tuple(s.name for s in ordered_strategies()),
    "adapters": ADAPTER_STRATEGIES,
    **{s.name: (s.name,) for s in ordered_strategies()},
}
# Keys a grid sets through its axes, and keys derived from the fft section (so that a KD run's
# teacher is exactly the grid's FFT run): neither may be set as a hyperparameter.
AXIS_KEYS = ("family", "task", "seed", "strategy", "variant")
DERIVED_KEYS = {mine: (s.teacher_strategy, theirs) for s in ordered_strategies() for mine, theirs in s.teacher_fields.items()}
HYPERPARAMETERS = tuple(k for k in RunConfig.model_fields if k not in AXIS_KEYS and k not in DERIVED_KEYS)
# Grid keys whose values may be paths, resolved relative to the grid file.
PATH_KEYS = ("teacher_model", "student_model", "data_dir")
STRATEGY_ORDER = {s.name: s.order for s in ordered_strategies()}
FALLBACK_FAMILIES = {"bert": True, "roberta": True, "deberta": True, "minilm": True}


class _GridBase(BaseModel):
    """A validated grid file. Paths in it are already resolved relative to the file.
    GridConfig (below) adds one section per registered strategy."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    _runs: list[RunConfig] | None = PrivateAttr(default=None)  # expand_grid's result, once computed

    name: str | None = None
    description: str | None = None
    families: list[str] = Field(min_length=1)
    tasks: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES), min_length=1)
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS), min_length=1)
    hyperparameters: dict[str, Any] = {}
    adapters: dict[str, Any] = {}
    # Most specific of all: per variant ("adalora") or per strategy and variant ("kd-lora/adalora"),
    # e.g. a learning rate for a variant whose scaling differs (rsLoRA, AdaLoRA, MrLoRA).
    per_variant: dict[str, dict[str, Any]] = {}
    source: str | None = None  # the file it came from (set by load_grid)

    @field_validator("families", "tasks", "seeds", "strategies", "variants")
    @classmethod
    def _no_duplicates(cls, values: list) -> list:
        dup = [v for v, n in Counter(values).items() if n > 1]
        if dup:
            raise ValueError(f"listed twice: {dup[0]!r}")
        return values

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, values: list[str]) -> list[str]:
        return [_known("strategy", v, STRATEGIES) for v in values]

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, values: list[str]) -> list[str]:
        return [_known("variant", v, VARIANTS) for v in values]

    @field_validator("families")
    @classmethod
    def _known_families(cls, values: list[str]) -> list[str]:
        return [_known("family", v, tuple(known_families())) for v in values]

    @field_validator("*")
    @classmethod
    def _known_section_keys(cls, values: Any, info: ValidationInfo) -> Any:
        return cls._known_keys(values) if info.field_name in SECTION_FIELDS else values

    @classmethod
    def _known_keys(cls, values: dict[str, Any]) -> dict[str, Any]:
        for key in values:
            if key in DERIVED_KEYS:
                teacher, theirs = DERIVED_KEYS[key]
                raise ValueError(f"{key!r} is derived from the {teacher} section's {theirs!r} "
                                 f"(a run's teacher is the grid's {teacher} run); set it under {teacher}:")
            if key in AXIS_KEYS:
                raise ValueError(f"{key!r} is a grid axis; list it at the top level ({key}s:)")
            if key not in HYPERPARAMETERS:
                raise ValueError(f"unknown hyperparameter {key!r}{_suggest(key, HYPERPARAMETERS)}")
        return values

    @field_validator("per_variant")
    @classmethod
    def _known_per_variant(cls, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, settings in values.items():
            strategy, _, variant = key.rpartition("/")
            if strategy:
                _known("strategy", strategy, ADAPTER_STRATEGIES)
            _known("variant", variant, VARIANTS)
            cls._known_keys(settings)
            for name, value in settings.items():
                if _is_axis(name, value):
                    raise ValueError(f"per_variant.{key}.{name} is a list: per-variant values are single "
                                     "values; give axes in a section (adapters:, "
                                     + ", ".join(f"{s}:" for s in ADAPTER_STRATEGIES) + ")")
        return values

    def section(self, name: str) -> dict[str, Any]:
        return getattr(self, section_field(name))


def section_field(name: str) -> str:
    """The GridConfig field of a section: the strategy's name with '-' as '_' ("kd-lora" -> kd_lora)."""
    return name.replace("-", "_")


GridConfig = create_model(
    "GridConfig", __base__=_GridBase, __module__=__name__,
    **{section_field(s.name): (dict[str, Any], Field(default={}, alias=s.name)) for s in ordered_strategies()})
SECTION_FIELDS = frozenset(section_field(name) for name in SECTION_SCOPE)


def _known(kind: str, value: str, known: tuple[str, ...]) -> str:
    if value not in known:
        raise ValueError(f"unknown {kind} {value!r}; choose from: {', '.join(known)}")
    return value


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known_families() -> dict[str, bool]:
    """Family name -> whether it has a default student (models.FAMILIES when available)."""
    try:
        from kdlora.models import FAMILIES
    except ImportError:  # the model layer is optional for planning; names are stable
        return dict(FALLBACK_FAMILIES)
    return {name: FAMILIES.get(name).student is not None for name in FAMILIES}


# ----- loading ----------------------------------------------------------------------------------
def load_grid(path: str | Path) -> GridConfig:
    """Read and validate a grid file; every mistake is one UserError naming the bad key."""
    path = Path(path)
    data = read_yaml(path)
    base = path.resolve().parent
    data = {**data, "source": str(path)}
    try:
        grid = GridConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{path}: {describe_grid_error(exc)}") from None
    grid = _resolve_paths(grid, base, path)
    expand_grid(grid)  # refuse a grid whose runs cannot all be built, before anything runs (result cached)
    return grid


def describe_grid_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        top = [f.alias or n for n, f in GridConfig.model_fields.items() if n != "source"]
        return f"unknown key {loc!r}{_suggest(loc, top)}; see docs/sweeps.md"
    if err["type"] == "missing":
        return f"missing required key {loc!r}"
    if err["type"] == "too_short":
        return f"{loc!r} must list at least one value"
    return f"bad value for {loc!r}: {err['msg'].removeprefix('Value error, ')}"


def _resolve_paths(grid: GridConfig, base: Path, path: Path) -> GridConfig:
    tasks = [_resolve_task(t, base, path) for t in grid.tasks]
    sections = {}
    for name in SECTION_SCOPE:
        values = dict(grid.section(name))
        for key in PATH_KEYS:
            if key in values:
                values[key] = _map_values(values[key], key, lambda v: _resolve_path(v, base))
        sections[section_field(name)] = values
    per_variant = {k: {n: _resolve_path(v, base) if n in PATH_KEYS else v for n, v in values.items()}
                   for k, values in grid.per_variant.items()}
    return grid.model_copy(update={"tasks": tasks, "per_variant": per_variant, **sections})


def _resolve_task(task: str, base: Path, path: Path) -> str:
    if task in GLUE_TASKS:
        return task
    candidate = Path(task) if Path(task).is_absolute() else base / task
    if candidate.is_file():
        return str(candidate.resolve())
    raise UserError(f"{path}: unknown task {task!r}: not a GLUE task ({', '.join(GLUE_TASKS)}) and no "
                    f"task file {candidate}; give a GLUE name or the path of a task YAML relative to the grid")


def _resolve_path(value: Any, base: Path) -> Any:
    """A relative path that exists next to the grid becomes absolute; hub ids stay as they are."""
    if not isinstance(value, str) or Path(value).is_absolute():
        return value
    candidate = base / value
    return str(candidate.resolve()) if candidate.exists() else value


def _map_values(value: Any, key: str, fn) -> Any:
    return [fn(v) for v in value] if _is_axis(key, value) else fn(value)


# ----- expansion --------------------------------------------------------------------------------
def _is_axis(key: str, value: Any) -> bool:
    if key in SEQUENCE_FIELDS:
        return isinstance(value, list) and any(isinstance(v, (list, tuple)) for v in value)
    return isinstance(value, list)


def _axes(grid: GridConfig) -> list[tuple[str, str, list[Any]]]:
    """(section, key, values) for every hyperparameter given as a list of values."""
    out = []
    for name in SECTION_SCOPE:
        for key, value in grid.section(name).items():
            if _is_axis(key, value):
                if not value:
                    raise UserError(f"{grid.source}: {name}.{key} is an empty list; give at least one value")
                out.append((name, key, list(value)))
    return out


def _settings(grid: GridConfig, strategy: str, point: dict[tuple[str, str], Any],
              variant: str | None = None) -> dict[str, Any]:
    """The hyperparameters of one strategy (and variant) at one point of the hyperparameter axes."""
    out: dict[str, Any] = {}
    for name, scope in SECTION_SCOPE.items():
        if strategy in scope:
            for key, value in grid.section(name).items():
                out[key] = point.get((name, key), value)
    if variant is not None:
        out.update(grid.per_variant.get(variant, {}))
        out.update(grid.per_variant.get(f"{strategy}/{variant}", {}))
    return out


def _build(grid: GridConfig, data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig(**data)
    except ValidationError as exc:
        what = f"{data['family']}/{_short_task(data['task'])}/{data['strategy']}/{data.get('variant') or 'full'}"
        raise UserError(f"{grid.source}: run {what}: {describe_validation_error(exc)}") from None


def _short_task(task: str) -> str:
    return Path(task).stem if task not in GLUE_TASKS else task


def _cell(grid: GridConfig, family: str, task: str, seed: int,
          point: dict[tuple[str, str], Any]) -> list[RunConfig]:
    """Every run of one (family, task, seed, axis point): teacher runs (FFT) first, then the rest."""
    ident = {"family": family, "task": task, "seed": seed}
    single: dict[str, RunConfig] = {}  # the one run of a strategy without variants (FFT), built once

    def run_of(name: str) -> RunConfig:
        if name not in single:
            single[name] = _build(grid, {**ident, **_settings(grid, name, point), "strategy": name})
        return single[name]

    runs = []
    for strategy in (s for s in ordered_strategies() if s.name in grid.strategies):
        if not strategy.uses_adapters:
            runs.append(run_of(strategy.name))
            continue
        teacher = run_of(strategy.teacher_strategy) if strategy.teacher_strategy else None
        extra = {mine: getattr(teacher, theirs) for mine, theirs in strategy.teacher_fields.items()} if teacher else {}
        for variant in grid.variants:
            cfg = _build(grid, {**ident, **_settings(grid, strategy.name, point, variant), **extra,
                                "strategy": strategy.name, "variant": variant})
            if teacher is not None:
                _check_teacher(grid, cfg, teacher)
            runs.append(cfg)
    # the teachers are needed even when the grid does not list their strategy
    return [run for name, run in single.items() if name not in grid.strategies] + runs


def _check_teacher(grid: GridConfig, student: RunConfig, expected: RunConfig) -> None:
    families = known_families()
    name = student.strategy
    if STRATEGIES.get(name).trains_student and student.student_model is None and not families.get(student.family, False):
        raise UserError(f"{grid.source}: family {student.family!r} has no student model, so it cannot run "
                        f"{name}; set student_model under {name}: or drop {name} from strategies")
    teacher = teacher_of(student)
    if teacher.run_id != expected.run_id:
        a, b = teacher.canonical(), expected.canonical()
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise UserError(f"{grid.source}: the {name} runs' teacher would differ from the grid's "
                        f"{expected.strategy} run in {', '.join(keys)}; set these under hyperparameters: "
                        "so both strategies share them")


def expand_grid(grid: GridConfig) -> list[RunConfig]:
    """Every run the grid expects, one per run_id, FFT teachers before the runs that need them.
    Computed once per (frozen) grid: load_grid expands to validate, callers expand to use."""
    if grid._runs is None:
        grid._runs = _expand(grid)
    return list(grid._runs)


def _expand(grid: GridConfig) -> list[RunConfig]:
    axes = _axes(grid)
    seen: dict[str, RunConfig] = {}
    for family, task, seed in itertools.product(grid.families, grid.tasks, grid.seeds):
        for values in itertools.product(*(vals for _, _, vals in axes)):
            point = {(name, key): v for (name, key, _), v in zip(axes, values)}
            for cfg in _cell(grid, family, task, seed, point):
                seen.setdefault(cfg.run_id, cfg)
    # Stable sort: every FFT run first, so teachers start as early as possible.
    return sorted(seen.values(), key=lambda c: STRATEGY_ORDER[c.strategy])


def breakdown(runs: Iterable[RunConfig]) -> dict[str, Counter]:
    """Counts of runs by strategy, by strategy/variant, by family and by task."""
    runs = list(runs)
    return {
        "strategy": Counter(r.strategy for r in runs),
        "variant": Counter(f"{r.strategy}/{r.variant or 'full'}" for r in runs),
        "family": Counter(r.family for r in runs),
        "task": Counter(_short_task(r.task) for r in runs),
    }


def run_row(cfg: RunConfig) -> dict[str, Any]:
    """The identifying columns of one run (for tables and the --missing CSV)."""
    return {"family": cfg.family, "task": _short_task(cfg.task), "strategy": cfg.strategy,
            "variant": cfg.variant or "full", "seed": cfg.seed, "run_id": cfg.run_id}
