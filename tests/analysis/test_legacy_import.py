"""The legacy importer: layout detection, absolute units, memory marked as epoch-end, teacher
links, and corrupt/empty/partial files reported by path and skipped."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdlora.errors import UserError
from kdlora.records import read_record
from kdlora.records.legacy import import_legacy, is_legacy_dir, iter_legacy_records

FAMILY_MODELS = {"bert": ("./models/bert-base-uncased", "./models/distilbert-base-uncased")}


def legacy_file(root: Path, strategy: str, task: str, seed: int, variant: str = "lora", **metrics) -> Path:
    """One metrics.json the way the reference study wrote it (params in millions, MB memory)."""
    peft = "lora" if strategy == "fft" else variant
    path = root / "results" / strategy / f"task_{task}_bert_{seed}" / "base_32_5e-05_0.01" / \
        f"peft_{peft}_16_0.05_8" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    teacher, student = FAMILY_MODELS["bert"]
    body = {
        **(metrics or {"eval_accuracy": 0.8}),
        "args": {"teacher_model_name": teacher, "student_model_name": student, "train_batch_size": 32,
                 "num_train_epochs": 3, "weight_decay": 0.01, "rank": 8, "lora_alpha": 16,
                 "lora_dropout": 0.05, "teacher_learning_rate": 5e-05, "student_learning_rate": 0.0005,
                 "task": task, "peft": peft, "seed": seed, "model_family": "bert", "lora_ranks": [8, 4, 2, 1]},
        "train": {"train_time": 12.5, "trainable_params_count": 109.483778 if strategy == "fft" else 0.296450,
                  "memory_allocated": [1787.917824, 1790.0, 1788.5], "memory_reserved": [9250.537472] * 3},
        "variant": strategy,
        "log_history": [{"train_runtime": 12.5, "train_samples_per_second": 166.754, "total_flos": 6.7e15,
                         "step": 402, "epoch": 3.0}],
    }
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    legacy_file(tmp_path, "fft", "rte", 42)
    legacy_file(tmp_path, "lora", "rte", 42, "dora", eval_accuracy=0.7)
    legacy_file(tmp_path, "kd-lora", "rte", 42, "mrlora", eval_accuracy=0.65)
    legacy_file(tmp_path, "lora", "cola", 42, "lora", eval_matthews_correlation=0.5)
    legacy_file(tmp_path, "lora", "mnli", 42, "lora", matched_accuracy=0.8, mismatched_accuracy=0.81)
    return tmp_path


def records_by_strategy(root: Path, errors: list | None = None) -> dict:
    return {(r.config["strategy"], r.config["task"]): r for r in iter_legacy_records(root, errors)}


def test_units_are_absolute_and_memory_is_marked_not_peak(tree):
    recs = records_by_strategy(tree)
    fft, lora = recs[("fft", "rte")], recs[("lora", "rte")]
    assert fft.efficiency.trainable_params == 109_483_778  # millions x 1e6, not x 110/100
    assert lora.efficiency.trainable_params == 296_450
    assert fft.efficiency.memory_kind == "epoch_end_allocated"
    assert fft.efficiency.peak_memory_bytes == 1_790_000_000  # the largest epoch-end value, in bytes
    assert fft.efficiency.train_time_s == 12.5
    assert fft.efficiency.train_samples_per_s == 166.754
    assert fft.efficiency.model_extra["hf_total_flos"] == 6.7e15
    assert fft.efficiency.flops_measured is None and fft.efficiency.flops_analytic is None


def test_configs_are_valid_and_metrics_renamed(tree):
    recs = records_by_strategy(tree)
    fft = recs[("fft", "rte")]
    assert fft.config["variant"] is None and fft.config["lr"] == 5e-05
    kd = recs[("kd-lora", "rte")]
    assert kd.config["variant"] == "mrlora" and kd.config["mrlora_ranks"] == [8, 4, 2, 1]
    assert kd.config["student_model"] == "./models/distilbert-base-uncased"
    assert recs[("lora", "cola")].metrics["mcc"] == 0.5
    assert recs[("lora", "mnli")].metrics["primary_name"] == "matched_accuracy"
    assert recs[("lora", "rte")].metrics == {"accuracy": 0.7, "primary": 0.7, "primary_name": "accuracy"}


def test_kd_runs_link_the_fft_teacher_of_the_same_cell(tree):
    recs = records_by_strategy(tree)
    kd, fft = recs[("kd-lora", "rte")], recs[("fft", "rte")]
    assert kd.teacher_run_id == fft.run_id == kd.efficiency.teacher_run_id


def test_corrupt_empty_and_partial_files_are_reported_and_skipped(tree):
    bad_json = legacy_file(tree, "lora", "qnli", 42)
    bad_json.write_text("{truncated")
    empty = legacy_file(tree, "lora", "qqp", 42)
    empty.write_text("")
    partial = legacy_file(tree, "lora", "sst2", 42)
    body = json.loads(partial.read_text())
    del body["train"]
    partial.write_text(json.dumps(body))
    no_metric = legacy_file(tree, "lora", "wnli", 42)
    body = json.loads(no_metric.read_text())
    del body["eval_accuracy"]
    no_metric.write_text(json.dumps(body))
    mismatch = legacy_file(tree, "lora", "stsb", 42, eval_pearson=0.8)
    body = json.loads(mismatch.read_text())
    body["args"]["task"] = "mrpc"
    mismatch.write_text(json.dumps(body))

    errors: list[str] = []
    recs = records_by_strategy(tree, errors)
    assert len(recs) == 5
    assert len(errors) == 5
    for path in (bad_json, empty, partial, no_metric, mismatch):
        assert sum(e.startswith(str(path)) for e in errors) == 1


def test_detection(tree, tmp_path_factory):
    assert is_legacy_dir(tree) and is_legacy_dir(tree / "results")
    assert not is_legacy_dir(tmp_path_factory.mktemp("empty"))
    with pytest.raises(UserError, match="no legacy results"):
        list(iter_legacy_records(tmp_path_factory.mktemp("nothing")))


def test_import_writes_valid_records(tree, tmp_path):
    out = tmp_path / "out"
    result = import_legacy(tree, out)
    assert len(result.written) == 5 and result.skipped == []
    rec = read_record(result.written[0])
    assert rec.status == "completed"
    again = import_legacy(tree, out)  # idempotent: same run_ids, same files
    assert sorted(again.written) == sorted(result.written)
    assert len(list((out / "runs").glob("*.json"))) == 5


def test_import_legacy_command(tree, tmp_path):
    from kdlora.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["import-legacy", str(tree), "--results", str(tmp_path / "r")])
    assert ok.exit_code == 0, ok.output
    assert "imported 5 runs" in ok.output
    missing = runner.invoke(app, ["import-legacy", str(tmp_path / "nope"), "--results", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_real_legacy_data(legacy_dir):
    errors: list[str] = []
    recs = list(iter_legacy_records(legacy_dir, errors))
    assert errors == []
    assert len(recs) == len({r.run_id for r in recs}) == 742
    assert Counter(r.config["strategy"] for r in recs) == {"fft": 81, "lora": 391, "kd-lora": 270}
    assert all(r.efficiency.memory_kind == "epoch_end_allocated" for r in recs)
    fft_params = {r.efficiency.trainable_params for r in recs if r.config["strategy"] == "fft"}
    assert min(fft_params) > 100_000_000  # BERT-base is 109M, never 109 or 120 "M%"
    ids = {r.run_id for r in recs}
    assert all(r.teacher_run_id in ids for r in recs if r.config["strategy"] == "kd-lora")


def test_report_reads_imported_and_legacy_dirs_once(tree, tmp_path):
    """--results (imported records) plus --legacy (the same runs, read directly): each run counts once."""
    from kdlora.cli import app

    import_legacy(tree, tmp_path / "imported")
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", "--results", str(tmp_path / "imported"), "--legacy", str(tree),
                                   "--metric-policy", "legacy", "--out", str(out), "--no-figures"])
    assert res.exit_code == 0, res.output
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 5
    problems = (out / "problems.csv").read_text()
    assert problems.count("duplicate run_id") == 5


def test_finished_runs_are_imported_with_a_note(tree, tmp_path):
    """An FFT file without the adapter settings that do not apply to it, a LoRA file whose args lack
    a setting its folder name spells, and an AdaLoRA run at rank 16 (init rank 12 < target rank 16,
    which kdlora refuses for a new run) are all imported, each with a note, and the report counts them."""
    fft = legacy_file(tree, "fft", "sst2", 42)
    body = json.loads(fft.read_text())
    for key in ("lora_dropout", "rank", "lora_alpha", "student_learning_rate"):
        del body["args"][key]
    fft.write_text(json.dumps(body))
    lora = legacy_file(tree, "lora", "sst2", 42, "olora")
    body = json.loads(lora.read_text())
    del body["args"]["lora_dropout"]
    lora.write_text(json.dumps(body))
    ada = legacy_file(tree, "lora", "sst2", 42, "adalora")
    body = json.loads(ada.read_text())
    body["args"]["rank"] = 16
    ada.write_text(json.dumps(body))

    errors: list[str] = []
    recs = {(r.config["strategy"], r.config["task"], r.config["variant"]): r for r in iter_legacy_records(tree, errors)}
    assert errors == [] and len(recs) == 8
    notes = lambda r: [n for n in r.notes if n.startswith("legacy import:")]  # noqa: E731
    assert len(notes(recs[("fft", "sst2", None)])) == 3  # student_learning_rate is never read for FFT
    assert "lora_dropout missing from args; taken from the folder name (0.05)" in notes(recs[("lora", "sst2", "olora")])[0]
    assert recs[("lora", "sst2", "olora")].config["lora_dropout"] == 0.05
    adalora = recs[("lora", "sst2", "adalora")]
    assert "fail kdlora's validation" in notes(adalora)[0] and adalora.config["r"] == 16
    assert notes(recs[("fft", "rte", None)]) == []

    from kdlora.analysis.report import build, write_report

    analysis = build([tree], "legacy")
    assert (analysis["runs"]["import_notes"] > 0).sum() == 3
    limits = analysis["limitations"].set_index("rule")
    assert limits.loc["imported_with_notes", "value"] == 3
    write_report(analysis, tmp_path / "rep", figures=False)
    assert "3 legacy runs were imported with a note" in (tmp_path / "rep" / "report.md").read_text()


def test_unrecorded_settings_are_marked_assumed_and_left_empty(tree):
    """The legacy args record lr, epochs, batch size, weight decay, rank, alpha, dropout; the other
    settings hold kdlora's defaults (the run_id needs them) and are marked, never shown as facts."""
    from kdlora.analysis.design import add_arms, settings_table
    from kdlora.analysis.tidy import load_results
    from kdlora.config import build_config

    recs = records_by_strategy(tree)
    fft, kd = recs[("fft", "rte")], recs[("kd-lora", "rte")]
    assert "warmup_ratio" in fft.assumed_settings and "max_length" in fft.assumed_settings
    assert {"kd_temperature", "kd_alpha"} <= set(kd.assumed_settings)
    recorded = {"lr", "epochs", "batch_size", "weight_decay", "r", "lora_alpha", "lora_dropout", "teacher_lr",
                "mrlora_ranks", "teacher_model", "student_model"}
    assert not recorded & set(kd.assumed_settings)
    assert kd.run_id == build_config(kd.config).run_id  # the run_id still hashes the full config
    table = load_results([tree], "legacy").table
    assert table["warmup_ratio"].isna().all() and table["max_length"].isna().all()
    assert table["assumed_settings"].str.contains("warmup_ratio").all()
    assert (table["epochs"] == 3).all() and (table["lr"].notna()).all()
    df, axes = add_arms(table)
    st = settings_table(df, axes, ()).set_index("setting")
    assert st.loc["warmup_ratio", "status"] == "not recorded" and st.loc["epochs", "status"] == "fixed"
    assert st.loc["kd_temperature", "methods"] == "kd-lora:mrlora"
