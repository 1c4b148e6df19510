"""A results tree whose LoRA-only and KD-LoRA `lora` ran at r = 8 and r = 16 (r = 16 scores
+0.02, synthetic.RANK_EFFECT): one arm per rank, counted in design.csv, nothing pooled across
ranks unless --pool r, and bad --pool / margin input refused with one line."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from kdlora.analysis.report import build, write_report
from kdlora.testing.synthetic_records import grid_configs, make_records
from kdlora.analysis.model import Settings
from kdlora.records import write_record

FAMILIES, TASKS, SEEDS = ("bert", "roberta"), ("rte", "sst2", "mrpc"), (1, 2, 3)
BLOCKS = len(FAMILIES) * len(TASKS) * len(SEEDS)


def rank_configs():
    base = grid_configs(families=FAMILIES, tasks=TASKS, seeds=SEEDS, variants=("lora", "dora"))
    r16 = [c.with_updates(r=16) for c in base if c.strategy != "fft" and c.variant == "lora"]
    return base + r16


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank_results")
    for rec in make_records(rank_configs(), seed=3, collapse_rate=0):
        write_record(root, rec)
    return root


@pytest.fixture(scope="module")
def rank_report(rank_results, tmp_path_factory):
    out = tmp_path_factory.mktemp("rank_report")
    analysis = build([rank_results], "glue")
    write_report(analysis, out, figures=False)
    return analysis, out


def test_runs_csv_has_the_settings(rank_report):
    _, out = rank_report
    runs = pd.read_csv(out / "runs.csv")
    for col in ("r", "lora_alpha", "lora_dropout", "lr", "epochs", "batch_size", "kd_temperature", "kd_alpha",
                "teacher_model", "student_model", "arm"):
        assert col in runs.columns, col
    assert set(runs.loc[runs["strategy"] != "fft", "r"]) == {8, 16}
    assert runs.loc[runs["strategy"] == "fft", "r"].isna().all()  # not a setting of FFT
    assert runs.loc[runs["strategy"] == "lora", "kd_temperature"].isna().all()


def test_one_arm_per_rank_counted_in_design(rank_report):
    analysis, out = rank_report
    design = pd.read_csv(out / "design.csv").set_index("arm")
    assert list(design.columns[:3]) == ["strategy", "variant", "r"]
    assert list(design.columns[3:7]) == ["runs", "families", "tasks", "seeds"]
    for arm in ("lora:lora r=8", "lora:lora r=16", "kd-lora:lora r=8", "kd-lora:lora r=16", "lora:dora",
                "kd-lora:dora", "fft"):
        assert design.loc[arm, "runs"] == BLOCKS, arm
        assert (design.loc[arm, "families"], design.loc[arm, "tasks"], design.loc[arm, "seeds"]) == (2, 3, 3)
    assert design.loc["lora:lora r=16", "r"] == 16 and design.loc["lora:dora", "r"] == 8  # held at 8
    assert "lora:lora" not in design.index
    md = (out / "report.md").read_text()
    assert md.index("## Design") < md.index("## Executive summary")
    assert "`r` ∈ {8, 16}" in md and "LoRA-only lora r=16" in md


def test_nothing_pools_both_ranks(rank_report):
    analysis, _ = rank_report
    for name in ("efficiency_summary_by_variant", "per_task_results", "glue_average"):
        assert "lora:lora" not in set(analysis[name]["method"]), name
    tests = analysis["statistical_tests"]
    kd = tests[tests["test_family"] == "lora_vs_kd"].set_index("comparison")
    assert set(kd.index) == {"lora r=8", "lora r=16", "dora"}
    assert kd.loc["lora r=16", "a"] == "lora:lora r=16" and kd.loc["lora r=16", "b"] == "kd-lora:lora r=16"
    assert kd.loc["lora r=16", "matched_on"] == "r=16" and (kd["n_pairs"] == BLOCKS).all()
    legacy = analysis["legacy_tests"]
    assert legacy.loc[legacy["test_family"] == "lora_vs_kd", "n_a"].max() == BLOCKS
    ranks = analysis["friedman_ranks"]
    assert {"lora r=8", "lora r=16", "dora"} == set(ranks.loc[ranks["strategy"] == "lora", "variant"])


def test_pool_merges_the_ranks_and_says_so(rank_results, tmp_path):
    analysis = build([rank_results], "glue", settings=Settings(pool=("r",)))
    design = analysis["design"].set_index("arm")
    assert design.loc["lora:lora", "runs"] == 2 * BLOCKS and "r" not in design.columns
    write_report(analysis, tmp_path, figures=False)
    assert "Pooled on request (`--pool`" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--pool", ""], "--pool needs a setting name"),
    (["--pool", "rank"], "--pool 'rank' is not a setting"),
    (["--equivalence-margin", "0"], "--equivalence-margin must be a number > 0"),
    (["--equivalence-margin", "-0.1"], "--equivalence-margin must be a number > 0"),
    (["--equivalence-margin-norm", "0"], "--equivalence-margin-norm must be a number > 0"),
    (["--glue-average", "some"], "--glue-average must be one of"),
])
def test_bad_input_is_one_line_and_writes_nothing(rank_results, tmp_path, args, message):
    from kdlora.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["report", "--results", str(rank_results), "--out", str(out), "--no-figures",
                                   *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()


def test_ablation_recovers_the_effect_of_r(rank_report):
    analysis, out = rank_report
    abl = pd.read_csv(out / "ablations.csv")
    for col in ("axis", "strategy", "variant", "level", "blocks", "score_mean", "score_ci_low", "score_ci_high",
                "test", "p_holm"):
        assert col in abl.columns, col
    assert set(abl["axis"]) == {"r"} and set(abl["method"]) == {"lora:lora", "kd-lora:lora"}
    for method, part in abl.groupby("method"):
        level = part.set_index("level")
        assert level.loc[16, "score_mean"] > level.loc[8, "score_mean"], method  # r = 16 scores +0.02
        assert (part["blocks"] == BLOCKS).all() and (part["test"] == "wilcoxon").all()
        assert (part["p_holm"] < 0.05).all()
        assert level.loc[16, "trainable_params_mean"] > 1.5 * level.loc[8, "trainable_params_mean"]
    assert "## Ablations" in (out / "report.md").read_text()


def test_ablation_figure_drawn(rank_report, tmp_path):
    from kdlora.analysis import plots

    analysis, _ = rank_report
    fig = plots.FIGURES["ablations"](analysis)
    assert fig is not None and len(fig.axes) == 4
    plots.close(fig)


def test_a_study_that_varies_nothing_has_no_ablations(synthetic_report):
    analysis, out = synthetic_report
    assert analysis["ablations"].empty and "## Ablations" not in (out / "report.md").read_text()
    assert (analysis["design"]["arm"] == analysis["design"]["arm"].str.partition(" ")[0]).all()


def test_settings_that_vary_together_are_one_axis(tmp_path):
    """LoRA-only lora at r = 8, 16, 32 with lora_alpha = 2r, KD-LoRA at T = 1, 2, 4: arms name both
    settings, r and lora_alpha form one ablation axis, and LoRA-only meets KD-LoRA only at r = 8."""
    base = grid_configs(families=("bert",), tasks=("rte", "sst2"), seeds=(1, 2, 3), variants=("lora",))
    cfgs = [c for c in base if c.strategy == "fft"]
    cfgs += [c.with_updates(r=r, lora_alpha=2 * r) for c in base if c.strategy == "lora" for r in (8, 16, 32)]
    cfgs += [c.with_updates(kd_temperature=t) for c in base if c.strategy == "kd-lora" for t in (1.0, 2.0, 4.0)]
    for rec in make_records(cfgs, seed=5, collapse_rate=0):
        write_record(tmp_path / "res", rec)
    analysis = build([tmp_path / "res"], "glue")
    assert "lora:lora r=16 lora_alpha=32" in set(analysis["design"]["arm"])
    abl = analysis["ablations"]
    assert set(abl["axis"]) == {"r,lora_alpha", "kd_temperature"}
    lora = abl[abl["axis"] == "r,lora_alpha"]
    assert list(lora["level"]) == ["8/16", "16/32", "32/64"] and (lora["test"] == "friedman").all()
    assert lora["score_mean"].is_monotonic_increasing
    kd = analysis["statistical_tests"].query("test_family == 'lora_vs_kd'")
    assert set(kd["a"]) == {"lora:lora r=8 lora_alpha=16"} and len(kd) == 3


def test_every_number_of_a_report_with_arms_is_in_the_csvs(rank_report):
    import numpy as np
    from test_report_outputs import csv_numbers, report_numbers, tolerance

    _, out = rank_report
    pool = csv_numbers(out)
    missing = [(tok, line) for tok, line in report_numbers((out / "report.md").read_text())
               if not np.any(np.abs(pool - float(tok)) <= tolerance(tok))]
    assert missing == [], missing[:5]
