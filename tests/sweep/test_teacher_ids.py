"""TeacherRunIds: each distinct teacher built once, with the run_id a fresh build gives."""

from __future__ import annotations

from pathlib import Path

from kdlora.config import build_config
from kdlora.grid import expand_grid, load_grid
from kdlora.strategies import STRATEGIES, TeacherRunIds, teacher_of, teacher_run_id
from kdlora.strategies.base import _tagged

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"


def test_cached_teacher_run_ids_equal_freshly_built_ones():
    runs = expand_grid(load_grid(PAPER))
    ids = TeacherRunIds()
    for _ in range(2):  # the second pass answers from the cache
        assert [ids(r) for r in runs] == [teacher_run_id(r) for r in runs]
    kd = [r for r in runs if r.strategy == "kd-lora"]
    assert len(ids._ids) == len({teacher_run_id(r) for r in kd}) < len(kd)


def test_students_with_different_teacher_settings_get_different_teachers():
    ids = TeacherRunIds()
    base = {"family": "bert", "task": "rte", "strategy": "kd-lora", "variant": "lora"}
    a, b, c = (build_config({**base, **extra}) for extra in ({}, {"teacher_lr": 1e-5}, {"max_length": 64}))
    assert len({ids(a), ids(b), ids(c)}) == 3
    assert [ids(a), ids(b), ids(c)] == [teacher_of(x).run_id for x in (a, b, c)]
    assert ids(build_config({**base, "strategy": "lora"})) is None


def test_equal_values_of_different_types_are_different_keys():
    assert _tagged(1) != _tagged(1.0) != _tagged(True)
    assert _tagged((1, 2)) != _tagged((1.0, 2))


def test_a_strategy_that_overrides_teacher_is_asked_every_time(monkeypatch):
    kd = STRATEGIES.get("kd-lora")
    other = build_config({"family": "bert", "task": "rte", "strategy": "fft", "lr": 3e-5})
    monkeypatch.setattr(type(kd), "teacher", lambda self, cfg: other)
    student = build_config({"family": "bert", "task": "rte", "strategy": "kd-lora", "variant": "lora"})
    assert TeacherRunIds()(student) == other.run_id
