"""The framework-neutral engine: key functions, proxies, rules, costs, fallbacks."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import subprocess
import sys
from typing import Any

import pytest

from ratekeeper import ConfigError, Limit, Registry
from ratekeeper.integrations import (
    Engine,
    Key,
    LimitRule,
    RequestView,
    api_key,
    client_ip,
    cost_from_header,
    header,
    path,
    route,
    storage_key,
    user,
)
from ratekeeper.integrations.keys import client_address, user_id
from ratekeeper.testing import FakeClock

from .conftest import AsyncDownStore, DownStore


def view(
    client: str | None = "203.0.113.7",
    headers: dict[str, str] | None = None,
    method: str = "GET",
    path: str = "/items/1",
    route: str | None = None,
    user: Any = None,
) -> RequestView:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    return RequestView(
        method=method,
        path=path,
        get_header=lambda name: lowered.get(name.lower()),
        client=client,
        native={"headers": lowered},
        route=route,
        get_user=lambda: user,
    )


PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


class TestClientIp:
    def test_peer_by_default_ignores_forwarded_headers(self) -> None:
        key = client_ip()
        spoofed = view(headers={"X-Forwarded-For": "1.1.1.1", "Forwarded": "for=2.2.2.2"})
        assert key(spoofed) == "ip:203.0.113.7"

    def test_untrusted_peer_is_the_client_even_with_proxies_configured(self) -> None:
        assert client_ip(PROXIES)(view(headers={"X-Forwarded-For": "1.1.1.1"})) == "ip:203.0.113.7"

    def test_trusted_proxy_uses_rightmost_untrusted_hop(self) -> None:
        key = client_ip(PROXIES)
        # the client forged "6.6.6.6"; the proxy appended the real address 198.51.100.9
        v = view("10.0.0.2", {"X-Forwarded-For": "6.6.6.6, 198.51.100.9, 10.1.1.1"})
        assert key(v) == "ip:198.51.100.9"

    def test_every_hop_trusted_gives_leftmost(self) -> None:
        v = view("10.0.0.2", {"X-Forwarded-For": "10.9.9.9, 10.1.1.1"})
        assert client_ip(PROXIES)(v) == "ip:10.9.9.9"

    def test_forwarded_rfc7239(self) -> None:
        key = client_ip(PROXIES, proxy_header="Forwarded")
        v = view(
            "10.0.0.2",
            {"Forwarded": 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.1.1.1'},
        )
        assert key(v) == "ip:2001:db8:cafe::17"
        # with Forwarded configured, a client's own X-Forwarded-For means nothing
        v = view("10.0.0.2", {"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=198.51.100.1:80"})
        assert key(v) == "ip:198.51.100.1"

    def test_malformed_hop_falls_back_to_nearest_trusted_and_logs(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        v = view("10.0.0.2", {"X-Forwarded-For": "1.2.3.4, not-an-ip, 10.1.1.1"})
        with caplog.at_level(logging.WARNING, "ratekeeper"):
            assert client_ip(PROXIES)(v) == "ip:10.1.1.1"
        assert "malformed" in caplog.text
        assert client_ip(PROXIES)(view("10.0.0.2", {"X-Forwarded-For": ",,"})) == "ip:10.0.0.2"
        assert client_ip(PROXIES)(view("10.0.0.2", {"X-Forwarded-For": ""})) == "ip:10.0.0.2"

    def test_ipv4_with_port_mapped_and_v6_prefix(self) -> None:
        assert client_ip(PROXIES)(view("10.0.0.2", {"X-Forwarded-For": "1.2.3.4:5678"})) == (
            "ip:1.2.3.4"
        )
        assert client_ip()(view("::ffff:1.2.3.4")) == "ip:1.2.3.4"
        assert client_ip(ipv6_prefix=64)(view("2001:db8:1:2:3:4:5:6")) == "ip:2001:db8:1:2::/64"

    def test_non_ip_peer_is_used_verbatim(self) -> None:
        assert client_ip()(view("testclient")) == "ip:testclient"
        assert client_ip()(view(None)) == "ip:unknown"
        assert client_address(view(None), ()) is None

    def test_bad_proxy_config_fails_at_setup(self) -> None:
        with pytest.raises(ConfigError, match="trusted proxy"):
            client_ip(["10.0.0.0/33"])
        with pytest.raises(ConfigError):
            client_ip(ipv6_prefix=200)


class TestKeys:
    def test_header_and_api_key(self) -> None:
        assert header("X-Tenant")(view(headers={"x-tenant": "acme"})) == "header:x-tenant:acme"
        assert header("X-Tenant")(view()) == "ip:203.0.113.7"
        hashed = api_key()(view(headers={"X-API-Key": "secret"}))
        assert hashed.startswith("apikey:") and "secret" not in hashed
        assert api_key()(view()) == "ip:203.0.113.7"
        assert "tok" not in header("Authorization", hashed=True)(
            view(headers={"authorization": "tok"})
        )

    def test_user_path_route(self) -> None:
        class Anonymous:
            is_authenticated = False

        class Account:
            is_authenticated = True
            pk = 42

        assert user()(view(user=Account())) == "user:42"
        assert user()(view(user=Anonymous())) == "ip:203.0.113.7"
        assert user()(view(user="alice")) == "user:alice"
        assert path()(view()) == "path:/items/1"
        assert route()(view(route="/items/{id}")) == "route:/items/{id}"
        assert route()(view()) == "route:/items/1"
        assert user_id(None) is None

    def test_cost_from_header(self, caplog: pytest.LogCaptureFixture) -> None:
        cost = cost_from_header("X-Batch", maximum=50)
        assert cost(view(headers={"x-batch": "7"})) == 7
        assert cost(view(headers={"x-batch": "1e9"})) == 50
        assert cost(view()) == 1
        with caplog.at_level(logging.WARNING, "ratekeeper"):
            assert cost(view(headers={"x-batch": "lots"})) == 1
            assert cost(view(headers={"x-batch": "-3"})) == 1
            assert cost(view(headers={"x-batch": "nan"})) == 1
        assert "bad X-Batch header" in caplog.text

    def test_cost_from_header_floor_and_bad_configuration(self) -> None:
        cost = cost_from_header("X-Cost", minimum=2, maximum=10)
        for raw, expected in [("0", 2), ("1e-320", 2), ("3.5", 3.5), ("1e300", 10), ("1e400", 1)]:
            assert cost(view(headers={"x-cost": raw})) == expected
        free = cost_from_header("X-Cost", minimum=0)  # a floor of 0 must be asked for
        assert free(view(headers={"x-cost": "0"})) == 0
        for bad in ({"minimum": -1}, {"default": math.nan}, {"minimum": 5, "maximum": 2}):
            with pytest.raises(ConfigError):
                cost_from_header("X-Cost", **bad)


class TestStorageKey:
    def test_components_are_unambiguous(self) -> None:
        keys = [
            storage_key("a:b", "c"),
            storage_key("a", "b:c"),
            storage_key("a", Key("ip", "b:c")),
            storage_key("a", "ip:b:c"),
            storage_key("a", Key("header", "x", "y:z")),
            storage_key("a", Key("header", "x:y", "z")),
            storage_key("a%3Ab", "c"),
            storage_key("b", "c", prefix="a"),
            storage_key("a", "c", prefix="b"),
        ]
        assert len(set(keys)) == len(keys)
        assert storage_key("default", client_ip()(view())) == "default:ip:203.0.113.7"
        assert storage_key("s", "k", prefix="app") == "app:s:custom:k"

    def test_built_in_keys_read_as_before(self) -> None:
        key = header("X-Tenant")(view(headers={"x-tenant": "a:b"}))
        assert key == "header:x-tenant:a:b" and isinstance(key, Key) and key.kind == "header"


class TestEngine:
    def test_one_limiter_per_distinct_limit(self) -> None:
        tiers = {"a": "2/minute", "b": "5/minute"}
        engine = Engine(lambda req: tiers[req["headers"]["x-tier"]], clock=FakeClock())
        for tier in ["a", "b"] * 50:
            engine.check(view(headers={"x-tier": tier}))
        assert len(engine.registry._limiters) == 2

    def test_denial_then_retry(self) -> None:
        clock = FakeClock()
        engine = Engine("2/minute", clock=clock)
        assert engine.check(view()).allowed
        assert engine.check(view()).allowed
        denied = engine.check(view())
        assert not denied.allowed and denied.decision is not None
        headers = engine.response_headers(denied.decision)
        assert headers["Retry-After"] == "30"
        clock.advance(30)
        assert engine.check(view()).allowed

    def test_header_groups(self) -> None:
        engine = Engine("1/minute", headers=["retry-after"], clock=FakeClock())
        engine.check(view())
        denied = engine.check(view()).decision
        assert engine.response_headers(denied) == {"Retry-After": "60"}
        assert Engine("1/minute", headers=False).response_headers(denied) == {}
        with pytest.raises(ConfigError, match="header groups"):
            Engine(headers=["nope"])  # type: ignore[list-item]

    def test_rules_methods_paths_and_shared_scope(self) -> None:
        clock = FakeClock()
        login = LimitRule("1/minute", scope="auth", methods=["post"], paths=["/login"])
        signup = LimitRule("1/minute", scope="auth", paths=[re.compile(r"/signup$")])
        engine = Engine(rules=[login, signup], clock=clock)
        assert engine.check(view(method="GET", path="/login")).decision is None
        assert engine.check(view(method="POST", path="/login")).allowed
        assert not engine.check(view(method="POST", path="/signup")).allowed  # shared budget

    def test_exempt(self) -> None:
        engine = Engine("1/minute", exempt_paths=["/health", re.compile(r"^/static/.*\.css$")])
        assert engine.is_exempt(view(path="/health/live"))
        assert engine.is_exempt(view(path="/static/a.css"))
        assert engine.is_exempt(view(method="OPTIONS"))
        assert not engine.is_exempt(view(path="/static/a.js"))
        assert Engine(enabled=False).is_exempt(view())

    def test_bad_configuration_fails_at_setup(self) -> None:
        with pytest.raises(ConfigError):
            Engine("ten per fortnight")
        with pytest.raises(ConfigError):
            Engine("1/minute", algorithm="nope")
        with pytest.raises(ConfigError):
            Engine(store="carrier-pigeon://x")
        with pytest.raises(ConfigError):
            Engine(on_store_error="maybe")  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            LimitRule("1/minute", scope="x", cost=-1)
        with pytest.raises(ConfigError):
            LimitRule(42, scope="x")  # type: ignore[arg-type]

    def test_broken_functions_never_raise(self, caplog: pytest.LogCaptureFixture) -> None:
        def boom(request: object) -> str:
            raise RuntimeError("bug in user code")

        clock = FakeClock()
        with caplog.at_level(logging.WARNING, "ratekeeper"):
            # a key function that raises: keyed by client address instead
            engine = Engine("1/minute", key=boom, clock=clock)
            assert engine.check(view()).allowed
            assert not engine.check(view()).allowed
            assert engine.check(view("198.51.100.1")).allowed
            # a cost function that raises or answers nonsense: cost 1
            for bad_cost in (boom, lambda r: "abc", lambda r: -5, lambda r: float("inf")):
                engine = Engine("3/minute", cost=bad_cost, clock=clock)
                assert engine.check(view()).decision.remaining == 2  # type: ignore[union-attr]
            # a dynamic limit that raises or is not a rate: not limited
            for bad_limit in (boom, lambda r: "lots/fortnight", lambda r: 12):
                engine = Engine(bad_limit, clock=clock)
                outcome = engine.check(view())
                assert outcome.allowed and outcome.decision is None
        assert "raised" in caplog.text and "not a rate" in caplog.text

    def test_key_returning_none_or_number(self) -> None:
        clock = FakeClock()
        engine = Engine("1/minute", key=lambda r: None, clock=clock)
        engine.check(view())
        assert not engine.check(view()).allowed
        assert engine.check(view("198.51.100.1")).allowed
        engine = Engine("1/minute", key=lambda r: 7, clock=clock)
        engine.check(view())
        assert not engine.check(view("198.51.100.1")).allowed  # both are key "7"

    def test_limit_none_means_unlimited_and_limit_objects(self) -> None:
        engine = Engine(lambda r: None)
        assert engine.check(view()).decision is None
        engine = Engine(lambda r: Limit(1, per=60), clock=FakeClock())
        engine.check(view())
        assert not engine.check(view()).allowed

    async def test_async_functions_in_async_check(self) -> None:
        async def key(request: object) -> str:
            return "k"

        async def cost(request: object) -> int:
            return 2

        async def limit(request: object) -> str:
            return "3/minute"

        engine = Engine(limit, key=key, cost=cost, clock=FakeClock())
        first = await engine.check_async(view())
        assert first.allowed and first.decision.remaining == 1  # type: ignore[union-attr]
        assert not (await engine.check_async(view("198.51.100.1"))).allowed

    def test_async_functions_in_sync_check(self) -> None:
        async def key(request: object) -> str:
            return "k"

        engine = Engine("1/minute", key=key, clock=FakeClock())
        assert engine.check(view()).allowed
        assert not engine.check(view("198.51.100.1")).allowed

    async def test_async_function_raising_falls_back(self) -> None:
        async def key(request: object) -> str:
            raise RuntimeError("async bug")

        engine = Engine("1/minute", key=key, clock=FakeClock())
        assert (await engine.check_async(view())).allowed
        assert (await engine.check_async(view("198.51.100.1"))).allowed

    def test_store_outage_allows_and_logs(self, caplog: pytest.LogCaptureFixture) -> None:
        engine = Engine("1/minute", store=DownStore())
        with caplog.at_level(logging.WARNING, "ratekeeper"):
            for _ in range(3):
                outcome = engine.check(view())
                assert outcome.allowed and outcome.decision is None
        assert "unavailable" in caplog.text
        deny = Engine("1/minute", store=DownStore(), on_store_error="deny")
        assert not deny.check(view()).allowed

    async def test_async_store_outage(self) -> None:
        engine = Engine("1/minute", store=AsyncDownStore())
        assert (await engine.check_async(view())).allowed
        assert (await asyncio.to_thread(engine.check, view())).allowed  # sync code, async store
        assert (await Engine("1/minute", store=DownStore()).check_async(view())).allowed
        with pytest.raises(ConfigError, match="asyncio store"):
            engine.store.sync()
        with pytest.raises(ConfigError, match="synchronous"):
            Engine(store=DownStore()).store.async_()

    def test_engines_share_state_only_through_one_registry(self) -> None:
        clock = FakeClock()
        registry = Registry()
        first = Engine("1/minute", clock=clock, registry=registry)
        second = Engine("1/minute", clock=clock, registry=registry)
        assert first.check(view()).allowed
        assert not second.check(view()).allowed  # the registry's one memory store: one budget
        assert Engine("1/minute", clock=clock).check(view()).allowed  # a private registry
        assert first.store.sync() is second.store.sync()

    async def test_a_raising_on_denied_hook_sends_the_default_429(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(request: Any, decision: Any) -> Any:
            raise RuntimeError("boom")

        async def broken_async(request: Any, decision: Any) -> Any:
            raise RuntimeError("boom")

        for hook in (broken, broken_async):
            engine = Engine("1/minute", on_denied=hook, clock=FakeClock())
            engine.check(view())
            denied = engine.check(view()).decision
            assert denied is not None and not denied.allowed
            with caplog.at_level(logging.WARNING, "ratekeeper"):
                assert engine.deny(None, denied, lambda d: (d.status, d.headers)) == (
                    429,
                    engine.response_headers(denied),
                )
                assert await engine.deny_async(None, denied, lambda d: d.status) == 429
            engine.close()
        assert "on_denied hook raised" in caplog.text

    def test_memory_url_is_shared_by_sync_and_async(self) -> None:
        engine = Engine("1/minute", store="memory://")
        assert engine.store.sync() is engine.store.async_().sync  # type: ignore[attr-defined]


def test_frameworks_are_imported_lazily() -> None:
    code = (
        "import sys, ratekeeper, ratekeeper.integrations\n"
        "frameworks = {'fastapi', 'starlette', 'flask', 'django', 'aiohttp'}\n"
        "assert not frameworks & set(sys.modules), frameworks & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- names, observers and shadow mode in the engine (issue 11 item 5, issue 12 items 1 and 6) ----


class Recorder:
    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []

    def observe(self, event: Any) -> None:
        if event.kind == "hit":
            self.hits.append((event.limiter, event.result))


@pytest.fixture
def default_registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A fresh stand-in for ``ratekeeper``'s default registry."""
    import ratekeeper.registry

    registry = Registry(discover=False)
    monkeypatch.setattr(ratekeeper.registry, "default_registry", registry)
    return registry


