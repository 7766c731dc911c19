"""The engine remembers the limiter of each static rule and checks plain rules on the memory
store without a flow (issue 17, point 1): what that must not change. A limiter the registry
evicted is asked for again (so what the registry gives its limiters later, observers, reaches
the engine's); a replaced named limiter and a dynamic limit are still looked up per request; the
straight check and the flow answer the same."""

from __future__ import annotations

import asyncio
from typing import Any

from ratekeeper import Limit
from ratekeeper.events import Event
from ratekeeper.integrations import Engine, LimitRule, RequestView
from ratekeeper.registry import Registry
from ratekeeper.testing import FakeClock

PEER = "203.0.113.7"


def view(client: str = PEER, path: str = "/") -> RequestView:
    return RequestView("GET", path, lambda name: None, client)


class Seen:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def observe(self, event: Event) -> None:
        self.events.append(event)


def test_a_static_rule_asks_the_registry_once() -> None:
    registry = Registry()
    engine = Engine("5/minute", registry=registry)
    asked: list[Any] = []
    build = registry.limiter

    def counting(*args: Any, **options: Any) -> Any:
        asked.append(args)
        return build(*args, **options)

    registry.limiter = counting  # type: ignore[method-assign]
    remaining = [engine.check(view()).decision.remaining for _ in range(3)]  # type: ignore[union-attr]
    remaining.append(asyncio.run(engine.check_async(view())).decision.remaining)  # type: ignore[union-attr]
    assert remaining == [4, 3, 2, 1]  # one budget, blocking and asyncio alike
    assert len(asked) == 1


def test_after_the_registry_evicts_the_engine_asks_again() -> None:
    registry = Registry(max_limiters=1)
    engine = Engine("5/minute", registry=registry)
    assert engine.check(view()).decision.remaining == 4  # type: ignore[union-attr]
    # another limit evicts the engine's limiter from the registry's cache
    registry.limiter(registry.store(), (Limit(7, 60),), asynchronous=False)
    seen = Seen()
    registry.observe(seen)  # reaches the registry's limiters: the evicted one is not among them
    assert engine.check(view()).decision.remaining == 3  # type: ignore[union-attr]  # same budget
    assert [event.key for event in seen.events if event.kind == "hit"] != []


def test_a_replaced_named_limiter_is_picked_up() -> None:
    registry = Registry()
    registry.configure_limiter("api", "5/minute")
    engine = Engine(limiter="api", registry=registry)
    assert engine.check(view()).decision.limit == 5  # type: ignore[union-attr]
    registry.configure_limiter("api", "2/minute", replace=True)
    assert engine.check(view()).decision.limit == 2  # type: ignore[union-attr]


def test_a_dynamic_limit_follows_its_value() -> None:
    limits = {"a": "5/minute", "b": "3/minute"}
    engine = Engine(lambda request: limits[request.path.strip("/")], registry=Registry())
    engine.rules[0].limit = lambda native: limits["a"]  # type: ignore[assignment]
    assert engine.check(view()).decision.limit == 5  # type: ignore[union-attr]
    engine.rules[0].limit = lambda native: limits["b"]  # type: ignore[assignment]
    assert engine.check(view()).decision.limit == 3  # type: ignore[union-attr]


def test_the_straight_check_answers_as_the_flow_does() -> None:
    def rules() -> list[LimitRule]:
        return [
            LimitRule("3/minute", scope="a"),
            LimitRule("2/minute", scope="b", paths=["/api"]),
            LimitRule("1/minute", scope="shadow", shadow=True),
        ]

    clock = FakeClock()
    straight = Engine(rules=rules(), registry=Registry(), clock=clock)
    flowing = Engine(
        rules=[*rules(), LimitRule("9/minute", scope="c", cost=lambda r: 1)],
        registry=Registry(),
        clock=clock,
    )
    assert all(map(straight._plain, straight.rules))
    assert not flowing._plain(flowing.rules[-1])  # a cost function: the flow
    for path in ["/", "/api", "/api", "/api", "/", "/"]:
        one, two = straight.check(view(path=path)), flowing.check(view(path=path))
        assert (one.allowed, one.rule and one.rule.scope) == (
            two.allowed,
            two.rule and two.rule.scope,
        )
        assert one.decision == two.decision
        assert {k: v for k, v in two.decisions.items() if k != "c"} == one.decisions
        clock.advance(1.0)


def test_a_rule_added_after_the_first_request_is_checked() -> None:
    engine = Engine("5/minute", registry=Registry())
    assert engine.check(view()).allowed
    engine.rules.append(LimitRule("1/minute", scope="tight"))
    assert engine.check(view()).allowed
    outcome = engine.check(view())
    assert not outcome.allowed and outcome.rule is not None and outcome.rule.scope == "tight"


def test_behind_a_trusted_proxy_the_straight_check_keys_each_forwarded_client() -> None:
    engine = Engine("1/minute", registry=Registry(), trusted_proxies=["10.0.0.0/8"])

    def forwarded(address: str) -> RequestView:
        return RequestView(
            "GET", "/", lambda name: address if name == "x-forwarded-for" else None, "10.0.0.1"
        )

    assert engine.check(forwarded("198.51.100.1")).allowed
    assert engine.check(forwarded("198.51.100.2")).allowed  # same proxy, another client
    assert not engine.check(forwarded("198.51.100.1")).allowed


def test_a_rule_replaced_in_place_is_checked() -> None:
    engine = Engine("5/minute", registry=Registry())
    assert engine.check(view()).decision.limit == 5  # type: ignore[union-attr]
    engine.rules[0] = LimitRule("2/minute", scope="replaced")
    assert engine.check(view()).decision.limit == 2  # type: ignore[union-attr]
