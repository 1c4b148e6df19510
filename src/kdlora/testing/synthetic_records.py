"""Synthetic run records with the structure of a real study, for tests and the report benchmark.

families x GLUE tasks x seeds x (FFT + variants x {LoRA-only, KD-LoRA}); every task's real metric
names; scores = task level + family and method effects + seed noise, with a few collapsed runs;
efficiency in absolute units with CUDA peak memory; each KD-LoRA run linked to its FFT teacher.
The numbers are made up and say nothing about any method: they only exercise the analysis.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from kdlora.analysis.glue import VALIDATION_LABEL_COUNTS
from kdlora.config import RunConfig, build_config
from kdlora.data.metrics import GLUE_TASKS, primary_metric
from kdlora.records.legacy import STRATEGY_DIRS
from kdlora.records.schema import Efficiency, RunRecord
from kdlora.strategies import STRATEGIES, ordered_strategies, teacher_run_id

TASK_LEVEL = {"cola": 0.55, "sst2": 0.92, "mrpc": 0.86, "qqp": 0.89, "stsb": 0.88, "mnli": 0.84,
              "qnli": 0.91, "rte": 0.68, "wnli": 0.55}
FAMILY_EFFECT = {"bert": 0.0, "roberta": 0.01, "deberta": 0.03}
# The reference study's methods: its strategies (as the legacy importer names them) and variants.
STUDY_STRATEGIES = tuple(STRATEGY_DIRS.values())
VARIANT_EFFECT = {"lora": 0.0, "rslora": 0.005, "olora": 0.003, "dora": 0.002, "adalora": -0.04, "mrlora": 0.006}
STUDY_VARIANTS = tuple(VARIANT_EFFECT)


def method_effect(strategy: str) -> float:
    """FFT 0, adapters on the same model -0.02, adapters on the smaller student -0.05."""
    s = STRATEGIES.get(strategy)
    return 0.0 if not s.uses_adapters else -0.05 if s.trains_student else -0.02
RANK_EFFECT = 0.0025  # per unit of r above 8 (r = 16: +0.02), so rank ablations have a known effect
PARAMS = {"bert": 109_483_778, "roberta": 124_647_170, "deberta": 184_423_682, "minilm": 22_713_216}


def grid_configs(families=("bert", "roberta", "deberta"), tasks=GLUE_TASKS, seeds=(42, 123, 2024),
                 variants=STUDY_VARIANTS, strategies=STUDY_STRATEGIES) -> list[RunConfig]:
    """The study's run configs, FFT teachers included (like a grid file would expand)."""
    out = []
    ordered = [s for s in ordered_strategies() if s.name in strategies]
    for family, task, seed in itertools.product(families, tasks, seeds):
        ident = {"family": family, "task": task, "seed": seed}
        for s in ordered:
            for variant in variants if s.uses_adapters else (None,):
                out.append(build_config({**ident, "strategy": s.name, "variant": variant}))
    return out


def _metrics(task: str, score: float, rng: np.random.Generator, collapsed: bool) -> dict[str, float]:
    counts = VALIDATION_LABEL_COUNTS.get(task)
    if collapsed:  # a constant predictor: majority-class accuracy, MCC/F1/correlations 0
        acc = max(counts) / sum(counts) if counts else 0.5
        values = {"accuracy": acc, "f1": 0.0, "mcc": 0.0, "pearson": 0.0, "spearman": 0.0,
                  "matched_accuracy": acc, "mismatched_accuracy": acc}
    else:
        jitter = lambda: float(np.clip(score + rng.normal(0, 0.005), 0, 1))  # noqa: E731
        values = {"accuracy": score, "f1": jitter(), "mcc": score, "pearson": score, "spearman": jitter(),
                  "matched_accuracy": score, "mismatched_accuracy": jitter()}
    names = {"cola": ("mcc",), "mrpc": ("accuracy", "f1"), "qqp": ("accuracy", "f1"),
             "stsb": ("pearson", "spearman"), "mnli": ("matched_accuracy", "mismatched_accuracy")}
    return {n: float(values[n]) for n in names.get(task, ("accuracy",))}


def _efficiency(cfg: RunConfig, rng: np.random.Generator, teacher: str | None) -> Efficiency:
    full = PARAMS.get(cfg.family, 100_000_000)
    student = STRATEGIES.get(cfg.strategy).trains_student
    adapters = STRATEGIES.get(cfg.strategy).uses_adapters
    total = int(full * (0.6 if student else 1.0))
    trainable = full if not adapters else int(rng.normal(6e5, 5e4) * (1.4 if cfg.variant == "mrlora" else 1)
                                                       * cfg.r / 8)
    time_s = float(rng.lognormal(np.log(1500 if not adapters else 300 * (0.6 if student else 1)), 0.3))
    samples = 3 * 8_000
    tokens = samples * 60
    flops = (4 if adapters else 6) * total * tokens + 6 * trainable * tokens
    return Efficiency(
        trainable_params=trainable, total_params=total,
        peak_memory_bytes=int(rng.normal(2.3e9 if not adapters else 5.8e8 * (0.7 if student else 1), 1e7)),
        memory_kind="cuda_max_allocated", train_time_s=time_s, train_steps=samples // 32, train_samples=samples,
        train_samples_per_s=samples / time_s, train_tokens_per_s=tokens / time_s,
        flops_measured=flops * float(rng.normal(1.0, 0.02)), flops_analytic=float(flops),
        flops_method="synthetic", energy_j=time_s * float(rng.normal(250, 10)),
        eval_samples_per_s=float(rng.normal(4000 if student else 2000, 100)),
        eval_latency_ms_b32=float(rng.normal(8 if student else 16, 0.5)), teacher_run_id=teacher)


def make_record(cfg: RunConfig, rng: np.random.Generator, collapse_rate: float = 0.02) -> RunRecord:
    effect = FAMILY_EFFECT.get(cfg.family, 0.0) + method_effect(cfg.strategy) + VARIANT_EFFECT.get(cfg.variant, 0.0)
    adapters = STRATEGIES.get(cfg.strategy).uses_adapters
    if adapters:
        effect += RANK_EFFECT * (cfg.r - 8)
    score = float(np.clip(TASK_LEVEL.get(cfg.task, 0.8) + effect + rng.normal(0, 0.01), 0, 1))
    collapsed = adapters and rng.random() < collapse_rate
    metrics = _metrics(cfg.task, score, rng, collapsed)
    name, value = primary_metric(cfg.task, metrics, cfg.metric_policy)
    teacher = teacher_run_id(cfg)
    return RunRecord(run_id=cfg.run_id, status="completed", config=cfg.model_dump(mode="json"),
                     task=cfg.task_identity.as_dict(), metrics={**metrics, "primary": value, "primary_name": name},
                     efficiency=_efficiency(cfg, rng, teacher), environment={"source": "synthetic"},
                     started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:10:00+00:00",
                     teacher_run_id=teacher)


def make_records(configs: list[RunConfig], n: int | None = None, seed: int = 0,
                 collapse_rate: float = 0.02) -> Iterator[RunRecord]:
    """Records for `configs` (or a random subset of n of them, in their original order)."""
    rng = np.random.default_rng(seed)
    keep = range(len(configs)) if n is None else sorted(rng.choice(len(configs), size=n, replace=False))
    for i in keep:
        yield make_record(configs[i], rng, collapse_rate)
