"""Figures of the report, each a pure function of the computed tables returning a Figure.

Figures are built on matplotlib's object API (no pyplot state, no display backend), so a report
can run in a headless worker. matplotlib is imported when the first figure is made: the report
draws its figures in worker processes, and the process that computes the tables never loads it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pandas as pd
from kdlora.analysis.efficiency import memory_kind_of
from kdlora.analysis.methods import REFERENCE, STRATEGY_COLOR, STRATEGY_COLORMAP
from kdlora.analysis.model import Analysis
from kdlora.analysis.tidy import STRATEGY_LABEL, method_label
from kdlora.analysis.tables import method_order, task_order

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = STRATEGY_COLOR  # from the strategy registry
RASTER_ABOVE = 2000  # runs; beyond this the scatter's points are embedded in the PDF as an image


def new_figure(**kwargs) -> Figure:
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def close(fig: Figure) -> None:
    fig.clear()


def render(fig: Figure, formats: tuple[str, ...], dpi: int = 100) -> dict[str, bytes]:
    """The figure in each format, cropped to its content.

    The crop box is computed once from text extents and reused: bbox_inches="tight" would draw
    the whole figure an extra time per format, a third of the report's drawing time.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    bbox = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer()).padded(0.1)
    out = {}
    for ext in formats:
        buf = io.BytesIO()
        # PNG at zlib level 1: a fifth of the encoding time of the default 6, files ~5 % larger
        extra = {"pil_kwargs": {"compress_level": 1}} if ext == "png" else {}
        fig.savefig(buf, format=ext, dpi=dpi, bbox_inches=bbox, **extra)
        out[ext] = buf.getvalue()
    return out


def log_x(ax) -> None:
    """Log x axis labelled '100k', '1M' in plain text, without minor ticks: mathtext labels
    ($10^{5}$) and the dozens of minor tick objects dominated the figures' drawing time."""
    from matplotlib.ticker import EngFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_locator(NullLocator())


def _color(method: str) -> str:
    return COLORS.get(method.partition(":")[0], "#7f7f7f")


def efficiency_scatter(a: Analysis) -> Figure | None:
    df = a["runs"]
    measures = [("train_time_s", "train time (s)"), ("trainable_params", "trainable parameters"),
                ("peak_memory_bytes", "memory (bytes)"), ("train_samples_per_s", "train samples/s")]
    if memory_kind_of(df["memory_kind"]) in (None, "mixed"):
        measures = [m for m in measures if m[0] != "peak_memory_bytes"]
    measures = [m for m in measures if df[m[0]].notna().any()]
    if not measures:
        return None
    fig = new_figure(figsize=(4.2 * len(measures), 3.8))
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    for ax, (column, label) in zip(axes, measures):
        for strategy, part in df.groupby("strategy"):
            ax.scatter(part[column], part["primary"], s=8, alpha=0.5, color=COLORS.get(strategy),
                       label=STRATEGY_LABEL.get(strategy, strategy), rasterized=len(df) > RASTER_ABOVE)
        log_x(ax)
        ax.set_xlabel(label)
        ax.set_ylabel("primary metric")
    axes[0].legend(fontsize=8)
    fig.suptitle("Efficiency vs performance (one point per run)")
    return fig


def parameter_efficiency(a: Analysis) -> Figure | None:
    pe = a["parameter_efficiency"]
    pe = pe[pe["strategy"] != REFERENCE].dropna(subset=["performance_per_million"])
    if pe.empty:
        return None
    pe = pe.sort_values("performance_per_million")
    fig = new_figure(figsize=(7, 0.35 * len(pe) + 1.5))
    ax = fig.subplots()
    ax.barh(pe["label"], pe["performance_per_million"], color=[_color(m) for m in pe["method"]])
    ax.set_xlabel("mean primary metric per million trainable parameters")
    ax.set_title("Parameter efficiency")
    return fig


