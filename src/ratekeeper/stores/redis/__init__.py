"""The Redis store: every algorithm as one atomic Lua script, one ``EVALSHA`` round trip per
decision, on standalone Redis, Redis Cluster or Sentinel, sync (`RedisStore`) and asyncio
(`AsyncRedisStore`).

``RedisStore.from_url("redis://127.0.0.1:6379/0")`` (also ``rediss://``, ``unix://``,
``redis+cluster://h:p,h:p``, ``redis+sentinel://h:p/service``) or
``RedisStore(client=redis.Redis(...))``. Time is read inside the script with ``TIME`` unless the
store is built with ``time_source="client"`` (then the limiter's clock reading is used, which is
how tests replay a FakeClock). See the README's "Redis" section for keys, TTLs and failures.

Both classes are thin drivers over :class:`~ratekeeper.stores.redis._core.RedisCore`: they send
the commands it builds and hand the reply back to it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ratekeeper.decision import Decision
from ratekeeper.stores.base import Rule
from ratekeeper.stores.redis._core import (
    LEASE_ACQUIRE,
    LEASE_RELEASE,
    UNAVAILABLE,
    NoScriptError,
    RedisCore,
    Script,
    parse_decision,
    unavailable,
)

__all__ = ["AsyncRedisStore", "RedisStore"]


class RedisStore(RedisCore):
    """Synchronous Redis store on redis-py.

    ``RedisStore(client=redis.Redis(...))`` (also a ``redis.cluster.RedisCluster`` or a Sentinel
    ``master_for`` client; the store never closes a client it was given), or
    ``RedisStore.from_url(url, **options)``. ``prefix``: first part of every key (default
    ``"rk"``, no braces). ``time_source``: ``"server"`` (default: Redis ``TIME``) or ``"client"``
    (the ``now`` the limiter passes).
    """

    _aio: ClassVar[bool] = False

    def _run(self, script: Script, args: tuple[Any, ...]) -> Any:
        client = self._client or self._connect()
        try:
            try:
                return client.execute_command("EVALSHA", script.sha, *args)
            except NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL loads it again
                return client.execute_command("EVAL", script.source, *args)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        prepared, args = self.limit_command(key, rule, cost, now, True)
        return parse_decision(prepared.limits, self._run(prepared.script, args))

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        prepared, args = self.limit_command(key, rule, cost, now, False)
        return parse_decision(prepared.limits, self._run(prepared.script, args))

    def reset(self, key: str, rule: Rule) -> None:
        client = self._client or self._connect()
        try:
            client.execute_command("DEL", *self.reset_keys(key, rule))
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        return float(self._run(LEASE_ACQUIRE, self.acquire_command(key, lease_id, limit, ttl, now)))

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        self._run(LEASE_RELEASE, self.release_command(key, lease_id, now))

    def ping(self) -> None:
        client = self._client or self._connect()
        try:
            client.ping()
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    def close(self) -> None:
        client = self._detach()
        if client is not None:
            for each in (client, *getattr(client, "_ratekeeper_also_close", ())):
                each.close()
                pool = getattr(each, "connection_pool", None)
                if pool is not None:
                    pool.disconnect()


class AsyncRedisStore(RedisCore):
    """The asyncio twin of :class:`RedisStore` on ``redis.asyncio`` (same arguments; ``client``
    is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``)."""

    _aio: ClassVar[bool] = True

    async def _run(self, script: Script, args: tuple[Any, ...]) -> Any:
        client = self._client or self._connect()
        try:
            try:
                return await client.execute_command("EVALSHA", script.sha, *args)
            except NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL loads it again
                return await client.execute_command("EVAL", script.source, *args)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        prepared, args = self.limit_command(key, rule, cost, now, True)
        return parse_decision(prepared.limits, await self._run(prepared.script, args))

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        prepared, args = self.limit_command(key, rule, cost, now, False)
        return parse_decision(prepared.limits, await self._run(prepared.script, args))

    async def reset(self, key: str, rule: Rule) -> None:
        client = self._client or self._connect()
        try:
            await client.execute_command("DEL", *self.reset_keys(key, rule))
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        args = self.acquire_command(key, lease_id, limit, ttl, now)
        return float(await self._run(LEASE_ACQUIRE, args))

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        await self._run(LEASE_RELEASE, self.release_command(key, lease_id, now))

    async def ping(self) -> None:
        client = self._client or self._connect()
        try:
            await client.ping()
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def close(self) -> None:
        client = self._detach()
        if client is not None:
            for each in (client, *getattr(client, "_ratekeeper_also_close", ())):
                await (getattr(each, "aclose", None) or each.close)()
                pool = getattr(each, "connection_pool", None)
                if pool is not None:
                    await pool.disconnect()
