"""Figures of the report, each a pure function of the computed tables returning a Figure.

Figures are built on matplotlib's object API (no pyplot state, no display backend), so a report
can run in a headless worker. matplotlib is imported when the first figure is made: the report
draws its figures in worker processes, and the process that computes the tables never loads it.

One look for every figure, so that they can go into a paper as they are:
- two sizes, a paper's column (`single`, 3.3 in) and its full width (`double`, 6.9 in), with
  fonts of 7–8 pt at that size; PDFs embed TrueType fonts (pdf.fonttype 42), never Type 3;
- one colour per strategy (Okabe–Ito, safe for colour-blind readers) and one marker per variant,
  the same in every figure, explained by one legend outside the data;
- human labels (kdlora.analysis.labels) and a unit on every axis that measures something;
- log axes ticked at 1, 2, 5 × 10^k in plain numbers of the axis's unit.
The figures carry no overall title: the report gives each one a caption (CAPTIONS).
"""

from __future__ import annotations

import io
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pandas as pd

from kdlora.analysis import labels
from kdlora.analysis.efficiency import memory_kind_of
from kdlora.analysis.methods import ADAPTER_STRATEGIES, REFERENCE, STRATEGY_COLOR, VARIANT_MARKER
from kdlora.analysis.model import Analysis
from kdlora.analysis.tables import method_order, task_order

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTHS = {"single": 3.3, "double": 6.9}  # inches: a paper's column and its full text width
DPI = {"single": 300, "double": 200}  # PNG resolution: about 1000 / 1400 pixels across
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
      "legend.fontsize": 7, "legend.frameon": False, "legend.handletextpad": 0.3, "legend.columnspacing": 1.0,
      "pdf.fonttype": 42, "ps.fonttype": 42, "axes.spines.top": False, "axes.spines.right": False,
      "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.major.size": 2.5,
      "ytick.major.size": 2.5, "lines.linewidth": 1.0, "axes.titlepad": 4, "axes.labelpad": 2,
      "font.family": "DejaVu Sans"}
# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency. Each strategy's
# colour and each variant's marker is declared by the plug-in (the registries); unregistered
# names get a spare one.
COLORS = STRATEGY_COLOR
SPARE_COLORS = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9")
MARKERS = VARIANT_MARKER
SPARE_MARKERS = ("X", "d", "p", "<", ">", "h")
FFT_MARKER = "*"
RASTER_ABOVE = 2000  # runs; beyond this the scatter's points are embedded in the PDF as an image
CAPTIONS = {
    "efficiency_performance_scatter": "Each run's primary metric (its task's own) against what it cost; "
                                      "log axes.",
    "pareto_frontier": "Each method's mean score against its mean cost (log axes); the line joins the "
                       "methods no other method beats on both.",
    "per_task_bars": "Primary metric per task and method, mean ± s.d. over runs (all families and seeds); "
                     "each panel has its own scale.",
    "paired_differences_forest": "Paired differences (Hodges–Lehmann, with the CI of the Wilcoxon test), runs "
                                 "paired on family, task and seed (families: on task, method and seed); filled "
                                 "markers are directional verdicts (Holm-adjusted Wilcoxon below alpha and the CI on "
                                 "one side of zero).",
    "critical_difference": "Mean ranks of the variants over complete blocks (1 = best); variants joined "
                           "by a bar do not differ significantly (Nemenyi), CD = critical difference.",
    "ablations": "Each varied setting against its levels: score (mean with its CI over blocks that share every "
                 "other factor), trainable parameters, memory and train time, a line per method.",
    "completion_heatmap": "Status: runs completed per (family, method, task) cell.",
}
STATUS_FIGURES = ("completion_heatmap",)  # about the study's progress, not its results


# ----- style ---------------------------------------------------------------------------------------
@contextmanager
def style():
    """The figures' rc settings and matplotlib speed-ups, for building and saving one figure;
    both are undone as the block ends, so a program that draws its own figures beside kdlora's
    gets matplotlib as it was."""
    import matplotlib

    with matplotlib.rc_context(RC), _patched(_speedups):
        yield


_PATCHING = [False]  # inside a style() block: the speed-ups are in place already


def _speedups() -> list[tuple[object, str, object]]:
    """(object, attribute, replacement) of each speed-up whose matplotlib internals are as expected."""
    return [*_cache_font_subsets(), *_cache_text_layouts(), *_fast_pdf_markers()]


@contextmanager
def _patched(make: Callable[[], list[tuple[object, str, object]]]):
    """The replacements `make` gives, in place for the block (once, however deeply nested)."""
    if _PATCHING[0]:
        yield
        return
    patches = make()
    saved = [(obj, name, vars(obj).get(name, _ABSENT)) for obj, name, _ in patches]
    _PATCHING[0] = True
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            if value is _ABSENT:
                delattr(obj, name)
            else:
                setattr(obj, name, value)
        _PATCHING[0] = False


_ABSENT = object()


# Every character the figures print, so that one TrueType subset per process serves every PDF, and
# the ligatures the text shaper forms from them ("paired difference" prints the glyph "ff"), as
# their own code points so that they join the first subset: a glyph missing from the warm-up's
# subset costs another fontTools subset (~0.15 s) in the first figure that prints it.
FONT_CHARACTERS = ("".join(chr(c) for c in range(32, 127)) + "\u2212\u03c1\u03b1\u00b1\u00d7\u00b7\u2013\u2014"
                   "\u2026\u2264\u2265\u00b0\u00b5\u2205\u2208\u0394\u03b4\u03c3\u2009\ufb00\ufb01\ufb02\ufb03\ufb04")
_SUBSETS: dict = {}  # (font file, face) -> (glyphs, subset font bytes, glyph index map)


class _SubsetFont:
    def __init__(self, data: bytes):
        self.data = data


def defer_font_subsetter() -> None:
    """matplotlib's PDF backend imports fontTools' subsetter (~0.08 s) as it is imported, but with
    the subsets kept on disk (`_cache_font_subsets`) a figure worker seldom runs it: stand a
    placeholder in for it that imports the real one when it is first used. For the figure
    workers, before matplotlib's backends are imported (nothing else there imports fontTools);
    a no-op where the subsetter is imported already."""
    import importlib
    import importlib.util
    import sys
    import types

    name = "fontTools.subset"
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    placeholder = types.ModuleType(name)

    def __getattr__(attr):  # the first use: the real module, into the placeholder too
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
        real = importlib.import_module(name)
        placeholder.__dict__.update({k: v for k, v in vars(real).items() if k != "__getattr__"})
        return getattr(real, attr)

    placeholder.__getattr__ = __getattr__
    sys.modules[name] = placeholder


