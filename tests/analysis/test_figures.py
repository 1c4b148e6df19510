"""Every figure, as a paper would print it, on synthetic, legacy (the reference study) and
demo-shaped data, at both widths: no two texts overlap, no internal id reaches a label, every
axis that measures something names its unit, legends stay off the data, fonts are >= 7 pt at
print size, and the PDFs embed TrueType fonts, never Type 3.
"""

from __future__ import annotations

import re
import zlib

import pytest

from kdlora.analysis import plots

MEASURED = re.compile(r"time|param|memory|RSS|throughput|samples|FLOP|energy|latency", re.I)
UNIT = re.compile(r"\((s|ms|M|k|MB|GB|samples/s|tokens/s|J|FLOPs|% of the grid)\)")
INTERNAL = re.compile(r"_|:|\bvs\b|\b(nan|None)\b")  # a missing value printed as a name, too


@pytest.fixture(scope="module")
def legacy_analysis(legacy_dir, paper_grid):
    from kdlora.analysis.report import build

    return build([legacy_dir], "legacy", paper_grid)


@pytest.fixture(scope="module")
def demo_analysis(tmp_path_factory):
    """The demo's shape: one family, one task, one seed, every method once."""
    from kdlora.analysis.report import build
    from kdlora.testing.synthetic_records import grid_configs, make_records
    from kdlora.records import write_record

    root = tmp_path_factory.mktemp("demo_shaped")
    for rec in make_records(grid_configs(families=("minilm",), tasks=("sst2",), seeds=(42,)), seed=3):
        write_record(root, rec)
    return build([root], "glue")


@pytest.fixture(scope="module")
def arms_analysis(tmp_path_factory):
    """A study with arms: LoRA-only and KD-LoRA `lora` at r = 8 and r = 16 (an ablation of r)."""
    from kdlora.analysis.report import build
    from kdlora.records import write_record
    from kdlora.testing.synthetic_records import grid_configs, make_records

    base = grid_configs(families=("bert", "roberta"), tasks=("rte", "sst2"), seeds=(1, 2, 3), variants=("lora", "dora"))
    configs = base + [c.with_updates(r=16) for c in base if c.strategy != "fft" and c.variant == "lora"]
    root = tmp_path_factory.mktemp("arms")
    for rec in make_records(configs, seed=3, collapse_rate=0):
        write_record(root, rec)
    return build([root], "glue")


def _texts(fig, renderer):
    """The text artists that are drawn: titles, labels, legends, annotations and the tick labels
    of ticks inside the view (matplotlib keeps label objects for ticks it does not draw)."""
    from matplotlib.text import Text

    tick_texts, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_texts.update((id(tick.label1), id(tick.label2)))
            if ax.get_visible() and ax.axison and axis.get_visible():
                drawn += [lab for tick in axis._update_ticks() for lab in (tick.label1, tick.label2)
                          if lab.get_visible() and tick.get_visible()]
    for t in fig.findobj(Text):
        if id(t) in tick_texts or (t.axes is not None and not t.axes.get_visible()):
            continue
        drawn.append(t)
    return [t for t in drawn if t.get_visible() and t.get_text().strip()]


