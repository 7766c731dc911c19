"""Stores given by URL under the integrations, with the server down: a Redis URL on a port where
nothing listens. Requests still succeed (fail-open), quickly, and the outage is logged."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask

from ratekeeper.integrations import Engine
from ratekeeper.integrations.fastapi import Limiter as FastAPILimiter
from ratekeeper.integrations.flask import Limiter as FlaskLimiter


def dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # closed again: connections are refused


async def test_asgi_with_dead_redis(caplog: pytest.LogCaptureFixture) -> None:
    limiter = FastAPILimiter("1/minute", store=dead_redis_url())
    app = FastAPI()
    limiter.init_app(app)

    @app.get("/")
    @limiter.limit("1/minute")
    async def index() -> str:
        return "ok"

    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.WARNING, "ratekeeper"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            for _ in range(3):
                r = await c.get("/")
                assert r.status_code == 200 and r.json() == "ok"
                assert "RateLimit" not in r.headers
    assert "unavailable" in caplog.text
    await limiter.engine.aclose()


def test_flask_with_dead_redis(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)
    limiter = FlaskLimiter(app, default_limits="1/minute", store=dead_redis_url())

    @app.get("/")
    def index() -> str:
        return "ok"

    with caplog.at_level(logging.WARNING, "ratekeeper"):
        assert [app.test_client().get("/").status_code for _ in range(3)] == [200] * 3
    assert "unavailable" in caplog.text
    limiter.engine.close()


def test_bad_store_urls_fail_at_setup() -> None:
    from ratekeeper import ConfigError

    with pytest.raises(ConfigError):
        Engine("1/minute", store="nosuchstore://x")
