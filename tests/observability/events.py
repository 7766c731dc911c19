"""Events as a limiter emits them, for observer tests that do not need a limiter."""

from __future__ import annotations

from typing import Any

from ratekeeper.decision import Decision
from ratekeeper.events import Event
from ratekeeper.limits import parse_limits

LIMIT = parse_limits("10/minute")[0]
TIME = 1_700_000_000.25  # a wall-clock time with an exact binary fraction


def decision(allowed: bool = True, remaining: int = 5, retry_after: float = 0.0) -> Decision:
    return Decision(allowed, LIMIT.amount, remaining, 6.0, retry_after, 0.0, LIMIT)


def event(kind: str = "hit", result: str = "allowed", **fields: Any) -> Event:
    values: dict[str, Any] = {
        "kind": kind,
        "limiter": "api",
        "algorithm": "token_bucket",
        "store": "redis",
        "key": "user:secret-42",
        "result": result,
        "decision": decision(
            result != "denied", 0 if result == "denied" else 5, 6.0 * (result == "denied")
        ),
        "time": TIME,
    }
    values.update(fields)
    return Event(**values)


def standard_events() -> list[Event]:
    """One of everything: 3 allowed (one near the limit), 2 denied, a shadow denial, a store
    error without decision, an acquire, a timeout and a release."""
    return [
        event(store_seconds=0.0001),
        event(store_seconds=0.0002),
        event(decision=decision(remaining=2), store_seconds=0.003),  # near: 2 <= (1 - 0.8) * 10
        event(result="denied", store_seconds=0.0004),
        event(result="denied", store_seconds=0.0004),
        event(result="shadow_denied", shadow_denied=True, store_seconds=0.0004),
        event(result="error", decision=None, error="StoreUnavailable", store_seconds=0.5),
        event(kind="acquire", wait_seconds=0.02, in_flight=1),
        event(kind="timeout", result="denied", wait_seconds=1.5, in_flight=1),
        event(kind="release", decision=None, in_flight=0),
    ]
