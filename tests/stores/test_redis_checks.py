"""apply_checks on Redis beyond the conformance kit and the ports suite: the Cluster's
reserve-then-refund flow across hash slots (driven by hand, no server), the server's clock
(a reservation settles into the instant it was charged at), a chain across two Cluster slots
whose second slot denies, and chains under a frozen or dead server (every decision within the
bound, and the scripts that reach the server late change nothing)."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from ratekeeper import AsyncChain, AsyncRateLimiter, Chain, RateLimiter, StoreUnavailable
from ratekeeper.algorithms import Rule
from ratekeeper.algorithms.checks import CHARGE, HIT, REFUND, Check
from ratekeeper.limits import Limit
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.stores.redis import AsyncRedisStore, RedisStore
from ratekeeper.stores.redis._core import DESCRIBE, WRITE, ChecksRequest

from .backends.redis import PATIENT, env_url
from .test_redis import PrivateRedis

DECISION_BOUND = 1.0  # seconds: the contract's bound on any decision, whatever the fault
THREADS, TASKS = 8, 40  # callers at once during a fault
RULE = Rule("token_bucket", (Limit(10, per=60),))


def reply(*rows: tuple[float, ...], now: float) -> bytes:
    """A checks script's reply: 5 doubles per item, then the time decided at."""
    return struct.pack(f"<{5 * len(rows) + 1}d", *(x for row in rows for x in row), now)


ALLOWED = (1.0, 9.0, 6.0, 0.0, 0.0)
DENIED = (0.0, 0.0, 60.0, 6.0, 0.0)


def two_slots() -> tuple[RedisStore, str, str]:
    """A Cluster store (its client is built on first use: none here) and two keys whose states
    are in different hash slots."""
    store = RedisStore.from_url("redis+cluster://127.0.0.1:1", time_source="client")
    a, b = "global", "user:42"
    assert key_slot(store.base_key(a)) != key_slot(store.base_key(b))
    return store, a, b


def describe(request: ChecksRequest) -> tuple[list[tuple[str, int, float, float]], int, object]:
    return (
        [(c.key, c.mode, c.cost, c.at) for c in request.checks],
        request.mode,
        request.clock,
    )


# -- the Cluster flow, driven by hand ----------------------------------------------------------


def test_cluster_denial_in_a_later_slot_refunds_the_earlier_one_then_describes_it() -> None:
    store, a, b = two_slots()
    checks = [Check(a, RULE, 2), Check(b, RULE, 1)]
    flow = store.checks_flow(checks, 100.0, True)
    assert describe(next(flow)) == ([(a, HIT, 2.0, 0.0)], WRITE, 100.0)
    assert describe(flow.send(reply(ALLOWED, now=100.0))) == ([(b, HIT, 1.0, 0.0)], WRITE, 100.0)
    # the second slot denies: the first gets its 2 units back, refunded at the instant charged
    undo = flow.send(reply(DENIED, now=100.0))
    assert describe(undo) == ([(a, REFUND, 2.0, 100.0)], WRITE, 100.0)
    # then the first slot is described without this request's cost
    assert describe(flow.send(reply(ALLOWED, now=100.0))) == ([(a, HIT, 2.0, 0.0)], DESCRIBE, 100.0)
    with pytest.raises(StopIteration) as done:
        flow.send(reply((1.0, 10.0, 0.0, 0.0, 0.0), now=100.0))
    decisions, now = done.value.value
    assert now == 100.0
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 10), (False, 0)]


def test_cluster_slots_decide_at_the_first_slots_server_time() -> None:
    store = RedisStore.from_url("redis+cluster://127.0.0.1:1")  # the server's clock
    _, a, b = two_slots()
    flow = store.checks_flow([Check(a, RULE, 1), Check(b, RULE, 1)], 5.0, True)
    assert next(flow).clock == b""  # the first script reads the server's clock...
    assert flow.send(reply(ALLOWED, now=1.7e9 + 0.25)).clock == 1.7e9 + 0.25  # ...the next reuse it
    with pytest.raises(StopIteration) as done:
        flow.send(reply(ALLOWED, now=1.7e9 + 0.25))
    assert done.value.value.now == 1.7e9 + 0.25


