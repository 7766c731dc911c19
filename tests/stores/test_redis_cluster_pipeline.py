"""The asyncio Redis store's pipelines on a Cluster, on the shared cluster of scripts/services:
the calls that concurrent tasks make in one loop iteration go to each master as one pipeline
(each still its own atomic script), exact across many keys and slots; a stuck master fails only
the calls queued for it, within the deadline; a redirected or unloaded script still gets its
answer through redis-py's own path.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis
import redis.asyncio.cluster
from redis.crc import key_slot

from ratekeeper import AsyncRateLimiter, Decision
from ratekeeper.stores.redis import AsyncRedisStore

from .backends.redis import env_url
from .test_redis_cluster import key_per_node, prefix, slot_owner

pytestmark = pytest.mark.redis

TASKS = 200  # concurrent tasks
KEYS = 300  # user keys: slots on every master
HITS_PER_KEY = 8
HITS = 3  # per key after SCRIPT FLUSH
LIMIT_AMOUNT = 5  # per key: the first 5 hits of each are allowed, the other 3 denied
LIMIT = f"{LIMIT_AMOUNT}/hour"
NEVER = "1000000/hour"  # never binding: every real decision is allowed
BURST = 1000  # decisions of the round-trip test
CALLS_PER_READ = 10  # pipelined: at least this many scripts per socket read a master serves
PAUSE_MS = 1500  # how long a master is stuck (CLIENT PAUSE WRITE holds scripts, not INFO)
BOUND = 1.0  # seconds: every decision with default settings, whatever the fault (failover tests)


def served(nodes: dict[int, redis.Redis]) -> dict[int, tuple[int, int]]:
    """Per master: socket reads of client commands, and EVALSHA calls, so far."""
    counts = {}
    for port, client in nodes.items():
        reads = int(client.info("stats")["total_reads_processed"])
        calls = int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
        counts[port] = (reads, calls)
    return counts


async def run_tasks(limiter: AsyncRateLimiter, keys: list[str]) -> list[tuple[str, Decision]]:
    """``keys`` hit in order by TASKS tasks at once (each takes the next key as it is free)."""
    todo = iter(keys)
    done: list[tuple[str, Decision]] = []

    async def task() -> None:
        for key in todo:
            done.append((key, await limiter.hit(key)))

    await asyncio.gather(*(task() for _ in range(TASKS)))
    return done


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
async def test_concurrent_decisions_are_exact_across_slots(
    nodes: dict[int, redis.Redis], pipelining: bool
) -> None:
    store = AsyncRedisStore.from_url(
        env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=prefix(), pipelining=pipelining
    )
    limiter = AsyncRateLimiter(LIMIT, store=store, on_store_error="raise")
    keys = [f"user:{i}" for i in range(KEYS)]
    owner = slot_owner(nodes)
    assert {owner[key_slot(f"{{{key}}}".encode())] for key in keys} == set(nodes)
    try:
        done = await run_tasks(limiter, [key for _ in range(HITS_PER_KEY) for key in keys])
    finally:
        await store.close()
    allowed = Counter(key for key, decision in done if decision.allowed)
    assert len(done) == KEYS * HITS_PER_KEY
    assert allowed == {key: LIMIT_AMOUNT for key in keys}
    assert not any(decision.fallback for _, decision in done)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
async def test_calls_to_one_master_share_round_trips(
    nodes: dict[int, redis.Redis], pipelining: bool
) -> None:
    """Each master reads many scripts per socket read when pipelined, one when not: the
    servers' own counters (INFO stats ``total_reads_processed``, commandstats)."""
    store = AsyncRedisStore.from_url(
        env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=prefix(), pipelining=pipelining
    )
    limiter = AsyncRateLimiter(NEVER, store=store, on_store_error="raise")
    keys = [f"user:{i}" for i in range(KEYS)]
    try:
        await run_tasks(limiter, keys)  # warm: slots learnt, scripts loaded, connections open
        before = served(nodes)
        done = await run_tasks(limiter, [keys[i % KEYS] for i in range(BURST)])
        after = served(nodes)
    finally:
        await store.close()
    assert all(decision.allowed and not decision.fallback for _, decision in done)
    reads = {port: after[port][0] - before[port][0] for port in nodes}
    calls = {port: after[port][1] - before[port][1] for port in nodes}
    assert sum(calls.values()) == BURST
    for port in nodes:
        assert calls[port] > 0
        if pipelining:
            assert reads[port] * CALLS_PER_READ <= calls[port], (reads, calls)
        else:
            assert reads[port] >= calls[port], (reads, calls)


