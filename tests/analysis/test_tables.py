"""Computed tables on small hand-made tidy tables: normalised scores, completion against a grid,
collapsed runs, pairing, teacher links, and the shape checks of the tidy table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kdlora.analysis import comparisons, efficiency, tables
from kdlora.analysis.glue import chance_of_primary, chance_score, constant_predictor
from kdlora.analysis.report import build
from kdlora.analysis.tidy import COLUMNS, check_table, records_to_table
from kdlora.analysis.model import Settings
from kdlora.strategies import teacher_of


def tidy(rows: list[dict]) -> pd.DataFrame:
    """A checked tidy table from a few fields per row (the rest missing)."""
    base = {c: None for c in COLUMNS}
    frame = pd.DataFrame([{**base, "status": "completed", "primary_name": "accuracy", **r} for r in rows])
    for i, r in frame.iterrows():
        frame.loc[i, "method"] = "fft" if r["strategy"] == "fft" else f"{r['strategy']}:{r['variant']}"
        frame.loc[i, "run_id"] = f"run{i}"
    from kdlora.analysis.tidy import _typed

    return check_table(_typed(frame))


def run(family="bert", task="rte", seed=1, strategy="lora", variant="lora", primary=0.6, **kw) -> dict:
    return {"family": family, "task": task, "seed": seed, "strategy": strategy,
            "variant": None if strategy == "fft" else variant, "primary": primary, **kw}


def test_chance_levels():
    assert chance_score("rte", "accuracy") == 0.5
    assert chance_score("mnli", "matched_accuracy") == pytest.approx(1 / 3)
    assert chance_score("cola", "mcc") == 0.0
    pi = 279 / 408  # MRPC validation positives
    assert chance_score("mrpc", "f1") == pytest.approx(pi / (pi + 0.5))
    assert chance_of_primary("mrpc", "mean(accuracy,f1)") == pytest.approx((0.5 + pi / (pi + 0.5)) / 2)
    assert math.isnan(chance_score("my_custom_task", "accuracy"))


def test_constant_predictor_detection():
    assert constant_predictor("mrpc", "accuracy", 279 / 408)  # always "equivalent"
    assert constant_predictor("wnli", "accuracy", 31 / 71)  # always the minority class
    assert constant_predictor("cola", "mcc", 0.0) and constant_predictor("qqp", "f1", 0.0)
    assert not constant_predictor("rte", "accuracy", 0.6)
    assert not constant_predictor("custom", "accuracy", 0.5)


def test_constant_predictor_mask_equals_the_scalar_test():
    from kdlora.analysis.glue import constant_predictor_mask

    values = np.array([279 / 408, 129 / 408, 279 / 408 + 0.5 / 408, 279 / 408 + 0.49 / 408, 0.0, 1e-13, -1e-11,
                       31 / 71, 40 / 71, 0.6, 1 / 3, np.nan])
    for task in ("mrpc", "wnli", "mnli", "cola", "custom"):
        for metric in ("accuracy", "mismatched_accuracy", "f1", "mcc", "pearson", "macro_f1"):
            assert constant_predictor_mask(task, metric, values).tolist() == [
                constant_predictor(task, metric, float(v)) for v in values]


def test_normalised_score_by_hand():
    df = tidy([run(strategy="fft", primary=0.7), run(primary=0.6), run(seed=2, primary=0.65),
               run(strategy="fft", seed=3, primary=0.45), run(seed=3, primary=0.5)])
    out = tables.add_normalised(df)
    # seed 1: (0.6 - 0.5) / (0.7 - 0.5) = 0.5; seed 2 has no FFT: the family/task FFT mean 0.575 anchors it
    assert out.loc[1, "score_norm"] == pytest.approx(0.5)
    assert out.loc[2, "score_norm"] == pytest.approx((0.65 - 0.5) / (0.575 - 0.5))
    assert out.loc[0, "score_norm"] == pytest.approx(1.0)
    assert math.isnan(out.loc[4, "score_norm"])  # FFT below chance cannot anchor a scale


def test_pairing_uses_matched_blocks_only():
    # KD-LoRA ran only on seed 1; the LoRA-only run on seed 2 must not enter the paired test
    df = tidy([run(primary=0.60), run(seed=2, primary=0.90), run(strategy="kd-lora", primary=0.55)])
    t = comparisons.paired_tests(df, Settings())
    row = t[t["test_family"] == "lora_vs_kd"].iloc[0]
    assert row["n_pairs"] == 1 and row["mean_diff"] == pytest.approx(0.05)
    assert row["welch_n_a"] == 2 and row["welch_mean_a"] == pytest.approx(0.75)  # the pooled way uses both


def test_holm_is_applied_within_each_family_of_tests(synthetic_report):
    analysis, _ = synthetic_report
    t = analysis["statistical_tests"]
    for fam, part in t.groupby("test_family"):
        p = part["p_wilcoxon"].to_numpy()
        m = len(p)
        order = np.argsort(p)
        expected = np.minimum(1, np.maximum.accumulate(p[order] * (m - np.arange(m))))
        assert np.allclose(part["p_wilcoxon_holm"].to_numpy()[order], expected)


def test_completion_matches_by_key_and_counts_outsiders():
    expected = pd.DataFrame([
        {"run_id": "g1", "family": "bert", "task": "rte", "strategy": "fft", "variant": None, "seed": 1},
        {"run_id": "g2", "family": "bert", "task": "rte", "strategy": "lora", "variant": "lora", "seed": 1},
        {"run_id": "g3", "family": "bert", "task": "rte", "strategy": "lora", "variant": "dora", "seed": 1},
        {"run_id": "g4", "family": "bert", "task": "rte", "strategy": "lora", "variant": "dora", "seed": 2},
    ])
    df = tidy([run(strategy="fft"), run(), run(seed=2, variant="dora"), run(seed=9)])
    summary, cells = tables.completion(df, expected)
    overall = summary.set_index("scope").loc["overall"]
    assert (overall["expected"], overall["done"], overall["outside_grid"]) == (4, 3, 1)
    assert overall["completion_pct"] == 75.0
    by = summary[summary["scope"] == "strategy"].set_index("level")
    assert (by.loc["fft", "done"], by.loc["lora", "done"]) == (1, 2)
    assert cells["expected"].sum() == 4 and cells["done"].sum() == 3
    # named as everywhere else: FFT has no variant (the heatmap once labelled its row "FFT nan")
    assert set(cells["method"]) == {"fft", "lora:lora", "lora:dora"}


def test_completion_with_a_hyperparameter_axis_matches_by_run_id(tmp_path):
    from kdlora.testing.synthetic_records import make_records
    from kdlora.grid import expand_grid, load_grid
    from kdlora.records import write_record

    grid = tmp_path / "g.yaml"
    grid.write_text("families: [bert]\ntasks: [rte]\nseeds: [1]\nstrategies: [lora]\nvariants: [lora]\n"
                    "adapters:\n  r: [4, 8]\n")
    configs = expand_grid(load_grid(grid))
    assert len(configs) == 2  # one key, two runs
    write_record(tmp_path / "res", next(make_records(configs[:1])))
    comp = build([tmp_path / "res"], "glue", grid)["completion"].set_index("scope").loc["overall"]
    assert (comp["expected"], comp["done"]) == (2, 1)


def test_collapsed_runs_listed_with_evidence():
    df = tidy([run(task="mrpc", accuracy=279 / 408, f1=2 * (279 / 408) / (1 + 279 / 408), primary=279 / 408),
               run(task="cola", mcc=0.0, primary=0.0, primary_name="mcc"),
               run(task="rte", accuracy=0.61, primary=0.61)])
    out = tables.collapsed_runs(df)
    assert sorted(out["task"]) == ["cola", "mrpc"]
    assert "mcc=0.0000" in out.set_index("task").loc["cola", "evidence"]


def test_teacher_student_links_by_run_id():
    df = tidy([run(strategy="fft", primary=0.8, eval_samples_per_s=100.0),
               run(strategy="kd-lora", primary=0.6, eval_samples_per_s=300.0)])
    df.loc[1, "teacher_run_id"] = df.loc[0, "run_id"]
    pairs = tables.teacher_student(df)
    assert len(pairs) == 1
    assert pairs.loc[0, "pct_of_teacher"] == pytest.approx(75.0)
    assert pairs.loc[0, "inference_speedup"] == pytest.approx(3.0)


def test_memory_of_different_kinds_is_never_averaged():
    df = tidy([run(strategy="fft", peak_memory_bytes=2e9, memory_kind="epoch_end_allocated"),
               run(strategy="fft", seed=2, peak_memory_bytes=3e9, memory_kind="cuda_max_allocated"),
               run(peak_memory_bytes=5e8, memory_kind="cuda_max_allocated")])
    summary = efficiency.summary_by_variant(tables.add_normalised(df)).set_index("method")
    assert summary.loc["fft", "memory_kind"] == "mixed" and math.isnan(summary.loc["fft", "memory_mb"])
    assert summary.loc["lora:lora", "memory_mb"] == 500.0
    assert "peak_memory_bytes" not in set(efficiency.gains(df)["measure"])


def test_tidy_table_shape_is_checked():
    good = tidy([run()])
    with pytest.raises(ValueError, match="lacks columns"):
        check_table(good.drop(columns=["primary"]))
    with pytest.raises(ValueError, match="must be float"):
        check_table(good.assign(primary="0.6"))
    with pytest.raises(ValueError, match="duplicate run_id"):
        check_table(pd.concat([good, good]))
    with pytest.raises(TypeError):
        check_table(good.to_numpy())


def test_policy_decides_the_primary(synthetic_configs):
    from kdlora.testing.synthetic_records import make_records

    mrpc = [c for c in synthetic_configs if c.task == "mrpc"][:1]
    rec = next(make_records(mrpc))
    glue = records_to_table([(rec, "x")], "glue").iloc[0]
    legacy = records_to_table([(rec, "x")], "legacy").iloc[0]
    assert glue["primary_name"] == "mean(accuracy,f1)" and legacy["primary_name"] == "accuracy"
    assert glue["primary"] == pytest.approx((rec.metrics["accuracy"] + rec.metrics["f1"]) / 2)
    assert legacy["primary"] == rec.metrics["accuracy"]


def test_kd_record_without_teacher_id_links_through_its_config(synthetic_configs):
    from kdlora.testing.synthetic_records import make_records

    kd = next(c for c in synthetic_configs if c.strategy == "kd-lora")
    rec = next(make_records([kd]))
    bare = rec.model_copy(update={"teacher_run_id": None,
                                  "efficiency": rec.efficiency.model_copy(update={"teacher_run_id": None})})
    row = records_to_table([(bare, "x")], "glue").iloc[0]
    assert row["teacher_run_id"] == teacher_of(kd).run_id


# ----- issue 11: GLUE average convention, custom-task chance, KD-LoRA's full cost -----------------
def test_glue_average_leaves_wnli_out_by_default():
    from kdlora.analysis.tables import glue_average

    pt = pd.DataFrame({"family": "bert", "strategy": "fft", "variant": None, "method": "fft",
                       "task": ["rte", "sst2", "wnli"], "mean": [0.7, 0.9, 0.5]})
    assert glue_average(pt)["average"].iloc[0] == pytest.approx(0.8)
    assert glue_average(pt)["n_tasks"].iloc[0] == 2
    assert glue_average(pt, "all")["average"].iloc[0] == pytest.approx(0.7)
    only_wnli = glue_average(pt[pt["task"] == "wnli"])
    assert len(only_wnli) == 1 and np.isnan(only_wnli["average"].iloc[0])


def test_custom_task_gets_a_normalised_score():
    from kdlora.analysis.tables import add_normalised

    df = pd.DataFrame({"family": "minilm", "task": "reviews", "seed": 1, "strategy": ["fft", "lora"],
                       "method": ["fft", "lora:lora"], "primary": [0.9, 0.6], "primary_name": "accuracy",
                       "num_labels": 4.0})
    out = add_normalised(df)
    assert out["chance"].tolist() == [0.25, 0.25]
    assert out["score_norm"].tolist() == pytest.approx([1.0, (0.6 - 0.25) / (0.9 - 0.25)])
    mcc = add_normalised(df.assign(primary_name="mcc", num_labels=np.nan))
    assert mcc["chance"].tolist() == [0.0, 0.0]


def test_kd_lora_full_cost_shares_the_teacher():
    from kdlora.analysis.efficiency import with_teacher_share

    df = pd.DataFrame({"run_id": ["t", "s1", "s2"], "strategy": ["fft", "kd-lora", "kd-lora"],
                       "teacher_run_id": [None, "t", "t"], "train_time_s": [100.0, 10.0, 20.0],
                       "teacher_cache_build_s": [np.nan, 6.0, 0.0], "energy_j": [1000.0, 50.0, 50.0]})
    for col in ("trainable_params", "peak_memory_bytes"):
        df[col] = 1.0
    out = with_teacher_share(df).set_index("run_id")
    assert out.loc["s1", "train_time_s"] == 10 + (100 + 6) / 2 and out.loc["s2", "train_time_s"] == 20 + 53
    assert out.loc["s1", "energy_j"] == 550 and out["trainable_params"].isna().all()
