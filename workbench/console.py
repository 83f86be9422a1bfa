"""Output for people (rich, on a terminal) and for programs (--json)."""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

from workbench.errors import printable

__all__ = ["err", "escape", "out", "progress", "warn", "error"]

# Off a terminal rich assumes 80 columns and truncates table cells (ids, URLs): be wider.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """One line on stderr; control characters from user input are shown escaped."""
    err.print(f"[yellow]warning:[/] {escape(printable(message))}")


def error(message: str) -> None:
    """One line on stderr; control characters from user input are shown escaped."""
    err.print(f"[red]error:[/] {escape(printable(message))}")


@contextmanager
def progress(title: str) -> Iterator:
    """A spinner on a terminal, timestamped lines otherwise; yields a callback(message)."""
    started = time.monotonic()
    if err.is_terminal:
        with err.status(title) as status:

            def update(message: str) -> None:
                status.update(f"{title}: {message}")

            yield update
    else:

        def update(message: str) -> None:
            err.print(f"[{time.monotonic() - started:6.1f}s] {title}: {message}", markup=False)

        yield update
