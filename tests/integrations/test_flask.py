"""Flask extension, driven by Flask's test client."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask, Response, g, jsonify, request

from ratekeeper import Decision, RateLimiter
from ratekeeper.integrations import api_key, cost_from_header, user
from ratekeeper.integrations.flask import Limiter
from ratekeeper.testing import FakeClock

from .conftest import TIERS, DownStore, tier_of

PEER = {"REMOTE_ADDR": "203.0.113.7"}


def make_app(**options: Any) -> tuple[Flask, Limiter, FakeClock]:
    clock = FakeClock()
    app = Flask(__name__)
    limiter = Limiter(app, clock=clock, **options)
    return app, limiter, clock


def get(app: Flask, path: str, peer: str = "203.0.113.7", **kwargs: Any) -> Any:
    return app.test_client().get(path, environ_base={"REMOTE_ADDR": peer}, **kwargs)


def test_defaults_429_headers_and_retry_after() -> None:
    app, _, clock = make_app(default_limits="2/minute")

    @app.get("/")
    def index() -> str:
        return "hi"

    r = get(app, "/")
    assert r.status_code == 200 and r.text == "hi"
    assert r.headers["X-RateLimit-Remaining"] == "1"
    assert r.headers["RateLimit-Policy"] == '"2-per-60s";q=2;w=60'
    assert get(app, "/").status_code == 200
    r = get(app, "/")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "30"
    assert r.headers["RateLimit"] == '"2-per-60s";r=0;t=30'
    assert r.json is not None and r.json["retry_after"] == 30
    clock.advance(30)
    assert get(app, "/").status_code == 200
    assert get(app, "/missing").status_code == 429  # 404s count against the defaults too


def test_route_limits_sync_and_async_views() -> None:
    app, limiter, _ = make_app(default_limits="100/minute")

    @app.get("/sync")
    @limiter.limit("1/minute")
    def sync_view() -> str:
        return "sync"

    @limiter.limit("1/minute")  # above @app.route works too
    @app.get("/async")
    async def async_view() -> str:
        return "async"

    for path in ("/sync", "/async"):
        r = get(app, path)
        assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "1"
        r = get(app, path)
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"


def test_override_defaults_false_counts_both() -> None:
    app, limiter, _ = make_app(default_limits="2/minute")

    @app.get("/both")
    @limiter.limit("5/minute", override_defaults=False)
    def both() -> str:
        return "both"

    assert [get(app, "/both").status_code for _ in range(3)] == [200, 200, 429]


def test_exempt_views_and_paths() -> None:
    app, limiter, _ = make_app(default_limits="1/minute", exempt_paths=["/static/"])

    @app.get("/health")
    @limiter.exempt
    def health() -> str:
        return "ok"

    for _ in range(3):
        r = get(app, "/health")
        assert r.status_code == 200 and "RateLimit" not in r.headers
        r = get(app, "/static/app.css")
        assert r.status_code == 404 and "RateLimit" not in r.headers  # not a 429
    app.config["RATEKEEPER_ENABLED"] = False
    assert get(app, "/x").status_code == 404


def test_costs() -> None:
    app, limiter, _ = make_app()

    @app.post("/batch")
    @limiter.limit("10/minute", cost=cost_from_header("X-Batch-Size"))
    def batch() -> str:
        return "done"

    @app.post("/expensive")
    @limiter.limit("10/minute", cost=lambda req: int(req.args.get("n", 1)))
    def expensive() -> str:
        return "done"

    c = app.test_client()
    assert c.post("/batch", headers={"X-Batch-Size": "8"}).headers["X-RateLimit-Remaining"] == "2"
    assert c.post("/batch", headers={"X-Batch-Size": "oops"}).status_code == 200
    assert c.post("/batch", headers={"X-Batch-Size": "2"}).status_code == 429
    assert c.post("/expensive?n=4").headers["X-RateLimit-Remaining"] == "6"
    assert c.post("/expensive?n=x").status_code == 200  # cost function raised: cost 1


def test_dynamic_tiers_and_async_key() -> None:
    async def key(req: Any) -> str:
        return "tenant:" + req.headers.get("X-API-Key", "anon")

    app, limiter, _ = make_app()

    @app.get("/data")
    @limiter.limit(lambda req: TIERS[tier_of(req.headers.get("X-API-Key"))], key=key)
    def data() -> str:
        return "data"

    c = app.test_client()
    for api_key_value, allowed in (("free-1", 2), ("pro-1", 5), ("enterprise-1", 7)):
        codes = [c.get("/data", headers={"X-API-Key": api_key_value}).status_code for _ in range(7)]
        assert codes == [200] * allowed + [429] * (7 - allowed)


def test_shared_scope_and_user_key() -> None:
    app = Flask(__name__)

    @app.before_request  # registered before init_app, so it runs before the limiter's hook
    def login() -> None:
        if "X-User" in request.headers:
            g.user = request.headers["X-User"]

    limiter = Limiter(clock=FakeClock(), key=user(fallback=api_key()))
    limiter.init_app(app)

    @app.post("/a")
    @limiter.limit("2/minute", scope="writes")
    def a() -> str:
        return "a"

    @app.post("/b")
    @limiter.limit("2/minute", scope="writes")
    def b() -> str:
        return "b"

    c = app.test_client()
    alice = {"X-User": "alice"}
    assert c.post("/a", headers=alice).status_code == 200
    assert c.post("/b", headers=alice).status_code == 200
    assert c.post("/a", headers=alice).status_code == 429
    assert c.post("/a", headers={"X-User": "bob"}).status_code == 200


def test_spoofing_and_trusted_proxy() -> None:
    app, _, _ = make_app(default_limits="1/minute", trusted_proxies=["10.0.0.0/8"])

    @app.get("/")
    def index() -> str:
        return "hi"

    spoof1 = {"X-Forwarded-For": "1.1.1.1"}
    spoof2 = {"X-Forwarded-For": "2.2.2.2"}
    assert get(app, "/", "198.51.100.1", headers=spoof1).status_code == 200
    assert get(app, "/", "198.51.100.1", headers=spoof2).status_code == 429
    assert get(app, "/", "10.0.0.1", headers=spoof1).status_code == 200
    assert get(app, "/", "10.0.0.1", headers=spoof2).status_code == 200
    assert get(app, "/", "10.0.0.9", headers=spoof2).status_code == 429


def test_store_outage_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    app, _, _ = make_app(default_limits="1/minute", store=DownStore())

    @app.get("/")
    def index() -> str:
        return "hi"

    with caplog.at_level(logging.WARNING, "ratekeeper"):
        assert [get(app, "/").status_code for _ in range(3)] == [200] * 3
    assert "unavailable" in caplog.text


def test_on_denied_and_enforce_in_view() -> None:
    def on_denied(req: Any, decision: Decision) -> Response:
        return jsonify(message=f"wait {decision.retry_after:.0f}s"), 429  # type: ignore[return-value]

    app, limiter, _ = make_app(default_limits="1/minute", on_denied=on_denied)
    quota = RateLimiter("1/minute", clock=FakeClock())

    @app.get("/")
    def index() -> str:
        return "hi"

    @app.get("/enforced")
    @limiter.exempt
    def enforced() -> str:
        quota.enforce("k")
        return "ok"

    get(app, "/")
    r = get(app, "/")
    assert r.status_code == 429 and r.json == {"message": "wait 60s"}
    assert get(app, "/enforced").status_code == 200
    assert get(app, "/enforced").status_code == 429


def test_threads_admit_exactly_the_limit() -> None:
    from concurrent.futures import ThreadPoolExecutor

    app, _, _ = make_app(default_limits="10/minute")

    @app.get("/")
    def index() -> str:
        return "hi"

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: get(app, "/").status_code, range(40)))
    assert sorted(codes) == [200] * 10 + [429] * 30


def test_an_app_factory_names_limiters_in_its_config() -> None:
    """Views decorated before ``init_app`` may name limiters that only ``app.config`` defines:
    ``init_app`` defines and checks them; each app built again redefines them."""
    from ratekeeper import Registry

    registry = Registry(discover=False)
    limiter = Limiter(registry=registry, limiter="site")

    @limiter.limit(limiter="login")
    def login() -> str:
        return "welcome"

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["RATEKEEPER"] = {
            "limiters": {"login": {"limits": "1/minute"}, "site": {"limits": "2/minute"}}
        }
        app.add_url_rule("/login", view_func=login)
        app.add_url_rule("/", view_func=lambda: "home")
        limiter.init_app(app)
        return app

    app = create_app()
    assert [get(app, "/login").status_code for _ in range(2)] == [200, 429]
    assert [get(app, "/").status_code for _ in range(3)] == [200, 200, 429]
    create_app()  # the same names again (tests build one app each): no error
    assert set(registry.list_limiters()) == {"login", "site"}