def pareto(a: Analysis) -> Figure | None:
    front = a["pareto_frontier"]
    if front.empty:
        return None
    costs = list(dict.fromkeys(front["cost"]))
    fig = new_figure(figsize=(4.6 * len(costs), 4))
    axes = fig.subplots(1, len(costs), squeeze=False)[0]
    for ax, cost in zip(axes, costs):
        part = front[front["cost"] == cost]
        ax.scatter(part["cost_value"], part["score"], color=[_color(m) for m in part["method"]], s=25)
        on = part[part["on_frontier"]].sort_values("cost_value")
        ax.step(on["cost_value"], on["score"], where="post", color="black", lw=1, label="Pareto frontier")
        for r in on.itertuples():
            ax.annotate(r.label, (r.cost_value, r.score), fontsize=6, xytext=(3, 3), textcoords="offset points")
        log_x(ax)
        ax.set_xlabel(f"mean {cost}")
        ax.set_ylabel("mean score")
    axes[0].legend(fontsize=8)
    fig.suptitle("Pareto frontier: score vs cost (methods)")
    return fig


def completion_heatmap(a: Analysis) -> Figure | None:
    cells = a.tables.get("completion_cells")
    if cells is not None and not cells.empty:
        grid = cells.pivot_table(index=["family", "method"], columns="task", values="completion_pct")
        title, vmax = "Completion against the grid (%)", 100
    else:
        grid = a["cells"].pivot_table(index=["family", "method"], columns="task", values="runs", fill_value=0)
        title, vmax = "Completed runs per cell (no grid given)", None
    grid = grid[task_order(grid.columns)]
    order = [(f, m) for f in sorted(grid.index.get_level_values(0).unique())
             for m in method_order(grid.loc[f].index)]
    grid = grid.loc[order]
    fig = new_figure(figsize=(1 + 0.6 * grid.shape[1], 1 + 0.22 * grid.shape[0]))
    ax = fig.subplots()
    im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right")
    ax.set_yticks(range(grid.shape[0]), [f"{f} {method_label(m)}" for f, m in grid.index], fontsize=6)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return fig


def per_task_bars(a: Analysis) -> Figure | None:
    """Grouped bars: tasks along x, one bar per method (mean ± std over runs), one legend.

    One axes rather than a panel per task: each panel costs as much to draw as the whole chart.
    """
    df = a["runs"]
    tasks, methods = task_order(df["task"]), method_order(df["method"])
    stat = df.groupby(["task", "method"])["primary"].agg(["mean", "std"])
    palette = _palette(methods)
    width = 0.8 / len(methods)
    fig = new_figure(figsize=(max(6.0, 1.3 * len(tasks)) + 2.0, 3.8))
    ax = fig.subplots()
    x = np.arange(len(tasks))
    for i, (method, color) in enumerate(zip(methods, palette)):
        part = stat.xs(method, level="method").reindex(tasks) if method in stat.index.get_level_values(1) else None
        if part is None:
            continue
        ax.bar(x - 0.4 + (i + 0.5) * width, part["mean"], width, yerr=part["std"].fillna(0), color=color,
               label=method_label(method), error_kw={"elinewidth": 0.5})
    names = df.drop_duplicates("task").set_index("task")["primary_name"]
    ax.set_xticks(x, [f"{t}\n{names[t]}" for t in tasks], fontsize=7)
    ax.set_ylabel("primary metric")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("Per-task primary metric (mean ± std over runs)")
    return fig


def _palette(methods: list[str]) -> list:
    """Shades of the strategy's colour per variant, so strategy stays readable at a glance."""
    from matplotlib import colormaps

    maps = STRATEGY_COLORMAP
    out = []
    for m in methods:
        strategy = m.partition(":")[0]
        same = [x for x in methods if x.partition(":")[0] == strategy]
        shade = 0.45 + 0.5 * same.index(m) / max(len(same) - 1, 1)
        out.append(colormaps[maps.get(strategy, "Greens")](shade))
    return out


