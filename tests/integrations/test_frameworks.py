"""Behaviours every framework adapter must share, written once and run through each framework's
own test client (Flask, Django, FastAPI, aiohttp): storage keys, headers with several limits,
costs and keys from untrusted input, and decorated views versus the default limits."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from ratekeeper import (
    AsyncChain,
    AsyncRateLimiter,
    Chain,
    ConfigError,
    RateLimiter,
    Registry,
    StoreUnavailable,
)
from ratekeeper.decision import Decision
from ratekeeper.events import Event
from ratekeeper.integrations import Engine, cost_from_header
from ratekeeper.stores import AsyncStore, Rule
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore
from ratekeeper.testing import FakeClock

FRAMEWORKS = ["flask", "django", "fastapi", "aiohttp"]
PEER = "203.0.113.7"
Routes = Mapping[str, dict[str, Any] | None]  # path -> the decorator's arguments, or undecorated


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive in every framework's client


@dataclass
class Client:
    """One app of one framework. ``peer`` is the client address the app sees; ``run`` runs an
    awaitable on the loop the app drives its asyncio store on."""

    get: Callable[..., Reply]
    peer: str
    run: Callable[[Awaitable[Any]], Any]
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def statuses(self, path: str, n: int, headers: dict[str, str] | None = None) -> list[int]:
        return [self.get(path, headers).status for _ in range(n)]


def _configure(options: dict[str, Any]) -> None:
    """Frameworks without settings: the ``names`` tables defined in code, in the registry."""
    if "names" in options:
        options["registry"].configure(options.pop("names"))


def _view_name(path: str) -> str:
    return "view_" + (re.sub(r"\W", "_", path).strip("_") or "root")


def _flask(default_limits: Any, routes: Routes, options: dict[str, Any]) -> Client:
    from flask import Flask

    from ratekeeper.integrations.flask import Limiter

    app = Flask(__name__)
    if "names" in options:
        app.config["RATEKEEPER"] = options.pop("names")
    limiter = Limiter(app, default_limits, **options)
    for path, decorator in routes.items():

        def view() -> str:
            return "ok"

        view.__name__ = view.__qualname__ = _view_name(path)
        if decorator is not None:
            view = limiter.limit(**decorator)(view)
        app.add_url_rule(path, view_func=view)
    client = app.test_client()

    def get(path: str, headers: dict[str, str] | None = None) -> Reply:
        r = client.get(path, headers=headers or {}, environ_base={"REMOTE_ADDR": PEER})
        return Reply(r.status_code, r.headers)

    return Client(get, PEER, limiter.engine.run_sync, [limiter.engine.close])


def _django(default_limits: Any, routes: Routes, options: dict[str, Any]) -> Client:
    from django.http import HttpRequest, HttpResponse
    from django.test import Client as DjangoClient
    from django.test import override_settings
    from django.urls import clear_url_caches
    from django.urls import path as url

    from ratekeeper.integrations.django import get_engine, ratelimit

    config = {name.upper(): value for name, value in options.pop("names", {}).items()}
    config.update((name.upper(), value) for name, value in options.items())
    override = override_settings(RATEKEEPER={"DEFAULT_LIMITS": default_limits, **config})
    override.enable()
    urlpatterns.clear()
    for path, decorator in routes.items():

        def view(request: HttpRequest) -> HttpResponse:
            return HttpResponse("ok")

        view.__name__ = view.__qualname__ = _view_name(path)
        if decorator is not None:
            view = ratelimit(**decorator)(view)
        urlpatterns.append(url(path.lstrip("/"), view))
    clear_url_caches()
    client = DjangoClient()

    def get(path: str, headers: dict[str, str] | None = None) -> Reply:
        r = client.get(path, headers=headers or {}, REMOTE_ADDR=PEER)
        return Reply(r.status_code, r.headers)

    def run(awaitable: Awaitable[Any]) -> Any:
        return get_engine().run_sync(awaitable)

    return Client(get, PEER, run, [lambda: get_engine().close(), override.disable])


def _fastapi(default_limits: Any, routes: Routes, options: dict[str, Any]) -> Client:
    from fastapi import FastAPI

    from ratekeeper.integrations.fastapi import Limiter

    _configure(options)
    limiter = Limiter(default_limits, **options)
    app = FastAPI()
    limiter.init_app(app)
    for path, decorator in routes.items():

        async def view() -> str:
            return "ok"

        view.__name__ = view.__qualname__ = _view_name(path)
        if decorator is not None:
            view = limiter.limit(**decorator)(view)
        app.add_api_route(path, view, methods=["GET"])
    loop = asyncio.new_event_loop()
    transport = httpx.ASGITransport(app=app, client=(PEER, 50000))
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def get(path: str, headers: dict[str, str] | None = None) -> Reply:
        r = loop.run_until_complete(client.get(path, headers=headers))
        return Reply(r.status_code, r.headers)

    def close() -> None:
        loop.run_until_complete(client.aclose())
        loop.close()

    return Client(get, PEER, loop.run_until_complete, [close])


def _aiohttp(default_limits: Any, routes: Routes, options: dict[str, Any]) -> Client:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from ratekeeper.integrations.aiohttp import Limiter

    _configure(options)
    limiter = Limiter(default_limits, **options)
    app = web.Application(middlewares=[limiter.middleware])
    for path, decorator in routes.items():

        async def view(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        view.__name__ = view.__qualname__ = _view_name(path)
        if decorator is not None:
            view = limiter.limit(**decorator)(view)
        app.router.add_get(path, view)
    loop = asyncio.new_event_loop()
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"), loop=loop)
    loop.run_until_complete(client.start_server())

    def get(path: str, headers: dict[str, str] | None = None) -> Reply:
        async def call() -> Reply:
            r = await client.get(path, headers=headers)
            await r.read()
            return Reply(r.status, r.headers)

        return loop.run_until_complete(call())

    def close() -> None:
        loop.run_until_complete(client.close())
        loop.close()

    return Client(
        get, "127.0.0.1", loop.run_until_complete, [close]
    )  # a real socket: the peer is the loopback


BUILDERS = {"flask": _flask, "django": _django, "fastapi": _fastapi, "aiohttp": _aiohttp}
urlpatterns: list[Any] = []  # Django's URLconf for these tests (ROOT_URLCONF is this module)


@pytest.fixture(scope="module")
def django_settings() -> Iterator[None]:
    import django
    from django.conf import settings
    from django.utils.functional import empty

    import ratekeeper.integrations.django as rk_django

    saved = settings._wrapped
    settings._wrapped = empty
    settings.configure(
        DEBUG=False,
        SECRET_KEY="ratekeeper-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["ratekeeper.integrations.django.RateLimitMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
        RATEKEEPER={},
    )
    django.setup()
    yield
    settings._wrapped = saved
    rk_django._engine = None


@pytest.fixture(params=FRAMEWORKS)
def build(request: pytest.FixtureRequest) -> Iterator[Callable[..., Client]]:
    """``build(default_limits, routes={path: decorator kwargs or None}, **engine options)``."""
    framework: str = request.param
    if framework == "django":
        request.getfixturevalue("django_settings")
    clients: list[Client] = []

    def make(default_limits: Any = None, routes: Routes | None = None, **options: Any) -> Client:
        options.setdefault("clock", FakeClock())
        client = BUILDERS[framework](default_limits, routes or {"/": None}, options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        for cleanup in client.cleanups:
            cleanup()


class RecordingStore(MemoryStore):
    """A memory store that records the keys that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        self.keys.append(key)
        return super().hit(key, rule, cost, now)