async def test_stuck_master_fails_only_the_calls_queued_for_it(
    nodes: dict[int, redis.Redis],
) -> None:
    """One master holds every script (``CLIENT PAUSE WRITE``): the calls queued for it fail
    within the bound, the calls to the other masters meanwhile are real decisions; the held
    scripts, run after their callers gave up, charge nothing."""
    store = AsyncRedisStore.from_url(env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=prefix())
    limiter = AsyncRateLimiter(LIMIT, store=store, on_store_error="allow")
    keys = key_per_node(nodes)
    stuck = next(iter(keys))
    fresh = await limiter.peek("fresh")  # warm: slots learnt, the server's clock measured

    async def timed(key: str) -> tuple[str, float, Decision]:
        start = time.monotonic()
        decision = await limiter.hit(key)
        return key, time.monotonic() - start, decision

    try:
        nodes[stuck].client_pause(PAUSE_MS, all=False)
        done = await asyncio.gather(
            *(timed(key) for _ in range(TASKS // len(keys)) for key in keys.values())
        )
        nodes[stuck].client_unpause()
        after = await limiter.peek(keys[stuck])
    finally:
        nodes[stuck].client_unpause()
        await store.close()
    assert max(seconds for _, seconds, _ in done) < BOUND
    for key, _, decision in done:
        assert decision.fallback == (key == keys[stuck]), (key, decision)
    assert not after.fallback
    assert after.remaining == fresh.remaining


async def test_redirected_calls_follow_moved(nodes: dict[int, redis.Redis]) -> None:
    """A slot table that names the wrong master (as after a resharding): the pipelined scripts
    draw ``MOVED`` and still get their own answers, exactly once each."""
    host, port = env_url("RATEKEEPER_REDIS_CLUSTER_URL").split("//")[1].split(",")[0].split(":")
    cluster = redis.asyncio.cluster.RedisCluster(host=host, port=int(port))
    try:
        store = AsyncRedisStore(client=cluster, prefix=prefix())
        limiter = AsyncRateLimiter(LIMIT, store=store, on_store_error="raise")
        key = "moved-key"
        await limiter.peek(key)  # warm: the slots learnt
        manager = cluster.nodes_manager
        slot = key_slot(store.base_key(key))
        right = manager.slots_cache[slot][0]
        wrong = next(node for node in manager.nodes_cache.values() if node.name != right.name)
        manager.slots_cache[slot] = [wrong]
        before = moved(nodes)
        decisions = await asyncio.gather(*(limiter.hit(key) for _ in range(HITS_PER_KEY)))
        assert moved(nodes) > before
        assert sum(d.allowed for d in decisions) == LIMIT_AMOUNT
        assert not any(d.fallback for d in decisions)
    finally:
        await cluster.aclose()


def moved(nodes: dict[int, redis.Redis]) -> int:
    return sum(
        int(client.info("errorstats").get("errorstat_MOVED", {}).get("count", 0))
        for client in nodes.values()
    )


async def test_pipelines_load_the_script_again_after_script_flush(
    nodes: dict[int, redis.Redis],
) -> None:
    store = AsyncRedisStore.from_url(env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=prefix())
    limiter = AsyncRateLimiter(LIMIT, store=store, on_store_error="raise")
    keys = list(key_per_node(nodes).values())
    try:
        for key in keys:
            await limiter.peek(key)
        for client in nodes.values():
            client.script_flush()
        decisions = await asyncio.gather(*(limiter.hit(k) for k in keys for _ in range(HITS)))
    finally:
        await store.close()
    assert all(d.allowed and not d.fallback for d in decisions)
    for i in range(len(keys)):  # each hit counted once (their order is the servers')
        remaining = sorted(d.remaining for d in decisions[i * HITS : (i + 1) * HITS])
        assert remaining == [LIMIT_AMOUNT - n for n in range(HITS, 0, -1)]
