"""The decision-latency contract under faults, for every network store, sync and async.

A FaultProxy stands between a store (built with the library's default timeouts) and its server,
and breaks the link in one way at a time:

- ``blackhole``: the server looks frozen (connections stay open, nothing comes back);
- ``reset``: every connection, old and new, is reset (a dead or restarting server);
- ``half_close``: the client reads EOF while its socket stays open;
- ``latency``: every chunk arrives 2 s late (far over the per-operation deadline).

With many callers at once on one key, every decision must come back within
``DECISION_BOUND`` (1.0 s): the fallback decision of ``on_store_error`` ("allow"/"deny"), or
StoreUnavailable ("raise") — never a driver's exception, never a hang. When the link heals, the
same limiter answers for real again within ``RECOVERY_BOUND``, without being rebuilt. A link that
is slow but under the deadline (0.2 s per round trip) gives real decisions, not fallbacks, on
connections opened beforehand (opening one takes several round trips: a new Redis connection on
such a link does not fit in the 0.5 s deadline, so that case is measured by benchmarks/faults.py,
not asserted here).

Redis Cluster and Sentinel are not in this suite: their clients learn node addresses from the
servers (MOVED redirects, the master's address), so one proxy cannot carry all their traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pytest

from ratekeeper import AsyncRateLimiter, Decision, RateLimiter, StoreUnavailable
from ratekeeper.stores import AsyncStore, Store
from tests.faultproxy import FaultProxy, Mode

from .backends import Backend, all_backends

Policy = Literal["allow", "deny", "raise"]

DECISION_BOUND = 1.0  # seconds: the documented bound on any decision, whatever the fault
RECOVERY_BOUND = 5.0  # seconds after the link heals within which decisions are real again
RECOVERY_POLL = 0.05  # seconds between attempts while waiting for recovery
STRAGGLER_GRACE = 3.0  # seconds the test waits for callers past the bound (to measure, not pass)
CLOSE_BOUND = 5.0  # seconds a store's close() may take once the link is healthy
FAULT_LATENCY = 2.0  # seconds per direction for the "latency" fault
SLOW_LATENCY = 0.1  # seconds per direction: a 0.2 s round trip, under the 0.5 s deadline
SYNC_CALLERS = 8  # threads at once on one key
ASYNC_CALLERS = 40  # tasks at once on one key
CALLS_PER_CALLER = 2  # decisions each caller makes back to back during the fault
SLOW_SYNC_CALLERS = 4
SLOW_ASYNC_CALLERS = 8
WARM_ROUNDS = 3  # rounds at full concurrency before the slow link, so the pool holds connections
DETAIL_CHARS = 200  # of an unexpected exception's message in a failure report
LIMITS = "100000/second"  # never binding: a real decision is an allowed one

FAULTS: tuple[Mode, ...] = ("blackhole", "reset", "half_close", "latency")
POLICIES: tuple[Policy, ...] = ("allow", "deny", "raise")
EXPECTED: dict[Policy, str] = {
    "allow": "fallback_allowed",
    "deny": "fallback_denied",
    "raise": "unavailable",
}
REAL = "allowed"

BACKENDS = [b for b in all_backends() if b.make_at is not None and b.url is not None]


def _cases(driver: str) -> list[Any]:
    """Every backend x every fault for one driver; the policies take turns, and the sync and async
    turns are offset so that each backend meets every policy with both drivers."""
    offset = 0 if driver == "sync" else 1
    cases = []
    for b in BACKENDS:
        policies = itertools.islice(itertools.cycle(POLICIES), offset, None, 2)
        for fault, policy in zip(FAULTS, policies, strict=False):
            case_id = f"{b.name}-{fault}-{policy}"
            cases.append(pytest.param(b, fault, policy, id=case_id, marks=b.marks))
    return cases


def _slow_cases() -> list[Any]:
    return [pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS]


# -- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    seconds: float
    kind: str  # allowed / denied / fallback_allowed / fallback_denied / unavailable / stuck / Exc
    detail: str = ""  # an unexpected exception's message


def classify(result: Decision | BaseException) -> str:
    if isinstance(result, StoreUnavailable):
        return "unavailable"
    if isinstance(result, BaseException):
        return f"{type(result).__module__}.{type(result).__qualname__}"
    prefix = "fallback_" if result.fallback else ""
    return prefix + ("allowed" if result.allowed else "denied")


def outcome(seconds: float, result: Decision | BaseException) -> Outcome:
    kind = classify(result)
    detail = str(result)[:DETAIL_CHARS] if "." in kind else ""
    return Outcome(seconds, kind, detail)


def summary(outcomes: list[Outcome]) -> str:
    seconds = [o.seconds for o in outcomes]
    kinds = dict(Counter(o.kind for o in outcomes))
    details = {o.kind: o.detail for o in outcomes if o.detail}
    return (
        f"{len(outcomes)} decisions, median {statistics.median(seconds):.3f} s, "
        f"worst {max(seconds):.3f} s, outcomes {kinds}" + (f", errors {details}" if details else "")
    )


def check(outcomes: list[Outcome], expected: str, what: str) -> None:
    wrong = [o for o in outcomes if o.kind != expected]
    late = [o for o in outcomes if o.seconds > DECISION_BOUND]
    if wrong or late:
        pytest.fail(
            f"{what}: expected every decision to be {expected!r} within {DECISION_BOUND} s; "
            f"{summary(outcomes)}",
            pytrace=False,
        )


# -- drivers: the same callers, from threads or tasks ----------------------------------------


def run_threads(
    hit: Callable[[str], Decision], keys: list[str], calls: int = CALLS_PER_CALLER
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start = threading.Barrier(len(keys))

    def caller(key: str) -> None:
        start.wait()
        for _ in range(calls):
            began = time.monotonic()
            result: Decision | BaseException
            try:
                result = hit(key)
            except Exception as exc:
                result = exc
            with lock:
                outcomes.append(outcome(time.monotonic() - began, result))

    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in keys]
    for t in threads:
        t.start()
    give_up = time.monotonic() + STRAGGLER_GRACE
    for t in threads:
        t.join(max(0.0, give_up - time.monotonic()))
    with lock:
        missing = len(keys) * calls - len(outcomes)
        return outcomes + [Outcome(STRAGGLER_GRACE, "stuck")] * missing


async def run_tasks(
    hit: Callable[[str], Awaitable[Decision]], keys: list[str], calls: int = CALLS_PER_CALLER
) -> list[Outcome]:
    outcomes: list[Outcome] = []

    async def caller(key: str) -> None:
        for _ in range(calls):
            began = time.monotonic()
            result: Decision | BaseException
            try:
                result = await hit(key)
            except Exception as exc:
                result = exc
            outcomes.append(outcome(time.monotonic() - began, result))

    tasks = [asyncio.create_task(caller(k)) for k in keys]
    _, pending = await asyncio.wait(tasks, timeout=STRAGGLER_GRACE)
    for t in pending:
        t.cancel()
    missing = len(keys) * calls - len(outcomes)
    return outcomes + [Outcome(STRAGGLER_GRACE, "stuck")] * missing


def recover_sync(hit: Callable[[str], Decision], key: str) -> float:
    began = time.monotonic()
    while True:
        result: Decision | BaseException
        try:
            result = hit(key)
        except Exception as exc:
            result = exc
        kind = classify(result)
        elapsed = time.monotonic() - began
        if kind == REAL:
            return elapsed
        assert elapsed < RECOVERY_BOUND, f"no real decision {elapsed:.1f} s after healing: {kind}"
        time.sleep(RECOVERY_POLL)


async def recover_async(hit: Callable[[str], Awaitable[Decision]], key: str) -> float:
    began = time.monotonic()
    while True:
        result: Decision | BaseException
        try:
            result = await hit(key)
        except Exception as exc:
            result = exc
        kind = classify(result)
        elapsed = time.monotonic() - began
        if kind == REAL:
            return elapsed
        assert elapsed < RECOVERY_BOUND, f"no real decision {elapsed:.1f} s after healing: {kind}"
        await asyncio.sleep(RECOVERY_POLL)


# -- plumbing -----------------------------------------------------------------------------------


def url_via(url: str, proxy: FaultProxy) -> str:
    """``url`` with its host and port replaced by the proxy's (user and password kept)."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{proxy.host}:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc}" if userinfo else netloc))


