"""The protocol end to end on real models and data: a 3-value learning-rate search for LoRA-only
and KD-LoRA (two variants) on the offline minilm family and real tweets, run by `kdlora sweep`
with a selection split and best epoch, then `kdlora report --select selection` (kept tiny for CI:
64 tweets (16 of them the selection set), 1 epoch, 1 seed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.data.tweets import write_tweets_task
from kdlora.records import iter_records

REPO = Path(__file__).resolve().parents[2]
LRS = [5e-4, 2e-3, 8e-3]


def test_lr_search_selects_per_method_and_analyses_only_the_chosen(tmp_path):
    task = write_tweets_task(tmp_path / "data", n_train=64, n_eval=32, seed=0)
    grid = tmp_path / "fair.yaml"
    grid.write_text(yaml.safe_dump({
        "families": ["minilm"], "tasks": [str(task)], "seeds": [42], "strategies": ["lora", "kd-lora"],
        "variants": ["lora", "dora"],
        "hyperparameters": {"epochs": 1, "batch_size": 16, "max_length": 32, "selection_fraction": 0.25,
                            "select_best_epoch": True},
        "fft": {"lr": 1e-4},
        "search": {"lora": {"lr": LRS}, "kd-lora": {"lr": LRS}}}))
    runner = CliRunner()
    plan = runner.invoke(app, ["plan", str(grid)])
    assert plan.exit_code == 0, plan.output
    assert "lora/dora: 3 candidate(s) per cell" in plan.output and "kd-lora/lora: 3 candidate(s)" in plan.output
    results = tmp_path / "results"
    swept = runner.invoke(app, ["sweep", str(grid), "--results", str(results), "--workers", "2"])
    assert swept.exit_code == 0, swept.output
    records = list(iter_records(results))
    assert len(records) == 1 + 2 * 2 * 3 and all(r.status == "completed" for r in records)
    assert all(r.metrics_selection and r.best_epoch == 1 for r in records)
    out = tmp_path / "report"
    rep = runner.invoke(app, ["report", "--results", str(results), "--grid", str(grid), "--out", str(out),
                              "--select", "selection", "--no-figures"])
    assert rep.exit_code == 0, rep.output
    selection = pd.read_csv(out / "selection.csv")
    assert len(selection) == 4 and set(selection["lr"]) <= set(LRS)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 1 + 4 and len(pd.read_csv(out / "candidates.csv")) == 8
    chosen = {(r.strategy, r.variant): r.lr for r in selection.itertuples()}
    for r in runs[runs["strategy"] != "fft"].itertuples():
        assert r.lr == chosen[(r.strategy, r.variant)]
    text = (out / "report.md").read_text()
    assert "## Protocol" in text and "| LoRA-only dora |" in text


def test_fair_grid_plans_equal_budgets():
    result = CliRunner().invoke(app, ["plan", str(REPO / "configs" / "fair.yaml")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "candidate(s) per cell" in line]
    assert len(lines) == 13
    assert len({line.split(": ", 1)[1].split("(")[0] for line in lines}) == 1  # same candidates for every method
    steps = {line.rsplit(", ~", 1)[1] for line in lines}
    assert len(steps) == 1, steps
    assert "matched parameter budgets" in result.output
