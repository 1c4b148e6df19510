"""Export one run as a self-contained model that any transformers or PEFT user can load.

OUT holds the tokenizer, `record.json` (the run record) and a model card `README.md` (config,
metrics, kdlora version, how to load), plus the weights:

- FFT: the fine-tuned model (`AutoModelForSequenceClassification.from_pretrained(OUT)`);
- an adapter run: the adapter (`adapter_config.json`, `adapter_model.safetensors`) whose
  `base_model_name_or_path` is portable: the hub id when the base is one, or `base`, the base model
  saved in OUT/base, when the base is a local path or a derived student (the cut 3-layer MiniLM);
  load with `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(OUT/base), OUT)`;
- `merge=True`, and always for a variant whose adapter PEFT cannot load by itself (MrLoRA): the
  adapter folded into a plain transformers model at OUT, the variant's own adapter files beside it.

The variant decides how its adapter is loaded, merged and written (Variant.load_adapter,
merged_model, export_adapter), so a new variant plug-in exports without changes here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdlora.errors import UserError

BASE_DIR = "base"


@dataclass
class Exported:
    out: Path
    kind: str  # "full" (FFT), "adapter" or "merged"
    base: str | None  # the adapter's base reference ("base" = OUT/base, or a hub id)


def export_run(run_id: str, results_dir: str | Path, out: str | Path, merge: bool = False) -> Exported:
    """Write run `run_id` of `results_dir` to `out` (created whole: a temp folder renamed)."""
    from kdlora.checkpoints import checkpoint_dir, fingerprint
    from kdlora.config import build_config
    from kdlora.records.store import honour_umask, read_record, record_path

    results_dir, out = Path(results_dir), Path(out)
    path = record_path(results_dir, run_id)
    if not path.is_file():
        raise UserError(f"no record {path}; give a run_id from {results_dir / 'runs'}")
    try:
        record = read_record(path)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if record.status != "completed":
        raise UserError(f"run {run_id} is {record.status}, not completed: nothing to export")
    ckpt = checkpoint_dir(results_dir, run_id)
    if not ckpt.is_dir():
        raise UserError(f"run {run_id} has no checkpoint {ckpt}; train it again to export it")
    if record.weights_fingerprint and fingerprint(ckpt) != record.weights_fingerprint:
        raise UserError(f"checkpoint {ckpt} does not match the fingerprint in its record (changed or corrupt)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {str(out)!r} exists and is not an empty folder; choose another")
    cfg = build_config(record.config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        honour_umask(tmp, directory=True)
        result = _write(cfg, record, ckpt, tmp, merge)
        (tmp / "record.json").write_text(record.model_dump_json(indent=2))
        (tmp / "README.md").write_text(model_card(cfg, record, result))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out, result.kind, result.base)


@dataclass
class _Written:
    kind: str
    base: str | None
    variant: str | None
    own_files: bool = False  # the variant's own adapter files sit in OUT/<variant>/


def _write(cfg, record, ckpt: Path, tmp: Path, merge: bool) -> _Written:
    from kdlora.models import load_tokenizer

    load_tokenizer(str(ckpt)).save_pretrained(tmp)
    if cfg.variant is None:  # no adapters (FFT): the checkpoint is the whole fine-tuned model
        for file in ckpt.iterdir():
            if file.is_file() and not (tmp / file.name).exists():
                shutil.copy2(file, tmp / file.name)
        return _Written("full", None, None)
    return _write_adapter(cfg, ckpt, tmp, merge)


def _write_adapter(cfg, ckpt: Path, tmp: Path, merge: bool) -> _Written:
    from kdlora.data.tasks import resolve_task
    from kdlora.models import (head_modules, load_classifier, load_tokenizer, model_names, student_layers,
                               target_modules)
    from kdlora.variants import VARIANTS, AdapterTargets

    variant = VARIANTS.get(cfg.variant)
    teacher, student = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
    from kdlora.strategies import STRATEGIES

    name, layers = ((student, student_layers(cfg.family, cfg.student_model)) if STRATEGIES.get(cfg.strategy).trains_student
                    else (teacher, None))
    spec = resolve_task(cfg.task)
    base = load_classifier(name, spec.num_labels, layers=layers)  # exactly the model the run trained on
    merged = merge or not variant.portable_adapter
    base_ref = None
    if not merged:
        if layers is not None or Path(name).expanduser().exists():  # a local path or a cut student
            base.save_pretrained(tmp / BASE_DIR, safe_serialization=True)
            load_tokenizer(str(ckpt)).save_pretrained(tmp / BASE_DIR)
            base_ref = BASE_DIR
        else:
            base_ref = name  # a hub id
    targets = AdapterTargets(target_modules(base, cfg.target_modules), head_modules(base))
    model = variant.load_adapter(base, cfg, targets, ckpt).eval()
    if merged:
        own = not variant.portable_adapter
        if own:
            variant.export_adapter(model, tmp / cfg.variant, name)
        plain = variant.merged_model(model)
        plain.save_pretrained(tmp, safe_serialization=True)
        return _Written("merged", None, cfg.variant, own)
    variant.export_adapter(model, tmp, base_ref)
    return _Written("adapter", base_ref, cfg.variant)


def model_card(cfg, record, written: _Written) -> str:
    from kdlora.host import package_versions

    version = package_versions(("kdlora",)).get("kdlora") or "unknown"
    metrics = {k: v for k, v in record.metrics.items() if isinstance(v, (int, float))}
    if written.kind == "adapter":
        base = f'AutoModelForSequenceClassification.from_pretrained("{written.base}")' if written.base != BASE_DIR \
            else 'AutoModelForSequenceClassification.from_pretrained(f"{OUT}/base")'
        load = ("from peft import PeftModel\nfrom transformers import AutoModelForSequenceClassification, "
                f"AutoTokenizer\n\nOUT = \"path/to/this/folder\"\nmodel = PeftModel.from_pretrained({base}, OUT)\n"
                "tokenizer = AutoTokenizer.from_pretrained(OUT)")
        library = "peft"
    else:
        load = ("from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
                "OUT = \"path/to/this/folder\"\nmodel = AutoModelForSequenceClassification.from_pretrained(OUT)\n"
                "tokenizer = AutoTokenizer.from_pretrained(OUT)")
        library = "transformers"
    what = {"full": "the fully fine-tuned model (FFT)",
            "adapter": f"the {written.variant} adapter; its base model is "
                       + ("saved in `base/`" if written.base == BASE_DIR else f"`{written.base}` on the hub"),
            "merged": f"the {written.variant} adapter merged into a plain transformers model"
                      + (f"; the variant's own adapter files are in `{written.variant}/`" if written.own_files
                         else "")}[written.kind]
    lines = ["---", f"library_name: {library}", "tags: [kdlora, text-classification]", "---", "",
             f"# {record.run_id}", "", f"Exported by kdlora {version} from run `{record.run_id}` "
             f"({cfg.strategy}, {cfg.variant or 'full'}, task {record.task_name}, seed {cfg.seed}): {what}.", "",
             "## Load", "", "```python", load, "```", "",
             f"Inputs: the task's text field(s), truncated to max_length = {cfg.max_length} tokens.", "",
             "## Validation metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" for k, v in metrics.items()]
    if record.metrics.get("primary_name"):
        lines += ["", f"Primary metric: {record.metrics['primary_name']}."]
    lines += ["", "## Run config", "", "```json", json.dumps(record.config, indent=2, sort_keys=True), "```", "",
              "The full run record is `record.json`.", ""]
    return "\n".join(lines)
