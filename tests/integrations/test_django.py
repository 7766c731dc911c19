"""Django middleware and view decorator, driven by Django's test clients.

Django is configured by a module fixture that restores the unconfigured settings afterwards, so
nothing leaks into other test modules; each test gets a fresh engine through
``override_settings(RATEKEEPER=...)``.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

import ratekeeper.integrations.django as rk_django
from ratekeeper.integrations import cost_from_header, header
from ratekeeper.integrations.django import ratelimit, ratelimit_exempt
from ratekeeper.testing import FakeClock

from .conftest import TIERS, AsyncDownStore, DownStore, tier_of

MIDDLEWARE = [
    "tests.integrations.test_django.FakeAuthMiddleware",
    "ratekeeper.integrations.django.RateLimitMiddleware",
]


class FakeAuthMiddleware:
    """Sets ``request.user`` from an ``X-User`` header (stands in for django.contrib.auth)."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        request.user = request.headers.get("X-User")
        return self.get_response(request)


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("index")


async def async_index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("async index")


@ratelimit("1/minute")
def limited(request: HttpRequest) -> HttpResponse:
    return HttpResponse("limited")


@ratelimit("1/minute")
async def async_limited(request: HttpRequest) -> HttpResponse:
    return HttpResponse("async limited")


@ratelimit_exempt
def exempt(request: HttpRequest) -> HttpResponse:
    return HttpResponse("exempt")


@ratelimit("2/minute", scope="writes")
def write_a(request: HttpRequest) -> HttpResponse:
    return HttpResponse("a")


@ratelimit("2/minute", scope="writes")
def write_b(request: HttpRequest) -> HttpResponse:
    return HttpResponse("b")


@ratelimit("10/minute", cost=cost_from_header("X-Cost"))
def costly(request: HttpRequest) -> HttpResponse:
    return HttpResponse("costly")


@ratelimit(
    lambda request: TIERS[tier_of(request.headers.get("X-API-Key"))], key=header("X-API-Key")
)
def tiered(request: HttpRequest) -> HttpResponse:
    return HttpResponse("tiered")


async def tenant_key(request: HttpRequest) -> str:
    return "tenant:" + request.headers.get("X-Tenant", "")


@ratelimit("1/minute", key=tenant_key)
def by_tenant(request: HttpRequest) -> HttpResponse:
    return HttpResponse("tenant")


urlpatterns = [
    path("", index),
    path("async/", async_index),
    path("limited/", limited),
    path("async-limited/", async_limited),
    path("exempt/", exempt),
    path("health/", index),
    path("a/", write_a),
    path("b/", write_b),
    path("costly/", costly),
    path("tiered/", tiered),
    path("tenant/", by_tenant),
]


@pytest.fixture(scope="module", autouse=True)
def django_settings() -> Iterator[None]:
    import django
    from django.conf import settings
    from django.utils.functional import empty

    saved = settings._wrapped
    settings._wrapped = empty
    settings.configure(
        DEBUG=False,
        SECRET_KEY="ratekeeper-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=MIDDLEWARE,
        INSTALLED_APPS=[],
        USE_TZ=True,
        RATEKEEPER={},
    )
    django.setup()
    yield
    settings._wrapped = saved
    rk_django._engine = None


def config(**options: Any) -> Any:
    options.setdefault("CLOCK", FakeClock())
    return override_settings(RATEKEEPER=options)


def test_default_limits_429_and_headers() -> None:
    clock = FakeClock()
    with config(DEFAULT_LIMITS="2/minute", CLOCK=clock):
        c = Client()
        r = c.get("/")
        assert r.status_code == 200 and r.content == b"index"
        assert r["X-RateLimit-Remaining"] == "1"
        assert r["RateLimit-Policy"] == '"2-per-60s";q=2;w=60'
        assert c.get("/").status_code == 200
        r = c.get("/")
        assert r.status_code == 429
        assert r["Retry-After"] == "30" and r["RateLimit"] == '"2-per-60s";r=0;t=30'
        assert r.json()["error"] == "rate_limit_exceeded"
        clock.advance(30)
        assert c.get("/").status_code == 200


