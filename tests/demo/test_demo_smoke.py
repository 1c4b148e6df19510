"""The README's first command, at CI size: `kdlora demo --smoke` through the real path.

Real MiniLM, real tweets, the real sweep (local executor, one worker, one thread), the real
report. Fewer tweets and one variant per strategy (FFT, LoRA-only lora, KD-LoRA lora). The quality
bar is checked by the command; at this size the runs may not clear it, so the test checks that
the verdict, the exit status and the records agree, not that the models learned.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdlora import demo
from kdlora.cli import app
from kdlora.records.store import read_record, record_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "smoke"
    result = CliRunner().invoke(app, ["demo", "--smoke", "--out", str(out), "--workers", "1", "--threads", "1"])
    return out, result


def test_smoke_demo_writes_records_report_and_summary(smoke):
    out, result = smoke
    assert result.exit_code in (0, 1), result.output
    summary = json.loads((out / demo.SUMMARY_NAME).read_text())
    assert summary["mode"] == "smoke" and summary["sweep"]["failed"] == 0
    assert summary["fresh"] is True and summary["timings_s"]["cpu"] > 0
    runs = summary["runs"]
    assert {(r["strategy"], r["variant"]) for r in runs} == {("fft", "full"), ("lora", "lora"), ("kd-lora", "lora")}
    for row in runs:
        rec = read_record(record_path(out / "results", row["run_id"]))
        assert rec.status == "completed" and rec.metrics["accuracy"] == row["accuracy"]
        assert row["run_wall_s"] >= row["train_time_s"] > 0
    kd = next(r for r in runs if r["strategy"] == "kd-lora")
    fft = next(r for r in runs if r["strategy"] == "fft")
    assert kd["pct_of_teacher"] == pytest.approx(100 * kd["accuracy"] / fft["accuracy"])
    report = (out / "report" / "report.md").read_text()
    assert "% of teacher" in report
    # the last line names the report
    assert result.output.strip().splitlines()[-1] == f"report: {out / 'report' / 'report.md'}"


def test_smoke_demo_verdict_matches_the_records(smoke):
    out, result = smoke
    summary = json.loads((out / demo.SUMMARY_NAME).read_text())
    majority = summary["data"]["majority_baseline"]
    expected = []
    for row in summary["runs"]:
        acc = read_record(record_path(out / "results", row["run_id"])).metrics["accuracy"]
        expected.append(acc >= majority + 0.10 if row["strategy"] == "fft" else acc > majority)
    assert [c["passed"] for c in summary["quality"]["checks"]] == expected
    assert summary["quality"]["passed"] == all(expected)
    assert result.exit_code == (0 if all(expected) else 1)
    assert ("quality bar met" if all(expected) else "quality bar NOT met") in result.output


def test_rerun_reuses_finished_runs(smoke):
    out, _ = smoke
    before = {p.name: p.read_text() for p in (out / "results" / "runs").glob("*.json")}
    again = CliRunner().invoke(app, ["demo", "--smoke", "--out", str(out), "--workers", "1", "--threads", "1"])
    summary = json.loads((out / demo.SUMMARY_NAME).read_text())
    assert summary["sweep"]["skipped"] == 3 and summary["sweep"]["completed_now"] == 0
    assert summary["fresh"] is False
    assert {p.name: p.read_text() for p in (out / "results" / "runs").glob("*.json")} == before
    assert "0 runs trained now, 3 reused" in again.output


def test_demo_ends_with_the_reference_study_re_analysed(smoke):
    """After its own one-seed study, the demo re-analyses the packaged reference study (legacy
    policy, paper grid) and prints, read from that report, the reference's conclusion beside the
    paired one for every variant."""
    import pandas as pd

    out, result = smoke
    ref = json.loads((out / "demo_summary.json").read_text())["reference"]
    report_dir = out / "reference-report"
    assert (report_dir / "report.md").is_file() and ref["report"] == str(report_dir / "report.md")
    assert ref["runs"] == 742 and len(list((out / "reference" / "results").rglob("metrics.json"))) == 742
    assert "70.47 % (742/1053 runs of `configs/paper.yaml`)" in (report_dir / "report.md").read_text()
    rows = {r["variant"]: r for r in ref["lora_vs_kd"]}
    assert set(rows) == {"adalora", "dora", "lora", "mrlora", "olora", "rslora"}
    assert f"{rows['adalora']['reference_p']:.4f}" == "0.7154"  # the reference's own Table 1.1
    paired = pd.read_csv(report_dir / "statistical_tests.csv").set_index(["test_family", "comparison"])
    for variant, r in rows.items():
        p = paired.loc[("lora_vs_kd", variant)]
        assert (r["verdict"], r["pairs"]) == (p["verdict"], p["n_pairs"])
        assert r["effect"] == pytest.approx(p["effect"]) and r["effect_ci_low"] == pytest.approx(p["effect_ci_low"])
    screen = result.output
    assert "The reference study re-analysed (742 GPU runs)" in screen
    assert f"reference report: {report_dir / 'report.md'}" in screen
    for variant, r in rows.items():
        line = next(l for l in screen.splitlines() if l.strip().startswith(variant + " "))
        assert f"{r['reference_p']:.3f}" in line and r["verdict_text"] in line and f"{r['effect']:+.3f}" in line
