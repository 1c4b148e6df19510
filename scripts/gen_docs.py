"""Regenerate the generated parts of the docs from the code: the CLI reference (from --help) and
the run settings table (from RunConfig). `python scripts/gen_docs.py --check` fails if stale."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "plan", "sweep", "status", "report", "import-legacy", "demo"]


def cli_reference() -> str:
    from typer.testing import CliRunner

    from kdlora.cli import app

    os.environ["COLUMNS"] = "100"
    os.environ["TERM"] = "dumb"  # plain text help, no colour codes or box drawing
    runner = CliRunner()
    parts = ["# CLI reference\n", "Generated from `kdlora COMMAND --help` by `scripts/gen_docs.py`; do not edit.\n"]
    for cmd in COMMANDS:
        out = runner.invoke(app, [cmd, "--help"], prog_name="kdlora",
                            env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        if out.exit_code != 0:
            continue
        text = "\n".join(line.rstrip() for line in out.output.strip().splitlines())
        parts.append(f"## kdlora {cmd}\n\n```\n{text}\n```\n")
    return "\n".join(parts)


def settings_table() -> str:
    from kdlora.config import EXECUTION_FIELDS, RunConfig

    rows = ["| key | default | note |", "|---|---|---|"]
    for name, field in RunConfig.model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        note = "execution only (not in run_id)" if name in EXECUTION_FIELDS else ""
        rows.append(f"| `{name}` | `{default}` | {note} |")
    return "\n".join(rows) + "\n"


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}{end}{tail}"


def targets() -> dict[Path, str]:
    conf = ROOT / "docs" / "configuration.md"
    return {
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
