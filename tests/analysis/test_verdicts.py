"""Verdicts on constructed paired data (LoRA-only arm a, KD-LoRA arm b, blocks of family x task x seed):
identical arms are equivalent, a 3-point shift on every block is `a better`, mean-zero noise on
too few pairs is inconclusive, a significant Wilcoxon whose effect CI reaches zero is not
directional, and fewer blocks than a test needs is `not testable`."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from kdlora.analysis.comparisons import paired_tests
from kdlora.analysis.model import Settings


def paired_frame(a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """A tidy-like table: one LoRA-only and one KD-LoRA `lora` run per block."""
    blocks = list(itertools.islice(itertools.product(("bert", "roberta"), ("rte", "sst2", "mrpc", "cola"),
                                                     range(100)), len(a)))
    rows = []
    for (family, task, seed), x, y in zip(blocks, a, b):
        for strategy, value in (("lora", x), ("kd-lora", y)):
            rows.append({"run_id": f"{family}-{task}-{seed}-{strategy}", "family": family, "task": task,
                         "seed": seed, "strategy": strategy, "variant": "lora", "method": f"{strategy}:lora",
                         "primary": float(value), "score_norm": float(value)})
    return pd.DataFrame(rows)


def verdict_of(a, b, **settings) -> pd.Series:
    tests = paired_tests(paired_frame(np.asarray(a, float), np.asarray(b, float)), Settings(**settings))
    return tests[tests["test_family"] == "lora_vs_kd"].iloc[0]


@pytest.fixture
def base():
    return np.random.default_rng(7).normal(0.8, 0.05, 24)


def test_identical_arms_are_equivalent(base):
    row = verdict_of(base, base)
    assert row["verdict"] == "equivalent" and row["p_tost"] < 0.05 and row["effect"] == 0


def test_a_three_point_shift_is_a_better(base):
    noise = np.random.default_rng(8).normal(0, 0.003, base.size)
    row = verdict_of(base + 0.03 + noise, base)
    assert row["verdict"] == "a better"
    assert 0 < row["effect_ci_low"] < row["effect"] < row["effect_ci_high"]
    assert row["effect"] == pytest.approx(0.03, abs=0.003)
    assert verdict_of(base, base + 0.03 + noise)["verdict"] == "b better"


def test_mean_zero_noise_on_few_pairs_is_inconclusive(base):
    diff = np.array([0.02, -0.02, 0.01, -0.01, 0.03, -0.03])
    row = verdict_of(base[:6] + diff, base[:6])
    assert row["verdict"] == "inconclusive" and row["testable"]
    assert row["p_tost"] > 0.05 and row["effect_ci_low"] < 0 < row["effect_ci_high"]


def test_significant_wilcoxon_with_an_effect_ci_at_zero_is_not_directional(base):
    # 20 blocks tie exactly, 10 favour a: scipy's Wilcoxon drops the ties and finds p < 0.01, but
    # the Hodges-Lehmann CI over all 30 blocks reaches zero, so the data do not show a direction
    diff = np.r_[np.zeros(20), np.linspace(0.02, 0.04, 10)]
    row = verdict_of(np.r_[base, base[:6]] + diff,
                     np.r_[base, base[:6]])
    assert row["p_wilcoxon_holm"] < 0.01
    assert row["effect_ci_low"] <= 0
    assert row["verdict"] not in ("a better", "b better")


@pytest.mark.parametrize("n", [2, 5])
def test_too_few_blocks_are_not_testable(base, n):
    row = verdict_of(base[:n] + 0.05, base[:n])
    assert row["verdict"] == f"not testable ({n} blocks)"
    assert np.isnan(row["p_wilcoxon"]) and np.isnan(row["ci_low"]) and np.isnan(row["effect_ci_low"])


def test_margin_is_in_the_primary_metric(base):
    shift = base + 0.005
    assert verdict_of(shift, base, equivalence_margin=0.01)["p_tost"] < 0.05
    assert verdict_of(shift, base, equivalence_margin=0.004)["p_tost"] > 0.05


def test_sensitivity_recomputes_verdicts_without_collapsed_runs(base):
    """a beats b by 3 points on 20 blocks; on 10 more, a's runs collapsed to a constant predictor
    (far below b). With them the verdict is not directional; without them it is `a better`."""
    from kdlora.analysis.comparisons import sensitivity

    n = 30
    a = np.r_[base[:20] + 0.03 + np.random.default_rng(9).normal(0, 0.003, 20), np.full(10, 0.3)]
    b = np.r_[base[:20], base[:10]]
    df = paired_frame(a, b)
    settings = Settings()
    tests = paired_tests(df, settings)
    collapsed = df.loc[(df["strategy"] == "lora") & (df["primary"] == 0.3), "run_id"]
    sens = sensitivity(df, tests, collapsed, settings).set_index("comparison").loc["lora"]
    assert sens["n_pairs"] == n and sens["n_pairs_without"] == 20
    assert sens["verdict"] not in ("a better", "b better") and sens["verdict_without"] == "a better"
    assert bool(sens["changed"])
    unchanged = sensitivity(df, tests, [], settings)
    assert not unchanged["changed"].any()