@contextlib.contextmanager
def proxy_for(backend: Backend) -> Iterator[FaultProxy]:
    assert backend.url is not None
    parts = urlsplit(backend.url())
    assert parts.hostname is not None and parts.port is not None
    with FaultProxy(parts.hostname, parts.port) as proxy:
        yield proxy


def factories(
    backend: Backend, proxy: FaultProxy
) -> tuple[Callable[[], Store], Callable[[], AsyncStore]]:
    """The backend's store factories, reaching its server through ``proxy``."""
    assert backend.url is not None and backend.make_at is not None
    return backend.make_at(url_via(backend.url(), proxy))


def fault_args(fault: Mode) -> dict[str, float]:
    return {"latency": FAULT_LATENCY} if fault == "latency" else {}


def keys(prefix: str, n: int, *, shared: bool) -> list[str]:
    return [prefix if shared else f"{prefix}:{i}" for i in range(n)]


def close_sync(close: Callable[[], None]) -> None:
    t = threading.Thread(target=close, daemon=True)
    t.start()
    t.join(CLOSE_BOUND)
    assert not t.is_alive(), f"close() took more than {CLOSE_BOUND} s on a healthy link"


# -- the suite ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "fault", "policy"), _cases("sync"))
def test_sync_decisions_are_bounded_under_faults_and_recover(
    backend: Backend, fault: Mode, policy: Policy
) -> None:
    with proxy_for(backend) as proxy:
        store = factories(backend, proxy)[0]()
        try:
            limiter = RateLimiter(LIMITS, store=store, on_store_error=policy)
            key = f"faults:{fault}:{time.monotonic_ns()}"
            check(run_threads(limiter.hit, keys(key, SYNC_CALLERS, shared=True)), REAL, "warm-up")

            proxy.set_mode(fault, **fault_args(fault))
            outcomes = run_threads(limiter.hit, keys(key, SYNC_CALLERS, shared=True))
            check(outcomes, EXPECTED[policy], f"{backend.name} sync, {fault}, {policy}")

            proxy.set_mode("pass")
            recover_sync(limiter.hit, key)
            check(run_threads(limiter.hit, keys(key, SYNC_CALLERS, shared=True)), REAL, "healed")
        finally:
            proxy.set_mode("pass")
            close_sync(store.close)


