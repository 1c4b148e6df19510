"""The kdlora command line: a thin typer app; each area registers its commands here.

Command modules import torch and friends inside the functions, so `kdlora report` starts fast
and never loads torch.
"""

from __future__ import annotations

import gc

from kdlora.lazy import command_process, imports_without_collector

with imports_without_collector():
    import typer

    from kdlora.commands import analysis as analysis_cmd
    from kdlora.commands import demo as demo_cmd
    from kdlora.commands import example as example_cmd
    from kdlora.commands import export as export_cmd
    from kdlora.commands import sweep as sweep_cmd
    from kdlora.commands import train as train_cmd

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Train, sweep and analyse FFT / LoRA / KD-LoRA studies.",
    pretty_exceptions_enable=False,
)

app.command("train")(train_cmd.train)
app.command("plan")(sweep_cmd.plan)
app.command("sweep")(sweep_cmd.sweep)
app.command("status")(sweep_cmd.status)
app.command("report")(analysis_cmd.report)
app.command("import-legacy")(analysis_cmd.import_legacy)
app.command("demo")(demo_cmd.demo)
app.command("export")(export_cmd.export)
app.add_typer(example_cmd.app, name="example")


def main() -> None:
    command_process()
    try:
        app()
    finally:
        # At exit the interpreter's collector scans every object the command made or imported
        # (a report's tables, pandas and scipy): ~0.4 s of a 4 s report. Frozen objects are still
        # freed as usual, only never scanned again.
        gc.freeze()


if __name__ == "__main__":
    main()
