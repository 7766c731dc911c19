"""DynamoDB-specific behaviour, against moto's server mode (real HTTP, real botocore): URLs, the
item layout and its TTL, the table's creation (``ratekeeper migrate``), the conditional-write
loop across processes, batching of one key's calls, error classes and an endpoint that is gone;
policies (``apply_checks``: one transaction over several items) across stores and under a frozen
endpoint.
The behaviour every store shares is in test_conformance.py; the fault proxy suite (blackhole,
reset, half-close, latency) in test_faults.py."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import threading
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from ratekeeper import AsyncChain, AsyncRateLimiter, Chain, RateLimiter, StoreUnavailable
from ratekeeper.algorithms.checks import REFUND, Check
from ratekeeper.cli import main as cli
from ratekeeper.errors import ConfigError
from ratekeeper.stores import async_store_from_url, store_from_url
from ratekeeper.stores.dynamodb import AsyncDynamoDBStore, DynamoDBStore, item_key
from ratekeeper.stores.dynamodb._core import MAX_ITEMS, MAX_PLAIN_KEY, TTL_GRACE, Cancelled, outcome
from ratekeeper.testing import FakeClock
from tests.faultproxy import FaultProxy

from .backends.dynamodb import dynamodb_url, endpoint, new_table
from .test_postgres import collect, contention_worker

pytestmark = pytest.mark.dynamodb

DECISION_BOUND = 1.0  # seconds: any decision, whatever the fault (the stores' contract)
PROCESSES, THREADS, HITS = 4, 4, 12  # the cross-process exactness test
CHAIN_STORES, CHAIN_THREADS, CHAIN_HITS = 3, 3, 10  # a chain's exactness across stores
FROZEN_CALLERS = 20  # threads or tasks deciding at once while the endpoint is blackholed


@pytest.fixture
def url() -> str:
    return new_table()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Counting:
    """A botocore client that counts the requests made through it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**params: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(**params)

        return call


# --------------------------------------------------------------------------- URLs and options


def test_url_options_and_errors() -> None:
    store = DynamoDBStore.from_url(
        "dynamodb://eu-west-1/limits?endpoint_url=http://127.0.0.1:1&timeout=0.25&max_retries=5"
    )
    assert (store.table, store.region, store.endpoint_url) == (
        "limits",
        "eu-west-1",
        "http://127.0.0.1:1",
    )
    assert (store.timeout, store.connect_timeout, store.read_timeout) == (0.25, 0.25, 0.25)
    assert store.max_retries == 5
    store.close()
    for bad in (
        "dynamodb://us-east-1/x",  # table name too short
        "dynamodb://us-east-1/",
        "dynamodb:///table",
        "dynamodb://us-east-1/table?bogus=1",
        "dynamodb://us-east-1/table?timeout=soon",
        "dynamodb://us-east-1/table?timeout=0",
    ):
        with pytest.raises(ConfigError):
            DynamoDBStore.from_url(bad)


def test_scheme_is_registered(url: str) -> None:
    store = store_from_url(url)
    assert isinstance(store, DynamoDBStore)
    assert RateLimiter("2/minute", store=store).hit("k").allowed
    store.close()
    assert isinstance(async_store_from_url(url), AsyncDynamoDBStore)


def test_item_keys() -> None:
    assert item_key("user:42") == "k:user:42"
    assert item_key("") == "k:"
    long = "x" * (MAX_PLAIN_KEY + 1)
    assert item_key(long).startswith("h:") and len(item_key(long)) == 66
    assert item_key("\udc80").startswith("h:")  # not valid UTF-8: hashed


# --------------------------------------------------------------------------- the table


def test_migrate_creates_the_table_once(capsys: pytest.CaptureFixture[str]) -> None:
    table_url = dynamodb_url(f"rkmig-{uuid.uuid4().hex[:10]}")
    assert cli(["migrate", table_url]) == 0
    first = capsys.readouterr().out
    assert "created table" in first and "enabled TTL on attribute exp" in first
    assert cli(["migrate", table_url]) == 0
    assert "already current" in capsys.readouterr().out
    store = DynamoDBStore.from_url(table_url)
    client = store._client
    table = client.describe_table(TableName=store.table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=store.table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "exp")
    store.close()


