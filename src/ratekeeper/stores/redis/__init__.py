"""The Redis store: every algorithm as one atomic Lua script, one ``EVALSHA`` round trip per
decision, on standalone Redis, Redis Cluster or Sentinel, sync (`RedisStore`) and asyncio
(`AsyncRedisStore`).

``RedisStore.from_url("redis://127.0.0.1:6379/0")`` (also ``rediss://``, ``unix://``,
``redis+cluster://h:p,h:p``, ``redis+sentinel://h:p/service``) or
``RedisStore(client=redis.Redis(...))``. Time is read inside the script with ``TIME`` unless the
store is built with ``time_source="client"`` (then the limiter's clock reading is used, which is
how tests replay a FakeClock). See the README's "Redis" section for keys, TTLs and failures.
Several checks at once (``apply_checks``: chains, reservations, priority classes) are one script
too; on a Cluster, checks in different hash slots reserve then refund (the README's Policies).

With ``pipelining=True`` (the default) the scripts that concurrent tasks of an `AsyncRedisStore`
call in one event-loop iteration go to Redis together, as one pipeline (on a Cluster, one per
master): each decision is still one atomic ``EVALSHA``, but many share a round trip and a
connection. An
`AsyncRedisStore` built from a URL may be used from several event loops, one after the other
(``asyncio.run`` per request) or at once (one per thread): it builds a client per loop and closes
it when ``asyncio.run`` shuts that loop down.

The package has three layers, each its own module:

- ``_core``: everything that is not I/O, shared by both stores: the scripts, keys, the script
  calls and their RESP encoding, reply parsing, the server's clock, URLs and clients.
- ``_wire``: the transport: a call out and its reply back by the caller's deadline, on redis-py
  5 to 8 (pre-encoded commands on a kept connection, pipelines, worker threads for Cluster).
- ``_async_store``: each operation once, for asyncio (build the call, send it through the wire,
  parse the reply); ``_sync_store`` is generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

from ratekeeper.stores.redis._async_store import AsyncRedisStore
from ratekeeper.stores.redis._sync_store import RedisStore

__all__ = ["AsyncRedisStore", "RedisStore"]
