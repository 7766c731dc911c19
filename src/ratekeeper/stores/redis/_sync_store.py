# Generated from src/ratekeeper/stores/redis/_async_store.py by scripts/unasync.py; do not edit.
"""The Redis store's operations, written once: ``_async_store.py`` by hand, ``_sync_store.py``
generated from it by ``scripts/unasync.py`` (``scripts/test`` fails while the two differ).

Each operation reads like redis-py's ``Script``: build the script call (:mod:`._core`), send it
through the store's wire (:mod:`._wire`), turn the reply into the answer (:mod:`._core`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from ratekeeper._drive import drive
from ratekeeper.decision import Decision
from ratekeeper.stores.base import Applied, Check, Rule
from ratekeeper.stores.redis._core import (
    LEASE_ACQUIRE,
    LEASE_RELEASE,
    ChecksRequest,
    RedisCore,
    parse_decision,
)
from ratekeeper.stores.redis._wire import Call, Wire

__all__ = ["RedisStore"]

_clock = time.monotonic  # deadlines: monotonic seconds


class RedisStore(RedisCore):
    """A Redis store: ``Store.from_url(url, **options)`` or ``Store(client=...)`` with a redis-py
    client (``redis.Redis``, ``redis.cluster.RedisCluster`` or a Sentinel ``master_for`` client;
    their ``redis.asyncio`` counterparts for the asyncio store); the store never closes a client
    it was given. ``prefix``: first part of every key (default ``"rk"``, no braces).
    ``time_source``: ``"server"`` (default: Redis ``TIME``) or ``"client"`` (the ``now`` the
    limiter passes). ``pipelining`` (asyncio only, default on): see the module.

    Every call finishes within ``socket_timeout`` (0.5 s) of its start, pool wait, connect, send
    and reply included, however many callers wait, or raises `StoreUnavailable`.
    """

    _aio: ClassVar[bool] = False
    _wire_type = Wire
    _wire: Wire

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self._limit(key, rule, cost, now, True)

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self._limit(key, rule, cost, now, False)

    def _limit(self, key: str, rule: Rule, cost: float, now: float, write: bool) -> Decision:
        give_up = _clock() + self.timeout
        deadline = self._deadline(give_up)
        prepared, call = self.limit_call(key, rule, cost, now, write, deadline)
        return parse_decision(prepared, self._wire.call(give_up, call))

    def apply_checks(self, checks: Sequence[Check], now: float, write: bool = True) -> Applied:
        """Several checks all-or-nothing in one script (a Cluster: one per hash slot, see
        `RedisCore.checks_flow`), within the store's deadline."""
        give_up = _clock() + self.timeout
        flow = self.checks_flow(checks, now, write)
        return drive(flow, functools.partial(self._run_checks, give_up))

    def _run_checks(self, give_up: float, request: ChecksRequest) -> Any:
        call = self.checks_call(request, self._deadline(give_up))
        return self._wire.call(give_up, call)

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        give_up = _clock() + self.timeout
        args = self.acquire_command(key, lease_id, limit, ttl, now, self._deadline(give_up))
        return float(self._wire.call(give_up, Call(LEASE_ACQUIRE, args)))

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        give_up = _clock() + self.timeout
        args = self.release_command(key, lease_id, now, self._deadline(give_up))
        self._wire.call(give_up, Call(LEASE_RELEASE, args))

    def reset(self, key: str, rule: Rule) -> None:
        self._wire.command(_clock() + self.timeout, "DEL", *self.reset_keys(key, rule))

    def ping(self) -> None:
        self._wire.command(_clock() + self.timeout, "PING")

    def close(self) -> None:
        """Close the client the store built (it builds a new one if used again); a client
        passed in stays open. Asyncio: this event loop's client."""
        self._wire.close()

    def _deadline(self, give_up: float) -> bytes:
        """The deadline argument of a script; measures the server's clock when it is due (one
        caller at a time; the others use the previous measurement meanwhile)."""
        clock = self.server_clock
        if clock.claim(_clock()):
            try:
                sent = _clock()
                reply = self._wire.command(give_up, "TIME")
                clock.record(sent, _clock(), reply)
            finally:
                clock.release()
        return clock.deadline(give_up)
