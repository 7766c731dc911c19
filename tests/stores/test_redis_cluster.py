"""The Redis Cluster stores under many callers at once, on the shared cluster of scripts/services.

redis-py 7's asyncio Cluster client sends a keyed command issued before it knows the slots to a
random node: tasks arriving together at a cold client drew ``MOVED`` replies, and every fifth one
made the client close all its connections, those other tasks were using included ("Connection
closed by server" fallbacks on a healthy cluster, a raw ``AttributeError`` from redis-py). These
tests pin what the store does about it: no command goes to the wrong node, calls in flight are
bounded by ``max_connections`` (callers wait), whatever else the client raises is
`StoreUnavailable`, and ``close()`` closes every connection the client opened.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from redis.crc import key_slot

from ratekeeper import AsyncRateLimiter, RateLimiter, StoreUnavailable
from ratekeeper.stores.redis import AsyncRedisStore, RedisStore

from .backends.redis import PATIENT, env_url

pytestmark = pytest.mark.redis

TASKS = 400  # callers at once on a cold store (the conformance suite's exactness burst)
KEYS = 50  # user keys they share: slots on every node
LIMIT = "1000000/hour"  # never binding: every real decision is allowed
MAX_CALLS = 4  # max_connections of the bounded store
STARTUP_CONNECTIONS = 1  # per node: the client asks its startup node for the slots on its own


def prefix() -> str:
    return f"rktest:{uuid.uuid4().hex[:12]}"


def moved_replies(nodes: dict[int, redis.Redis]) -> int:
    """MOVED replies the cluster's nodes have sent, in all."""
    return sum(
        int(client.info("errorstats").get("errorstat_MOVED", {}).get("count", 0))
        for client in nodes.values()
    )


def connections(nodes: dict[int, redis.Redis], name: str) -> dict[int, list[int]]:
    """The ids of the connections named ``name`` on each node."""
    return {
        port: [int(c["id"]) for c in client.client_list() if c["name"] == name]
        for port, client in nodes.items()
    }


def slot_owner(nodes: dict[int, redis.Redis]) -> dict[int, int]:
    """The port of the master serving each slot."""
    owner = {}
    for start, end, master, *_ in next(iter(nodes.values())).execute_command("CLUSTER SLOTS"):
        for slot in range(int(start), int(end) + 1):
            owner[slot] = int(master[1])
    return owner


async def test_cold_burst_sends_no_command_to_the_wrong_node(
    nodes: dict[int, redis.Redis],
) -> None:
    store = AsyncRedisStore.from_url(
        env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=prefix(), **PATIENT
    )
    limiter = AsyncRateLimiter(LIMIT, store=store, on_store_error="raise")
    before = moved_replies(nodes)
    try:
        results = await asyncio.gather(*(limiter.hit(f"k{i % KEYS}") for i in range(TASKS)))
    finally:
        await store.close()
    assert all(d.allowed for d in results)
    assert moved_replies(nodes) == before


async def test_calls_in_flight_are_bounded_and_wait(nodes: dict[int, redis.Redis]) -> None:
    name = f"rk-bound-{uuid.uuid4().hex[:8]}"
    store = AsyncRedisStore.from_url(
        env_url("RATEKEEPER_REDIS_CLUSTER_URL"),
        prefix=prefix(),
        max_connections=MAX_CALLS,
        client_name=name,
        **PATIENT,
    )
    limiter = AsyncRateLimiter(LIMIT, store=store, on_store_error="raise")
    try:
        results = await asyncio.gather(*(limiter.hit(f"k{i % KEYS}") for i in range(TASKS)))
        opened = connections(nodes, name)
    finally:
        await store.close()
    assert all(d.allowed for d in results)
    assert all(0 < len(ids) <= MAX_CALLS + STARTUP_CONNECTIONS for ids in opened.values())
    assert connections(nodes, name) == {port: [] for port in nodes}


def key_per_node(nodes: dict[int, redis.Redis]) -> dict[int, str]:
    """A user key whose slot each node serves, by port."""
    owner = slot_owner(nodes)
    keys: dict[int, str] = {}
    for i in range(len(owner)):
        keys.setdefault(owner[key_slot(f"{{k{i}}}".encode())], f"k{i}")
        if len(keys) == len(nodes):
            break
    return keys


def cut(nodes: dict[int, redis.Redis], port: int, name: str) -> None:
    """Close the connections named ``name`` on the node at ``port``, from the server's side."""
    for conn_id in connections(nodes, name)[port]:
        nodes[port].client_kill_filter(_id=conn_id)


@pytest.mark.parametrize("retries", [0, 1], ids=["relearning", "relearnt"])
async def test_close_closes_every_connection_when_the_client_relearns_the_slots(
    nodes: dict[int, redis.Redis], retries: int
) -> None:
    """A node's connections cut under the client: without retries it stays marked for
    re-learning the slots (when redis-py's own ``aclose`` closes nothing); with one it re-learns
    them at once (redis-py 7 then routes by new node objects that no table of it holds). Either
    way the store's ``close()`` closes every connection."""
    name = f"rk-close-{uuid.uuid4().hex[:8]}"
    store = AsyncRedisStore.from_url(
        env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=prefix(), client_name=name, retries=retries
    )
    limiter = AsyncRateLimiter(LIMIT, store=store, on_store_error="allow")
    keys = key_per_node(nodes)
    first = next(iter(keys))
    try:
        for key in keys.values():
            assert (await limiter.hit(key)).allowed
        cut(nodes, first, name)
        await limiter.hit(keys[first])  # retries=0: a fallback (closed by the server)
        for key in keys.values():
            assert (await limiter.hit(key)).allowed
    finally:
        await store.close()
    assert connections(nodes, name) == {port: [] for port in nodes}


def slip(*args: Any, **kwargs: Any) -> Any:
    """What redis-py 7.4's Cluster client raised on a connection another task had closed."""
    raise AttributeError("'NoneType' object has no attribute 'writelines'")


async def aslip(*args: Any, **kwargs: Any) -> Any:
    slip()


async def test_async_driver_slip_is_store_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = env_url("RATEKEEPER_REDIS_CLUSTER_URL").split("//")[1].split(",")[0].split(":")
    cluster = redis.asyncio.cluster.RedisCluster(host=host, port=int(port))
    try:
        store = AsyncRedisStore(client=cluster, prefix=prefix())
        monkeypatch.setattr(cluster, "execute_command", aslip)
        with pytest.raises(StoreUnavailable, match="AttributeError"):
            await store.ping()
        limiter = AsyncRateLimiter("1/minute", store=store, on_store_error="allow")
        assert (await limiter.hit("k")).allowed
    finally:
        monkeypatch.undo()
        await cluster.aclose()


def test_sync_driver_slip_is_store_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = env_url("RATEKEEPER_REDIS_CLUSTER_URL").split("//")[1].split(",")[0].split(":")
    cluster = redis.cluster.RedisCluster(host=host, port=int(port))
    try:
        store = RedisStore(client=cluster, prefix=prefix())
        monkeypatch.setattr(cluster, "execute_command", slip)
        with pytest.raises(StoreUnavailable, match="AttributeError"):
            store.ping()
        limiter = RateLimiter("1/minute", store=store, on_store_error="allow")
        assert limiter.hit("k").allowed
        store.close()
    finally:
        monkeypatch.undo()
        cluster.close()