def test_a_table_with_another_key_schema_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    table_url = dynamodb_url(f"rkbad-{uuid.uuid4().hex[:10]}")
    store = DynamoDBStore.from_url(table_url)
    store._client.create_table(
        TableName=store.table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(ConfigError, match="key schema"):
        store.create_table()
    store.close()


def test_a_missing_table_is_unavailable_and_names_migrate() -> None:
    store = DynamoDBStore.from_url(dynamodb_url("rk-no-such-table"))
    limiter = RateLimiter("5/second", store=store, on_store_error="raise")
    with pytest.raises(StoreUnavailable, match="ratekeeper migrate"):
        limiter.hit("k")
    with pytest.raises(StoreUnavailable, match="ResourceNotFoundException"):
        store.ping()
    store.close()


# --------------------------------------------------------------------------- the item


def test_one_item_holds_every_limit_and_lease_with_a_ttl(url: str) -> None:
    store = DynamoDBStore.from_url(url)
    clock = FakeClock(1_700_000_000.0)
    limiter = RateLimiter("2/second;5/minute", store=store, clock=clock, max_concurrent=2)
    with limiter.acquire("user:1"):
        item = store.get_raw("user:1")
        assert item is not None and item["pk"] == {"S": "k:user:1"}
        doc = json.loads(item["d"]["S"])
        assert set(doc["s"]) == {"token_bucket:2-per-1s", "token_bucket:5-per-60s"}
        assert len(doc["l"]) == 1
        # idle until the 5/minute state is replenished (60 s) and the lease expired (60 s)
        assert int(item["exp"]["N"]) == pytest.approx(1_700_000_000 + 60 + TTL_GRACE, abs=1)
        version = item["v"]["S"]
    item = store.get_raw("user:1")
    assert item is not None and item["v"]["S"] != version  # every write: a new version token
    store.close()


def test_expired_states_are_dropped_and_an_empty_item_deleted(url: str) -> None:
    store = DynamoDBStore.from_url(url)
    clock = FakeClock(1000.0)
    short = RateLimiter("1/second", store=store, clock=clock)
    long = RateLimiter("1/hour", store=store, clock=clock)
    assert short.hit("k").allowed and long.hit("k").allowed
    clock.advance(5)
    RateLimiter("1/day", store=store, clock=clock).hit("k")
    item = store.get_raw("k")
    assert item is not None
    assert set(json.loads(item["d"]["S"])["s"]) == {
        "token_bucket:1-per-3600s",
        "token_bucket:1-per-86400s",
    }
    long.reset("k")
    RateLimiter("1/day", store=store, clock=clock).reset("k")
    assert store.get_raw("k") is None
    store.close()


def test_caller_clock_is_the_time_source(url: str) -> None:
    store = DynamoDBStore.from_url(url)
    clock = FakeClock(1000.0)
    limiter = RateLimiter("1/hour", store=store, clock=clock)
    assert limiter.hit("k").allowed and not limiter.hit("k").allowed
    clock.advance(3600)
    assert limiter.hit("k").allowed
    store.close()


def test_a_stale_copy_never_wins_after_the_item_was_deleted_and_recreated(url: str) -> None:
    """Versions are random tokens, not counters: after a delete (reset here, TTL in production)
    and a re-creation, a store writing from its remembered copy must see the conflict."""
    a, b = DynamoDBStore.from_url(url), DynamoDBStore.from_url(url)
    clock = FakeClock(1000.0)
    on_a = RateLimiter("3/hour", store=a, clock=clock)
    on_b = RateLimiter("3/hour", store=b, clock=clock)
    assert on_a.hit("k").remaining == 2  # a remembers the item it wrote
    on_b.reset("k")  # deleted
    assert [on_b.hit("k").remaining for _ in range(2)] == [2, 1]  # re-created: two writes
    assert on_a.hit("k").remaining == 0  # not 1: a's copy was stale
    assert not on_a.hit("k").allowed
    a.close()
    b.close()


# --------------------------------------------------------------------------- concurrency


def test_calls_on_one_key_are_batched_in_few_writes(url: str) -> None:
    base = DynamoDBStore.from_url(url)
    counting = Counting(base._client)
    store = DynamoDBStore.from_url(url, client=counting, timeout=5.0)
    limiter = RateLimiter("100/day", store=store)
    results: list[bool] = []

    def worker() -> None:
        results.extend(limiter.hit("hot").allowed for _ in range(20))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 100 and len(results) == 160
    writes = counting.calls.get("put_item", 0)
    assert writes < 100, f"{writes} writes for 100 admissions: calls were not batched"
    store.close()
    base.close()


async def test_async_tasks_on_three_stores_admit_exactly_the_limit(url: str) -> None:
    stores = [AsyncDynamoDBStore.from_url(url, timeout=5.0) for _ in range(3)]
    limiters = [AsyncRateLimiter("60/day", store=s) for s in stores]
    results = await asyncio.gather(*(limiters[i % 3].hit("hot") for i in range(300)))
    assert sum(d.allowed for d in results) == 60
    for s in stores:
        await s.close()


def test_processes_and_threads_admit_exactly_the_limit(url: str) -> None:
    """4 processes x 4 threads, each process its own store, on one key."""
    options = {"timeout": 10.0, "max_retries": 1000}
    ctx = multiprocessing.get_context("spawn")
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    key = f"hot:{uuid.uuid4().hex}"
    args = (url, options, "100/day;150/7d", "sliding_window", key, THREADS, HITS)
    procs = [
        ctx.Process(target=contention_worker, args=(*args, ready, start, out))
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        collect(ready, procs)
        start.set()
        results = collect(out, procs)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = [error for _, errs in results for error in errs]
    assert not errors, f"workers failed: {errors[:3]}"
    assert sum(count for count, _ in results) == 100  # of 4 x 4 x 12 = 192 attempts


def test_the_store_is_usable_from_a_fresh_event_loop_per_call(url: str) -> None:
    store = AsyncDynamoDBStore.from_url(url)
    limiter = AsyncRateLimiter("3/hour", store=store)
    answers = [asyncio.run(limiter.hit("k")).allowed for _ in range(4)]
    assert answers == [True, True, True, False]
    asyncio.run(store.close())


# --------------------------------------------------------------------------- errors


def _client_error(code: str, status: int, **more: Any) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "try later"},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **more,
    }
    return ClientError(response, "PutItem")


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        ("ThrottlingException", 400, "throttled"),
        ("ProvisionedThroughputExceededException", 400, "throttled"),
        ("InternalServerError", 500, "HTTP 500"),
        ("ServiceUnavailable", 503, "HTTP 503"),
        ("UnrecognizedClientException", 400, "HTTP 400"),
    ],
)
def test_server_errors_are_unavailable(code: str, status: int, words: str) -> None:
    with pytest.raises(StoreUnavailable, match=f"{words} {code}"):
        outcome(_client_error(code, status))


