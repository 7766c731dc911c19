"""The I/O pieces both PostgreSQL drivers share: the deadline watchdog that cuts a connection whose
round trip overran, the errors a connection check may raise, and the options parser."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.postgres._core import Options, PostgresCore

__all__ = ["CHECK_FAILED", "deadline", "store_options"]

# The watchdog looks at its deadlines at most this often while busy: a connection is cut at most
# this late, and a busy process wakes the watchdog thread at most 1/_TICK times a second.
_TICK = 0.01
# At a deadline, an answer that has arrived but is not read yet (a busy process) is not a fault:
# the watchdog looks again this much later, and cuts only a connection with nothing to read.
_UNREAD_GRACE = 0.05


def _unread(fd: int) -> bool:
    """Whether the socket has something to read (an answer, or its end) that nobody read yet."""
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))


def _sever(fd: int) -> None:
    """Shut a connection's socket down both ways (the descriptor stays open: its owner closes it),
    so that a driver waiting on it reads end-of-file at once."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Timer:
    __slots__ = ("done", "fd", "fired")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = False
        self.fired = False


class _Watchdog:
    """Cuts every connection whose round trip outlives its deadline.

    One daemon thread per process serves threads and event loops alike. A query cancel would
    need a new connection to the same (perhaps frozen) server; shutting the socket down works
    whatever the server does. A connection with an answer waiting to be read is left alone (its
    caller is only slow to read it: a busy process, not a fault).
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Timer]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, conn: psycopg.BaseConnection[Any], timeout: float) -> _Timer:
        timer = _Timer(conn.pgconn.socket)
        deadline = time.monotonic() + timeout
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._count), timer))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, name="ratekeeper-postgres-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is timer:
                self._cond.notify()
        return timer

    def disarm(self, timer: _Timer) -> bool:
        """Stop watching (idempotent); True when the deadline came first (the connection was
        cut)."""
        with self._cond:
            timer.done = True
            return timer.fired

    def _watch(self) -> None:
        heap = self._heap
        with self._cond:
            while True:
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    timer = heapq.heappop(heap)[2]
                    if timer.done:
                        continue
                    if _unread(timer.fd):
                        later = (now + _UNREAD_GRACE, next(self._count), timer)
                        heapq.heappush(heap, later)
                    else:
                        timer.fired = True
                        _sever(timer.fd)
                self._cond.wait(max(heap[0][0] - now, _TICK) if heap else None)


_WATCHDOG = _Watchdog()
# A pooled connection that fails its check: dead (a restart), or cut at the deadline.
CHECK_FAILED = (psycopg.Error, StoreUnavailable, OSError)


@contextlib.contextmanager
def deadline(
    core: PostgresCore, conn: psycopg.BaseConnection[Any], timeout: float
) -> Iterator[None]:
    """Bound the round trips made inside the block (sync or async) to ``timeout`` seconds.

    Past it, the connection is cut and the block's driver error becomes `StoreUnavailable`. A
    connection cut at all is closed here, so that its pool discards it.
    """
    timer = _WATCHDOG.arm(conn, timeout)
    try:
        yield
    except psycopg.Error as exc:
        if _WATCHDOG.disarm(timer):
            raise core.timed_out(timeout) from exc
        raise
    finally:
        if _WATCHDOG.disarm(timer):
            conn.pgconn.finish()


def store_options(options: dict[str, Any]) -> Options:
    try:
        return Options(**options)
    except TypeError as exc:
        raise ConfigError(f"unknown PostgreSQL store option: {exc}") from None