def check_figure(fig, width: str) -> list[str]:
    """What a reviewer would object to, as a list of problems (empty = fine)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    problems = []
    assert abs(fig.get_figwidth() - plots.WIDTHS[width]) < 1e-6
    printed = fig.get_tightbbox(renderer).width  # inches, as the report crops it
    if printed > plots.WIDTHS[width] + 0.05:
        problems.append(f"wider than a {width} column: {printed:.2f} in")
    texts = _texts(fig, renderer)
    boxes = [(t, t.get_window_extent(renderer).expanded(0.98, 0.9)) for t in texts]
    for i, (t1, b1) in enumerate(boxes):
        for t2, b2 in boxes[i + 1:]:
            if b1.overlaps(b2):
                problems.append(f"texts overlap: {t1.get_text()!r} and {t2.get_text()!r}")
    for t in texts:
        if INTERNAL.search(t.get_text()):
            problems.append(f"internal id in a label: {t.get_text()!r}")
        if t.get_fontsize() < 7:
            problems.append(f"font below 7 pt: {t.get_text()!r} ({t.get_fontsize()} pt)")
    data_axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    for ax in data_axes:
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            if MEASURED.search(label) and not UNIT.search(label):
                problems.append(f"axis without its unit: {label!r}")
        if ax.get_xscale() == "log" and not ax.get_xlabel():
            problems.append("a log axis without a label")
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in data_axes:
            if box.overlaps(ax.get_window_extent(renderer)):
                problems.append("a legend covers an axes' data area")
    return problems


def _figures(analysis, width):
    with plots.style():
        for name, make in plots.FIGURES.items():
            fig = make(analysis, width)
            if fig is not None:
                yield name, fig


def _pdf_fonts(data: bytes) -> set[str]:
    """The /Subtype of every font dictionary in a PDF (matplotlib writes them uncompressed, but
    look inside compressed streams too)."""
    chunks = [data] + [zlib.decompress(m.group(1)) for m in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S)
                       if _inflatable(m.group(1))]
    found = set()
    for chunk in chunks:
        for m in re.finditer(rb"/Type\s*/Font\b(.{0,400})", chunk, re.S):
            sub = re.search(rb"/Subtype\s*/(\w+)", m.group(1))
            if sub:
                found.add(sub.group(1).decode())
    return found


def _inflatable(blob: bytes) -> bool:
    try:
        zlib.decompress(blob)
        return True
    except zlib.error:
        return False


@pytest.mark.parametrize("width", ["double", "single"])
def test_legacy_figures_print_cleanly(legacy_analysis, width):
    drawn = dict(_figures(legacy_analysis, width))
    assert set(drawn) == set(plots.FIGURES) - {"ablations"}  # the reference study varies no setting
    problems = {name: check_figure(fig, width) for name, fig in drawn.items()}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}


def test_synthetic_figures_print_cleanly(synthetic_report):
    analysis, _ = synthetic_report
    problems = {name: check_figure(fig, "double") for name, fig in _figures(analysis, "double")}
    assert set(problems) == set(plots.FIGURES) - {"ablations"}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}


@pytest.mark.parametrize("width", ["double", "single"])
def test_figures_of_a_study_with_arms_print_cleanly(arms_analysis, width):
    drawn = dict(_figures(arms_analysis, width))
    assert "ablations" in drawn
    problems = {name: check_figure(fig, width) for name, fig in drawn.items()}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}


def test_demo_shaped_figures_print_cleanly_and_the_report_says_why_one_is_missing(demo_analysis):
    drawn = dict(_figures(demo_analysis, "single"))
    problems = {name: check_figure(fig, "single") for name, fig in drawn.items()}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    assert "critical_difference" not in drawn  # one block: no Friedman test
    reason = plots.missing_reason(demo_analysis, "critical_difference")
    assert reason and "1 complete block" in reason


def test_pdfs_embed_truetype_never_type3(legacy_analysis):
    with plots.style():
        fig = plots.FIGURES["critical_difference"](legacy_analysis, "single")
        pdf = plots.render(fig, ("pdf",))["pdf"]
    fonts = _pdf_fonts(pdf)
    assert fonts and "Type3" not in fonts, fonts
    assert fonts & {"TrueType", "CIDFontType2", "Type0"}, fonts


def test_the_checker_catches_what_it_should():
    """The checks themselves: overlapping texts, internal ids, a missing unit, a legend on data."""
    with plots.style():
        fig = plots.new_figure("single", 2.0)
        ax = fig.subplots()
        ax.plot([1, 2], [1, 2], label="x")
        ax.set_xlabel("train time")
        ax.text(1.5, 1.5, "lora_vs_kd: dora")
        ax.text(1.5, 1.5, "again")
        ax.set_yticks([1, 2], ["FFT nan", "LoRA-only lora"])
        ax.legend(loc="center")
        problems = check_figure(fig, "single")
    assert any("overlap" in p for p in problems)
    assert any("internal id" in p for p in problems)
    assert "internal id in a label: 'FFT nan'" in problems
    assert any("unit" in p for p in problems)
    assert any("legend" in p for p in problems)


def test_figure_width_sets_the_printed_size(legacy_analysis, tmp_path):
    import struct

    from kdlora.analysis.drawing import FigureWorkers, write_figure
    from kdlora.errors import UserError

    for width in ("single", "double"):
        png = next(p for p in write_figure(legacy_analysis, "critical_difference", tmp_path / width, width)
                   if p.suffix == ".png")
        pixels = struct.unpack(">I", png.read_bytes()[16:20])[0]  # the IHDR width
        inches = pixels / plots.DPI[width]
        assert 0.85 * plots.WIDTHS[width] <= inches <= plots.WIDTHS[width] + 0.05, (width, inches)
    with pytest.raises(UserError, match="figure width"):
        FigureWorkers(enabled=False, width="triple")


def test_font_subsets_are_kept_between_processes(tmp_path, monkeypatch):
    """The PDFs' TrueType subset is stored in matplotlib's cache folder and read back only when it
    is the subset asked for (same font file, library versions and glyphs)."""
    import matplotlib
    from matplotlib import font_manager

    monkeypatch.setattr(matplotlib, "get_cachedir", lambda: str(tmp_path))
    key = (font_manager.findfont("DejaVu Sans"), 0)
    glyphs, data, index = {3, 5, 8}, b"\x00\x01\x00\x00 a font", {3: 1, 5: 2, 8: 3}
    path = plots._subset_file(key, glyphs)
    assert path is not None and tmp_path in path.parents
    plots._store_subset(path, (glyphs, data, index))
    assert plots._load_subset(path, glyphs) == (glyphs, data, index)
    assert plots._load_subset(path, {3, 5}) is None  # not the glyphs it holds
    assert plots._subset_file(key, {3, 5}) != path
    path.write_bytes(b"not a subset")
    assert plots._load_subset(path, glyphs) is None
    assert plots._subset_file(("/no/such/font.ttf", 0), glyphs) is None


def test_a_worker_imports_the_font_subsetter_only_when_it_subsets(tmp_path):
    """Figure workers stand a placeholder in for fontTools' subsetter (subsets come from disk);
    a PDF that does need a new subset still gets one, with TrueType fonts."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kdlora.analysis import plots\n"
        "plots.defer_font_subsetter()\n"
        "from matplotlib.backends import backend_agg, backend_pdf\n"
        "assert 'fontTools.ttLib.tables.otTables' not in sys.modules\n"
        "plots._load_subset = lambda *a: None\n"  # as if nothing were on disk
        "plots._store_subset = lambda *a: None\n"
        "with plots.style():\n"
        "    fig = plots.new_figure('single', 1.0)\n"
        "    fig.text(0.5, 0.5, 'a new subset')\n"
        "    pdf = plots.render(fig, ('pdf',))['pdf']\n"
        "assert 'fontTools.ttLib.tables.otTables' in sys.modules\n"
        "sys.stdout.buffer.write(pdf)\n")
    pdf = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=120).stdout
    fonts = _pdf_fonts(pdf)
    assert fonts and "Type3" not in fonts and fonts & {"TrueType", "CIDFontType2", "Type0"}, fonts


def test_matplotlib_speedups_are_undone_after_each_figure():
    """The figures' speed-ups replace matplotlib internals only while kdlora draws: a user's own
    figures in the same process get matplotlib as it was."""
    from matplotlib.backends import _backend_pdf_ps as pdf_ps
    from matplotlib.backends import backend_pdf
    from matplotlib.text import Text

    from kdlora.analysis import plots

    def current():
        return (Text._get_layout, pdf_ps.get_glyphs_subset, pdf_ps.font_as_file, backend_pdf.RendererPdf.draw_markers)

    before = current()
    with plots.style():
        inside = current()
        with plots.style():  # nested: still the same speed-ups, and still in place after it
            assert current() == inside
        assert current() == inside
    assert all(a is not b for a, b in zip(before, inside))  # each one was installed ...
    assert current() == before  # ... and undone
