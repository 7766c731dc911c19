"""The two drivers of logic written as a generator of steps (httpx ``_auth``'s way).

Logic that waits or talks to a store, but has no I/O of its own (``acquire``'s flow, a migration,
the web engine's decision), is written once as a generator: it yields a step, and receives the
step's result (or has the step's exception thrown into it, so that its ``try``/``finally`` clean
up). :func:`drive` runs the steps blocking, :func:`drive_async` with ``await``; these dozen lines
are the only place where the two kinds of caller differ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["drive", "drive_async"]

S = TypeVar("S")
R = TypeVar("R")


def drive(flow: Generator[S, Any, R], run: Callable[[S], Any]) -> R:
    """Run ``flow`` to its end, each step by ``run(step)``; return the flow's value."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            result = run(step)
        except BaseException as exc:  # the flow decides: clean up and re-raise, or go on
            error = exc


async def drive_async(flow: Generator[S, Any, R], run: Callable[[S], Awaitable[Any]]) -> R:
    """:func:`drive`, with each step awaited."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            result = await run(step)
        except BaseException as exc:
            error = exc
