"""`kdlora report --select`: per (method, family, task) the setting with the best mean selection
metric over seeds is analysed, the other candidates set aside; the reported split never decides;
without a selection split only `--select reported` selects, and says the numbers are biased."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kdlora.cli import app

HERE = Path(__file__).resolve().parent
runner = CliRunner()
SEARCH = {"lora": {"lr": [1e-4, 1e-3, 1e-2]}, "kd-lora": {"lr": [1e-4, 1e-3, 1e-2]}}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A fake sweep (tests/protocol/protocol_fake_runs.py): adapters score best at lr 1e-3."""
    root = tmp_path_factory.mktemp("swept")
    grid = root / "grid.yaml"
    grid.write_text(yaml.safe_dump({"families": ["bert"], "tasks": ["rte", "sst2"], "seeds": [1, 2],
                                    "strategies": ["fft", "lora", "kd-lora"], "variants": ["lora", "dora"],
                                    "hyperparameters": {"selection_fraction": 0.1},
                                    "search": {**SEARCH, "fft": {"lr": [1e-5, 2e-5, 5e-5]}}}))
    sys.path.insert(0, str(HERE))
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", f"{HERE}:{Path(sys.modules['kdlora'].__file__).parents[1]}")
    out = runner.invoke(app, ["sweep", str(grid), "--results", str(root / "results"), "--workers", "1",
                              "--run-fn", "protocol_fake_runs:scored"])
    mp.undo()
    assert out.exit_code == 0, out.output
    return grid, root / "results"


def report(results: Path, out: Path, *extra: str):
    return runner.invoke(app, ["report", "--results", str(results), "--out", str(out), "--no-figures", *extra])


def flip_reported(results: Path, dest: Path) -> Path:
    """A copy whose reported metrics are those of the reported split with every label flipped."""
    shutil.copytree(results, dest)
    for path in (dest / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        rec["metrics"] = {**rec["metrics"], "accuracy": 1 - rec["metrics"]["accuracy"],
                          "primary": 1 - rec["metrics"]["primary"]}
        path.write_text(json.dumps(rec))
    return dest


def test_select_selection_analyses_only_the_chosen_arms(swept, tmp_path):
    grid, results = swept
    result = report(results, tmp_path / "report", "--select", "selection", "--grid", str(grid))
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    selection = pd.read_csv(out / "selection.csv")
    assert len(selection) == 2 * 5  # (fft + 2 variants x 2 strategies) x 2 tasks
    assert set(selection.loc[selection["strategy"] != "fft", "lr"]) == {1e-3}
    assert set(selection.loc[selection["strategy"] == "fft", "lr"]) == {2e-5}
    runs, candidates = pd.read_csv(out / "runs.csv"), pd.read_csv(out / "candidates.csv")
    assert len(runs) == 2 * 2 * 5 and set(runs.loc[runs["strategy"] == "lora", "lr"]) == {1e-3}
    assert len(candidates) == 2 * 2 * 5 * 2 and 1e-3 not in set(candidates.loc[candidates["strategy"] != "fft", "lr"])
    text = (out / "report.md").read_text()
    assert "## Protocol" in text and "lr 0.0001, 0.001, 0.01" in text
    assert "optimistically biased" not in text.split("## Protocol")[0]


def test_flipping_reported_labels_leaves_the_selection_unchanged(swept, tmp_path):
    grid, results = swept
    flipped = flip_reported(results, tmp_path / "flipped")
    for src, out in ((results, tmp_path / "a"), (flipped, tmp_path / "b")):
        assert report(src, out, "--select", "selection", "--grid", str(grid)).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "selection.csv"),
                                  pd.read_csv(tmp_path / "b" / "selection.csv"))
    a, b = pd.read_csv(tmp_path / "a" / "runs.csv"), pd.read_csv(tmp_path / "b" / "runs.csv")
    assert list(a["run_id"]) == list(b["run_id"])
    assert list(a["selection_primary"]) == list(b["selection_primary"])
    assert (a["primary"] + b["primary"]).round(9).eq(1).all()  # the reported metrics did change


def test_edge_of_the_search_range_is_warned(swept, tmp_path):
    _, results = swept
    narrow = tmp_path / "narrow"
    shutil.copytree(results, narrow)
    for path in (narrow / "runs").glob("*.json"):  # drop lr 1e-2: 1e-3 is then the largest value searched
        if json.loads(path.read_text())["config"]["lr"] == 1e-2:
            path.unlink()
    assert report(narrow, tmp_path / "out", "--select", "selection").exit_code == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "lr = 0.001 is the largest value searched" in text


def test_without_a_selection_split_only_reported_selects(swept, tmp_path):
    _, results = swept
    blind = tmp_path / "blind"
    shutil.copytree(results, blind)
    for path in (blind / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        rec["metrics_selection"] = {}
        path.write_text(json.dumps(rec))
    result = report(blind, tmp_path / "refused", "--select", "selection")
    assert result.exit_code == 2 and "--select reported" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "refused").exists()
    result = report(blind, tmp_path / "biased", "--select", "reported")
    assert result.exit_code == 0, result.output
    first = (tmp_path / "biased" / "report.md").read_text().splitlines()[:4]
    assert any("optimistically biased" in line for line in first)
    assert "bad" not in result.output
    assert report(blind, tmp_path / "x", "--select", "best").exit_code == 2
