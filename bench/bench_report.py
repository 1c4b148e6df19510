"""Analysis speed: `kdlora report` on 10,000 synthetic run records and on the 742 legacy runs.

Both workloads are the full command, figures included, run as a fresh `kdlora report` process
(imports and all), alternating legacy / synthetic for --reps repetitions; figures are medians with
min..max. Targets (issue 15): <= 8 s for 10,000 records, <= 3 s for the legacy runs.

- synthetic_10k: kdlora.testing.synthetic_records records of 3 families x 9 GLUE tasks x 29 seeds x
  (FFT + 6 variants x {LoRA-only, KD-LoRA}) = 10,179 runs, 10,000 of them kept at random, written
  as RESULTS/runs/*.json, with a grid file so completion is computed (--grid).
- legacy_742: the reference study packaged with kdlora (kdlora.examples), written out once and
  read directly (layout detected), --grid configs/paper.yaml, --metric-policy legacy (the issue's acceptance command).

Each run also reports the CPU seconds (user + system) the process used: on a shared machine
whose load changes from run to run, CPU time is the steadier measure of what the report costs.
A separate worker process runs the same steps once per workload with a timer around each
(imports; the statistics libraries' import while a figure worker expands the grid and loads the
records, and the wait for those; analysis, CSV, LaTeX, report.md's body, the wait for the figure
workers, report.md's list of files) so the JSON says where the time goes; CPU seconds per phase are the main process's
only (the figure workers draw in parallel from the end of the analysis). Exits non-zero only if it could not measure.

Usage: python bench/bench_report.py [--reps 3] [--quick]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "report"
TARGETS = {"synthetic_10k": 8.0, "legacy_742": 3.0}
PAPER_GRID = common.REPO / "configs" / "paper.yaml"
FAMILIES = ("bert", "roberta", "deberta")


def write_synthetic(root: Path, n: int, seeds: int) -> tuple[Path, Path]:
    """n synthetic records (of the study with `seeds` seeds) and the grid they belong to."""
    from kdlora.testing.synthetic_records import grid_configs, make_records
    from kdlora.data.metrics import GLUE_TASKS
    from kdlora.records import write_record

    results = root / "synthetic"
    configs = grid_configs(families=FAMILIES, seeds=tuple(range(1, seeds + 1)))
    for record in make_records(configs, n=min(n, len(configs)), seed=0):
        write_record(results, record)
    grid = root / "synthetic_grid.yaml"
    grid.write_text(f"families: [{', '.join(FAMILIES)}]\ntasks: [{', '.join(GLUE_TASKS)}]\n"
                    f"seeds: [{', '.join(str(s) for s in range(1, seeds + 1))}]\n")
    return results, grid


def cli_args(results: Path, grid: Path, policy: str, out: Path) -> list[str]:
    return ["report", "--results", str(results), "--grid", str(grid), "--metric-policy", policy, "--out", str(out)]


def run_cli(args: list[str]) -> dict:
    """One fresh `kdlora report` process: wall time from spawn to exit, and the CPU seconds
    (user + system) it used, which a busy shared machine inflates far less than wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from kdlora.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=common.REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"kdlora report failed ({done.returncode}): {done.stderr[-1500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def run_worker(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True,
                          cwd=common.REPO)
    if done.returncode != 0:
        raise RuntimeError(f"phase worker failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(argv: list[str]) -> None:
    """The report's steps, as `kdlora report` runs them, each timed; prints one JSON line."""
    t0, c0 = time.perf_counter(), time.process_time()
    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU seconds: what a phase costs whatever the machine's load

    def mark(name: str) -> None:
        nonlocal t0, c0
        now, cnow = time.perf_counter(), time.process_time()
        phases[name], cpu[name] = now - t0, cnow - c0
        t0, c0 = now, cnow

    import io
    from contextlib import redirect_stdout

    from kdlora.analysis.drawing import FigureWorkers

    from kdlora.analysis import report as rep
    from kdlora.analysis import stats
    from kdlora.analysis.markdown import body, render
    from kdlora.analysis.summary import import_rich, print_summary
    from kdlora.records import atomic_write_text
    mark("imports")
    workers = FigureWorkers(defer_warm_up=True)  # forked after the imports, as `kdlora report` does
    mark("fork_figure_workers")
    argv = argv[1:] if argv[:1] == ["report"] else argv
    opts = dict(zip(argv[::2], argv[1::2]))
    results, grid, policy, out = (Path(opts["--results"]), opts["--grid"], opts["--metric-policy"],
                                  Path(opts["--out"]))
    inputs = workers.beside(rep.load_inputs, [results], policy, grid)  # as report.build does
    stats.import_libraries()
    mark("stats_imports")  # meanwhile a worker expands the grid and loads the records
    expected, loaded = inputs()
    mark("inputs_wait")  # what is left of the grid expansion and loading
    analysis = rep.analyse(loaded, rep.Settings(policy=policy), expected, [str(results)], grid,
                           early=workers.early(out))
    mark("analyse")
    import_rich()  # as `kdlora report` does before writing
    mark("rich_import")
    drawn = workers.start(analysis, out)
    rep.write_csvs(analysis, out)
    mark("csv")
    rep.write_latex(analysis, out)
    mark("latex")
    sections = body(analysis)
    mark("markdown")  # all but the list of figures, as write_report renders it while they are drawn
    figures = drawn()
    workers.close()
    mark("figures_wait")  # drawn by the workers since the tables were ready; this is the wait left
    atomic_write_text(out / "report.md", render(analysis, [p.relative_to(out) for p in figures], sections))
    mark("markdown_files")
    with redirect_stdout(io.StringIO()):
        print_summary(analysis, out / "report.md")
    mark("terminal_summary")
    print(json.dumps({"phases_s": phases, "phases_cpu_s": cpu, "runs": len(analysis["runs"])}))


def main() -> Path:
    args, bench, reps = common.start(NAME, __doc__, default_reps=3, models=False, extra=lambda p: p.add_argument(
        "--records", type=int, default=10_000, help="synthetic records (default 10000)"))
    n = 1000 if args.quick else args.records
    seeds = -(-n // (len(FAMILIES) * 9 * 13))  # enough seeds for n runs
    with tempfile.TemporaryDirectory(prefix="kdlora-bench-report-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        synthetic, grid = write_synthetic(root, n, seeds)
        workloads = {"synthetic_10k": cli_args(synthetic, grid, "glue", root / "out_synthetic")}
        from kdlora.examples import REFERENCE, write_reference

        legacy = write_reference(root / REFERENCE)
        workloads["legacy_742"] = cli_args(legacy, PAPER_GRID, "legacy", root / "out_legacy")
        print(f"{n} synthetic records in {seeds} seeds; {reps} rep(s) per workload, alternating")
        runs = common.alternate({name: (lambda rep, a=a: run_cli(a)) for name, a in workloads.items()}, reps)
        phases = {name: run_worker(a) for name, a in workloads.items()}
        for name, rows in runs.items():
            stats = common.summary(common.column(rows, "wall_s"))
            target = TARGETS[name] if not args.quick or name == "legacy_742" else None
            bench.data["results"][name] = {"cli_wall_s": stats, "reps": rows, "phase_breakdown": phases[name]}
            cpu = common.summary(common.column(rows, "cpu_s"))
            bench.data["results"][name]["cli_cpu_s"] = cpu
            bench.data["headline"].append(common.headline(
                f"kdlora report, {name.replace('_', ' ')} (wall, fresh process)", stats,
                target=f"<= {target:g} s" if target else None,
                met=None if target is None else stats["median"] <= target, unit=" s"))
            bench.data["headline"].append(common.headline(
                f"kdlora report, {name.replace('_', ' ')} (CPU user+sys, fresh process)", cpu,
                target=None, met=None, unit=" s"))
        bench.data["settings"] = {"synthetic_records": n, "synthetic_seeds": seeds, "reps": reps,
                                  "figures": True, "legacy_dir": "kdlora.examples reference (packaged)", "grid_legacy": str(PAPER_GRID.relative_to(common.REPO))}
        for name, ph in phases.items():
            bench.note(f"{name}, where the time goes (one timed run, wall s): " + ", ".join(
                f"{k} {v:.2f}" for k, v in ph["phases_s"].items()) + "; main process CPU s: " + ", ".join(
                f"{k} {v:.2f}" for k, v in ph["phases_cpu_s"].items()) + ". The first figure worker is forked after "
                "the imports; it expands the grid and loads the records (stats_imports is this process importing "
                "scipy.stats and statsmodels meanwhile, inputs_wait what was left of the loading), then imports "
                "matplotlib and forks the second, warm; they draw three figures from the first tables while the statistics are computed and "
                "the rest from the end of the analysis; figures_wait is what is left of them after the CSVs and "
                "LaTeX. CPU s of the whole report minus the main process's is the workers' (matplotlib import, "
                "text layout, rasterising, PDF)")
    bench.print_headline()
    for name, ph in phases.items():
        print(f"  {name} phases (wall/cpu): " + ", ".join(
            f"{k} {v:.2f}/{ph['phases_cpu_s'][k]:.2f}s" for k, v in ph["phases_s"].items()))
    return bench.write()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        common.main_guard(main)
