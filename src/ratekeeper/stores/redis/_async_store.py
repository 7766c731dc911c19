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

from ratekeeper._drive import drive_async
from ratekeeper.decision import Decision
from ratekeeper.stores.base import Applied, Check, Rule
from ratekeeper.stores.redis._core import (
    LEASE_ACQUIRE,
    LEASE_RELEASE,
    ChecksRequest,
    RedisCore,
    parse_decision,
)
from ratekeeper.stores.redis._wire import AsyncWire, Call

__all__ = ["AsyncRedisStore"]

_clock = time.monotonic  # deadlines: monotonic seconds


class AsyncRedisStore(RedisCore):
    """A Redis store: ``Store.from_url(url, **options)`` or ``Store(client=...)`` with a redis-py
    client (``redis.Redis``, ``redis.cluster.RedisCluster`` or a Sentinel ``master_for`` client;
    their ``redis.asyncio`` counterparts for the asyncio store); the store never closes a client
    it was given. ``prefix``: first part of every key (default ``"rk"``, no braces).
    ``time_source``: ``"server"`` (default: Redis ``TIME``) or ``"client"`` (the ``now`` the
    limiter passes). ``pipelining`` (asyncio only, default on): see the module.

    Every call finishes within ``socket_timeout`` (0.5 s) of its start, pool wait, connect, send
    and reply included, however many callers wait, or raises `StoreUnavailable`.
    """

    _aio: ClassVar[bool] = True  # sync: _aio: ClassVar[bool] = False
    _wire_type = AsyncWire
    _wire: AsyncWire

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self._limit(key, rule, cost, now, True)

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self._limit(key, rule, cost, now, False)

    async def _limit(self, key: str, rule: Rule, cost: float, now: float, write: bool) -> Decision:
        give_up = _clock() + self.timeout
        deadline = await self._deadline(give_up)
        prepared, call = self.limit_call(key, rule, cost, now, write, deadline)
        return parse_decision(prepared, await self._wire.call(give_up, call))

    async def apply_checks(
        self, checks: Sequence[Check], now: float, write: bool = True
    ) -> Applied:
        """Several checks all-or-nothing in one script (a Cluster: one per hash slot, see
        `RedisCore.checks_flow`), within the store's deadline."""
        give_up = _clock() + self.timeout
        flow = self.checks_flow(checks, now, write)
        return await drive_async(flow, functools.partial(self._run_checks, give_up))

    async def _run_checks(self, give_up: float, request: ChecksRequest) -> Any:
        call = self.checks_call(request, await self._deadline(give_up))
        return await self._wire.call(give_up, call)

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        give_up = _clock() + self.timeout
        args = self.acquire_command(key, lease_id, limit, ttl, now, await self._deadline(give_up))
        return float(await self._wire.call(give_up, Call(LEASE_ACQUIRE, args)))

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        give_up = _clock() + self.timeout
        args = self.release_command(key, lease_id, now, await self._deadline(give_up))
        await self._wire.call(give_up, Call(LEASE_RELEASE, args))

    async def reset(self, key: str, rule: Rule) -> None:
        await self._wire.command(_clock() + self.timeout, "DEL", *self.reset_keys(key, rule))

    async def ping(self) -> None:
        await self._wire.command(_clock() + self.timeout, "PING")

    async def close(self) -> None:
        """Close the client the store built (it builds a new one if used again); a client
        passed in stays open. Asyncio: this event loop's client."""
        await self._wire.close()

    async def _deadline(self, give_up: float) -> bytes:
        """The deadline argument of a script; measures the server's clock when it is due (one
        caller at a time; the others use the previous measurement meanwhile)."""
        clock = self.server_clock
        if clock.claim(_clock()):
            try:
                sent = _clock()
                reply = await self._wire.command(give_up, "TIME")
                clock.record(sent, _clock(), reply)
            finally:
                clock.release()
        return clock.deadline(give_up)
