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
from typing import Any, Callable, Iterable, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, create_model,
                      field_validator)

from kdlora.config import SEQUENCE_FIELDS, RunConfig, describe_validation_error, read_yaml
from kdlora.data.identity import check_unique_names
from kdlora.data.metrics import GLUE_TASKS
from kdlora.errors import UserError
from kdlora.strategies import STRATEGIES, TeacherRunIds, ordered_strategies, teacher_of
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
DERIVED_KEYS = {mine: theirs for s in ordered_strategies() for mine, theirs in s.teacher_fields.items()}
DERIVED_FROM = {mine: s.teacher_strategy for s in ordered_strategies() for mine in s.teacher_fields}
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
    _pending: list[RunConfig] = PrivateAttr(default_factory=list)  # students awaiting the teacher selection
    _matches: dict[tuple, Any] = PrivateAttr(default_factory=dict)  # param_budget sizes, for kdlora plan
    _sizes: Any = PrivateAttr(default=None)  # kdlora.param_budget.Sizes: counted or saved sizes (load_grid's)

    name: str | None = None
    description: str | None = None
    families: list[str] = Field(min_length=1)
    tasks: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    strategies: list[str] = Field(default_factory=lambda: default_names(STRATEGIES), min_length=1)
    variants: list[str] = Field(default_factory=lambda: default_names(VARIANTS), min_length=1)
    hyperparameters: dict[str, Any] = {}
    adapters: dict[str, Any] = {}
    # Most specific of all: per variant ("adalora") or per strategy and variant ("kd-lora/adalora"),
    # e.g. a learning rate for a variant whose scaling differs (rsLoRA, AdaLoRA, MrLoRA).
    per_variant: dict[str, dict[str, Any]] = {}
    # The protocol (docs/protocol.md). search: candidate values per method, each candidate a run
    # ({lora: {lr: [...]}, kd-lora: {...}, fft: {...}, per_variant: {dora: {lr: [...]}}}).
    search: dict[str, dict[str, Any]] = {}
    # Settings that vary together, one axis point per entry ([{r: 8, lora_alpha: 16}, ...]).
    zip_: list[dict[str, Any]] = Field(default=[], alias="zip")
    allow_unequal_budget: bool = False
    # With an FFT search, KD-LoRA students distil from the FFT candidate the protocol selects (best
    # mean selection metric over seeds, per family and task), or from every candidate.
    teachers: Literal["selected", "every"] = "selected"
    # Adapter sizes matched in trainable parameters to a reference ({reference: lora, r: 8}).
    param_budget: dict[str, Any] | None = None
    # How the sweep runs (not what): SLURM partition, time limit, resources per run; CLI options win.
    executor: dict[str, Any] = {}
    source: str | None = None  # the file it came from (set by load_grid)

    @field_validator("families", "tasks", "seeds", "strategies", "variants")
    @classmethod
    def _no_duplicates(cls, values: list) -> list:
        dup = [v for v, n in Counter(values).items() if n > 1]
        if dup:
            raise ValueError(f"listed twice: {dup[0]!r}")
        return values

    @field_validator("executor")
    @classmethod
    def _known_executor_keys(cls, section: dict[str, Any]) -> dict[str, Any]:
        from kdlora.executors.base import GRID_EXECUTOR_KEYS

        unknown = sorted(set(section) - set(GRID_EXECUTOR_KEYS))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}{_suggest(unknown[0], list(GRID_EXECUTOR_KEYS))}")
        return section

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
                teacher, theirs = DERIVED_FROM[key], DERIVED_KEYS[key]
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

    @field_validator("search")
    @classmethod
    def _known_search(cls, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, space in values.items():
            if key == "per_variant":
                for vkey, vspace in space.items():
                    strategy, _, variant = vkey.rpartition("/")
                    if strategy:
                        _known("strategy", strategy, ADAPTER_STRATEGIES)
                    _known("variant", variant, VARIANTS)
                    _check_space(vspace, f"search.per_variant.{vkey}")
            else:
                _known("search method", key, (*STRATEGIES, "per_variant"))
                _check_space(space, f"search.{key}")
        return values

    @field_validator("zip_")
    @classmethod
    def _known_zip(cls, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = [tuple(sorted(v)) for v in values]
        if values and (not keys[0] or any(k != keys[0] for k in keys)):
            raise ValueError("every zip entry must set the same, non-empty keys, e.g. [{r: 8, lora_alpha: 16}, "
                             "{r: 16, lora_alpha: 32}]")
        for entry in values:
            cls._known_keys(entry)
        return values

    def section(self, name: str) -> dict[str, Any]:
        return getattr(self, section_field(name))


def section_field(name: str) -> str:
    """The GridConfig field of a section: the strategy's name with '-' as '_' (kd-lora -> kd_lora)."""
    return name.replace("-", "_")


GridConfig = create_model(
    "GridConfig", __base__=_GridBase, __module__=__name__,
    **{section_field(s.name): (dict[str, Any], Field(default={}, alias=s.name)) for s in ordered_strategies()})
SECTION_FIELDS = frozenset(section_field(name) for name in SECTION_SCOPE)


def default_names(registry) -> list[str]:
    """A grid's default strategies or variants: the registered ones marked in_default_grid."""
    return [n for n in registry if registry.get(n).in_default_grid]


def _known(kind: str, value: str, known: tuple[str, ...]) -> str:
    if value not in known:
        raise ValueError(f"unknown {kind} {value!r}; choose from: {', '.join(known)}")
    return value


def _check_space(space: Any, where: str) -> None:
    if not isinstance(space, dict):
        raise ValueError(f"{where} must map settings to lists of candidate values, e.g. {{lr: [1e-4, 3e-4]}}")
    GridConfig._known_keys(space)
    for key, values in space.items():
        if not isinstance(values, list):
            raise ValueError(f"{where}.{key} must be a list of candidate values")
        if not values:
            raise ValueError(f"{where}.{key} is an empty list; give at least one candidate value")


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
def load_grid(path: str | Path, sizes: Any = None) -> GridConfig:
    """Read and validate a grid file; every mistake is one UserError naming the bad key.
    `sizes` (kdlora.param_budget.Sizes): param_budget sizes to reuse rather than count (with
    torch), e.g. those a sweep saved beside its results; counted ones are added to it. A grid
    with param_budget is expanded (its adapters sized) on first use instead of here, so that
    saved sizes can still be given (use_saved_sizes) and what needs no runs needs no torch."""
    path = Path(path)
    data = read_yaml(path)
    base = path.resolve().parent
    data = {**data, "source": str(path)}
    try:
        grid = GridConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{path}: {describe_grid_error(exc)}") from None
    grid = _resolve_paths(grid, base, path)
    grid._sizes = sizes
    if not has_param_budget(grid):
        expand_grid(grid)  # refuse a grid whose runs cannot all be built, before anything runs (result cached)
    return grid


def has_param_budget(grid: GridConfig) -> bool:
    """Whether any of the grid's runs has a param_budget (top level, a section, per_variant, zip, search)."""
    spaces = [*(grid.section(n) for n in SECTION_SCOPE), *grid.per_variant.values(), *grid.zip_,
              *(v for k, v in grid.search.items() if k != "per_variant"), *grid.search.get("per_variant", {}).values()]
    return grid.param_budget is not None or any("param_budget" in space for space in spaces)


def use_saved_sizes(grid: GridConfig, results: Iterable[str | Path]) -> None:
    """Size the grid's adapters with the sizes saved in each results directory's param_budget.json
    (`kdlora sweep` and `kdlora plan --results` write it) rather than by counting them with torch.
    A size not saved there is counted with torch and a note, or refused in one line without torch.
    Nothing changes for a grid already expanded or without param_budget."""
    from kdlora.param_budget import SIZES_FILE, Sizes

    results = [Path(r) for r in results]
    if grid._runs is not None or not has_param_budget(grid) or not results:
        return
    where = " or ".join(str(r / SIZES_FILE) for r in results)
    told: list[bool] = []

    def on_miss(cfg: RunConfig) -> None:
        if told:
            return
        told.append(True)
        how = f"`kdlora plan {grid.source} --results {results[0]}`"
        try:
            import torch  # noqa: F401  (counting needs it)
        except ImportError:
            raise UserError(f"its param_budget size is not in {where} and counting it needs torch; save the sizes "
                            f"with {how} where torch is installed (kdlora sweep saves them too)") from None
        import sys

        print(f"note: param_budget sizes of {grid.source} missing from {where}; counting them on meta-device models "
              f"(imports torch); {how} saves them", file=sys.stderr)

    saved = Sizes.read(results, on_miss=on_miss)
    if grid._sizes is not None:
        saved.entries = {**saved.entries, **grid._sizes.entries}
    grid._sizes = saved


def describe_grid_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        top = [f.alias or n for n, f in GridConfig.model_fields.items() if n not in ("source", "zip_")] + ["zip"]
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
    if grid.zip_:
        out.append(("zip", "", list(grid.zip_)))
    return out


def _settings(grid: GridConfig, strategy: str, point: dict[tuple[str, str], Any],
              variant: str | None = None) -> dict[str, Any]:
    """The hyperparameters of one strategy (and variant) at one point of the hyperparameter axes."""
    out: dict[str, Any] = {}
    for name, scope in SECTION_SCOPE.items():
        if strategy in scope:
            for key, value in grid.section(name).items():
                out[key] = point.get((name, key), value)
    out.update(point.get(("zip", ""), {}))
    if grid.param_budget is not None and STRATEGIES.get(strategy).uses_adapters:
        out.setdefault("param_budget", grid.param_budget)
    if variant is not None:
        out.update(grid.per_variant.get(variant, {}))
        out.update(grid.per_variant.get(f"{strategy}/{variant}", {}))
    return out


def search_space(grid: GridConfig, strategy: str, variant: str | None) -> dict[str, list[Any]]:
    """The searched settings of one method: the strategy's, then the variant's, then strategy/variant's."""
    space = dict(grid.search.get(strategy, {}))
    if variant is not None:
        per_variant = grid.search.get("per_variant", {})
        space.update(per_variant.get(variant, {}))
        space.update(per_variant.get(f"{strategy}/{variant}", {}))
    return space


def candidates(grid: GridConfig, strategy: str, variant: str | None) -> list[dict[str, Any]]:
    """Every candidate setting of one method ([{}] when it is not searched)."""
    space = search_space(grid, strategy, variant)
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


# What a KD-LoRA run's teacher can be told apart by (teacher_lr, teacher_epochs, teacher_batch_size).
TEACHER_SEARCH_KEYS = tuple(DERIVED_KEYS.values())
TeacherChoice = dict[tuple[str, str], dict[str, Any]]  # (family, task) -> the chosen FFT candidate


def _build(grid: GridConfig, data: dict[str, Any]) -> RunConfig:
    what = f"{data['family']}/{_short_task(data['task'])}/{data['strategy']}/{data.get('variant') or 'full'}"
    try:
        cfg = RunConfig(**data)
    except ValidationError as exc:
        raise UserError(f"{grid.source}: run {what}: {describe_validation_error(exc)}") from None
    if cfg.param_budget is None or not STRATEGIES.get(cfg.strategy).uses_adapters:
        return cfg
    from kdlora.param_budget import Sizes, resolve  # counting imports torch; a saved size does not

    if grid._sizes is None:
        grid._sizes = Sizes()
    try:
        cfg, match = resolve(cfg, sizes=grid._sizes)
    except UserError as exc:
        raise UserError(f"{grid.source}: run {what}: {exc}") from None
    grid._matches.setdefault((cfg.family, cfg.task, cfg.strategy, cfg.variant), match)
    return cfg


def _short_task(task: str) -> str:
    return Path(task).stem if task not in GLUE_TASKS else task


def _cell(grid: GridConfig, family: str, task: str, seed: int, point: dict[tuple[str, str], Any],
          choice: TeacherChoice | None, teacher_ids: TeacherRunIds,
          memo: dict[tuple, Any] | None = None) -> tuple[list[RunConfig], list[RunConfig]]:
    """(runs, pending) of one (family, task, seed, axis point): the teacher (FFT) runs first, then
    the rest. `pending` holds one stand-in per student (KD-LoRA) whose teacher the protocol has not
    selected yet (counted by `kdlora plan`, run once the FFT search is done). `memo`: the point's
    settings and candidates, shared by every (family, task, seed) cell of that point (read only)."""
    ident = {"family": family, "task": task, "seed": seed}
    single: dict[str, list[RunConfig]] = {}  # the runs of a strategy without variants (FFT), one per candidate
    memo = {} if memo is None else memo
    if "families" not in memo:
        memo["families"] = known_families()  # asked once per point, not per student
    families = memo["families"]

    def settings(name: str, variant: str | None = None) -> dict[str, Any]:
        if ("settings", name, variant) not in memo:
            memo["settings", name, variant] = _settings(grid, name, point, variant)
        return memo["settings", name, variant]

    def cands(name: str, variant: str | None) -> list[dict[str, Any]]:
        if ("candidates", name, variant) not in memo:
            memo["candidates", name, variant] = candidates(grid, name, variant)
        return memo["candidates", name, variant]

    def runs_of(name: str) -> list[RunConfig]:
        if name not in single:
            single[name] = [_build(grid, {**ident, **settings(name), **cand, "strategy": name})
                            for cand in cands(name, None)]
        return single[name]

    runs, pending = [], []
    for strategy in (s for s in ordered_strategies() if s.name in grid.strategies):
        if not strategy.uses_adapters:
            runs.extend(runs_of(strategy.name))
            continue
        teachers = runs_of(strategy.teacher_strategy) if strategy.teacher_strategy else None
        for variant in grid.variants:
            for cand in cands(strategy.name, variant):
                data = {**ident, **settings(strategy.name, variant), **cand,
                        "strategy": strategy.name, "variant": variant}
                if teachers is None:
                    runs.append(_build(grid, data))
                    continue
                chosen = _chosen_teachers(grid, teachers, family, task, choice)
                for teacher in chosen if chosen is not None else teachers[:1]:
                    cfg = _build(grid, {**data, **{mine: getattr(teacher, theirs)
                                                   for mine, theirs in strategy.teacher_fields.items()}})
                    _check_teacher(grid, cfg, teacher, teacher_ids, families)
                    (runs if chosen is not None else pending).append(cfg)
    # the teachers are needed even when the grid does not list their strategy
    missing = [run for name, cell in single.items() if name not in grid.strategies for run in cell]
    return missing + runs, pending


def _chosen_teachers(grid: GridConfig, teachers: list[RunConfig], family: str, task: str,
                     choice: TeacherChoice | None) -> list[RunConfig] | None:
    """The FFT runs a KD-LoRA student distils from; None while the protocol has yet to choose."""
    if len(teachers) == 1 or grid.teachers == "every":
        return teachers
    picked = (choice or {}).get((family, task))
    if picked is None:
        return None
    return [t for t in teachers if all(getattr(t, k) == v for k, v in picked.items())][:1]


def _check_teacher(grid: GridConfig, student: RunConfig, expected: RunConfig, teacher_ids: TeacherRunIds,
                   families: dict[str, bool] | None = None) -> None:
    families = known_families() if families is None else families
    name = student.strategy
    if STRATEGIES.get(name).trains_student and student.student_model is None and not families.get(student.family, False):
        raise UserError(f"{grid.source}: family {student.family!r} has no student model, so it cannot run "
                        f"{name}; set student_model under {name}: or drop {name} from strategies")
    if teacher_ids(student) != expected.run_id:  # the student's own teacher, built once per distinct teacher
        a, b = teacher_of(student).canonical(), expected.canonical()
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise UserError(f"{grid.source}: the {STRATEGIES.get(name).label} runs' teacher would differ from the grid's "
                        f"{STRATEGIES.get(expected.strategy).label} run in {', '.join(keys)}; set these under "
                        "hyperparameters: so both strategies share them")


def expand_grid(grid: GridConfig, teacher_choice: TeacherChoice | None = None) -> list[RunConfig]:
    """Every run the grid expects, one per run_id, FFT teachers before the runs that need them.
    Computed once per (frozen) grid: load_grid expands to validate, callers expand to use. With an
    FFT search and `teachers: selected`, KD-LoRA students are included for the (family, task)
    cells `teacher_choice` has a teacher for (kdlora.sweep picks it from the FFT runs' records)."""
    if teacher_choice:
        return _expand(grid, teacher_choice)[0]
    if grid._runs is None:
        grid._runs, grid._pending = _expand(grid, None)
    return list(grid._runs)


def pending_students(grid: GridConfig) -> list[RunConfig]:
    """Stand-ins for the KD-LoRA runs that wait for the protocol's teacher selection (one per
    student, with the first FFT candidate as teacher): what `kdlora plan` counts for them."""
    expand_grid(grid)
    return list(grid._pending)


def teacher_strategies(grid: GridConfig) -> dict[str, list[str]]:
    """Teacher strategy -> the grid's strategies taught by its runs (fft -> [kd-lora])."""
    out: dict[str, list[str]] = {}
    for s in ordered_strategies():
        if s.name in grid.strategies and s.teacher_strategy:
            out.setdefault(s.teacher_strategy, []).append(s.name)
    return out


def needs_teacher_selection(grid: GridConfig) -> bool:
    return grid.teachers == "selected" and any(len(candidates(grid, t, None)) > 1 for t in teacher_strategies(grid))


def _expand(grid: GridConfig, choice: TeacherChoice | None) -> tuple[list[RunConfig], list[RunConfig]]:
    _check_search(grid)
    axes = _axes(grid)
    seen: dict[str, RunConfig] = {}
    waiting: dict[str, RunConfig] = {}
    teacher_ids = TeacherRunIds()  # one per expansion: a cell's students share their teacher
    points = [{(name, key): v for (name, key, _), v in zip(axes, values)}
              for values in itertools.product(*(vals for _, _, vals in axes))]
    memos: list[dict[tuple, Any]] = [{} for _ in points]  # per point: its settings, for every cell
    for family, task, seed in itertools.product(grid.families, grid.tasks, grid.seeds):
        for point, memo in zip(points, memos):
            runs, pending = _cell(grid, family, task, seed, point, choice, teacher_ids, memo)
            for cfg in runs:
                seen.setdefault(cfg.run_id, cfg)
            for cfg in pending:
                waiting.setdefault(cfg.run_id, cfg)
    if needs_teacher_selection(grid):
        from kdlora.config import task_has_selection_file

        blind = [c for c in seen.values() if c.strategy in teacher_strategies(grid) and c.selection_fraction == 0
                 and not task_has_selection_file(c.task)]
        if blind:
            raise UserError(f"{grid.source}: choosing the KD-LoRA teacher among the searched FFT runs needs a selection "
                            "split: set selection_fraction > 0 under hyperparameters (or teachers: every)")
    check_unique_names({_task_source(c): c.task_identity for c in seen.values()}, str(grid.source))
    # Stable sort: every FFT run first, so teachers start as early as possible.
    return sorted(seen.values(), key=lambda c: STRATEGY_ORDER[c.strategy]), list(waiting.values())


def _check_search(grid: GridConfig) -> None:
    """What a search can ask for: a KD-LoRA teacher is told apart only by lr, epochs and batch size,
    and choosing a teacher needs a selection split."""
    for teacher, students in teacher_strategies(grid).items():
        bad = sorted(set(grid.search.get(teacher, {})) - set(TEACHER_SEARCH_KEYS))
        if bad:
            raise UserError(f"{grid.source}: search.{teacher} may only search {', '.join(TEACHER_SEARCH_KEYS)} when the "
                            f"grid runs {', '.join(students)} (a student's teacher is named by "
                            f"{'/'.join(DERIVED_KEYS)}); not {bad}")


def budget_matches(grid: GridConfig) -> dict[tuple, Any]:
    """(family, task, strategy, variant) -> kdlora.param_budget.Match of every matched adapter."""
    expand_grid(grid)
    return dict(grid._matches)


def save_budget_sizes(grid: GridConfig, results: str | Path) -> Path | None:
    """Save the grid's param_budget sizes into results/param_budget.json (merged with those there),
    so that `kdlora report --grid` rebuilds the grid's runs without torch. None without sizes."""
    expand_grid(grid)
    return grid._sizes.write(results) if grid._sizes is not None else None


def searched_keys(grid: GridConfig) -> Callable[[RunConfig], set[str]]:
    """For budgets: the settings searched for a run's method (a KD-LoRA run's teacher settings too)."""
    def keys(cfg: RunConfig) -> set[str]:
        out = set(search_space(grid, cfg.strategy, cfg.variant))
        if STRATEGIES.get(cfg.strategy).teacher_fields:
            out |= set(STRATEGIES.get(cfg.strategy).teacher_fields)
        return out
    return keys


def grid_budgets(grid: GridConfig, runs: list[RunConfig] | None = None):
    """The budget of every method the grid compares (pending KD-LoRA students included)."""
    from kdlora.budget import budgets

    runs = expand_grid(grid) + pending_students(grid) if runs is None else runs
    return budgets(runs, searched_keys(grid), methods=grid.strategies)


def check_budgets(grid: GridConfig, budget_list) -> None:
    from kdlora.budget import unequal

    why = unequal(budget_list)
    if why and not grid.allow_unequal_budget:
        raise UserError(f"{grid.source}: unequal tuning budgets: {why}; equalise the search (search:) or set "
                        "allow_unequal_budget: true")


def _task_source(cfg: RunConfig) -> str:
    return cfg.task if cfg.data_dir is None else f"{cfg.task} (data_dir {cfg.data_dir})"


def breakdown(runs: Iterable[RunConfig]) -> dict[str, Counter]:
    """Counts of runs by strategy, by strategy/variant, by family and by task."""
    runs = list(runs)
    return {
        "strategy": Counter(r.strategy for r in runs),
        "variant": Counter(f"{r.strategy}/{r.variant or 'full'}" for r in runs),
        "family": Counter(r.family for r in runs),
        "task": Counter(r.task_name for r in runs),
    }


def run_row(cfg: RunConfig) -> dict[str, Any]:
    """The identifying columns of one run (for tables and the --missing CSV)."""
    return {"family": cfg.family, "task": cfg.task_name, "strategy": cfg.strategy,
            "variant": cfg.variant or "full", "seed": cfg.seed, "run_id": cfg.run_id}
