"""`kdlora sweep --track`: every run's config carries it (execution only: same run_ids); bad
trackers and a --tracking-uri without mlflow are one line, exit 2."""

from __future__ import annotations

from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.grid import expand_grid, load_grid
from kdlora.records import iter_records

runner = CliRunner()


def test_track_reaches_every_run_and_keeps_the_run_ids(small_grid, tmp_path, monkeypatch, fake_env):
    monkeypatch.setenv("PYTHONPATH", fake_env["PYTHONPATH"])
    results = tmp_path / "results"
    done = runner.invoke(app, ["sweep", str(small_grid), "--results", str(results), "--workers", "2",
                               "--run-fn", "sweep_fake_runs:quick", "--track", "tensorboard"])
    assert done.exit_code == 0, done.output
    records = list(iter_records(results))
    assert {r.run_id for r in records} == {r.run_id for r in expand_grid(load_grid(small_grid))}
    assert all(r.config["track"] == "tensorboard" and r.config["tracking_uri"] is None for r in records)


def test_bad_tracking_options_are_refused(small_grid, tmp_path):
    results = tmp_path / "results"
    for args, message in ((["--track", "wandb"], "unknown tracker 'wandb'"),
                          (["--tracking-uri", "sqlite:///x.db"], "--tracking-uri needs --track mlflow")):
        done = runner.invoke(app, ["sweep", str(small_grid), "--results", str(results), *args])
        assert done.exit_code == 2 and message in done.output, done.output
    assert not results.exists()
