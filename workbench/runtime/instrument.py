"""Counting an app's requests and errors for /metrics, whatever kind of function serves them."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator

from workbench.runtime.stats import Stats


@contextlib.contextmanager
def counted(stats: Stats) -> Iterator[None]:
    """One request: started, then finished, and an error when an exception escapes (a
    closed stream or a cancelled task is not an error)."""
    stats.request_started()
    try:
        yield
    except Exception:
        stats.request_error()
        raise
    finally:
        stats.request_finished()


def instrument(fn: Callable, stats: Stats) -> Callable:
    """fn wrapped in `counted`, keeping its kind (function, coroutine, generator, async
    generator) and its signature, which Gradio reads."""
    if getattr(fn, "_workbench_instrumented", False):
        return fn
    if inspect.isasyncgenfunction(fn):

        async def wrapper(*args, **kwargs):
            with counted(stats):
                async for item in fn(*args, **kwargs):
                    yield item

    elif inspect.isgeneratorfunction(fn):

        def wrapper(*args, **kwargs):
            with counted(stats):
                yield from fn(*args, **kwargs)

    elif inspect.iscoroutinefunction(fn):

        async def wrapper(*args, **kwargs):
            with counted(stats):
                return await fn(*args, **kwargs)

    else:

        def wrapper(*args, **kwargs):
            with counted(stats):
                return fn(*args, **kwargs)

    wrapped = functools.wraps(fn)(wrapper)
    wrapped._workbench_instrumented = True
    return wrapped
