"""`kdlora example ...`: write out the example data shipped with kdlora."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlora.commands.common import user_errors

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Write out example data shipped with kdlora.")


@app.command("reference")
@user_errors
def reference(
    out: Path = typer.Option(..., "--out", help="Folder to write into (new, or empty)."),
) -> None:
    """The reference study's 742 runs (congfeng4/KD-LoRA-CS5483 at commit 90028be5, MIT licence) in
    their legacy layout, with the licence, a README and the original analysis's CSVs."""
    from kdlora.examples import REFERENCE_RUNS, REFERENCE_SOURCE, write_reference

    write_reference(out)
    print(f"wrote the reference study ({REFERENCE_RUNS} runs; {REFERENCE_SOURCE}) to {out}")
    print(f"analyse it: kdlora report --results {out} --grid configs/paper.yaml --metric-policy legacy "
          f"--out {out}-report")
