"""Shared fixtures: a small synthetic study on disk, its report, and the real legacy data.

The legacy data are the reference study packaged with kdlora (kdlora.examples), written out once
per session, so a fresh clone runs every test on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAPER_GRID = REPO / "configs" / "paper.yaml"
TASKS = ("cola", "mrpc", "stsb", "mnli")


@pytest.fixture(scope="session")
def legacy_dir(tmp_path_factory) -> Path:
    """The packaged reference study in its legacy layout, with the original analysis's CSVs."""
    from kdlora.examples import write_reference

    return write_reference(tmp_path_factory.mktemp("reference") / "kdlora-cs5483-90028be5")


@pytest.fixture(scope="session")
def synthetic_configs():
    from kdlora.testing.synthetic_records import grid_configs

    return grid_configs(tasks=TASKS)


@pytest.fixture(scope="session")
def synthetic_results(tmp_path_factory, synthetic_configs) -> Path:
    """A results dir: every synthetic run but a few, one failed run and one corrupt file."""
    from kdlora.testing.synthetic_records import make_records
    from kdlora.records import write_record

    root = tmp_path_factory.mktemp("synthetic_results")
    records = list(make_records(synthetic_configs, n=len(synthetic_configs) - 10, seed=1))
    failed = records[-1].model_copy(update={"status": "failed", "error": "CUDA out of memory"})
    for rec in records[:-1] + [failed]:
        write_record(root, rec)
    (root / "runs" / "broken.json").write_text("{not json")
    (root / "runs" / "empty.json").write_text(json.dumps({}))
    return root


@pytest.fixture(scope="session")
def synthetic_grid(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "small.yaml"
    path.write_text("families: [bert, roberta, deberta]\n"
                    f"tasks: [{', '.join(TASKS)}]\n"
                    "seeds: [42, 123, 2024]\n")
    return path


@pytest.fixture(scope="session")
def synthetic_report(tmp_path_factory, synthetic_results, synthetic_grid):
    """(analysis, out dir) of a full report, figures included, built once."""
    from kdlora.analysis.report import build, write_report

    out = tmp_path_factory.mktemp("synthetic_report")
    analysis = build([synthetic_results], "glue", synthetic_grid)
    write_report(analysis, out)
    return analysis, out


@pytest.fixture(scope="session")
def paper_grid() -> Path:
    assert PAPER_GRID.is_file()
    return PAPER_GRID


@pytest.fixture(scope="session")
def legacy_report(legacy_dir, paper_grid, tmp_path_factory):
    """The issue's acceptance command, as written (legacy folder passed as --results), run once:
    (CLI result, OUT directory)."""
    from typer.testing import CliRunner

    from kdlora.cli import app

    out = tmp_path_factory.mktemp("legacy_report") / "OUT"
    res = CliRunner().invoke(app, ["report", "--results", str(legacy_dir), "--grid", str(paper_grid),
                                   "--metric-policy", "legacy", "--out", str(out)])
    return res, out
