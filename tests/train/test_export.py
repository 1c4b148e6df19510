"""`kdlora export`: every variant x {LoRA-only, KD-LoRA} and FFT, as an adapter and merged, loads
in a fresh Python process that never imports kdlora, from another working directory, and gives
exactly the record's validation accuracy. The cut MiniLM student travels inside the export."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.config import build_config
from kdlora.export import export_run
from kdlora.runner import run_one
from kdlora.strategies import teacher_of
from kdlora.testing.synthetic_data import write_custom_task
from kdlora.variants import VARIANTS

pytestmark = pytest.mark.slow

LOADER = r'''
import json, sys
from pathlib import Path
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

jobs = json.loads(Path(sys.argv[1]).read_text())
texts, labels = jobs["texts"], jobs["labels"]
out = {}
for folder in jobs["exports"]:
    folder = Path(folder)
    record = json.loads((folder / "record.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder)
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = folder / base if (folder / base).is_dir() else base
        model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.eval()
    right = 0
    with torch.no_grad():
        for text, label in zip(texts, labels):
            enc = tok(text, truncation=True, max_length=record["config"]["max_length"], return_tensors="pt")
            right += int(model(**enc).logits.argmax(-1).item() == label)
    out[str(folder)] = right / len(labels)
assert not any(m == "kdlora" or m.startswith("kdlora.") for m in sys.modules), "kdlora was imported"
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model_dirs):
    root = tmp_path_factory.mktemp("export")
    task = write_custom_task(root / "task", n_train=64, n_eval=24, seed=3)
    results = root / "results"
    common = dict(task=str(task), seed=1, epochs=2, batch_size=16, max_length=32)
    tiny = dict(family="bert", teacher_model=str(tiny_model_dirs["bert"]),
                student_model=str(tiny_model_dirs["distilbert"]), teacher_epochs=2, teacher_lr=3e-3)
    cfgs = [build_config({**common, **tiny, "strategy": "fft", "lr": 3e-3})]
    for strategy in ("lora", "kd-lora"):
        cfgs += [build_config({**common, **tiny, "strategy": strategy, "variant": v, "lr": 2e-2}) for v in VARIANTS]
    # the family's own KD-LoRA student: MiniLM's layers 0, 2, 4 cut from the 6-layer teacher
    minilm = build_config({**common, "family": "minilm", "strategy": "kd-lora", "variant": "lora", "lr": 5e-3,
                           "teacher_epochs": 1})
    cfgs += [teacher_of(minilm), minilm]
    records = {}
    for cfg in cfgs:
        rec = run_one(cfg, results)
        assert rec.status == "completed", (cfg.run_id, rec.error)
        records[cfg.run_id] = (cfg, rec)
    return root, task, results, records, minilm.run_id


def validation(task: Path) -> tuple[list[str], list[int]]:
    with open(task.parent / "validation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = ["negative", "positive"]
    return [r["text"] for r in rows], [names.index(r["label"]) if r["label"] in names else int(r["label"]) for r in rows]


def test_every_export_reloads_without_kdlora_and_reproduces_the_record(study, tmp_path):
    root, task, results, records, minilm_kd = study
    exports, expected = [], {}
    for run_id, (cfg, rec) in records.items():
        modes = [False] if cfg.strategy == "fft" else [False, True]
        for merge in modes:
            out = tmp_path / "exports" / f"{run_id}{'-merged' if merge else ''}"
            if run_id == minilm_kd and not merge:  # one through the command line
                res = CliRunner().invoke(app, ["export", run_id, "--results", str(results), "--out", str(out)])
                assert res.exit_code == 0, res.output
            else:
                export_run(run_id, results, out, merge=merge)
            assert (out / "README.md").is_file() and json.loads((out / "record.json").read_text())["run_id"] == run_id
            exports.append(str(out))
            expected[str(out)] = rec.metrics["accuracy"]
            adapter = out / "adapter_config.json"
            if adapter.is_file():  # a portable base: a hub id or the base saved inside OUT
                assert json.loads(adapter.read_text())["base_model_name_or_path"] == "base"
                assert (out / "base" / "config.json").is_file()
            if cfg.variant == "mrlora":
                assert not adapter.exists() and (out / "mrlora" / "mrlora_adapter.safetensors").is_file()
    cut = json.loads((tmp_path / "exports" / minilm_kd / "base" / "config.json").read_text())
    assert cut["num_hidden_layers"] == 3  # the cut student, not the 6-layer teacher

    texts, labels = validation(task)
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({"exports": exports, "texts": texts, "labels": labels}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-I", "-c", LOADER, str(jobs)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    wrong = {Path(k).name: (got[k], expected[k]) for k in exports if abs(got[k] - expected[k]) > 1e-12}
    assert not wrong, wrong
    assert len(set(expected.values())) > 2, expected  # the models differ: equal accuracies mean something


def test_export_refuses_what_it_cannot_export(study, tmp_path):
    _, _, results, records, _ = study
    run_id = next(iter(records))
    res = CliRunner().invoke(app, ["export", "nope", "--results", str(results), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no record" in res.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    res = CliRunner().invoke(app, ["export", run_id, "--results", str(results), "--out", str(tmp_path / "full")])
    assert res.exit_code == 2 and "not an empty folder" in res.output