def paired_forest(a: Analysis) -> Figure | None:
    tests = a["statistical_tests"]
    if tests.empty:
        return None
    tests = tests.iloc[::-1]
    fig = new_figure(figsize=(7, 0.3 * len(tests) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(tests))
    colors = ["#d62728" if pd.notna(s) and bool(s) else "#1f77b4" for s in tests["significant"]]
    ax.hlines(y, tests["ci_low"], tests["ci_high"], colors=colors)
    ax.scatter(tests["mean_diff"], y, color=colors, zorder=3, s=14)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{f}: {c}" for f, c in zip(tests["test_family"], tests["comparison"])], fontsize=7)
    ax.set_xlabel("mean paired difference (a − b) with bootstrap CI; red = significant after Holm")
    ax.set_title("Paired differences")
    return fig


def critical_difference(a: Analysis) -> Figure | None:
    import scikit_posthocs as sp

    fr, ranks, nem = a["friedman"], a["friedman_ranks"], a["nemenyi"]
    if fr.empty:
        return None
    fig = new_figure(figsize=(8, 3.2 * len(fr)))
    axes = fig.subplots(len(fr), 1, squeeze=False).ravel()
    fig.subplots_adjust(hspace=0.9)  # room for each panel's labels below its axis
    for ax, r in zip(axes, fr.itertuples()):
        rk = ranks[ranks["strategy"] == r.strategy].set_index("variant")["mean_rank"]
        sig = _square(nem[nem["strategy"] == r.strategy], list(rk.index))
        sp.critical_difference_diagram(rk, sig, ax=ax, cd=r.critical_difference,
                                       alpha=float(a["settings"]["alpha"].iloc[0]))
        ax.set_title(f"{r.label}: mean ranks over {int(r.n_blocks)} blocks (Nemenyi)", fontsize=9, pad=24)
    return fig


def _square(long: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    m = pd.DataFrame(1.0, index=names, columns=names)
    for r in long.itertuples():
        m.loc[r.a, r.b] = m.loc[r.b, r.a] = r.p_nemenyi
    return m


def ablation_figure(a: Analysis) -> Figure | None:
    """One row per varied setting: score (with CI), trainable parameters, memory and train time
    against the setting's levels, a line per (strategy, variant) in its strategy's colour."""
    abl = a.tables.get("ablations")
    if abl is None or abl.empty:
        return None
    axes_names = list(dict.fromkeys(abl["axis"]))
    panels = [("score_mean", "score"), ("trainable_params_mean", "trainable params"),
              ("peak_memory_bytes_mean", "memory (bytes)"), ("train_time_s_mean", "train time (s)")]
    panels = [p for p in panels if abl[p[0]].notna().any()]
    fig = new_figure(figsize=(3.6 * len(panels), 3.0 * len(axes_names)))
    grid = fig.subplots(len(axes_names), len(panels), squeeze=False)
    for row, axis in zip(grid, axes_names):
        part = abl[abl["axis"] == axis]
        for method, line in part.groupby("method", sort=False):
            x = np.arange(len(line))
            for ax, (column, label) in zip(row, panels):
                err = None
                if column == "score_mean" and line["score_ci_low"].notna().all():
                    err = [line["score_mean"] - line["score_ci_low"], line["score_ci_high"] - line["score_mean"]]
                ax.errorbar(x, line[column], yerr=err, marker="o", ms=3, lw=1, capsize=2, color=_color(method),
                            label=method_label(method))
                ax.set_xticks(x, line["level"], fontsize=7)
                ax.set_xlabel(axis)
                ax.set_ylabel(label, fontsize=8)
        row[0].set_title(f"{axis}: {part['score'].iloc[0]} (CI over matched blocks)", fontsize=8)
        row[0].legend(fontsize=6)
    fig.suptitle("Ablations: each varied setting against its levels")
    return fig


# Figures drawn from the first tables alone (runs, cells, completion): `kdlora report` starts them
# while the statistics are still being computed.
EARLY_FIGURES = ("efficiency_performance_scatter", "per_task_bars", "completion_heatmap")

FIGURES: dict[str, Callable[[Analysis], Figure | None]] = {
    "efficiency_performance_scatter": efficiency_scatter,
    "parameter_efficiency": parameter_efficiency,
    "pareto_frontier": pareto,
    "completion_heatmap": completion_heatmap,
    "per_task_bars": per_task_bars,
    "paired_differences_forest": paired_forest,
    "critical_difference": critical_difference,
    "ablations": ablation_figure,
}


def all_figures(a: Analysis) -> Iterator[tuple[str, Figure]]:
    for name, make in FIGURES.items():
        fig = make(a)
        if fig is not None:
            yield name, fig