def test_cluster_failure_in_a_later_slot_refunds_the_earlier_one_and_raises() -> None:
    store, a, b = two_slots()
    flow = store.checks_flow([Check(a, RULE, 1), Check(b, RULE, 3, REFUND, at=7.0)], 100.0, True)
    next(flow)
    flow.send(reply(ALLOWED, now=100.0))
    undo = flow.throw(StoreUnavailable("down"))
    assert describe(undo) == ([(a, REFUND, 1.0, 100.0)], WRITE, 100.0)
    with pytest.raises(StoreUnavailable, match="down"):
        flow.throw(StoreUnavailable("still down"))  # a failed refund: the original error


def test_cluster_unconditional_slots_go_last_and_refunds_are_undone_by_charges() -> None:
    store, a, b = two_slots()
    checks = [Check(a, RULE, 1, REFUND, at=99.0), Check(b, RULE, 1), Check(a, RULE, 2, CHARGE)]
    assert store.checks_groups(checks) == [[1], [0, 2]]  # the slot that can deny goes first
    both = [Check(b, RULE, 1), Check(a, RULE, 1, REFUND, at=99.0), Check(b, RULE, 1, HIT, 0.5)]
    flow = store.checks_flow([*both, Check(a, RULE, 1)], 100.0, True)
    assert [c.key for c in next(flow).checks] == [b, b]
    assert [c.key for c in flow.send(reply(ALLOWED, ALLOWED, now=100.0)).checks] == [a, a]
    undo = flow.send(reply(ALLOWED, DENIED, now=100.0))
    assert describe(undo) == ([(b, REFUND, 1.0, 100.0), (b, REFUND, 1.0, 100.0)], WRITE, 100.0)
    refund_back = _undoing_of(Check(a, RULE, 1, REFUND, at=99.0))
    assert (refund_back.mode, refund_back.cost) == (CHARGE, 1.0)


def _undoing_of(check: Check) -> Check:
    from ratekeeper.stores.redis._core import _undoing

    return _undoing(check, 100.0)


def test_standalone_and_one_slot_run_one_script() -> None:
    store, a, _ = two_slots()
    hybrid = [Check(a, RULE, 1), Check(a, Rule("sliding_log", (Limit(3, per=1),)), 1)]
    assert store.checks_groups(hybrid) == [[0, 1]]
    plain = RedisStore.from_url("redis://127.0.0.1:1/0")
    assert plain.checks_groups([Check("global", RULE, 1), Check("user:42", RULE, 1)]) == [[0, 1]]


# -- real servers ------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("algorithm", ["sliding_log", "fixed_window", "gcra"])
def test_a_reservation_on_the_servers_clock_settles_into_the_instant_charged(
    algorithm: str,
) -> None:
    store = RedisStore.from_url(env_url("RATEKEEPER_REDIS_URL"), prefix=f"rkc:{uuid.uuid4().hex}")
    limiter = RateLimiter("3/minute", algorithm=algorithm, store=store)
    before = time.time()
    reservation = limiter.reserve("k", cost=3)
    assert reservation and limiter.peek("k", cost=0).remaining == 0
    assert abs(reservation.decision.reset_after) <= 60.0
    applied = store.apply_checks([Check("x", RULE, 0)], 0.0)
    assert abs(applied.now - before) < 60.0  # the server's clock, not the 0.0 passed
    reservation.commit(1)  # a sliding log refunds the record charged at the server's instant
    assert limiter.peek("k", cost=0).remaining == 2
    store.close()


