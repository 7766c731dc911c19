"""One long-lived asyncio event loop in a background thread, for blocking code that must drive
asyncio objects (an asyncio store under Flask or sync Django, an ``async def`` key function).

Why not ``asyncio.run`` per request: an asyncio store's connections belong to the loop that
opened them. A fresh loop per request closes that loop after the first request, and the next one
finds its pooled connections bound to a closed loop ("Event loop is closed", a NATS client that
never answers). Here every awaitable of one owner runs on the same loop, so connections stay
valid for the owner's lifetime.

The caller's context variables (Flask's request context, Django's) go with the awaitable:
``run_coroutine_threadsafe`` schedules it in a copy of the calling thread's context.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable
from typing import Any

__all__ = ["LoopThread"]

_JOIN_TIMEOUT = 1.0  # seconds stop() waits for the thread to finish


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class LoopThread:
    """An event loop running in a daemon thread, started on first use (:meth:`run`), stopped by
    :meth:`stop` (a later :meth:`run` starts a new one)."""

    def __init__(self, name: str = "ratekeeper-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_serve, args=(loop,), name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, awaitable: Awaitable[Any], timeout: float | None = None) -> Any:
        """Run ``awaitable`` on the loop and return its result (or raise its exception). After
        ``timeout`` seconds it is cancelled and `TimeoutError` is raised."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"{self.name}: blocking on the loop from its own thread deadlocks")
        future = asyncio.run_coroutine_threadsafe(_await(awaitable), self._running_loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout} s") from None

    def stop(self) -> None:
        """Stop the loop and its thread (pending work is cancelled). Idempotent."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:  # let cancelled tasks unwind
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