def _subset_file(key: tuple[str, int], glyphs: set) -> Path | None:
    """Where a font subset is kept between processes: matplotlib's cache folder, under a name
    made of everything the subset depends on (the font file's size and time, both libraries'
    versions, the glyphs). None where the font file cannot be read."""
    import hashlib

    import fontTools
    import matplotlib

    try:
        st = os.stat(key[0])
        folder = Path(matplotlib.get_cachedir())
    except (OSError, RuntimeError):
        return None
    ident = repr((key, st.st_size, st.st_mtime_ns, matplotlib.__version__, fontTools.version, sorted(glyphs)))
    return folder / "kdlora-font-subsets" / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.ttf-subset"


def _load_subset(path: Path | None, glyphs: set):
    """(glyphs, font bytes, glyph index map) from a subset file, or None (missing, unreadable, or
    not the subset asked for)."""
    import json

    try:
        head, _, data = path.read_bytes().partition(b"\n")
        meta = json.loads(head)
        if meta["glyphs"] != sorted(glyphs) or data[:4] not in (b"\x00\x01\x00\x00", b"true", b"OTTO"):
            return None
        return set(glyphs), data, {int(k): int(v) for k, v in meta["map"]}
    except (AttributeError, OSError, ValueError, KeyError, TypeError):
        return None


def _store_subset(path: Path | None, hit) -> None:
    import json

    from kdlora.records.store import atomic_write_bytes

    if path is None:
        return
    head = json.dumps({"glyphs": sorted(hit[0]), "map": sorted(hit[2].items())}).encode()
    try:
        atomic_write_bytes(path, head + b"\n" + hit[1])
    except OSError:  # a read-only cache folder: subset again next time
        pass


def _cache_font_subsets() -> list[tuple[object, str, object]]:
    """Embedding a TrueType font in a PDF (pdf.fonttype 42) subsets it with fontTools, about 0.1 s
    a PDF, for glyphs that differ little from figure to figure. Subset once per process to a
    superset that grows when needed, and reuse it: PDFs embed a few kB more of the same font.
    The subset is also kept in matplotlib's cache folder, so that the next report's workers
    read it instead of subsetting again (~0.13 s each).
    Installed only where matplotlib's private helpers are as expected; else PDFs subset as usual."""
    from matplotlib.backends import _backend_pdf_ps as pdf_ps

    if not all(hasattr(pdf_ps, n) for n in ("get_glyphs_subset", "font_as_file", "SubsetResults")):
        return []
    subset, as_file = pdf_ps.get_glyphs_subset, pdf_ps.font_as_file

    @contextmanager
    def cached_subset(fontfile, glyphs):
        key = (str(getattr(fontfile, "path", fontfile)), getattr(fontfile, "face_index", 0))
        want, hit = set(glyphs), _SUBSETS.get(key)
        if hit is None or not want <= hit[0]:
            every = want | (hit[0] if hit else set())
            stored = _subset_file(key, every)
            hit = _load_subset(stored, every)
            if hit is None:
                with subset(fontfile, every) as result:
                    hit = (every, as_file(result.font).getvalue(), dict(result.glyph_index_map))
                _store_subset(stored, hit)
            _SUBSETS[key] = hit
        yield pdf_ps.SubsetResults(_SubsetFont(hit[1]), hit[2])

    def cached_as_file(font):
        return io.BytesIO(font.data) if isinstance(font, _SubsetFont) else as_file(font)

    return [(pdf_ps, "get_glyphs_subset", cached_subset), (pdf_ps, "font_as_file", cached_as_file)]


def _cache_text_layouts() -> list[tuple[object, str, object]]:
    """matplotlib lays a text out (font metrics, lines, alignment, rotation) each time it is drawn
    or measured: ~1700 times for one report's six figures, for ~240 texts and their three
    renderers (the crop box's, the PNG's, the PDF's), each time looking the font up again. Keep
    each layout per renderer, keyed by everything it depends on; texts that wrap, use TeX or turn
    with their transform are laid out as before. Installed only where `Text._get_layout` is as
    expected."""
    import weakref

    from matplotlib.text import Text

    if not hasattr(Text, "_get_layout"):
        return []
    layout = Text._get_layout
    per_renderer: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def cached_layout(self, renderer):
        if self.get_wrap() or self.get_usetex() or self.get_transform_rotates_text():
            return layout(self, renderer)
        fp = self._fontproperties
        key = (self._text, self.get_figure(root=True).dpi, getattr(renderer, "dpi", None), tuple(fp.get_family()),
               fp.get_style(), fp.get_variant(), fp.get_weight(), fp.get_stretch(), fp.get_size(), fp.get_file(),
               fp.get_math_fontfamily(), self.get_parse_math(), self._linespacing, self._get_multialignment(),
               self._rotation, self.get_rotation_mode(), self._horizontalalignment, self._verticalalignment)
        try:
            known = per_renderer.setdefault(renderer, {})
        except TypeError:  # a renderer that cannot be referenced weakly
            return layout(self, renderer)
        hit = known.get(key)
        if hit is None:
            hit = known[key] = layout(self, renderer)
        bbox, lines, box = hit
        return bbox.frozen(), list(lines), box

    return [(Text, "_get_layout", cached_layout)]