async def test_async_stack_and_async_views() -> None:
    with config(DEFAULT_LIMITS="2/minute"):
        c = AsyncClient()
        r = await c.get("/async/")
        assert r.status_code == 200 and r["X-RateLimit-Remaining"] == "1"
        assert (await c.get("/async/")).status_code == 200
        assert (await c.get("/async/")).status_code == 429
    with config():
        c = AsyncClient()
        r = await c.get("/async-limited/")
        assert r.status_code == 200 and r["X-RateLimit-Limit"] == "1"
        r = await c.get("/async-limited/")
        assert r.status_code == 429 and r["Retry-After"] == "60"


def test_view_decorator_sync_and_async_views_in_sync_stack() -> None:
    with config():
        c = Client()
        for url in ("/limited/", "/async-limited/"):
            r = c.get(url)
            assert r.status_code == 200 and r["X-RateLimit-Limit"] == "1"
            r = c.get(url)
            assert r.status_code == 429 and r["Retry-After"] == "60"
        assert c.get("/").status_code == 200  # no default limits configured: not limited
        assert "RateLimit" not in c.get("/")


def test_exempt_view_and_paths() -> None:
    with config(DEFAULT_LIMITS="1/minute", EXEMPT_PATHS=["/health/"]):
        c = Client()
        for url in ("/exempt/", "/health/"):
            for _ in range(3):
                r = c.get(url)
                assert r.status_code == 200 and "RateLimit" not in r
        assert c.get("/").status_code == 200
        assert c.get("/").status_code == 429
        assert c.get("/nowhere/").status_code == 429  # unknown URLs count too


def test_costs_and_shared_scope() -> None:
    with config():
        c = Client()
        assert c.get("/costly/", headers={"X-Cost": "9"})["X-RateLimit-Remaining"] == "1"
        assert c.get("/costly/", headers={"X-Cost": "?"}).status_code == 200
        assert c.get("/costly/", headers={"X-Cost": "1"}).status_code == 429
        assert [c.get(u).status_code for u in ("/a/", "/b/", "/a/")] == [200, 200, 429]


def test_dynamic_tiers_and_async_key_function() -> None:
    with config():
        c = Client()
        for api_key, allowed in (("free-1", 2), ("pro-1", 5), ("enterprise-1", 7)):
            codes = [
                c.get("/tiered/", headers={"X-API-Key": api_key}).status_code for _ in range(7)
            ]
            assert codes == [200] * allowed + [429] * (7 - allowed)
        assert c.get("/tenant/", headers={"X-Tenant": "t1"}).status_code == 200
        assert c.get("/tenant/", headers={"X-Tenant": "t1"}).status_code == 429
        assert c.get("/tenant/", headers={"X-Tenant": "t2"}).status_code == 200


def test_settings_key_by_dotted_path_and_user() -> None:
    with config(DEFAULT_LIMITS="1/minute", KEY="ratekeeper.integrations.user"):
        c = Client()
        assert c.get("/", headers={"X-User": "alice"}).status_code == 200
        assert c.get("/", headers={"X-User": "alice"}).status_code == 429
        assert c.get("/", headers={"X-User": "bob"}).status_code == 200


def test_settings_rates_with_dots_are_rates() -> None:
    with config(DEFAULT_LIMITS="1 per 1.5 minutes"):
        c = Client()
        assert [c.get("/").status_code for _ in range(2)] == [200, 429]


def test_settings_rules_shared_budget() -> None:
    rules = [{"limit": "1/minute", "scope": "pages", "paths": ["/", "/async/"]}]
    with config(RULES=rules):
        c = Client()
        assert c.get("/").status_code == 200
        assert c.get("/async/").status_code == 429


def test_spoofing_and_trusted_proxy() -> None:
    with config(DEFAULT_LIMITS="1/minute", TRUSTED_PROXIES=["10.0.0.0/8"]):
        c = Client()
        assert (
            c.get("/", REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code
            == 200
        )
        assert (
            c.get("/", REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR="2.2.2.2").status_code
            == 429
        )
        assert c.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 200
        assert c.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 429
        assert c.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="x,,y").status_code == 200


