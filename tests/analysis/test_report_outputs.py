"""The report end to end on a synthetic study: every output written, every number in report.md
found in the CSVs, bad input refused with one line and nothing written, torch never imported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kdlora.analysis.report import REQUIRED_CSVS, build
from kdlora.errors import UserError

NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")
# Sentences of rule findings print numbers that must come from the data columns beside them.
SENTENCE_COLUMNS = {"text", "statement"}


def report_numbers(markdown: str) -> list[tuple[str, str]]:
    """(number, line) for every number outside headings, code spans and link targets."""
    found = []
    for line in markdown.splitlines():
        if line.startswith("#"):
            continue
        clean = re.sub(r"\]\([^)]*\)", "]", re.sub(r"`[^`]*`", "", line))
        found += [(m.group(), line) for m in NUMBER.finditer(clean)]
    return found


def csv_numbers(out: Path) -> np.ndarray:
    """Every number in the CSVs except the per-run table and the sentences themselves."""
    values: list[float] = []
    for path in out.glob("*.csv"):
        if path.name == "runs.csv":
            continue
        frame = pd.read_csv(path, dtype=str)
        frame = frame.drop(columns=[c for c in frame.columns if c in SENTENCE_COLUMNS])
        for cell in frame.to_numpy().ravel():
            if isinstance(cell, str):
                values += [float(x) for x in NUMBER.findall(cell)]
    return np.array(values)


def tolerance(token: str) -> float:
    """Half a unit in the last printed digit."""
    mantissa, _, exp = token.lower().lstrip("+-").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exp) if exp else 0)) * (1 + 1e-9)


def test_every_number_in_the_report_is_in_the_csvs(synthetic_report):
    _, out = synthetic_report
    pool = csv_numbers(out)
    numbers = report_numbers((out / "report.md").read_text())
    assert len(numbers) > 300  # the check is not vacuous
    missing = [(tok, line) for tok, line in numbers
               if not np.any(np.abs(pool - float(tok)) <= tolerance(tok))]
    assert missing == [], missing[:5]


def test_the_number_check_catches_a_typed_number(synthetic_report):
    _, out = synthetic_report
    pool = csv_numbers(out)
    assert not np.any(np.abs(pool - 0.123457) <= tolerance("0.123457"))


def test_all_outputs_written(synthetic_report):
    analysis, out = synthetic_report
    for name in REQUIRED_CSVS:
        assert (out / f"{name}.csv").is_file()
    figures = {p.name for p in (out / "figures").iterdir()}
    for name in ("efficiency_performance_scatter", "pareto_frontier", "completion_heatmap",
                 "per_task_bars", "paired_differences_forest", "critical_difference"):
        assert f"{name}.png" in figures and f"{name}.pdf" in figures
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    tex = (out / "tables" / "statistical_tests.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "*" in tex  # significance marks (synthetic methods differ by design)
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    md = (out / "report.md").read_text()
    for section in ("Executive summary", "1.1 LoRA-only vs KD-LoRA", "1.2 Adapter variants vs FFT",
                    "1.3 Model families", "Friedman", "2.1 Efficiency", "2.2 Correlation", "2.3 Efficiency gains",
                    "3.1 Performance per parameter", "3.2 Pareto", "student vs its FFT teacher",
                    "5. Recommendations", "6. Limitations", "7. Per-task results"):
        assert section in md, section


def test_report_sees_what_the_records_hold(synthetic_report, synthetic_configs):
    analysis, _ = synthetic_report
    runs = analysis["runs"]
    assert len(runs) == len(synthetic_configs) - 10 - 1  # 10 left out, one failed
    assert analysis["failed_runs"]["status"].tolist() == ["failed"]
    assert len(analysis["problems"]) == 2  # the corrupt and the empty file, by path
    assert all("broken.json" in p or "empty.json" in p for p in analysis["problems"]["problem"])
    comp = analysis["completion"].set_index("scope").loc["overall"]
    assert (comp["expected"], comp["done"]) == (len(synthetic_configs), len(synthetic_configs) - 11)
    pairs = analysis["teacher_student"]
    assert len(pairs) > 0 and pairs["pct_of_teacher"].between(0, 200).all()
    limits = set(analysis["limitations"]["rule"])
    assert {"completion", "skipped_inputs", "failed_runs"} <= limits
    assert "memory_not_peak" not in limits  # synthetic memory is a CUDA peak


def test_analysis_never_imports_torch(synthetic_results, tmp_path):
    code = (
        "import sys\n"
        "from kdlora.analysis.report import build, write_report\n"
        "from kdlora.commands import analysis\n"
        f"a = build([{str(synthetic_results)!r}], 'glue')\n"
        f"write_report(a, {str(tmp_path / 'out')!r}, figures=False)\n"
        "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_empty_results_is_a_user_error(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match="no valid run records"):
        build([tmp_path], "glue")
    with pytest.raises(UserError, match="not found"):
        build([tmp_path / "missing"], "glue")
    with pytest.raises(UserError, match="metric policy"):
        build([tmp_path], "best")


def test_report_command(synthetic_results, synthetic_grid, tmp_path):
    from kdlora.cli import app

    runner = CliRunner()
    out = tmp_path / "rep"
    ok = runner.invoke(app, ["report", "--results", str(synthetic_results), "--grid", str(synthetic_grid),
                             "--out", str(out), "--no-figures"])
    assert ok.exit_code == 0, ok.output
    assert "Best method per strategy" in ok.output and str(out / "report.md") in ok.output
    empty = tmp_path / "empty"
    (empty / "runs").mkdir(parents=True)
    bad = runner.invoke(app, ["report", "--results", str(empty), "--out", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "error: no valid run records" in bad.output
    assert not (tmp_path / "nothing").exists()  # nothing half-written