class TestNamesAndObservers:
    def test_names_resolve_in_the_default_registry_and_inline_budgets_stay_private(
        self, default_registry: Registry
    ) -> None:
        default_registry.configure_limiter("api", "1/minute")
        one, two = Engine(limiter="api"), Engine("1/minute")
        assert one.check(view()).allowed and not one.check(view()).allowed
        assert two.check(view()).allowed  # its own store: not the default registry's
        assert Engine("1/minute").registry is not default_registry
        assert default_registry.get_limiter("api").metrics().denied == 1

    def test_inline_limiters_report_to_the_default_registrys_observers(
        self, default_registry: Registry
    ) -> None:
        """``rk.observe(...)`` covers the limits of every integration, present and future."""
        early, late = Recorder(), Recorder()
        default_registry.observe(early)
        engine = Engine("1/minute")
        engine.check(view())
        default_registry.observe(late)  # after the engine built its limiter
        engine.check(view())
        assert early.hits == [("default", "allowed"), ("default", "denied")]
        assert late.hits == [("default", "denied")]

    def test_a_rule_names_a_limiter_or_sets_a_limit_not_both(self) -> None:
        registry = Registry(discover=False)
        registry.configure_limiter("api", "1/minute")
        engine = Engine(registry=registry)
        for clash in ({"algorithm": "gcra"}, {"shadow": True}, {"shadow_limits": "1/hour"}):
            with pytest.raises(ConfigError, match="named limiter"):
                engine.rule(limiter="api", **clash)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=r"named limiter: .* drop limit"):
            engine.rule("5/minute", limiter="api")
        with pytest.raises(ConfigError, match="needs a limit or limiter="):
            engine.rule(scope="x")

    def test_engine_shadow_mode_needs_named_limiters_in_shadow_mode(self) -> None:
        registry = Registry(discover=False)
        registry.configure_limiter("api", "1/minute")
        registry.configure_limiter("trial", "1/minute", shadow=True)
        with pytest.raises(ConfigError, match="shadow mode but limiter 'api' is not"):
            Engine(limiter="api", registry=registry, shadow=True)
        engine = Engine(limiter="trial", registry=registry, shadow=True)
        assert [engine.check(view()).allowed for _ in range(2)] == [True, True]

    async def test_a_named_limiters_dead_store_is_the_engines_policy(self) -> None:
        """A named limiter on a dead store (its own policy: raise) answers by the engine's
        ``on_store_error``, in blocking code and from asyncio (a synchronous-only store object
        is called in a worker thread there)."""
        registry = Registry(discover=False)
        registry.configure_store("down", DownStore())
        registry.configure_limiter("api", "1/minute", store="down")
        allow = Engine(limiter="api", registry=registry)
        deny = Engine(limiter="api", registry=registry, on_store_error="deny")
        assert allow.check(view()).allowed and (await allow.check_async(view())).allowed
        assert not deny.check(view()).allowed and not (await deny.check_async(view())).allowed

    def test_settings_shaped_like_a_file_are_checked_all_or_nothing(self) -> None:
        registry = Registry(discover=False)
        good = {"limits": "1/minute"}
        with pytest.raises(ConfigError, match=r"settings: \[limiters.b\] unknown field 'limts' "):
            registry.configure(
                {"limiters": {"a": good, "b": {"limts": "1/minute"}}}, source="settings"
            )
        with pytest.raises(ConfigError, match=r"unknown table 'limiter' \(did you mean"):
            registry.configure({"limiter": {"a": good}}, source="settings")
        assert registry.list_limiters() == {}
