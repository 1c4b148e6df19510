"""Grid files: the per_variant section (a learning rate per variant, as configs/demo.yaml needs)."""

from __future__ import annotations

import pytest
import yaml

from kdlora.errors import UserError
from kdlora.grid import expand_grid, load_grid
from kdlora.strategies import teacher_of


def grid_file(tmp_path, **data):
    base = {"families": ["bert"], "tasks": ["rte"], "seeds": [1], "fft": {"lr": 1e-4},
            "adapters": {"lr": 1e-3}, "kd-lora": {"lr": 5e-3}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**base, **data}, sort_keys=False))
    return path


def lrs(runs):
    return {(r.strategy, r.variant): r.lr for r in runs}


def test_per_variant_is_the_most_specific_setting(tmp_path):
    runs = expand_grid(load_grid(grid_file(tmp_path, variants=["lora", "adalora", "mrlora"], per_variant={
        "adalora": {"lr": 2e-2}, "kd-lora/adalora": {"lr": 3e-2}, "kd-lora/mrlora": {"lr": 2e-3}})))
    assert lrs(runs) == {
        ("fft", None): 1e-4,
        ("lora", "lora"): 1e-3, ("lora", "adalora"): 2e-2, ("lora", "mrlora"): 1e-3,
        ("kd-lora", "lora"): 5e-3, ("kd-lora", "adalora"): 3e-2, ("kd-lora", "mrlora"): 2e-3}
    assert len(runs) == 7
    # students keep the grid's FFT run as teacher
    fft = runs[0]
    assert {teacher_of(r).run_id for r in runs if r.strategy == "kd-lora"} == {fft.run_id}


def test_per_variant_changes_only_its_own_run_ids(tmp_path):
    plain = {r.run_id for r in expand_grid(load_grid(grid_file(tmp_path, variants=["lora", "adalora"])))}
    tuned = expand_grid(load_grid(grid_file(tmp_path, variants=["lora", "adalora"],
                                            per_variant={"kd-lora/adalora": {"lr": 3e-2}})))
    changed = {(r.strategy, r.variant) for r in tuned if r.run_id not in plain}
    assert changed == {("kd-lora", "adalora")}


@pytest.mark.parametrize("per_variant, message", [
    ({"adalorra": {"lr": 1e-3}}, "unknown variant 'adalorra'"),
    ({"fft/lora": {"lr": 1e-3}}, "unknown strategy 'fft'"),
    ({"lora": {"lrr": 1e-3}}, "unknown hyperparameter 'lrr'"),
    ({"lora": {"teacher_lr": 1e-3}}, "derived from the fft section"),
    ({"lora": {"lr": [1e-3, 2e-3]}}, "per-variant values are single values"),
    ({"lora": {"r": 0}}, "r must be > 0"),
])
def test_bad_per_variant_entries_are_refused_with_one_line(tmp_path, per_variant, message):
    with pytest.raises(UserError, match=message) as info:
        load_grid(grid_file(tmp_path, per_variant=per_variant))
    assert "\n" not in str(info.value)


def test_a_flat_list_is_one_value_for_sequence_fields(tmp_path):
    runs = expand_grid(load_grid(grid_file(tmp_path, variants=["mrlora"],
                                           per_variant={"mrlora": {"mrlora_ranks": [4, 2]}})))
    assert {r.mrlora_ranks for r in runs if r.variant == "mrlora"} == {(4, 2)}
