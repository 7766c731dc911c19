"""The server-side ports of the algorithms (Redis Lua, PostgreSQL SQL) against the pure Python
reference: one suite, run on every store that has a port — the same named edge cases, the same
random traces and the same hypothesis strategies, every field of every decision compared with
exact equality (bit for bit), clocks at 1e6 and at today's Unix time, stepping back too; and the
ports of `evaluate_checks` (charges, refunds, priority shares, several checks at once)."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratekeeper.algorithms import ALGORITHMS, Rule, evaluate
from ratekeeper.algorithms.checks import CHARGE, HIT, REFUND, Check, Slot, evaluate_checks
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit
from ratekeeper.stores import Store

from .backends import postgres as pg_backend
from .backends.redis import env_url

Steps = list[tuple[str, float, float]]


def redis_port() -> Store:
    from ratekeeper.stores.redis import RedisStore

    return RedisStore.from_url(
        env_url("RATEKEEPER_REDIS_URL"),
        prefix=f"rkport:{uuid.uuid4().hex[:12]}",
        time_source="client",
        socket_timeout=5.0,
    )


def postgres_port() -> Store:
    return pg_backend.make_sync()  # the caller's clock, a patient deadline


PORTS: dict[str, tuple[Callable[[], Store], pytest.MarkDecorator]] = {
    "redis-lua": (redis_port, pytest.mark.redis),
    "postgres-sql": (postgres_port, pytest.mark.postgres),
}


@pytest.fixture(
    scope="module", params=[pytest.param(name, marks=mark) for name, (_, mark) in PORTS.items()]
)
def port(request: pytest.FixtureRequest) -> Iterator[Store]:
    store = PORTS[request.param][0]()
    yield store
    store.close()


def replay(store: Store, rule: Rule, steps: Steps, now: float, where: str = "") -> None:
    """Run ``steps`` (op "hit", "peek" or "back" = clock steps back; advance; cost) on a fresh key
    through the store's port and through the pure Python algorithms; every field must agree."""
    states: list[Any] = [None] * len(rule.limits)
    key = uuid.uuid4().hex
    for i, (op, advance, cost) in enumerate(steps):
        now = now - advance if op == "back" else now + advance
        write = op != "peek"
        got = (store.hit if write else store.peek)(key, rule, cost, now)
        news, want = evaluate(rule.algorithm, rule.limits, states, now, cost)
        if write and news is not None:
            states = news
        assert_exactly(got, want, f"{where}step {i} {op} {advance} cost {cost} at {now!r} {rule}")


def assert_exactly(got: Decision, want: Decision, where: str) -> None:
    for d_got, d_want in zip(got.per_limit, want.per_limit, strict=True):
        for name in ("allowed", "limit", "remaining", "policy", "fallback"):
            assert getattr(d_got, name) == getattr(d_want, name), f"{where}: {name}"
        for name in ("reset_after", "retry_after", "delay"):
            a, b = getattr(d_got, name), getattr(d_want, name)
            assert a == b or (math.isinf(a) and math.isinf(b)), f"{where}: {name} {a!r} {b!r}"
    assert got == want, where


# Named edge cases, each a limit set and steps of (op, seconds to move the clock, cost).
EDGE_CASES: dict[str, tuple[tuple[Limit, ...], Steps]] = {
    "cost above capacity": ((Limit(3, per=60),), [("hit", 0, 4), ("hit", 0, 3), ("hit", 0, 4)]),
    "cost zero on empty and full": (
        (Limit(2, per=1),),
        [("hit", 0, 0), ("hit", 0, 2), ("hit", 0, 0), ("peek", 0, 0), ("hit", 0, 1)],
    ),
    "fractional costs": (
        (Limit(1, per=1),),
        [("hit", 0, 0.1)] * 9 + [("hit", 0, 0.1), ("hit", 0, 0.1), ("hit", 0.05, 0.1)],
    ),
    "retry exactly after retry_after": (
        (Limit(5, per=2),),
        [("hit", 0, 1)] * 6 + [("hit", 0.4, 1), ("hit", 0.4 - 1e-7, 1), ("hit", 1e-7, 1)],
    ),
    "window edges": (
        (Limit(4, per=10),),
        [("hit", 9.999999, 2), ("hit", 1e-6, 2), ("hit", 0, 3), ("hit", 10, 4), ("hit", 10, 1)],
    ),
    "burst above amount": (
        (Limit(2, per=1, burst=5),),
        [("hit", 0, 1)] * 6 + [("hit", 0.5, 1), ("hit", 100, 5), ("hit", 0, 1)],
    ),
    "clock steps back": (
        (Limit(3, per=5),),
        [("hit", 0, 1), ("hit", 6, 1), ("back", 7, 1), ("hit", 0, 1), ("hit", 0, 1), ("hit", 9, 1)],
    ),
    "multi-limit denial describes the others without the cost": (
        (Limit(3, per=1), Limit(4, per=60), Limit(100, per=3600)),
        [("hit", 0, 1)] * 4 + [("hit", 1, 1), ("hit", 1, 1), ("peek", 0, 2), ("hit", 0, 50)],
    ),
    "huge timestamps": ((Limit(7, per=0.3),), [("hit", 1e-7, 1)] * 9 + [("hit", 0.04, 1)] * 5),
    "fast rate drained at a frozen clock, at epoch": (
        (Limit(1_000_000, per=1),),
        [("hit", 0, 1_000_000), ("hit", 0, 1), ("peek", 0, 0), ("hit", 2.4e-7, 1)]
        + [("hit", 0, 1)] * 3
        + [("hit", 1e-6, 1), ("hit", 0, 1), ("hit", 3e-6, 2), ("peek", 0, 1)],
    ),
    "a billion per second, at epoch (the clock slack is capped)": (
        (Limit(10**9, per=1, burst=1000),),
        [("hit", 0, 1000), ("hit", 0, 1), ("hit", 2.4e-7, 100), ("hit", 0, 300), ("hit", 0, 1)],
    ),
}


