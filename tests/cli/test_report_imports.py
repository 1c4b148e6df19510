"""What a fresh `kdlora report` imports before its figure workers fork: not scipy.stats (the
analysis imports it when it first tests), not rich (printing, at the end), never torch."""

from __future__ import annotations

import subprocess
import sys

from kdlora.lazy import LazyModule, lazy_module


def test_report_imports_before_the_fork_leave_out_scipy_stats_rich_and_torch():
    code = (
        "import sys\n"
        "from kdlora.cli import main\n"
        "from kdlora.analysis.drawing import FigureWorkers\n"  # what commands/analysis.report imports
        "from kdlora.analysis.model import Settings\n"
        "from kdlora.analysis.report import build, write_report\n"
        "from kdlora.analysis.summary import print_summary\n"
        "bad = [m for m in ('scipy.stats', 'rich', 'matplotlib', 'torch', 'statsmodels') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "from kdlora.analysis import stats\n"
        "assert stats.welch([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])['p'] > 0\n"  # first use imports it
        "assert 'scipy.stats' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_lazy_module_behaves_as_the_module():
    import json

    assert lazy_module("json") is json  # already imported: the module itself
    lazy = LazyModule("json")
    assert lazy.dumps({"a": 1}) == json.dumps({"a": 1})
    assert "dumps" in vars(lazy) and lazy.loads is json.loads
    assert "dumps" in dir(lazy)


def test_imports_without_collector_pause_it_and_restore_what_was_there():
    import gc

    from kdlora.lazy import imports_without_collector

    assert gc.isenabled()
    with imports_without_collector():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with imports_without_collector():
            pass
        assert not gc.isenabled()  # a caller's own pause is left as it was
    finally:
        gc.enable()


def test_imports_are_frozen_only_in_the_command_lines_own_process():
    """Frozen objects are never collected: a program that imports kdlora keeps its collector's
    view of its heap; `kdlora.cli.main` (a process that ends with its command) freezes."""
    import gc

    from kdlora import lazy

    before = gc.get_freeze_count()
    with lazy.imports_without_collector():
        import json  # noqa: F401
    assert gc.get_freeze_count() == before
    lazy._COMMAND_PROCESS[0] = True
    try:
        with lazy.imports_without_collector():
            junk = [[] for _ in range(100)]
        assert gc.get_freeze_count() >= before + 100 and junk
    finally:
        lazy._COMMAND_PROCESS[0] = False
        gc.unfreeze()