def header_key(request: Any) -> Any:
    """A custom key from a header the client controls (every framework has ``.headers.get``)."""
    return request.headers.get("X-Client-Id")


# -- storage keys (issue 9, item 15) -------------------------------------------------------------


def test_a_forged_key_cannot_spend_a_client_address_budget(build: Callable[..., Client]) -> None:
    c = build("2/minute", key=header_key)
    forged = {"X-Client-Id": f"ip:{c.peer}"}  # requests without the header are keyed by address
    assert c.statuses("/", 3, forged) == [200, 200, 429]
    assert c.statuses("/", 3) == [200, 200, 429]  # the anonymous client's budget is intact


def test_scope_and_key_are_separate_components(build: Callable[..., Client]) -> None:
    routes = {
        "/x": {"limit": "1/minute", "scope": "a:b", "key": lambda request: "c"},
        "/y": {"limit": "1/minute", "scope": "a", "key": lambda request: "b:c"},
    }
    c = build(None, routes)
    assert [c.get("/x").status, c.get("/y").status] == [200, 200]
    assert [c.get("/x").status, c.get("/y").status] == [429, 429]


def test_what_reaches_the_store_is_namespaced_once(build: Callable[..., Client]) -> None:
    store = RecordingStore()
    c = build("5/minute", {"/": None, "/own": {"limit": "5/minute", "scope": "own"}}, store=store)
    c.get("/")
    c.get("/own")
    c.get("/", {"X-Client-Id": "ignored"})
    assert store.keys == [f"default:ip:{c.peer}", f"own:ip:{c.peer}", f"default:ip:{c.peer}"]


