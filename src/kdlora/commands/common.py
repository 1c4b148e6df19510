"""What every command shares: turning a UserError into one line and exit code 2."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

import typer

from kdlora.errors import UserError, storage_error

F = TypeVar("F", bound=Callable)


def user_errors(fn: F) -> F:
    """Bad input gets one clear line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        except OSError as exc:  # a full or read-only disk: one line naming the path and the fix
            error = storage_error(exc)
            if error is None:
                raise
            print(f"error: {error}", file=sys.stderr)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def check_results_dir(results) -> None:
    """--results must be a directory (or not exist yet): refused before anything trains."""
    from pathlib import Path

    path = Path(results)
    if path.exists() and not path.is_dir():
        raise UserError(f"--results {str(path)!r} is a file, not a directory; give a directory for the records")
