"""Small and lopsided studies still give a complete report: one run, one seed, no FFT, no
KD-LoRA, a single variant, a custom (non-GLUE) task."""

from __future__ import annotations

import pytest

from kdlora.analysis.report import build, write_report
from kdlora.testing.synthetic_records import grid_configs, make_records
from kdlora.records import write_record


def only(strategies, **kw):
    return [c for c in grid_configs(**kw) if c.strategy in strategies]


CASES = {
    "one run": lambda: grid_configs(families=("bert",), tasks=("rte",), seeds=(1,), variants=("lora",))[1:2],
    "fft only": lambda: only({"fft"}, tasks=("rte", "cola")),
    "one variant, no fft": lambda: only({"lora"}, tasks=("rte",), variants=("dora",)),
    "no kd-lora": lambda: only({"fft", "lora"}, tasks=("sst2", "stsb"), seeds=(1, 2)),
    "kd-lora and its teachers": lambda: only({"fft", "kd-lora"}, families=("bert",), tasks=("qqp",),
                                            variants=("lora", "dora")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_report_renders(case, tmp_path):
    for rec in make_records(CASES[case](), collapse_rate=0):
        write_record(tmp_path / "res", rec)
    analysis = build([tmp_path / "res"], "glue")
    report = write_report(analysis, tmp_path / "out", figures=False)
    text = report.read_text()
    assert "## Executive summary" in text and "## 6. Limitations" in text
    assert "nan" not in text.replace("n/a", "")  # missing values say n/a, never nan


def test_custom_task_keeps_its_own_primary(tmp_path):
    """A task from a YAML file: its record names the primary metric; no chance level is known."""
    cfgs = only({"fft", "lora", "kd-lora"}, families=("minilm",), tasks=("rte",), seeds=(1, 2), variants=("lora",))
    for rec in make_records(cfgs, collapse_rate=0):
        data = rec.model_dump()
        data["config"]["task"] = "data/reviews2/task.yaml"
        data["task"] = {"name": "reviews2", "fingerprint": "sha256:0"}  # named by its `name:`, not the file
        data["metrics"] = {"accuracy": rec.metrics["accuracy"], "macro_f1": 0.7, "primary": 0.7,
                           "primary_name": "macro_f1"}
        write_record(tmp_path / "res", rec.model_validate(data))
    analysis = build([tmp_path / "res"], "glue")
    runs = analysis["runs"]
    assert set(runs["task"]) == {"reviews2"} and set(runs["primary_name"]) == {"macro_f1"}
    assert runs["score_norm"].isna().all()
    assert len(analysis["teacher_student"]) == 2
    write_report(analysis, tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "per_task_bars.png").is_file()