def _fast_pdf_markers() -> list[tuple[object, str, object]]:
    """The PDF backend writes a marker per point through a generic path iterator and a PDF
    formatter per number (~25 µs a point, ~3000 points in the legacy efficiency figure). Write the
    same operators in one pass over the transformed points; where a point lies outside the page
    (matplotlib's clipping then adds points on its edge) or the points are not a plain list,
    draw as matplotlib does. Installed only where the backend's helpers are as expected."""
    from matplotlib.backends import backend_pdf as pdf

    renderer = getattr(pdf, "RendererPdf", None)
    if renderer is None or not all(hasattr(pdf, n) for n in ("_fill", "Op")):
        return []
    original = renderer.draw_markers

    def draw_markers(self, gc, marker_path, marker_trans, path, trans, rgbFace=None):
        uses = len(path)
        if len(marker_path) * uses < len(marker_path) + uses + 5 or path.codes is not None:
            return original(self, gc, marker_path, marker_trans, path, trans, rgbFace)
        xy = np.asarray(trans.transform(path.vertices), dtype=float)
        xy = xy[np.isfinite(xy).all(axis=1)]
        width, height = self.file.width * 72, self.file.height * 72
        if not ((xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)).all():
            return original(self, gc, marker_path, marker_trans, path, trans, rgbFace)
        self.check_gc(gc, rgbFace)
        name = self.file.markerObject(marker_path, marker_trans, gc.fill(rgbFace), gc.stroke(), self.gc._linewidth,
                                      gc.get_joinstyle(), gc.get_capstyle()).pdfRepr()
        fill, lines, lastx, lasty = pdf._fill, [], 0, 0
        for x, y in xy.tolist():
            dx, dy = x - lastx, y - lasty
            lines.append(fill([b"1", b"0", b"0", b"1", (b"%.10f" % dx).rstrip(b"0").rstrip(b"."),
                               (b"%.10f" % dy).rstrip(b"0").rstrip(b"."), b"cm", name, b"Do"]))
            lastx, lasty = x, y
        self.file.output(pdf.Op.gsave)
        if lines:
            self.file.write(b"\n".join(lines) + b"\n")
        self.file.output(pdf.Op.grestore)

    return [(renderer, "draw_markers", draw_markers)]


def new_figure(width: str = "double", height: float = 3.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTHS[width], height))


def close(fig: Figure) -> None:
    """Let a rendered figure go. Its artists are left to the garbage collector: `Figure.clear`
    would rebuild every axes (fresh ticks, spines, texts) only to drop them, ~5 % of a figure's time."""
    del fig


def render(fig: Figure, formats: tuple[str, ...], dpi: int = 200) -> dict[str, bytes]:
    """The figure in each format, cropped to its content.

    The crop box is computed once from text extents and reused: bbox_inches="tight" would draw
    the whole figure an extra time per format.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    bbox = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer()).padded(0.03)
    out = {}
    for ext in formats:
        buf = io.BytesIO()
        # PNG at zlib level 1: a fifth of the encoding time of the default 6, files ~5 % larger
        extra = {"pil_kwargs": {"compress_level": 1}} if ext == "png" else {}
        fig.savefig(buf, format=ext, dpi=dpi, bbox_inches=bbox, **extra)
        out[ext] = buf.getvalue()
    return out


def color(strategy: str) -> str:
    if strategy in COLORS:
        return COLORS[strategy]
    return SPARE_COLORS[sum(map(ord, strategy)) % len(SPARE_COLORS)]


def marker(variant) -> str:
    if variant is None or (isinstance(variant, float) and math.isnan(variant)) or variant == "":
        return FFT_MARKER
    if variant in MARKERS:
        return MARKERS[variant]
    return SPARE_MARKERS[sum(map(ord, str(variant))) % len(SPARE_MARKERS)]


def split(method: str) -> tuple[str, str | None]:
    """'kd-lora:dora' -> ('kd-lora', 'dora'); an arm 'lora:lora r=16' -> ('lora', 'lora');
    'fft' and 'fft: lr=1e-05' -> ('fft', None)."""
    strategy, _, variant = method.partition(" ")[0].partition(":")
    return strategy, variant or None


def arm_index(methods) -> dict[str, int]:
    """Arms of one method (same strategy and variant, different settings: 'lora:lora r=8',
    'lora:lora r=16') in report order: 0 is drawn filled, the others open."""
    out, seen = {}, {}
    for m in method_order(methods):
        base = m.partition(" ")[0]
        out[m] = seen.get(base, 0)
        seen[base] = out[m] + 1
    return out


def points(ax, xs, ys, methods, size: float, edgecolors=None, **kwargs) -> None:
    """A point per method: colour from its strategy, marker from its variant, open for a second
    arm. The points of one marker (a scatter call each before) and of the markers after it share
    one collection, drawn in the same order with the same pixels; a marker with one point keeps
    its own scatter, which matplotlib stamps onto whole pixels."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(methods):
        groups.setdefault(marker(split(m)[1]), []).append(i)
    arms = arm_index(methods)
    run: list[tuple] = []  # (x, y, marker, size, face, edge, linewidth) not drawn yet
    mergeable = set(kwargs) <= {"linewidths", "zorder"} and kwargs.get("linewidths") is not None
    for mk, idx in groups.items():
        colors = [color(split(methods[i])[0]) for i in idx]
        faces = [c if arms[methods[i]] == 0 else "white" for c, i in zip(colors, idx)]
        open_ = any(arms[methods[i]] for i in idx)
        area = size * (1.8 if mk == FFT_MARKER else 1.0)
        style = {**kwargs, "linewidths": max(kwargs.get("linewidths", 0), 0.8)} if open_ else kwargs
        edges = colors if (edgecolors is None or open_) else edgecolors
        if mergeable and len(idx) > 1:
            run += [(xs[i], ys[i], mk, area, face, edges[k] if edges is colors else edges, style["linewidths"])
                    for k, (i, face) in enumerate(zip(idx, faces))]
            continue
        _marker_collection(ax, run, kwargs.get("zorder"))
        ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], marker=mk, s=area, c=faces, edgecolors=edges,
                   **style)
    _marker_collection(ax, run, kwargs.get("zorder"))


def _one_marker(ax, x, y, mk: str, area: float, face, edge, linewidth: float, alpha: float, rasterized: bool) -> None:
    """What `ax.scatter(x, y, s=area, marker=mk, c=face, edgecolors=edge, linewidths=linewidth,
    alpha=alpha)` draws (one shape, colour and size: matplotlib stamps it), without scatter's
    argument parsing (~1 ms a call, 52 calls in the efficiency figure)."""
    from matplotlib.collections import PathCollection
    from matplotlib.markers import MarkerStyle
    from matplotlib.transforms import IdentityTransform

    xy = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    xy = xy[np.isfinite(xy).all(axis=1)]  # what scatter masks
    style = MarkerStyle(mk)
    collection = PathCollection([style.get_path().transformed(style.get_transform())], [area], facecolors=[face],
                                edgecolors=[edge], linewidths=[linewidth], offsets=xy, offset_transform=ax.transData,
                                alpha=alpha)
    collection.set_transform(IdentityTransform())
    collection.set_rasterized(rasterized)
    ax.add_collection(collection)


