"""Shared helpers for the sweep tests: a small grid and its fake run functions' directory."""

from __future__ import annotations

import os
import sys
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


@pytest.fixture(scope="session")
def slurm():
    """A real SLURM: the one that answers here, or a one-node SLURM on loopback that this fixture
    installs (Debian packages, as root), configures, starts and stops again (tests/sweep/slurm_cluster.py).
    Skips only where that is impossible (not root, no apt-get); under CI it fails instead, so that CI
    never silently skips the SLURM tests."""
    import slurm_cluster

    try:
        cluster = slurm_cluster.ensure_slurm()
    except slurm_cluster.Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the SLURM tests but cannot: {exc}")
        pytest.skip(f"no SLURM here and none can be set up: {exc}")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ.update({k: v for k, v in cluster.env().items() if k in saved})
    try:
        yield cluster
    finally:
        cluster.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


sys.path.insert(0, str(HERE))  # slurm_cluster and sweep_fake_runs, importable by the tests themselves
