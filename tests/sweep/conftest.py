"""Shared helpers for the sweep tests: a small grid and its fake run functions' directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


@pytest.fixture
def small_grid(tmp_path) -> Path:
    """bert x rte x seeds {1, 2} x (fft + {lora, dora} x {lora, kd-lora}) = 10 runs."""
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte"], "seeds": [1, 2],
                                    "variants": ["lora", "dora"]}))
    return path


@pytest.fixture
def fake_env() -> dict[str, str]:
    """Environment for a `kdlora` subprocess that can import the fake run functions."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(SRC), env.get("PYTHONPATH", "")])
    return env
