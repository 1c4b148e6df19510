"""A module imported on first use, for imports that would cost a fresh process time it may not
need yet (`kdlora report` forks its figure workers, which never test anything, before the
analysis needs scipy.stats' ~0.7 CPU s).

    st = lazy_module("scipy.stats")   # nothing imported yet
    st.wilcoxon(...)                  # imports scipy.stats, then behaves as the module

and `imports_without_collector()`, for a block of heavy imports.
"""

from __future__ import annotations

import gc
import importlib
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator


class LazyModule:
    """Stands for the module `name`: the first attribute read imports it; each attribute, once
    read, is kept on the stand-in, so later reads cost what a module attribute costs."""

    def __init__(self, name: str) -> None:
        self.__dict__["_lazy_name"] = name

    def _lazy_module(self) -> ModuleType:
        return importlib.import_module(self.__dict__["_lazy_name"])

    def __getattr__(self, attr: str) -> Any:  # only for attributes not yet kept
        value = getattr(self._lazy_module(), attr)
        if not attr.startswith("__"):
            self.__dict__[attr] = value
        return value

    def __dir__(self) -> list[str]:
        return dir(self._lazy_module())

    def __repr__(self) -> str:
        name = self.__dict__["_lazy_name"]
        import sys

        return f"<lazy module {name!r} ({'imported' if name in sys.modules else 'not imported yet'})>"


def lazy_module(name: str) -> Any:
    """`name` imported on first use (an attribute read); returns the module itself if it is
    already imported."""
    import sys

    return sys.modules.get(name) or LazyModule(name)


_COMMAND_PROCESS = [False]  # set by `kdlora.cli.main`: this process ends with its command


def command_process() -> None:
    """Called by the command line's entry point, never by a program that imports kdlora: what
    `imports_without_collector` imports from now on stays for the process's life, and is frozen."""
    _COMMAND_PROCESS[0] = True
    gc.freeze()  # the command line's own imports


@contextmanager
def imports_without_collector() -> Iterator[None]:
    """Heavy imports (typer, pandas, scipy.stats) with the cyclic garbage collector paused. They
    make some 10^6 lasting objects and next to no garbage cycles, yet each allocation burst
    triggers a collection, and the oldest generation's scans over the growing heap cost ~10 % of
    `kdlora report`'s import time. In a command's process (`command_process`) the imported
    objects are then frozen out of every later collection's scans too (the report's main process
    spent 0.13 s in collections, 0.05 s so); elsewhere they are scanned as usual, since freezing
    would also keep whatever garbage the importing program had not yet collected."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _COMMAND_PROCESS[0]:
            gc.freeze()
        if enabled:
            gc.enable()