def test_transport_errors_are_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="ReadTimeoutError"):
        outcome(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(StoreUnavailable, match="ConnectionResetError"):
        outcome(ConnectionResetError("reset"))


def test_an_unreachable_endpoint_answers_within_the_bound() -> None:
    url = f"dynamodb://us-east-1/rk-gone?endpoint_url=http://127.0.0.1:{free_port()}"
    store = DynamoDBStore.from_url(url)
    allow = RateLimiter("5/second", store=store, on_store_error="allow")
    for call in (store.ping, lambda: allow.hit("k")):
        t0 = time.monotonic()
        try:
            result = call()
        except StoreUnavailable as exc:
            assert "dynamodb unavailable" in str(exc)
        else:
            assert result is None or result.fallback
        assert time.monotonic() - t0 < DECISION_BOUND
    store.close()


async def test_async_unreachable_endpoint_answers_within_the_bound() -> None:
    url = f"dynamodb://us-east-1/rk-gone?endpoint_url=http://127.0.0.1:{free_port()}"
    store = AsyncDynamoDBStore.from_url(url)
    limiter = AsyncRateLimiter("5/second", store=store, on_store_error="deny")
    t0 = time.monotonic()
    decisions = await asyncio.gather(*(limiter.hit(f"k{i % 3}") for i in range(60)))
    assert all(d.fallback and not d.allowed for d in decisions)
    assert time.monotonic() - t0 < DECISION_BOUND
    await store.close()


def test_contention_past_max_retries_is_unavailable(url: str) -> None:
    """Two stores writing one key with a single attempt each: a lost race is StoreUnavailable
    (the policy decides), never a wrong answer."""
    stores = [DynamoDBStore.from_url(url, max_retries=1, timeout=5.0) for _ in range(2)]
    limiters = [RateLimiter("1000/day", store=s) for s in stores]
    outcomes: list[str] = []

    def worker(limiter: RateLimiter) -> None:
        for _ in range(15):
            try:
                outcomes.append("allowed" if limiter.hit("k").allowed else "denied")
            except StoreUnavailable as exc:
                assert "contention" in str(exc)
                outcomes.append("unavailable")

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "denied" not in outcomes and len(outcomes) == 60
    remaining = RateLimiter("1000/day", store=stores[0]).peek("k").remaining
    assert remaining == 1000 - outcomes.count("allowed") - 1  # peek counts itself
    for s in stores:
        s.close()


# --------------------------------------------------------------------------- policies


def test_a_chain_on_three_stores_in_threads_admits_exactly_the_tightest_level(url: str) -> None:
    """Three stores (three app servers: each its own cache and turns) x 3 threads run a two-level
    chain on one shared pool key: their transactions race on its item, and the losers retry
    from the items the cancellation returned."""
    stores = [DynamoDBStore.from_url(url, timeout=10.0, max_retries=1000) for _ in range(3)]
    chains = [Chain(RateLimiter("40/day", store=s), RateLimiter("15/day", store=s)) for s in stores]
    users = [f"user:{i}" for i in range(3)]
    admitted: dict[str, int] = dict.fromkeys(users, 0)
    lock = threading.Lock()

    def worker(chain: Chain, n: int) -> None:
        for i in range(CHAIN_HITS):
            user = users[(n + i) % len(users)]
            if chain.hit("pool", user).allowed:
                with lock:
                    admitted[user] += 1

    threads = [
        threading.Thread(target=worker, args=(chain, n))
        for chain in chains
        for n in range(CHAIN_THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted.values()) == 40 and max(admitted.values()) <= 15  # of 90 attempts
    assert chains[0].peek("pool", users[0], cost=0).details[0].remaining == 0
    for s in stores:
        s.close()


def test_a_transaction_that_lost_a_race_retries_from_the_items_it_got_back(url: str) -> None:
    """Store a remembers the items it wrote; b changes one of them. a's next transaction is
    cancelled and retried from the item the cancellation returned: no read."""
    base = DynamoDBStore.from_url(url)
    counting = Counting(base._client)
    a = DynamoDBStore.from_url(url, client=counting)
    b = DynamoDBStore.from_url(url)
    clock = FakeClock(1000.0)

    def chain(store: DynamoDBStore) -> Chain:
        return Chain(
            RateLimiter("5/hour", store=store, clock=clock),
            RateLimiter("3/hour", algorithm="fixed_window", store=store, clock=clock),
        )

    on_a, on_b = chain(a), chain(b)
    assert on_a.hit("org", "u").remaining == 2
    assert on_b.hit("org", "u").remaining == 1
    counting.calls.clear()
    assert on_a.hit("org", "u").remaining == 0  # not 1: b's admission counts
    assert counting.calls == {"transact_write_items": 2}
    assert not on_a.hit("org", "u").allowed
    assert on_b.peek("org", "v", cost=0).details[0].remaining == 2  # the denial took nothing
    for s in (a, b, base):
        s.close()


def test_a_transaction_checks_the_items_it_read_but_did_not_change(url: str) -> None:
    """A check that changes nothing (a zero-cost refund on a sliding log) still read its item:
    the transaction carries a ConditionCheck on it, so another store's write in between cancels
    it, and the retry decides again from the item the cancellation returned."""
    base = DynamoDBStore.from_url(url)
    other = DynamoDBStore.from_url(url)
    clock = FakeClock(1000.0)
    rule = RateLimiter("1/hour", store=base, clock=clock).rule
    log = RateLimiter("1/hour", algorithm="sliding_log", store=base, clock=clock).rule
    sent: list[list[dict[str, Any]]] = []

    class Racing(Counting):
        """Another store writes ``b`` just before the first transaction is sent."""

        def __getattr__(self, name: str) -> Any:
            method = super().__getattr__(name)

            def call(**params: Any) -> Any:
                if name == "transact_write_items":
                    sent.append(params["TransactItems"])
                    if len(sent) == 1:
                        other.hit("b", log, 1, clock())
                return method(**params)

            return call

    store = DynamoDBStore.from_url(url, client=Racing(base._client))
    applied = store.apply_checks([Check("a", rule, 1), Check("b", log, 0, REFUND)], clock())
    assert [d.allowed for d in applied.decisions] == [True, True]
    assert applied.decisions[1].remaining == 0  # decided again, after the other store's hit
    assert [[next(iter(item)) for item in items] for items in sent] == [
        ["Put", "ConditionCheck"],
        ["Put", "ConditionCheck"],
    ]
    assert sent[0][1]["ConditionCheck"]["Key"] == {"pk": {"S": item_key("b")}}
    for s in (store, other, base):
        s.close()


def test_more_items_than_a_transaction_holds_are_refused(url: str) -> None:
    store = DynamoDBStore.from_url(url)
    rule = RateLimiter("1/hour", store=store).rule
    checks = [Check(f"k{i}", rule, 1) for i in range(MAX_ITEMS + 1)]
    with pytest.raises(ConfigError, match="at most 100 items"):
        store.apply_checks(checks, 1000.0)
    store.close()


def test_cancellation_reasons() -> None:
    failed = {"Code": "ConditionalCheckFailed", "Item": {"pk": {"S": "k:a"}}}
    lost = outcome(
        _client_error(
            "TransactionCanceledException",
            400,
            CancellationReasons=[{"Code": "None"}, failed, {"Code": "TransactionConflict"}],
        )
    )
    assert isinstance(lost, Cancelled) and lost.reasons[1] == failed
    for reasons in (
        [{"Code": "None"}, {"Code": "ThrottlingError"}],
        [{"Code": "ConditionalCheckFailed"}, {"Code": "ValidationError"}],
        [],
    ):
        error = _client_error("TransactionCanceledException", 400, CancellationReasons=reasons)
        with pytest.raises(StoreUnavailable, match="TransactionCanceledException"):
            outcome(error)


def test_chains_answer_within_the_bound_when_the_endpoint_freezes() -> None:
    port = int(endpoint().rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        store = DynamoDBStore.from_url(new_table(f"http://127.0.0.1:{proxy.port}"))
        chain = Chain(
            RateLimiter("100/second", store=store, on_store_error="allow"),
            RateLimiter("100/second", store=store, on_store_error="allow"),
        )
        assert chain.hit("pool", "u").allowed
        proxy.set_mode("blackhole")
        took: list[float] = []
        fallbacks: list[bool] = []

        def caller(i: int) -> None:
            t0 = time.monotonic()
            decision = chain.hit("pool", f"u{i % 3}")
            took.append(time.monotonic() - t0)
            fallbacks.append(decision.fallback and decision.allowed)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(FROZEN_CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(fallbacks) and len(fallbacks) == FROZEN_CALLERS
        assert max(took) < DECISION_BOUND, took
        proxy.set_mode("pass")
        store.close()


async def test_async_chains_answer_within_the_bound_when_the_endpoint_freezes() -> None:
    port = int(endpoint().rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        store = AsyncDynamoDBStore.from_url(new_table(f"http://127.0.0.1:{proxy.port}"))
        chain = AsyncChain(
            AsyncRateLimiter("100/second", store=store, on_store_error="deny"),
            AsyncRateLimiter("100/second", store=store, on_store_error="deny"),
        )
        assert (await chain.hit("pool", "u")).allowed
        proxy.set_mode("blackhole")
        t0 = time.monotonic()
        decisions = await asyncio.gather(
            *(chain.hit("pool", f"u{i % 3}") for i in range(FROZEN_CALLERS))
        )
        assert time.monotonic() - t0 < DECISION_BOUND
        assert all(d.fallback and not d.allowed for d in decisions)
        proxy.set_mode("pass")
        await store.close()
