"""`kdlora export RUN_ID --results DIR --out OUT [--merge]`: a run as a model anyone can load."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlora.commands.common import user_errors


@user_errors
def export(
    run_id: str = typer.Argument(..., help="The run to export (a file name in RESULTS/runs, without .json)."),
    results: Path = typer.Option(..., "--results", help="Results directory holding the run's record and checkpoint."),
    out: Path = typer.Option(..., "--out", help="New (or empty) folder for the model, tokenizer, card and record."),
    merge: bool = typer.Option(False, "--merge", help="Fold the adapter into a plain transformers model."),
) -> None:
    """Export a run: adapter with a portable base (or merged weights), tokenizer, model card, record."""
    from kdlora.export import export_run

    result = export_run(run_id.removesuffix(".json"), results, out, merge=merge)
    what = {"full": "fine-tuned model", "adapter": f"adapter (base: {result.base})",
            "merged": "merged model"}[result.kind]
    typer.echo(f"exported {run_id}: {what} in {result.out} (see its README.md)")