def _marker_collection(ax, run: list[tuple], zorder) -> None:
    """`run`'s points as one collection of markers, as `ax.scatter` would draw each of its markers
    (several paths, sizes and colours in one collection); empties `run`."""
    if not run:
        return
    from matplotlib.collections import PathCollection
    from matplotlib.markers import MarkerStyle
    from matplotlib.transforms import IdentityTransform

    xy = np.array([(p[0], p[1]) for p in run], dtype=float)
    keep = np.isfinite(xy).all(axis=1)  # what scatter masks
    shapes = {}
    for mk in dict.fromkeys(p[2] for p in run):
        style = MarkerStyle(mk)
        shapes[mk] = style.get_path().transformed(style.get_transform())
    kept = [p for p, k in zip(run, keep) if k]
    run.clear()
    if not kept:
        return
    collection = PathCollection([shapes[p[2]] for p in kept], [p[3] for p in kept],
                                facecolors=[p[4] for p in kept], edgecolors=[p[5] for p in kept],
                                linewidths=[p[6] for p in kept], offsets=xy[keep], offset_transform=ax.transData)
    collection.set_transform(IdentityTransform())
    if zorder is not None:
        collection.set_zorder(zorder)
    ax.add_collection(collection)


def msize(variant) -> float:
    """Marker area (pt²): the star reads small at the same area."""
    return 1.8 if marker(variant) == FFT_MARKER else 1.0


def log_axis(ax, which: str, values, scale: float = 1.0, max_ticks: int = 6) -> None:
    """A log axis over `values` (divided by `scale`), ticked at 1, 2, 5 × 10^k, in plain numbers,
    at most `max_ticks` of them (every other decade when there are more)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    v = np.asarray(values, dtype=float) / scale
    v = v[np.isfinite(v) & (v > 0)]
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    if v.size == 0:
        ax.autoscale(enable=True, axis=which)  # no limits to set: matplotlib's (if held, see _hold_autoscale)
        return
    lo, hi = float(v.min()), float(v.max())
    if hi / lo < 1.5:  # a narrow range: widen it so that at least two ticks fit
        lo, hi = lo / 1.25, hi * 1.25
    pad = (hi / lo) ** 0.06
    lo, hi = lo / pad, hi * pad
    (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    ticks: list[float] = []
    for subs in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [s * 10.0 ** d for d in decades for s in subs if lo <= s * 10.0 ** d <= hi]
        if len(ticks) >= 3:
            break
    while len(ticks) > max_ticks:  # many decades: every other one
        decade_ticks = [t for t in ticks if abs(math.log10(t) - round(math.log10(t))) < 1e-9]
        ticks = decade_ticks if len(decade_ticks) < len(ticks) else ticks[::2]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: _plain(x)))
    axis.set_minor_locator(NullLocator())


def _plain(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.10g}"


def strategy_variant_legend(fig, methods: list[str], anchor_ax=None, width: str = "double") -> None:
    """The legend of strategy (colour) and variant (marker): one row each, under the figure's
    lowest axes and their labels, outside the data. With `anchor_ax` (an axes with nothing in it)
    it fills that axes instead."""
    from matplotlib.lines import Line2D

    strategies = list(dict.fromkeys(split(m)[0] for m in methods))
    variants = list(dict.fromkeys(v for m in methods if (v := split(m)[1]) is not None))
    first = [Line2D([], [], ls="", marker="s", ms=6, color=color(s), label=labels.strategy(s))
             for s in strategies if s != REFERENCE]
    if REFERENCE in strategies:
        first.insert(0, Line2D([], [], ls="", marker=FFT_MARKER, ms=7, color=color(REFERENCE),
                               label=labels.strategy(REFERENCE)))
    second = [Line2D([], [], ls="", marker=marker(v), ms=5, mfc="none", color="#555555", label=v) for v in variants]
    arms = arm_index(methods)
    if any(arms.values()):  # arms of one method: filled for the first setting, open for the others
        for k in sorted(set(arms.values())):
            settings = dict.fromkeys(labels.settings_text(m.partition(" ")[2]) for m, i in arms.items()
                                     if i == k and m.partition(" ")[2])
            if settings:
                second.append(Line2D([], [], ls="", marker="o", ms=5, color="#555555",
                                     mfc="#555555" if k == 0 else "white",
                                     label=" / ".join(settings)))
    if anchor_ax is not None:
        anchor_ax.set_axis_off()
        anchor_ax.legend(handles=first + second, loc="center", ncol=2)
        return
    y = _below_axes(fig)
    per_row = 6 if width == "double" else 3
    fig.legend(handles=first, loc="upper center", bbox_to_anchor=(0.5, y), ncol=len(first),
               borderaxespad=0, borderpad=0.2)
    if second:
        rows = math.ceil(len(second) / per_row)
        fig.legend(handles=second, loc="upper center", bbox_to_anchor=(0.5, y - 0.19 / fig.get_figheight()),
                   ncol=math.ceil(len(second) / rows), borderaxespad=0, borderpad=0.2)


def _below_axes(fig) -> float:
    """Figure y (fraction) just under the lowest visible axes with its tick labels and x label
    (estimated from font sizes, without drawing the figure)."""
    low, offset = 1.0, 0.0
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        y0 = ax.get_position().y0
        inches = 0.06
        if ax.xaxis.get_visible() and len(ax.get_xticks()) and any(t.get_text() for t in ax.get_xticklabels()):
            longest = max((len(t.get_text()) for t in ax.get_xticklabels()), default=0)
            rotated = any(t.get_rotation() == 90 for t in ax.get_xticklabels())
            inches += 0.06 * longest if rotated else 0.14
        elif ax.xaxis.get_visible() and len(ax.get_xticks()):
            inches += 0.14
        if ax.get_xlabel():
            inches += 0.16 * (1 + ax.get_xlabel().count("\n"))
        if y0 - inches / fig.get_figheight() < low - offset:
            low, offset = y0, inches / fig.get_figheight()
    return low - offset - 0.04 / fig.get_figheight()


# ----- figures ---------------------------------------------------------------------------------------
def _measures(df: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(column, axis label with unit, divisor) of the per-run cost measures present."""
    kind = memory_kind_of(df["memory_kind"])
    unit, div = labels.bytes_unit(df["peak_memory_bytes"].max())
    measures = [("train_time_s", "train time (s)", 1.0),
                ("trainable_params", "trainable parameters (M)", 1e6),
                ("peak_memory_bytes", f"{labels.memory(kind)} ({unit})", div),
                ("train_samples_per_s", "throughput (samples/s)", 1.0)]
    if kind in (None, "mixed"):
        measures = [m for m in measures if m[0] != "peak_memory_bytes"]
    return [m for m in measures if df[m[0]].notna().any()]