@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_edge_cases(port: Store, algorithm: str, case: str) -> None:
    limits, steps = EDGE_CASES[case]
    now = 1.7e9 + 0.123456 if case == "huge timestamps" or "epoch" in case else 1_000_000.0
    replay(port, Rule(algorithm, limits), steps, now, f"{case}: ")


def random_trace(rng: random.Random) -> Steps:
    steps = []
    for _ in range(80):
        op = rng.choice(["hit", "hit", "hit", "peek", "back"])
        advance = rng.choice([0.0, 0.0, 1e-7, 0.001, 0.1, 0.3, 0.7, 1.0, 2.5, 7.0])
        cost = rng.choice([0, 1, 1, 1, 2, 3, 0.25, 1.5, 4, 50])
        steps.append((op, advance, cost))
    return steps


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_random_traces(port: Store, algorithm: str) -> None:
    """Random limits (odd periods, bursts), costs and clocks (stepping back too)."""
    rng = random.Random(algorithm)
    for case in range(8):
        limits = tuple(
            Limit(rng.choice([1, 3, 5, 10, 7]), per=rng.choice([1, 2.5, 10, 0.3, 7.5, 60]))
            for _ in range(rng.choice([1, 1, 2, 3]))
        )
        if rng.random() < 0.3:
            first = limits[0]
            limits = (Limit(first.amount, per=first.per, burst=first.amount * 2), *limits[1:])
        now = rng.choice([0.0, 1_000_000.0, 1.7e9 + rng.random()])
        replay(port, Rule(algorithm, limits), random_trace(rng), now, f"case {case}: ")


_limits = st.lists(
    st.builds(
        Limit,
        st.integers(1, 20),
        per=st.sampled_from([0.1, 0.3, 0.5, 1.0, 2.5, 7.5, 60.0]),
        burst=st.none() | st.integers(1, 30),
    ),
    min_size=1,
    max_size=3,
)
_steps = st.lists(
    st.tuples(
        st.sampled_from(["hit", "hit", "peek", "back"]),
        st.sampled_from([0.0, 1e-7, 1e-3, 0.05, 0.3, 1.0, 3.0]),
        st.sampled_from([0, 1, 1, 2, 0.5, 3, 25]),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(algorithm=st.sampled_from(sorted(ALGORITHMS)), limits=_limits, steps=_steps)
def test_property(port: Store, algorithm: str, limits: list[Limit], steps: Steps) -> None:
    replay(port, Rule(algorithm, tuple(limits)), steps, 1_700_000_000.5)


# -- several checks at once (apply_checks): the policy ports (checks.lua, f_checks) -------------

CHECK_LIMITS = [
    (Limit(3, per=1),),
    (Limit(5, per=2.5), Limit(7, per=60)),
    (Limit(2, per=0.3, burst=4),),
]


def random_checks(
    rng: random.Random, keys: list[str], rules: list[Rule], now: float
) -> list[Check]:
    """1 to 3 checks (hits within a share, charges, refunds into a recent instant); two checks
    on one key and rule share a state."""
    checks = []
    for _ in range(rng.choice([1, 2, 2, 3])):
        mode = rng.choice([HIT, HIT, HIT, CHARGE, REFUND])
        checks.append(
            Check(
                rng.choice(keys),
                rng.choice(rules),
                rng.choice([0, 1, 1, 2, 0.5, 3, 9]),
                mode,
                rng.choice([1.0, 1.0, 0.5, 0.8]) if mode == HIT else 1.0,
                now - rng.choice([0.0, 0.0, 0.1, 1.0]) if mode == REFUND else 0.0,
            )
        )
    return checks


def replay_checks(store: Any, rng: random.Random, algorithms: list[str], start: float) -> None:
    """A random walk of check lists through the store's ``apply_checks`` and through
    `evaluate_checks` on the same states: every decision exactly equal, the time decided at too."""
    keys = [uuid.uuid4().hex for _ in range(2)]
    rules = [Rule(a, limits) for a in algorithms for limits in CHECK_LIMITS]
    states: dict[Slot, Any] = {}
    now = start
    for i in range(60):
        now += rng.choice([0.0, 0.0, 1e-7, 0.05, 0.1, 0.3, 1.0, 2.5])
        checks = random_checks(rng, keys, rules, now)
        write = rng.random() < 0.85
        applied = store.apply_checks(checks, now, write)
        slots = {slot: states.get(slot) for check in checks for slot in check.slots()}
        writes, want, _ = evaluate_checks(checks, slots, now)
        if write and writes:
            states.update(writes)
        assert applied.now == now, f"step {i}"
        for n, (got, expected) in enumerate(zip(applied.decisions, want, strict=True)):
            assert_exactly(got, expected, f"step {i} check {n} {checks[n]!r} at {now!r}")


@pytest.mark.parametrize("start", [1_000_000.0, 1.7e9 + 0.123456], ids=["small", "epoch"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_policy_checks(port: Store, algorithm: str, start: float) -> None:
    """Checks on one algorithm (its charge and refund, priority shares, shared states)."""
    replay_checks(port, random.Random(f"{algorithm}{start}"), [algorithm], start)


def test_policy_checks_mixed_algorithms(port: Store) -> None:
    """Checks of every algorithm in one call: a hybrid on one key, a chain over several."""
    for seed in range(3):
        replay_checks(port, random.Random(seed), sorted(ALGORITHMS), 1.7e9 + 0.5)