@pytest.mark.redis
def test_cluster_chain_across_slots_denied_by_the_later_slot_leaves_the_earlier_as_it_was() -> None:
    store = RedisStore.from_url(
        env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=f"rkc:{uuid.uuid4().hex}", **PATIENT
    )
    memory = MemoryStore()
    g, u = "global", "user:42"
    assert key_slot(store.base_key(g)) != key_slot(store.base_key(u))

    def chain(on: RedisStore | MemoryStore) -> Chain:
        return Chain(
            RateLimiter("100/hour", algorithm="sliding_log", store=on, priorities={"low": 0.5}),
            RateLimiter("2/hour", algorithm="fixed_window", store=on),
        )

    subject, reference = chain(store), chain(memory)
    for cost in (1, 1, 1, 5, 1):
        got, want = subject.hit(g, u, cost=cost), reference.hit(g, u, cost=cost)
        assert [(d.allowed, d.remaining) for d in got.details] == [
            (d.allowed, d.remaining) for d in want.details
        ]
    assert (
        RateLimiter("100/hour", algorithm="sliding_log", store=store).peek(g, cost=0).remaining
        == 98
    )
    store.close()


# -- faults: chains on a frozen or dead server -------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def chains(url: str) -> tuple[RedisStore, Chain, AsyncChain]:
    """Chains on stores with the library's defaults (the bound is the default's)."""
    sync, aio = RedisStore.from_url(url), AsyncRedisStore.from_url(url)
    levels = [("1000/day", "token_bucket"), ("1000/day", "sliding_log")]
    return (
        sync,
        Chain(
            *(
                RateLimiter(lim, algorithm=a, store=sync, on_store_error="allow")
                for lim, a in levels
            )
        ),
        AsyncChain(
            *(
                AsyncRateLimiter(lim, algorithm=a, store=aio, on_store_error="allow")
                for lim, a in levels
            )
        ),
    )


def storm(chain: Chain, achain: AsyncChain) -> list[tuple[float, bool]]:
    """THREADS threads and TASKS tasks hit the chain at once: (seconds, fallback) each."""
    out: list[tuple[float, bool]] = []
    lock = threading.Lock()
    go = threading.Barrier(THREADS + 1)

    def thread() -> None:
        go.wait()
        start = time.monotonic()
        d = chain.hit("g", "u")
        with lock:
            out.append((time.monotonic() - start, d.fallback))

    async def task() -> None:
        start = time.monotonic()
        d = await achain.hit("g", "u")
        out.append((time.monotonic() - start, d.fallback))

    async def tasks() -> None:
        await asyncio.gather(*(task() for _ in range(TASKS)))
        await achain.store.close()

    threads = [threading.Thread(target=thread) for _ in range(THREADS)]
    for t in threads:
        t.start()
    go.wait()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    assert len(out) == THREADS + TASKS
    return out


@pytest.mark.redis
@pytest.mark.parametrize("fault", ["frozen", "dead"])
def test_chains_are_answered_within_the_bound_and_late_scripts_change_nothing(
    private_redis: PrivateRedis, fault: str
) -> None:
    sync, chain, achain = chains(private_redis.url)
    healthy = storm(chain, achain)  # connections open, scripts loaded
    assert not any(fallback for _, fallback in healthy)
    private_redis.freeze() if fault == "frozen" else private_redis.stop()
    faulty = storm(chain, achain)
    worst = max(seconds for seconds, _ in faulty)
    assert worst <= DECISION_BOUND and all(fallback for _, fallback in faulty), faulty
    if fault == "frozen":
        private_redis.thaw()  # the scripts sent meanwhile run now: their deadline has passed
        redis.Redis(port=private_redis.port).ping()
        left = chain.peek("g", "u", cost=0).details
        assert [d.remaining for d in left] == [1000 - len(healthy)] * 2
    else:
        private_redis.start()
    assert not chain.hit("g", "u").fallback  # answers again, nothing rebuilt
    sync.close()