@pytest.mark.parametrize(("backend", "fault", "policy"), _cases("async"))
async def test_async_decisions_are_bounded_under_faults_and_recover(
    backend: Backend, fault: Mode, policy: Policy
) -> None:
    with proxy_for(backend) as proxy:
        store = factories(backend, proxy)[1]()
        try:
            limiter = AsyncRateLimiter(LIMITS, store=store, on_store_error=policy)
            key = f"faults:{fault}:{time.monotonic_ns()}"
            warm = await run_tasks(limiter.hit, keys(key, ASYNC_CALLERS, shared=True))
            check(warm, REAL, "warm-up")

            proxy.set_mode(fault, **fault_args(fault))
            outcomes = await run_tasks(limiter.hit, keys(key, ASYNC_CALLERS, shared=True))
            check(outcomes, EXPECTED[policy], f"{backend.name} async, {fault}, {policy}")

            proxy.set_mode("pass")
            await recover_async(limiter.hit, key)
            healed = await run_tasks(limiter.hit, keys(key, ASYNC_CALLERS, shared=True))
            check(healed, REAL, "healed")
        finally:
            proxy.set_mode("pass")
            await asyncio.wait_for(store.close(), CLOSE_BOUND)


@pytest.mark.parametrize("backend", _slow_cases())
def test_sync_slow_link_under_the_deadline_gives_real_decisions(backend: Backend) -> None:
    with proxy_for(backend) as proxy:
        store = factories(backend, proxy)[0]()
        try:
            limiter = RateLimiter(LIMITS, store=store, on_store_error="raise")
            key = f"faults:slow:{time.monotonic_ns()}"
            for _ in range(WARM_ROUNDS):
                warm = run_threads(limiter.hit, keys(key, SLOW_SYNC_CALLERS, shared=False))
                check(warm, REAL, "warm-up")
            proxy.set_mode("latency", latency=SLOW_LATENCY)
            outcomes = run_threads(limiter.hit, keys(key, SLOW_SYNC_CALLERS, shared=False))
            check(outcomes, REAL, f"{backend.name} sync, 0.2 s round trips")
        finally:
            proxy.set_mode("pass")
            close_sync(store.close)


@pytest.mark.parametrize("backend", _slow_cases())
async def test_async_slow_link_under_the_deadline_gives_real_decisions(backend: Backend) -> None:
    with proxy_for(backend) as proxy:
        store = factories(backend, proxy)[1]()
        try:
            limiter = AsyncRateLimiter(LIMITS, store=store, on_store_error="raise")
            key = f"faults:slow:{time.monotonic_ns()}"
            for _ in range(WARM_ROUNDS):
                warm = await run_tasks(limiter.hit, keys(key, SLOW_ASYNC_CALLERS, shared=False))
                check(warm, REAL, "warm-up")
            proxy.set_mode("latency", latency=SLOW_LATENCY)
            outcomes = await run_tasks(limiter.hit, keys(key, SLOW_ASYNC_CALLERS, shared=False))
            check(outcomes, REAL, f"{backend.name} async, 0.2 s round trips")
        finally:
            proxy.set_mode("pass")
            await asyncio.wait_for(store.close(), CLOSE_BOUND)