# -- headers with several limits (item 16) --------------------------------------------------------


def test_x_ratelimit_fields_describe_one_binding_limit(build: Callable[..., Client]) -> None:
    c = build("5/2s;30/minute", {"/": None, "/own": {"limit": "5/2s;30/minute"}})
    for path in ("/", "/own"):
        r = c.get(path)
        assert r.status == 200
        assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("5", "4")
        states = dict(re.findall(r'"([^"]+)";r=\d+;t=(\d+)', r.headers["RateLimit"]))
        assert states == {"5-per-2s": "1", "30-per-60s": "2"}
        assert r.headers["X-RateLimit-Reset"] == states["5-per-2s"]


# -- costs and keys from untrusted input (item 18) ------------------------------------------------


@pytest.mark.parametrize(
    "value", ["0", "0.000001", "1e-320", "-1", "nan", "inf", "x", pytest.param("1" * 99, id="long")]
)
def test_a_client_cost_header_cannot_make_requests_free(
    build: Callable[..., Client], value: str
) -> None:
    c = build("5/minute", cost=cost_from_header("X-Cost"))
    assert c.statuses("/", 7, {"X-Cost": value}) == [200] * 5 + [429] * 2


def test_a_key_that_is_not_a_string_keys_by_client_address(
    build: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    c = build("5/minute", key=lambda request: object())
    with caplog.at_level(logging.WARNING, "ratekeeper"):
        assert c.statuses("/", 7) == [200] * 5 + [429] * 2
    warnings = [r for r in caplog.records if "keying by client address" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per request


# -- decorated views and the default limits (item 19) ---------------------------------------------


def test_a_decorated_view_is_limited_instead_of_the_defaults(build: Callable[..., Client]) -> None:
    c = build("2/minute", {"/": None, "/own": {"limit": "5/minute"}})
    replies = [c.get("/own") for _ in range(6)]
    assert [r.status for r in replies] == [200] * 5 + [429]
    assert {r.headers["X-RateLimit-Limit"] for r in replies} == {"5"}
    assert c.statuses("/", 3) == [200, 200, 429]  # /own did not spend the default budget


# -- asyncio stores driven by every framework (item 6) --------------------------------------------


def _server_url(name: str) -> str:
    url = os.environ.get(name)
    if not url:
        pytest.fail(f"{name} is not set: run the tests with scripts/test", pytrace=False)
    return url


def _async_store(kind: str) -> AsyncStore:
    if kind == "redis":
        from ratekeeper.stores.redis import AsyncRedisStore

        url = _server_url("RATEKEEPER_REDIS_URL")
        return AsyncRedisStore.from_url(url, prefix=f"rktest:{uuid.uuid4().hex[:12]}")
    from ratekeeper.stores.nats import AsyncNatsStore

    url = _server_url("RATEKEEPER_NATS_URL")
    return AsyncNatsStore.from_url(url, bucket=f"rktest_{uuid.uuid4().hex[:10]}")


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_an_asyncio_store_object_under_every_framework(
    build: Callable[..., Client], kind: str
) -> None:
    """Flask and sync Django drive it on the engine's one loop thread: its connections stay
    valid from request to request (with ``asyncio.run`` per request every other Redis request
    failed with "Event loop is closed" and NATS let every request through)."""
    store = _async_store(kind)
    c = build("5/minute", store=store, on_store_error="raise", clock=None)
    try:
        assert c.statuses("/", 7) == [200] * 5 + [429] * 2
    finally:
        c.run(store.close())


class HangingStore:
    """An asyncio store whose server never answers (frozen, blackholed)."""

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    peek = hit

    async def reset(self, key: str, rule: Rule) -> None:
        await asyncio.Event().wait()

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        await asyncio.Event().wait()

    async def ping(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


HANGING_STORE_BOUND = 1.0  # seconds: the decision-latency contract


@pytest.mark.parametrize("build", ["flask", "django"], indirect=True)
@pytest.mark.parametrize(("policy", "status"), [("allow", 200), ("deny", 429)])
def test_blocking_requests_on_a_hanging_asyncio_store_are_answered_in_time(
    build: Callable[..., Client], policy: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    c = build("5/minute", store=HangingStore(), on_store_error=policy)
    replies: list[Reply] = []

    def call() -> None:
        replies.append(c.get("/"))

    threads = [threading.Thread(target=call) for _ in range(16)]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "ratekeeper"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANGING_STORE_BOUND * 5)
    elapsed = time.monotonic() - started
    assert [r.status for r in replies] == [status] * 16
    assert elapsed < HANGING_STORE_BOUND
    assert "unavailable" in caplog.text


# -- one rule spec (issue 10, item 3) -----------------------------------------------------------


def test_every_decorator_takes_the_same_rule_options(build: Callable[..., Client]) -> None:
    """``key``, ``cost``, ``scope``, ``methods`` and ``algorithm`` mean the same everywhere."""
    rule = {
        "limit": "3/minute",
        "key": header_key,
        "cost": 2,
        "scope": "shared",
        "methods": ["GET"],
        "algorithm": "gcra",
    }
    c = build(None, {"/a": rule, "/b": rule, "/post-only": {**rule, "methods": ["POST"]}})
    tenant = {"X-Client-Id": "t1"}
    assert c.get("/a", tenant).status == 200  # cost 2 of 3
    assert c.get("/b", tenant).status == 429  # the same budget (scope), the same key
    assert c.get("/b", {"X-Client-Id": "t2"}).status == 200  # another key
    assert c.statuses("/post-only", 3, tenant) == [200] * 3  # a GET: the rule does not apply


def _decorators() -> dict[str, Callable[..., Any]]:
    from ratekeeper.integrations import aiohttp, django, fastapi, flask

    return {
        "flask": flask.Limiter().limit,
        "django": django.ratelimit,
        "fastapi": fastapi.Limiter().limit,
        "aiohttp": aiohttp.Limiter().limit,
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_unknown_decorator_keyword_fails_when_decorating(framework: str) -> None:
    decorator = _decorators()[framework]
    with pytest.raises(TypeError, match="scoep"):
        decorator("1/minute", scoep="typo")(lambda request: None)


# -- named limiters, observers and shadow mode (issue 11 item 5, issue 12 items 1 and 6) ---------


class Recorder:
    """An observer keeping the (limiter name, result) of every decision."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def observe(self, event: Event) -> None:
        self.events.append(event)

    def hits(self) -> list[tuple[str, str]]:
        return [(e.limiter, e.result) for e in self.events if e.kind == "hit"]


def _metrics(registry: Registry, name: str) -> dict[str, int]:
    """The named limiter's counts, both faces added up (each framework uses one of them)."""
    faces = [registry.get_limiter(name), registry.get_async_limiter(name)]
    fields = ("allowed", "denied", "shadow_denied")
    return {f: sum(getattr(face.metrics(), f) for face in faces) for f in fields}


def _scope(path: str) -> str:
    """The scope (and limiter name) of a view decorated without ``scope``."""
    return f"{__name__}.{_view_name(path)}"


def test_decorators_and_defaults_use_a_named_limiter(build: Callable[..., Client]) -> None:
    """``limiter="api"``: the registry limiter's limits, one budget wherever it is used."""
    registry = Registry(discover=False)
    registry.configure_limiter("api", "3/minute", algorithm="fixed_window")
    routes = {"/": None, "/a": {"limiter": "api"}, "/b": {"limiter": "api", "cost": 2}}
    c = build(None, routes, registry=registry, limiter="api")
    assert c.get("/b").status == 200  # cost 2 of 3
    replies = [c.get("/"), c.get("/a")]
    assert [r.status for r in replies] == [200, 429]  # the same budget for the defaults
    assert {r.headers["X-RateLimit-Limit"] for r in replies} == {"3"}
    assert _metrics(registry, "api") == {"allowed": 2, "denied": 1, "shadow_denied": 0}


@pytest.mark.parametrize("build", ["flask", "django"], indirect=True)
def test_names_come_from_the_frameworks_settings(build: Callable[..., Client]) -> None:
    """Flask's ``app.config["RATEKEEPER"]`` and Django's ``RATEKEEPER`` settings hold stores
    and limiters shaped like a config file."""
    registry = Registry(discover=False)
    names = {
        "stores": {"local": {"url": "memory://"}},
        "limiters": {"login": {"limits": "2/minute", "store": "local"}},
    }
    c = build(None, {"/login": {"limiter": "login"}}, registry=registry, names=names)
    assert c.statuses("/login", 3) == [200, 200, 429]
    assert registry.list_limiters()["login"]["store"] == "local"
    assert _metrics(registry, "login")["denied"] == 1


def _setups(framework: str, registry: Registry) -> dict[str, Callable[[], object]]:
    """Each way a framework names a limiter at setup, with the misspelled name "apii"."""

    def view(request: Any = None) -> str:
        return "ok"

    if framework == "flask":
        from flask import Flask

        from ratekeeper.integrations import flask

        def factory() -> object:  # decorated before init_app: checked by init_app
            limiter = flask.Limiter(registry=registry)
            limiter.limit(limiter="apii")(view)
            return limiter.init_app(Flask(__name__))

        return {
            "decorator": lambda: flask.Limiter(Flask(__name__), registry=registry).limit(
                limiter="apii"
            )(view),
            "factory": factory,
            "defaults": lambda: flask.Limiter(Flask(__name__), limiter="apii", registry=registry),
        }
    if framework == "django":
        from django.test import override_settings

        from ratekeeper.integrations import django

        def in_settings(setup: Callable[[], object], **extra: Any) -> Callable[[], object]:
            def run() -> object:
                with override_settings(RATEKEEPER={"REGISTRY": registry, **extra}):
                    return setup()

            return run

        return {
            "decorator": in_settings(lambda: django.ratelimit(limiter="apii")(view)),
            "defaults": in_settings(lambda: django.RateLimitMiddleware(view), LIMITER="apii"),
        }
    if framework == "fastapi":
        from ratekeeper.integrations import fastapi

        return {
            "decorator": lambda: fastapi.Limiter(registry=registry).limit(limiter="apii")(view),
            "dependency": lambda: fastapi.RateLimit(limiter="apii", registry=registry),
            "defaults": lambda: fastapi.Limiter(limiter="apii", registry=registry),
            "middleware": lambda: fastapi.RateLimitMiddleware(
                view, limiter="apii", registry=registry
            ),
        }
    from ratekeeper.integrations import aiohttp

    return {
        "decorator": lambda: aiohttp.Limiter(registry=registry).limit(limiter="apii")(view),
        "defaults": lambda: aiohttp.Limiter(limiter="apii", registry=registry),
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_unknown_limiter_name_fails_at_setup(
    framework: str, request: pytest.FixtureRequest
) -> None:
    if framework == "django":
        request.getfixturevalue("django_settings")
    registry = Registry(discover=False)
    registry.configure_limiter("api", "1/minute")
    for where, setup in _setups(framework, registry).items():
        with pytest.raises(ConfigError, match=r"'apii' \(did you mean 'api'\?\)"):
            setup()
            pytest.fail(f"{framework} {where}: no ConfigError")


def test_observers_see_each_rule_under_its_scope(build: Callable[..., Client]) -> None:
    """The engine's observers, and the registry's (present and future), get every decision,
    named "default" for the default limits and by scope for a decorated view."""
    registry = Registry(discover=False)
    early, late, own = Recorder(), Recorder(), Recorder()
    registry.observe(early)
    c = build(
        "1/minute", {"/": None, "/own": {"limit": "1/minute"}}, registry=registry, observers=[own]
    )
    assert [c.get("/").status, c.get("/own").status] == [200, 200]
    registry.observe(late)
    assert [c.get("/").status, c.get("/own").status] == [429, 429]
    first = [("default", "allowed"), (_scope("/own"), "allowed")]
    then = [("default", "denied"), (_scope("/own"), "denied")]
    assert own.hits() == early.hits() == first + then
    assert late.hits() == then


def test_shadow_mode_never_denies_and_counts_would_be_denials(
    build: Callable[..., Client],
) -> None:
    recorder = Recorder()
    c = build(
        "2/minute", {"/": None, "/own": {"limit": "1/minute"}}, shadow=True, observers=[recorder]
    )
    replies = [c.get("/") for _ in range(4)] + [c.get("/own") for _ in range(2)]
    assert [r.status for r in replies] == [200] * 6
    for reply in replies:  # shadow mode shows nothing to clients
        for name in ("Retry-After", "RateLimit", "RateLimit-Policy", "X-RateLimit-Limit"):
            assert reply.headers.get(name) is None
    assert recorder.hits() == [
        ("default", "allowed"),
        ("default", "allowed"),
        ("default", "shadow_denied"),
        ("default", "shadow_denied"),
        (_scope("/own"), "allowed"),
        (_scope("/own"), "shadow_denied"),
    ]


def test_shadow_rules_and_candidate_limits(build: Callable[..., Client]) -> None:
    """Per rule: ``shadow=True`` never denies; ``shadow_limits`` are tried beside the enforced
    limits, counted, never denying; a named limiter defined in shadow mode never denies."""
    registry = Registry(discover=False)
    registry.configure_limiter("trial", "1/minute", shadow=True)
    recorder = Recorder()
    routes = {
        "/try": {"limit": "1/minute", "shadow": True, "scope": "try"},
        "/candidate": {"limit": "3/minute", "shadow_limits": "1/minute", "scope": "candidate"},
        "/named": {"limiter": "trial"},
    }
    c = build(None, routes, registry=registry, observers=[recorder])
    assert c.statuses("/try", 3) == [200] * 3
    replies = [c.get("/candidate") for _ in range(4)]
    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert {r.headers["X-RateLimit-Limit"] for r in replies} == {"3"}  # the enforced limit
    assert "Retry-After" in replies[-1].headers
    assert c.statuses("/named", 3) == [200] * 3
    assert recorder.hits() == [
        ("try", "allowed"),
        ("try", "shadow_denied"),
        ("try", "shadow_denied"),
        ("candidate", "allowed"),
        ("candidate", "shadow_denied"),
        ("candidate", "shadow_denied"),
        ("candidate", "denied"),
        ("trial", "allowed"),
        ("trial", "shadow_denied"),
        ("trial", "shadow_denied"),
    ]
    assert _metrics(registry, "trial") == {"allowed": 1, "denied": 0, "shadow_denied": 2}


# -- chains wherever a limiter goes (issue 13, point 1) ------------------------------------------

TENANT_USER_KEYS = ["tenant:{header[X-Tenant]}", "user:{header[X-User]}"]


def _chain(kind: str, store: Any = None, **options: Any) -> Any:
    """A two-level chain (tenant 3/minute, user 2/minute on a sliding window) on one store:
    ``Chain`` (``kind="sync"``) or ``AsyncChain`` (``"async"``)."""
    store = MemoryStore() if store is None else store
    if kind == "async" and isinstance(store, MemoryStore):  # one asyncio face for every level
        store = AsyncMemoryStore(store)
    options.setdefault("clock", FakeClock())
    make = RateLimiter if kind == "sync" else AsyncRateLimiter
    levels = (
        make("3/minute", store=store, name="tenant", **options),
        make("2/minute", algorithm="sliding_window", store=store, name="user", **options),
    )
    return Chain(*levels) if kind == "sync" else AsyncChain(*levels)  # type: ignore[arg-type]


def _as(tenant: str, user: str) -> dict[str, str]:
    return {"X-Tenant": tenant, "X-User": user}


def _check_tenant_and_user_levels(c: Client, path: str) -> None:
    """The chain's levels, all-or-nothing: the user's 2, then the tenant's 3; a denial at one
    level takes nothing from the other; headers list both levels, X-RateLimit-* the binding."""
    first = c.get(path, _as("acme", "1"))
    assert first.status == 200
    assert first.headers["RateLimit-Policy"] == '"3-per-60s";q=3;w=60, "2-per-60s";q=2;w=60'
    assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == (
        "2",
        "1",
    )
    assert c.get(path, _as("acme", "1")).status == 200
    denied = c.get(path, _as("acme", "1"))
    assert denied.status == 429 and denied.headers["X-RateLimit-Limit"] == "2"
    assert "Retry-After" in denied.headers
    assert c.get(path, _as("acme", "2")).status == 200  # the user's denial took nothing
    tenant = c.get(path, _as("acme", "3"))
    assert tenant.status == 429 and tenant.headers["X-RateLimit-Limit"] == "3"
    assert c.get(path, _as("globex", "3")).status == 200  # another tenant, the same user id


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_chain_in_a_decorator(build: Callable[..., Client], kind: str) -> None:
    """Sync and async chains under every framework (an ``AsyncChain`` under Flask and sync
    Django runs on the engine's loop, a ``Chain`` under asyncio on its memory store directly)."""
    chain = _chain(kind)
    c = build(None, {"/": {"limiter": chain, "keys": TENANT_USER_KEYS}})
    _check_tenant_and_user_levels(c, "/")


def test_a_chain_as_the_default_limits_with_key_functions_per_level(
    build: Callable[..., Client],
) -> None:
    """``limiter=chain`` for the default limits (the middleware's, Django's ``LIMITER``), one key
    function per level; a decorated view is limited instead of the defaults, as ever."""
    keys = [
        lambda request: request.headers.get("X-Tenant"),
        lambda request: request.headers.get("X-User"),
    ]
    c = build(None, {"/": None, "/own": {"limit": "5/minute"}}, limiter=_chain("sync"), keys=keys)
    _check_tenant_and_user_levels(c, "/")
    assert c.statuses("/own", 6, _as("acme", "1")) == [200] * 5 + [429]


def test_one_chain_is_one_budget_wherever_it_is_used(build: Callable[..., Client]) -> None:
    """Like a named limiter, a chain is one budget per key in every view using it (scope
    ``"chain"``); ``scope=`` gives a view its own; without ``keys`` the rule's key keys every
    level (the hybrid on one key)."""
    chain = _chain("sync")
    routes = {
        "/a": {"limiter": chain},
        "/b": {"limiter": chain},
        "/c": {"limiter": chain, "scope": "c"},
    }
    c = build(None, routes)
    assert [c.get(p).status for p in ("/a", "/b", "/a", "/c", "/c", "/c")] == [
        200,
        200,
        429,
        200,
        200,
        429,
    ]


def test_key_templates_fill_their_fields_from_the_request(build: Callable[..., Client]) -> None:
    """``{ip}``, ``{key}`` (the rule's key function), ``{method}``, ``{path}``; a field without a
    value in a request (a missing header) keys that level by client address, logged."""
    store = RecordingStore()
    original = store.apply_checks
    keys: list[list[str]] = []

    def recording(checks: Any, now: float, write: bool = True) -> Any:
        keys.append([check.key for check in checks])
        return original(checks, now, write)

    store.apply_checks = recording  # type: ignore[method-assign]
    chain = _chain("sync", store)
    templates = ["{method} {path} from {ip}", "t:{header[X-Tenant]}/{key}"]
    c = build(None, {"/p": {"limiter": chain, "keys": templates, "key": header_key}})
    c.get("/p", {"X-Tenant": "a:b", "X-Client-Id": "42"})
    c.get("/p")
    # the fields escaped in the template, then the whole key in the storage key (as any key)
    assert keys == [
        [f"chain:custom:GET /p from {c.peer}", "chain:custom:t%3Aa%253Ab/custom%253A42"],
        [f"chain:custom:GET /p from {c.peer}", f"chain:ip:{c.peer}"],
    ]


def test_chains_report_shadow_mode_observers_and_outages_as_limiters_do(
    build: Callable[..., Client],
) -> None:
    """Levels in shadow mode: never a 429 nor a header, each would-be denial counted at the
    level that denied; the engine's observers see every level's decision under its name; a
    store outage is the integration's ``on_store_error``."""
    recorder = Recorder()
    shadow = _chain("sync", shadow=True)
    routes = {"/shadow": {"limiter": shadow, "keys": TENANT_USER_KEYS}}
    c = build(None, routes, observers=[recorder])
    replies = [c.get("/shadow", _as("acme", "1")) for _ in range(3)]
    assert [r.status for r in replies] == [200] * 3
    assert all(r.headers.get("RateLimit") is None for r in replies)
    assert recorder.hits() == [
        ("tenant", "allowed"),
        ("user", "allowed"),
        ("tenant", "allowed"),
        ("user", "allowed"),
        ("user", "shadow_denied"),
    ]
    assert shadow.limiters[1].metrics().shadow_denied == 1


class FlakyStore(MemoryStore):
    """A memory store whose ``apply_checks`` fails while ``down``."""

    down = False

    def apply_checks(self, checks: Any, now: float, write: bool = True) -> Any:
        if self.down:
            raise StoreUnavailable("connection refused (test outage)")
        return super().apply_checks(checks, now, write)


@pytest.mark.parametrize(("policy", "status"), [("allow", 200), ("deny", 429)])
def test_a_chain_s_store_outage_is_the_integration_s_on_store_error(
    build: Callable[..., Client], policy: str, status: int
) -> None:
    store = FlakyStore()
    c = build(None, {"/": {"limiter": _chain("sync", store)}}, on_store_error=policy)
    assert c.get("/").status == 200
    store.down = True
    reply = c.get("/")
    assert reply.status == status and reply.headers.get("RateLimit") is None


def test_a_bad_chain_rule_fails_when_decorating() -> None:
    engine, chain = Engine(), _chain("sync")
    bad: list[dict[str, Any]] = [
        {"limiter": chain, "keys": ["one"]},  # two levels
        {"limiter": chain, "keys": ["{tenant}", "x"]},  # not a field
        {"limiter": chain, "keys": ["{header}", "x"]},  # a header needs its name
        {"limiter": chain, "keys": ["{ip!r}", "x"]},
        {"limiter": chain, "keys": "abc"},
        {"limiter": chain, "keys": [1, 2]},
        {"limiter": chain, "algorithm": "gcra"},
        {"limiter": chain, "shadow": True},
        {"keys": ["a"]},  # keys without a chain
    ]
    for options in bad:
        with pytest.raises(ConfigError):
            engine.rule("1/minute" if "limiter" not in options else None, **options)
            pytest.fail(f"no ConfigError for {options}")
    with pytest.raises(ConfigError, match="chain"):
        engine.rule("1/minute", limiter=chain)
    with pytest.raises(ConfigError, match="shadow mode"):
        Engine(shadow=True).rule(limiter=chain)
    mixed = _chain("sync")
    mixed.limiters[0].shadow = True
    with pytest.raises(ConfigError, match="all be in shadow mode"):
        engine.rule(limiter=mixed)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_chain_on_redis(build: Callable[..., Client], kind: str) -> None:
    """A ``Chain`` on a ``RedisStore`` (in a worker thread under asyncio) and an ``AsyncChain``
    on an ``AsyncRedisStore`` (on the engine's loop under Flask and sync Django), one script per
    request, under every framework."""
    from ratekeeper.stores.redis import AsyncRedisStore, RedisStore

    url, prefix = _server_url("RATEKEEPER_REDIS_URL"), f"rktest:{uuid.uuid4().hex[:12]}"
    store: Any = (RedisStore if kind == "sync" else AsyncRedisStore).from_url(url, prefix=prefix)
    chain = _chain(kind, store, clock=None)
    c = build(None, {"/": {"limiter": chain, "keys": TENANT_USER_KEYS}}, clock=None)
    try:
        _check_tenant_and_user_levels(c, "/")
    finally:
        if kind == "sync":
            store.close()
        else:
            c.run(store.close())