def test_store_outage_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, "ratekeeper"),
        config(DEFAULT_LIMITS="1/minute", STORE=DownStore()),
    ):
        c = Client()
        assert [c.get("/").status_code for _ in range(3)] == [200] * 3
        assert [c.get("/limited/").status_code for _ in range(3)] == [200] * 3
    assert "unavailable" in caplog.text


async def test_store_outage_fails_open_async(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, "ratekeeper"),
        config(DEFAULT_LIMITS="1/minute", STORE=AsyncDownStore()),
    ):
        c = AsyncClient()
        assert [(await c.get("/async/")).status_code for _ in range(3)] == [200] * 3
    assert "unavailable" in caplog.text


def test_on_denied_hook_and_disabled() -> None:
    def on_denied(request: HttpRequest, decision: Any) -> HttpResponse:
        return JsonResponse({"wait": decision.retry_after}, status=429)

    with config(DEFAULT_LIMITS="1/minute", ON_DENIED=on_denied):
        c = Client()
        c.get("/")
        r = c.get("/")
        assert r.status_code == 429 and r.json() == {"wait": 60.0}
    with config(DEFAULT_LIMITS="1/minute", ENABLED=False):
        c = Client()
        assert [c.get("/limited/").status_code for _ in range(3)] == [200] * 3
        assert [c.get("/").status_code for _ in range(3)] == [200] * 3


def test_bad_settings_fail_clearly() -> None:
    from ratekeeper import ConfigError

    with config(DEFAULT_LIMITS="1/fortnight"), pytest.raises(ConfigError, match="fortnight"):
        rk_django.get_engine()
    with config(NO_SUCH_OPTION=1), pytest.raises(ConfigError, match="no_such_option"):
        rk_django.get_engine()
    with config(KEY="no.such.module"), pytest.raises(ConfigError, match="cannot import"):
        rk_django.get_engine()


class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[str, str]] = []

    def observe(self, event: Any) -> None:
        self.results.append((event.limiter, event.result))


RECORDER = Recorder()  # named in settings by its dotted path


def test_settings_names_rules_observers_and_registry() -> None:
    """``LIMITERS`` define names in ``REGISTRY`` (a dotted path works too), ``RULES`` may name
    one, ``OBSERVERS`` are objects or dotted paths; a misspelled field fails at middleware load."""
    from ratekeeper import ConfigError, Registry

    registry = Registry(discover=False)
    names = {"LIMITERS": {"pages": {"limits": "1/minute"}}, "REGISTRY": registry}
    rules = [{"limiter": "pages", "paths": ["/", "/async/"]}]
    with config(RULES=rules, OBSERVERS=[f"{__name__}.RECORDER"], **names):
        c = Client()
        assert [c.get("/").status_code, c.get("/async/").status_code] == [200, 429]
    assert RECORDER.results == [("pages", "allowed"), ("pages", "denied")]
    assert registry.get_limiter("pages").metrics().denied == 1
    typo = {"LIMITERS": {"pages": {"limts": "1/minute"}}, "REGISTRY": registry}
    with config(**typo), pytest.raises(ConfigError, match=r"settings.RATEKEEPER: .*'limts'"):
        rk_django.RateLimitMiddleware(index)


def test_a_path_remapped_by_a_new_urlconf_is_resolved_again() -> None:
    """The middleware remembers which paths lead to exempt views; a new URLconf (any setting
    change) makes it resolve them again."""
    other = types.ModuleType("ratekeeper_tests_other_urls")
    other.urlpatterns = [path("", exempt)]  # type: ignore[attr-defined]
    sys.modules[other.__name__] = other
    try:
        with config(DEFAULT_LIMITS="1/minute"):
            c = Client()
            assert c.get("/").status_code == 200
            assert c.get("/").status_code == 429  # "/" is the limited index view
            with override_settings(ROOT_URLCONF=other.__name__):
                for _ in range(3):  # "/" is now the exempt view
                    assert c.get("/").status_code == 200
            assert c.get("/").status_code == 429
    finally:
        del sys.modules[other.__name__]
