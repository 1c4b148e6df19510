"""Human labels for what the figures and the LaTeX tables show: one place, so the two agree.

Internal ids (`lora:dora`, `lora_vs_kd`, `matched_accuracy`) never reach a reader: methods read
as in the tables ("LoRA-only dora"), comparisons as sentences ("LoRA-only − KD-LoRA, dora"),
metrics and tasks by their usual names, and every measured quantity with its unit.
"""

from __future__ import annotations

import math

from kdlora.analysis.tidy import STRATEGY_LABEL, method_label

MINUS = "\u2212"  # a real minus sign in "A − B"
FAMILY = {"bert": "BERT", "roberta": "RoBERTa", "deberta": "DeBERTa", "minilm": "MiniLM"}
TASK = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
        "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
METRIC = {"accuracy": "accuracy", "f1": "F1", "macro_f1": "macro-F1", "mcc": "MCC", "pearson": "Pearson r",
          "spearman": "Spearman \u03c1", "matched_accuracy": "matched accuracy",
          "mismatched_accuracy": "mismatched accuracy"}
MEMORY_KIND = {"epoch_end_allocated": "epoch-end memory", "cuda_max_allocated": "peak GPU memory",
               "cpu_peak_rss_growth": "peak RSS growth"}  # short: an axis label; docs/analysis.md has the rest
# What each family of paired comparisons compares, as a heading.
TEST_FAMILY = {"lora_vs_kd": "LoRA-only \u2212 KD-LoRA, per variant",
               "vs_fft": "Adapter method \u2212 FFT",
               "families": "Between model families"}


def strategy(name: str) -> str:
    return STRATEGY_LABEL.get(name, name)


# RunConfig fields as a reader knows them, where an arm's label shows the settings it holds.
SETTING = {"lora_alpha": "\u03b1", "lora_dropout": "dropout", "kd_temperature": "T", "kd_alpha": "KD \u03b1",
           "weight_decay": "weight decay", "batch_size": "batch", "max_length": "max length",
           "warmup_ratio": "warm-up", "lora_ranks": "ranks"}


def method(name: str) -> str:
    """'lora:dora' -> 'LoRA-only dora' (as in the tables); an arm keeps its settings, named as a
    reader knows them: 'lora:lora r=16 lora_alpha=32' -> 'LoRA-only lora r=16 α=32'."""
    label = method_label(name)
    base, _, settings = name.partition(" ")
    if not settings:
        return label
    return label[: len(label) - len(settings)] + settings_text(settings)


def settings_text(settings: str) -> str:
    parts = []
    for item in settings.split():
        key, sep, value = item.partition("=")
        parts.append(f"{SETTING.get(key, key.replace('_', ' '))}{sep}{value}")
    return " ".join(parts)


def family(name: str) -> str:
    return FAMILY.get(name, name)


def task(name: str) -> str:
    return TASK.get(name, name)


SHORT_METRIC = {"matched_accuracy": "matched acc.", "mismatched_accuracy": "mismatched acc.",
                "mean(accuracy,f1)": "(acc. + F1) / 2", "mean(pearson,spearman)": "(r + ρ) / 2"}


def metric_short(name: str) -> str:
    """The metric on a small panel's axis: 'matched acc.', '(acc. + F1) / 2'."""
    return SHORT_METRIC.get(name) or metric(name)


def metric(name: str) -> str:
    """'mcc' -> 'MCC'; 'mean(accuracy,f1)' -> 'mean of accuracy and F1'."""
    if name.startswith("mean(") and name.endswith(")"):
        parts = [METRIC.get(p.strip(), p.strip()) for p in name[5:-1].split(",")]
        return "mean of " + " and ".join(parts)
    return METRIC.get(name, name.replace("_", " "))


def side(name: str) -> str:
    """One side of a comparison: a method id or a family name."""
    if name in FAMILY:
        return family(name)
    base = name.partition(" ")[0]
    return method(name) if (":" in base or base in STRATEGY_LABEL) else name.replace("_", " ")


def comparison(test_family: str, a: str, b: str) -> str:
    """A paired comparison as a sentence: 'LoRA-only − KD-LoRA, dora', 'KD-LoRA dora − FFT'."""
    sa, _, va = a.partition(":")
    sb, _, vb = b.partition(":")
    if va and va == vb and sa != sb:  # the same variant (and arm settings) under two strategies
        variant, _, settings = va.partition(" ")
        return f"{strategy(sa)} {MINUS} {strategy(sb)}, {variant}" + (f" {settings_text(settings)}" if settings else "")
    return f"{side(a)} {MINUS} {side(b)}"


def legacy_comparison(test_family: str, label: str) -> str:
    """The reference's pooled comparisons, whose rows carry only a label ('dora', 'dora vs FFT')."""
    if test_family == "lora_vs_kd":
        return f"LoRA-only {MINUS} KD-LoRA, {label}"
    a, sep, b = label.partition(" vs ")
    if sep:  # a variant (both strategies pooled) or a family, against FFT or a family
        name = lambda x: family(x) if x in FAMILY else strategy(x)  # noqa: E731
        return f"{name(a)} {MINUS} {name(b)}"
    return label.replace("_", " ")


def test_family(name: str) -> str:
    return TEST_FAMILY.get(name, name.replace("_", " "))


def memory(kind: str | None) -> str:
    return MEMORY_KIND.get(kind or "", "memory")


def bytes_unit(largest: float) -> tuple[str, float]:
    """('GB', 1e9) or ('MB', 1e6): the unit that keeps memory figures short."""
    return ("GB", 1e9) if largest is not None and not math.isnan(largest) and largest >= 2e9 else ("MB", 1e6)
