"""Figures drawn by forked worker processes: the same files as drawing them in turn, and a
figure that fails fails the report (no report.md) instead of hanging or being skipped."""

from __future__ import annotations

import sys

import pytest

from kdlora.analysis import drawing, plots
from kdlora.analysis.report import build, write_report
from kdlora.errors import UserError


@pytest.fixture(scope="module")
def analysis(synthetic_results, synthetic_grid):
    return build([synthetic_results], "glue", synthetic_grid)


def figure_files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "figures").iterdir())}


@pytest.mark.skipif(sys.platform != "linux", reason="figure workers are forked on Linux only")
def test_workers_draw_the_same_figures_as_one_process(analysis, tmp_path):
    with drawing.FigureWorkers(workers=2) as workers:
        assert workers.pool is not None
        report = write_report(analysis, tmp_path / "parallel", workers=workers)
        write_report(analysis, tmp_path / "again", workers=workers)  # one pool, a second report
    with drawing.FigureWorkers(workers=0) as workers:
        assert workers.pool is None
        write_report(analysis, tmp_path / "serial", workers=workers)
    parallel, serial = figure_files(tmp_path / "parallel"), figure_files(tmp_path / "serial")
    assert figure_files(tmp_path / "again").keys() == parallel.keys()
    drawn = [n for n in plots.FIGURES if n != "ablations"]  # the synthetic study varies no setting
    assert set(parallel) == set(serial) == {f"{n}.{e}" for n in drawn for e in ("png", "pdf")}
    for name, data in parallel.items():
        assert data[:4] == (b"\x89PNG" if name.endswith(".png") else b"%PDF"), name
        if name.endswith(".png"):  # same pixels either way (PDFs carry a creation date)
            assert data == serial[name], name
    text = report.read_text()
    assert all(f"figures/{n}.png" in text for n in drawn)
    assert report.read_text() == (tmp_path / "serial" / "report.md").read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="figure workers are forked on Linux only")
def test_figures_started_from_the_first_tables_match(synthetic_results, synthetic_grid, analysis, tmp_path):
    """`kdlora report` hands the scatter, bars and heatmap to the workers before the statistics
    exist: they must come out exactly as when drawn from the finished analysis."""
    out = tmp_path / "early"
    with drawing.FigureWorkers(workers=2) as workers:
        early = build([synthetic_results], "glue", synthetic_grid, early=workers.early(out))
        assert set(workers.pending) == set(plots.EARLY_FIGURES)
        write_report(early, out, workers=workers)
    with drawing.FigureWorkers(workers=0) as workers:
        assert workers.early(tmp_path / "serial") is None
        write_report(analysis, tmp_path / "serial", workers=workers)
    late = figure_files(tmp_path / "serial")
    for name, data in figure_files(out).items():
        if name.endswith(".png"):
            assert data == late[name], name
    assert set(figure_files(out)) == set(late)


@pytest.mark.parametrize("workers", [pytest.param(2, marks=pytest.mark.skipif(sys.platform != "linux", reason="fork")), 0])
def test_a_failing_figure_fails_the_report(analysis, tmp_path, monkeypatch, workers):
    def broken(a, width="double"):
        raise RuntimeError("figure exploded")

    monkeypatch.setitem(plots.FIGURES, "pareto_frontier", broken)  # forked workers inherit it
    with drawing.FigureWorkers(workers=workers) as pool:
        with pytest.raises(RuntimeError, match="figure exploded"):
            write_report(analysis, tmp_path / "out", workers=pool)
    assert not (tmp_path / "out" / "report.md").exists()


def test_no_figures_starts_no_workers(analysis, tmp_path):
    with drawing.FigureWorkers(enabled=False) as workers:
        assert workers.pool is None
        write_report(analysis, tmp_path / "out", figures=False, workers=workers)
    assert not (tmp_path / "out" / "figures").exists()
    assert (tmp_path / "out" / "report.md").is_file()


@pytest.mark.skipif(sys.platform != "linux", reason="figure workers are forked on Linux only")
def test_inputs_loaded_by_a_worker_give_the_same_analysis(synthetic_results, synthetic_grid, analysis, tmp_path):
    """`kdlora report` has a figure worker expand the grid and load the records while it imports
    the statistics libraries: the analysis must be the one loading them here gives, and bad
    input must still fail with its one line."""
    with drawing.FigureWorkers(workers=2, defer_warm_up=True) as workers:
        beside = build([synthetic_results], "glue", synthetic_grid, workers=workers)
        assert beside.tables.keys() == analysis.tables.keys()
        for name, frame in analysis.tables.items():
            assert beside[name].equals(frame), name
        with pytest.raises(UserError, match="results directory .*missing.* not found"):
            build([tmp_path / "missing"], "glue", workers=workers)
        report = write_report(beside, tmp_path / "out", workers=workers)  # workers warmed up for figures
    assert (tmp_path / "out" / "figures" / "per_task_bars.png").exists() and report.exists()


def test_beside_without_workers_runs_when_asked():
    calls = []
    with drawing.FigureWorkers(workers=0) as workers:
        result = workers.beside(lambda x: calls.append(x) or x * 2, 21)
        assert calls == []
        assert result() == 42 and calls == [21]