def efficiency_scatter(a: Analysis, width: str = "double") -> Figure | None:
    df = a["runs"]
    measures = _measures(df)
    if not measures:
        return None
    cols = 2 if len(measures) > 1 else 1
    rows = math.ceil(len(measures) / cols)
    panel_h = 1.55 if width == "double" else 1.45
    fig = new_figure(width, panel_h * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    methods = method_order(df["method"])
    groups = {m: part for m, part in df.groupby("method")}
    arms = arm_index(methods)
    size = 6 if len(df) > 300 else 12
    _hold_autoscale(axes.ravel())
    for ax, (column, label, div) in zip(axes.ravel(), measures):
        for m in methods:
            part = groups[m]
            s, v = split(m)
            filled = arms[m] == 0
            _one_marker(ax, (part[column] / div).to_numpy(), part["primary"].to_numpy(), marker(v), size * msize(v),
                        color(s) if filled else "white", color(s), 0 if filled else 0.6, alpha=0.55,
                        rasterized=len(df) > RASTER_ABOVE)
        log_axis(ax, "x", df[column], div, max_ticks=6 if width == "double" else 4)
        ax.set_xlabel(label)
    _release_autoscale(axes.ravel()[:len(measures)], "y")
    for ax in axes[:, 0]:
        ax.set_ylabel("primary metric")
    for ax in axes.ravel()[len(measures):]:
        ax.set_visible(False)
    fig.subplots_adjust(hspace=0.45, wspace=0.12 if width == "double" else 0.3, bottom=0.06, top=0.98)
    strategy_variant_legend(fig, methods, width=width)
    return fig


def _hold_autoscale(axes) -> None:
    """No autoscaling while a figure's artists are added: matplotlib rescales an axes (and those
    sharing it) on every collection added after another, ~1 ms each; `_release_autoscale` asks for
    the one that counts once all the data are there (the same limits)."""
    for ax in axes:
        ax.set_autoscale_on(False)


def _release_autoscale(axes, axis: str) -> None:
    for ax in axes:
        ax.autoscale(enable=True, axis=axis)


def _score_label(a: Analysis) -> str:
    summary = a["efficiency_summary_by_variant"]
    return ("normalised score (FFT = 1)" if summary["score_norm_mean"].notna().all()
            else "mean primary metric")


PARETO_COSTS = {"trainable params": ("trainable parameters (M)", "trainable_params_mean"),
                "memory": ("memory", "peak_memory_bytes_mean"),
                "train time": ("train time (s)", "train_time_s_mean")}


def pareto(a: Analysis, width: str = "double") -> Figure | None:
    """Score against trainable parameters, memory and time: one point per method, its frontier."""
    front = a["pareto_frontier"]
    if front.empty:
        return None
    costs = list(dict.fromkeys(front["cost"]))
    summary = a["efficiency_summary_by_variant"]
    if width == "double":
        fig = new_figure(width, 2.1)
        axes = list(fig.subplots(1, len(costs), squeeze=False, sharey=True)[0])
        legend_ax = None
    else:
        fig = new_figure(width, 3.4)
        grid = fig.subplots(2, 2, squeeze=False).ravel()
        axes, legend_ax = list(grid[:len(costs)]), (grid[len(costs)] if len(costs) < 4 else None)
        for ax in grid[len(costs) + 1:]:
            ax.set_visible(False)
    _hold_autoscale(fig.axes)
    for i, (ax, cost) in enumerate(zip(axes, costs)):
        part = front[front["cost"] == cost]
        label, div = PARETO_COSTS.get(cost, (cost, None))[0], 1.0
        if cost == "trainable params":
            div = 1e6
        elif cost == "memory":
            kind = memory_kind_of(summary["memory_kind"])
            unit, div = labels.bytes_unit(part["cost_value"].max())
            label = f"{labels.memory(kind)} ({unit})"
        on = part[part["on_frontier"]].sort_values("cost_value")
        ax.step(on["cost_value"] / div, on["score"], where="post", color="#999999", lw=0.8, zorder=1)
        points(ax, list(part["cost_value"] / div), list(part["score"]), list(part["method"]), 22,
               edgecolors="white", linewidths=0.4, zorder=3)
        log_axis(ax, "x", part["cost_value"], div, max_ticks=5 if width == "double" else 4)
        ax.set_xlabel(label)
        if width == "double" and i == 0 or width == "single" and i % 2 == 0:
            ax.set_ylabel(_score_label(a))
    _release_autoscale(axes, "y")
    methods = method_order(front["method"].unique())
    if width == "double":
        fig.subplots_adjust(wspace=0.12, bottom=0.08, top=0.98)
        strategy_variant_legend(fig, methods, width=width)
    else:
        fig.subplots_adjust(wspace=0.35, hspace=0.6)
        strategy_variant_legend(fig, methods, anchor_ax=legend_ax)
    return fig


def completion_heatmap(a: Analysis, width: str = "double") -> Figure | None:
    """Status figure: share of the grid's runs done per (family, method, task), one panel a family."""
    cells = a.tables.get("completion_cells")
    if cells is not None and not cells.empty:
        values, bar_label, vmax = "completion_pct", "runs completed (% of the grid)", 100
    else:
        cells = a["cells"]
        values, bar_label, vmax = "runs", "completed runs", None
    tasks = task_order(cells["task"])
    methods = method_order(cells["method"])
    families = [f for f in labels.FAMILY if f in set(cells["family"])] + sorted(
        set(cells["family"]) - set(labels.FAMILY))
    grid = cells.pivot_table(index=["family", "method"], columns="task", values=values, aggfunc="sum")
    vmax = vmax or float(np.nanmax(grid.to_numpy())) or 1.0
    per_row = 0.13 if width == "double" else 0.12
    stacked = width == "single" and len(families) > 1  # one family a row: 9 task names fit a column
    if stacked:
        fig = new_figure(width, (0.3 + per_row * len(methods)) * len(families) + 0.5)
        axes = fig.subplots(len(families), 1, squeeze=False)[:, 0]
    else:
        fig = new_figure(width, 0.9 + per_row * len(methods))
        axes = fig.subplots(1, len(families), squeeze=False)[0]
    # Not shared axes: every panel has the same rows and columns, and a panel whose tick labels
    # would be hidden gets no ticks at all (each costs five artists per draw).
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    im = None
    for i, (ax, fam) in enumerate(zip(axes, families)):
        part = grid.loc[fam] if fam in grid.index.get_level_values(0) else pd.DataFrame()
        part = part.reindex(index=methods, columns=tasks)
        im = ax.imshow(part.to_numpy(dtype=float), aspect="auto", cmap=cmap, vmin=0, vmax=vmax,
                       interpolation="nearest")
        if not stacked or i == len(families) - 1:
            ax.set_xticks(range(len(tasks)), [labels.task(t) for t in tasks], rotation=90)
        else:
            ax.set_xticks([])
        if stacked or i == 0:
            ax.set_yticks(range(len(methods)), [labels.method(m) for m in methods])
        else:
            ax.set_yticks([])
        ax.set_title(labels.family(fam), y=1.0)  # y given: no title placement pass at each draw
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    w = fig.get_figwidth()
    left = (0.054 * max(len(labels.method(m)) for m in methods) + 0.1) / w  # the method names fit
    fig.subplots_adjust(wspace=0.08, hspace=0.35 if stacked else 0.2, left=left, right=1 - 0.72 / w)
    top, bottom = axes[0].get_position().y1, axes[-1].get_position().y0
    cax = fig.add_axes((1 - 0.62 / w, bottom, 0.1 / w, top - bottom))
    cbar = fig.colorbar(im, cax=cax)
    cbar.set_label(bar_label)
    cbar.outline.set_linewidth(0.4)
    return fig


def per_task_bars(a: Analysis, width: str = "double") -> Figure | None:
    """One panel per task, each on its own scale: a bar per method (colour = strategy, marker at its
    top = variant), mean ± s.d. over runs. A panel's axis starts at zero unless its bars all stand
    so high that zero would flatten their differences; such panels say where they start."""
    df = a["runs"]
    tasks, methods = task_order(df["task"]), method_order(df["method"])
    stat = df.groupby(["task", "method"])["primary"].agg(["mean", "std"])
    names = df.drop_duplicates("task").set_index("task")["primary_name"]
    ncols = (3 if width == "double" else 2) if len(tasks) > 2 else len(tasks)
    nrows = math.ceil(len(tasks) / ncols)
    panel_h = 1.25 if width == "double" else 1.0
    fig = new_figure(width, panel_h * nrows + 0.45)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    x, gap = [], 0.0  # a gap between strategies
    for i, m in enumerate(methods):
        if i and split(m)[0] != split(methods[i - 1])[0]:
            gap += 0.6
        x.append(i + gap)
    x = np.asarray(x)
    bar_w = 0.8
    _hold_autoscale(axes.ravel())  # every limit is set below
    for ax, t in zip(axes.ravel(), tasks):
        part = stat.xs(t, level="task").reindex(methods)
        mean, sd = part["mean"].to_numpy(), part["std"].fillna(0).to_numpy()
        ok = ~np.isnan(mean)
        lo_end, hi_end = np.nanmin((mean - sd)[ok]), np.nanmax((mean + sd)[ok])
        floor = 0.0
        if np.nanmin(mean[ok]) > 0 and lo_end > 0.35 * hi_end:  # zero would hide the differences
            floor = max(0.0, lo_end - 0.15 * (hi_end - lo_end))
        top = hi_end + 0.08 * (hi_end - min(floor, lo_end))
        bottom = min(floor, lo_end - 0.05 * (hi_end - lo_end)) if lo_end < 0 else floor
        colors = [color(split(m)[0]) for m in methods]
        _bars(ax, x[ok], mean[ok], bottom, bar_w, [c for c, k in zip(colors, ok) if k], alpha=0.35)
        ax.errorbar(x[ok], mean[ok], yerr=sd[ok], fmt="none", ecolor="#333333", elinewidth=0.5, capsize=0)
        keep = [i for i, k in enumerate(ok) if k]
        points(ax, [x[i] for i in keep], [mean[i] for i in keep], [methods[i] for i in keep], 10, linewidths=0,
               zorder=3)
        ax.set_ylim(bottom, top)
        ax.set_xlim(x[0] - 0.7, x[-1] + 0.7)
        ax.set_xticks([])
        ax.spines["bottom"].set_visible(bottom == 0)
        ax.set_title(labels.task(t), loc="left", pad=2, y=1.0)  # y given: no placement pass per draw
        ax.set_ylabel(labels.metric_short(names[t]), labelpad=1)
        ax.yaxis.set_major_locator(_nice_locator())
        ax.yaxis.get_major_formatter().set_useOffset(False)  # no offset text to clash with the fixed title
    for ax in axes.ravel()[len(tasks):]:
        ax.set_visible(False)
    fig.subplots_adjust(hspace=0.45, wspace=0.42 if width == "double" else 0.5, bottom=0.02, top=0.97)
    strategy_variant_legend(fig, methods, width=width)
    return fig


def _bars(ax, x, top, bottom: float, width: float, colors, alpha: float) -> None:
    """Bars from `bottom` to `top`, centred on `x`, as `ax.bar(..., linewidth=0)` would draw them
    but as one collection of rectangles instead of a patch each (the same pixels, fewer artists)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba

    left = np.asarray(x, dtype=float) - width / 2
    right = left + width
    verts = [[(x0, bottom), (x1, bottom), (x1, y1), (x0, y1)] for x0, x1, y1 in zip(left, right, top)]
    ax.add_collection(PolyCollection(verts, facecolors=[to_rgba(c, alpha) for c in colors], linewidths=0),
                      autolim=False)


def _nice_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10])


def paired_forest(a: Analysis, width: str = "double") -> Figure | None:
    """Each comparison's effect (the verdict's: Hodges–Lehmann) with its CI, one panel per family of
    comparisons; filled markers are directional verdicts."""
    tests = a["statistical_tests"].dropna(subset=["effect"])
    if tests.empty:
        return None
    fams = list(dict.fromkeys(tests["test_family"]))
    sizes = [int((tests["test_family"] == f).sum()) for f in fams]
    row, gap, top, bottom = 0.15, 0.34, 0.2, 0.42  # inches: a row, between panels (a title), margins
    height = row * (sum(sizes) + 0.6 * len(fams)) + gap * (len(fams) - 1) + top + bottom
    fig = new_figure(width, height)
    axes = fig.subplots(len(fams), 1, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [s + 0.6 for s in sizes]})[:, 0]
    mean_h = row * (sum(sizes) + 0.6 * len(fams)) / len(fams)
    longest = max(len(labels.comparison(f, x, y)) for f, x, y in zip(tests["test_family"], tests["a"], tests["b"]))
    left = (0.054 * longest + 0.12) / fig.get_figwidth()  # the comparisons' names fit beside the axes
    fig.subplots_adjust(top=1 - top / height, bottom=bottom / height, hspace=gap / mean_h, left=left, right=0.98)
    conf = float(a["settings"]["confidence_pct"].iloc[0])
    for ax, fam in zip(axes, fams):
        part = tests[tests["test_family"] == fam].iloc[::-1]
        y = np.arange(len(part))
        rows = []  # (y, colour, marker, filled) of each comparison
        for yi, r in zip(y, part.itertuples()):
            base = r.a.partition(" ")[0]
            s, v = split(r.a) if (":" in base or base == REFERENCE) else ("", None)
            differs = r.verdict in ("a better", "b better")  # filled: a directional verdict
            rows.append((yi, color(s) if s else "#000000", marker(v) if ":" in base else "o", differs))
        ci = (part["effect_ci_low"].notna() & part["effect_ci_high"].notna()).to_numpy()  # none where not testable
        if ci.any():
            ax.hlines(y[ci], part["effect_ci_low"].to_numpy()[ci], part["effect_ci_high"].to_numpy()[ci],
                      colors=[c for (_, c, _, _), k in zip(rows, ci) if k], lw=0.9)
        for mk in dict.fromkeys(m for _, _, m, _ in rows):
            sel = [i for i, row in enumerate(rows) if row[2] == mk]
            ax.scatter(part["effect"].to_numpy()[sel], y[sel], marker=mk, s=16 * (1.8 if mk == FFT_MARKER else 1),
                       zorder=3, facecolors=[rows[i][1] if rows[i][3] else "white" for i in sel],
                       edgecolors=[rows[i][1] for i in sel], linewidths=0.8)
        ax.axvline(0, color="#777777", lw=0.6, zorder=0)
        ax.set_yticks(y, [labels.comparison(fam, r.a, r.b) for r in part.itertuples()])
        ax.set_ylim(-0.6, len(part) - 0.4)
        box = ax.get_position()
        fig.text(0.005, box.y1 + 0.06 / height, labels.test_family(fam), ha="left", va="bottom", fontsize=8)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
    axes[-1].set_xlabel(f"paired difference in primary metric (Hodges–Lehmann, {conf:g} % CI)" if width == "double"
                        else f"paired difference\n(Hodges–Lehmann, {conf:g} % CI)")
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(nbins=7 if width == "double" else 4, steps=[1, 2, 5, 10]))
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", ms=5, color="#333333", label="one side better"),
               Line2D([], [], ls="", marker="o", ms=5, mfc="white", color="#333333",
                      label="inconclusive, equivalent or not testable")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, _below_axes(fig)), ncol=2,
               borderaxespad=0, borderpad=0.2)
    return fig


def critical_difference(a: Analysis, width: str = "double") -> Figure | None:
    """Demšar's critical-difference diagram per strategy, drawn here so that its title, its CD bar
    and its rank axis never share space."""
    fr, ranks, nem = a["friedman"], a["friedman_ranks"], a["nemenyi"]
    if fr.empty:
        return None
    alpha = float(a["settings"]["alpha"].iloc[0])
    panels = []
    for r in fr.itertuples():
        rk = ranks[ranks["strategy"] == r.strategy].set_index("variant")["mean_rank"].sort_values()
        if len(rk) < 2:
            continue
        panels.append((r, rk, _cliques(rk, nem[nem["strategy"] == r.strategy], alpha)))
    if not panels:
        return None
    side_by_side = width == "double" and len(panels) > 1
    units = max(_cd_units(rk, cl) for _, rk, cl in panels)
    panel_h = 0.15 * units
    if side_by_side:
        fig = new_figure(width, panel_h)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        fig.subplots_adjust(wspace=0.25, left=0.01, right=0.99, top=1, bottom=0)
    else:
        fig = new_figure(width, (panel_h + 0.1) * len(panels))
        axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
        fig.subplots_adjust(hspace=0.1 / panel_h, left=0.01, right=0.99, top=1, bottom=0)
    for ax, (r, rk, cl) in zip(axes, panels):
        _cd_panel(ax, rk, cl, float(r.critical_difference), int(len(rk)),
                  f"{labels.strategy(r.strategy)}, {int(r.n_blocks)} blocks", units,
                  fig.get_figwidth() * ax.get_position().width)
    return fig


CD_TOP = 3.5  # y units above the rank axis: the title, the CD bar, the tick labels


def _cd_units(rk: pd.Series, cliques) -> float:
    """Height of one diagram in text rows: above the axis, the cliques, one row per label pair."""
    return CD_TOP + 0.55 + 0.5 * len(cliques) + 0.55 + math.ceil(len(rk) / 2) - 1 + 0.6


def _cliques(rk: pd.Series, nem: pd.DataFrame, alpha: float) -> list[tuple[float, float]]:
    """Maximal runs of rank-adjacent variants with no pair significantly different (Nemenyi)."""
    names = list(rk.index)
    p = {}
    for r in nem.itertuples():
        p[(r.a, r.b)] = p[(r.b, r.a)] = r.p_nemenyi
    out, last_end = [], -1
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and all(p.get((names[k], names[j + 1]), 1.0) >= alpha for k in range(i, j + 1)):
            j += 1
        if j > i and j > last_end:
            out.append((float(rk.iloc[i]), float(rk.iloc[j])))
            last_end = j
    return out


def _cd_panel(ax, rk: pd.Series, cliques, cd: float, k: int, title: str, units: float, inches: float) -> None:
    """One diagram in data units: x = rank (1 left, best), y = text rows of 1 unit, 0 = the axis.
    The labels beside the axis get the room their length needs (`inches`: the axes' width)."""
    n_side = math.ceil(len(rk) / 2)
    lo, hi = 1, max(k, math.ceil(rk.max()))
    span = hi - lo
    label_in = 0.062 * max(len(f"{name} ({value:.2f})") for name, value in rk.items()) + 0.12
    margin = span * label_in / max(inches - 2 * label_in, 0.5 * inches) + 0.12 * span  # in ranks
    ax.set_xlim(lo - margin, hi + margin)
    ax.set_ylim(CD_TOP - units, CD_TOP)
    ax.set_axis_off()
    ink = "#222222"
    # the title, then the CD bar, then the rank axis with its tick labels: three rows apart
    ax.text(lo - margin, 3.3, title, ha="left", va="top", fontsize=8)
    ax.plot([lo, lo + cd], [1.9, 1.9], color=ink, lw=1.2, solid_capstyle="butt")
    for xe in (lo, lo + cd):
        ax.plot([xe, xe], [1.7, 2.1], color=ink, lw=0.8)
    ax.text(lo + cd + 0.05 * span, 1.9, f"CD = {cd:.2f}", ha="left", va="center", fontsize=7)
    ax.plot([lo, hi], [0, 0], color=ink, lw=0.8)
    for t in range(lo, hi + 1):
        ax.plot([t, t], [0, 0.25], color=ink, lw=0.6)
        ax.text(t, 0.45, str(t), ha="center", va="bottom", fontsize=7)
    # cliques just under the axis, then one row per variant
    for j, (a0, a1) in enumerate(cliques):
        yb = -0.55 - 0.5 * j
        ax.plot([a0 - 0.03, a1 + 0.03], [yb, yb], color=ink, lw=2.2, solid_capstyle="round")
    first_row = -0.55 - 0.5 * len(cliques) - 0.55
    order = list(rk.items())
    left, right = order[:n_side], order[n_side:][::-1]
    for i, (name, value) in enumerate(left):
        yy = first_row - i
        ax.plot([value, value, lo - 0.1 * span], [0, yy, yy], color=ink, lw=0.6)
        ax.text(lo - 0.12 * span, yy, f"{name} ({value:.2f})", ha="right", va="center", fontsize=7)
    for i, (name, value) in enumerate(right):
        yy = first_row - i
        ax.plot([value, value, hi + 0.1 * span], [0, yy, yy], color=ink, lw=0.6)
        ax.text(hi + 0.12 * span, yy, f"({value:.2f}) {name}", ha="left", va="center", fontsize=7)


def ablation_figure(a: Analysis, width: str = "double") -> Figure | None:
    """One row of panels per varied setting: score (with its CI over matched blocks), trainable
    parameters, memory and train time against the setting's levels; a line per method in its
    strategy's colour with its variant's marker."""
    abl = a.tables.get("ablations")
    if abl is None or abl.empty:
        return None
    settings = list(dict.fromkeys(abl["axis"]))
    kind = memory_kind_of(abl["memory_kind"]) if "memory_kind" in abl else None
    unit, div = labels.bytes_unit(abl["peak_memory_bytes_mean"].max())
    score_label = ("normalised score (FFT = 1)" if (abl["score"] == "score_norm").all() else "primary metric")
    panels = [("score_mean", score_label, 1.0), ("trainable_params_mean", "trainable parameters (M)", 1e6),
              ("peak_memory_bytes_mean", f"{labels.memory(kind)} ({unit})", div),
              ("train_time_s_mean", "train time (s)", 1.0)]
    panels = [p for p in panels if abl[p[0]].notna().any() and (p[0] != "peak_memory_bytes_mean" or
                                                                kind not in (None, "mixed"))]
    per_row = len(panels) if width == "double" else 2
    rows_per_setting = math.ceil(len(panels) / per_row)
    fig = new_figure(width, 1.55 * rows_per_setting * len(settings) + 0.3)
    grid = fig.subplots(rows_per_setting * len(settings), per_row, squeeze=False)
    for i, setting in enumerate(settings):
        part = abl[abl["axis"] == setting]
        axes = grid[i * rows_per_setting:(i + 1) * rows_per_setting].ravel()
        name = labels.SETTING.get(setting, setting.replace("_", " "))
        for ax, (column, label, scale) in zip(axes, panels):
            for method, line in part.groupby("method", sort=False):
                s, v = split(method)
                x = np.arange(len(line))
                err = None
                if column == "score_mean" and line["score_ci_low"].notna().all():
                    err = [line["score_mean"] - line["score_ci_low"], line["score_ci_high"] - line["score_mean"]]
                ax.errorbar(x, line[column] / scale, yerr=err, marker=marker(v), ms=4, lw=0.9, capsize=0,
                            elinewidth=0.6, color=color(s))
                ax.set_xticks(x, [str(level) for level in line["level"]])
            ax.set_xlim(-0.4, len(part["level"].unique()) - 0.6)
            ax.set_xlabel(name)
            ax.set_ylabel(label)
            ax.yaxis.set_major_locator(_nice_locator())
        for ax in axes[len(panels):]:
            ax.set_visible(False)
    fig.subplots_adjust(wspace=0.55 if width == "double" else 0.5, hspace=0.6, bottom=0.05, top=0.98)
    strategy_variant_legend(fig, method_order(abl["method"]), width=width)
    return fig


# Figures drawn from the first tables alone (runs, cells, completion): `kdlora report` starts them
# while the statistics are still being computed.
EARLY_FIGURES = ("efficiency_performance_scatter", "per_task_bars", "completion_heatmap")

FIGURES: dict[str, Callable[..., Figure | None]] = {
    "efficiency_performance_scatter": efficiency_scatter,
    "pareto_frontier": pareto,
    "per_task_bars": per_task_bars,
    "paired_differences_forest": paired_forest,
    "critical_difference": critical_difference,
    "ablations": ablation_figure,
    "completion_heatmap": completion_heatmap,
}


def all_figures(a: Analysis, width: str = "double") -> Iterator[tuple[str, Figure]]:
    """Every figure the tables allow, built under the figures' style (render them inside `style()`
    too, or the PDF's fonts are not the style's)."""
    with style():
        for name, make in FIGURES.items():
            fig = make(a, width)
            if fig is not None:
                yield name, fig


def missing_reason(a: Analysis, name: str) -> str | None:
    """Why a figure is not in the report (None when it is, or should be)."""
    if name == "critical_difference" and a["friedman"].empty:
        from kdlora.analysis.comparisons import variant_matrix

        df = a["runs"]
        shapes = {s: variant_matrix(df, s).shape for s in ADAPTER_STRATEGIES if (df["strategy"] == s).any()}
        have = "; ".join(f"{labels.strategy(s)}: {n} complete block(s) of {k} variant(s)"
                         for s, (n, k) in shapes.items()) or "no adapter runs"
        return ("no critical-difference diagram: it ranks a strategy's variants by a Friedman test over "
                "complete (family, task, seed) blocks, which needs at least 2 blocks holding the same 3 or more "
                f"variants ({have})")
    if name == "paired_differences_forest" and a["statistical_tests"].dropna(subset=["effect"]).empty:
        return "no paired-differences figure: no comparison has matched (family, task, seed) pairs"
    return None
