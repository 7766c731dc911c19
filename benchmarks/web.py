"""Web middleware overhead: what a rate limiter adds to one request, beside the framework's peers.

Every case serves ``GET /`` answering ``ok`` three ways in one process: the bare app, the app with
ratekeeper, the app with the framework's best-known peer, each enforcing one default limit
(``AMOUNT`` per hour, never reached) keyed by client address, with rate-limit headers on where the
library offers them. The apps are driven in-process through their own server interface (ASGI
``app(scope, receive, send)``, WSGI ``app(environ, start_response)``, aiohttp's request
handler), so the numbers are the framework plus the limiter, no network.

Overhead = (app with the limiter) - (bare app), per request, taken round by round (every app runs
once per round, the order rotated) and reported as the median over rounds; the time is the CPU
time of the measuring thread (``time.thread_time_ns``), so the other processes of a loaded machine
do not count. ``uvicorn_wrk`` measures the same ASGI apps served by uvicorn under ``wrk``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.adapters import AMOUNT, PER
from benchmarks.ports import free_port

RATE = f"{AMOUNT}/hour"
assert PER == 3600
CLIENT = ("127.0.0.1", 50000)
WRK_SECONDS = 2  # per sample, per app
WRK_CONNECTIONS = 8
SERVER_START_TIMEOUT = 20.0


@dataclass
class WebApp:
    """One app of a case: ``request()`` serves one ``GET /`` and returns its status."""

    library: str  # "bare", "ratekeeper" or the peer's name
    what: str
    request: Callable[[], Any]  # sync, or a coroutine function
    close: Callable[[], Any] = lambda: None


def cpu_ns_per_request(app: WebApp, n: int, loop: asyncio.AbstractEventLoop) -> float:
    """CPU time of this thread per request over ``n`` requests (garbage collector paused)."""
    request = app.request
    gc.disable()
    try:
        if asyncio.iscoroutinefunction(request):

            async def many() -> int:
                start = time.thread_time_ns()
                for _ in range(n):
                    await request()
                return time.thread_time_ns() - start

            elapsed = loop.run_until_complete(many())
        else:
            start = time.thread_time_ns()
            for _ in range(n):
                request()
            elapsed = time.thread_time_ns() - start
    finally:
        gc.enable()
    return elapsed / n


# ------------------------------------------------------------------------ ASGI


def asgi_scope(path: str = "/") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
        "client": CLIENT,
        "server": ("127.0.0.1", 8000),
    }


def asgi_driver(app: Any, path: str = "/") -> Callable[[], Any]:
    """``await request()`` sends one GET through ``app`` and checks it got a 200."""
    template = asgi_scope(path)
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    async def request() -> int:
        await app(dict(template), receive, send)
        code = status.pop()
        if code != 200:
            raise RuntimeError(f"status {code}")
        return code

    return request


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request: Any) -> Any:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", home)])


def starlette_apps() -> list[WebApp]:
    """Starlette: bare; ratekeeper's pure ASGI middleware; slowapi's ASGI middleware."""
    from ratekeeper.integrations.starlette import RateLimitMiddleware

    ours = starlette_app()
    ours.add_middleware(RateLimitMiddleware, limits=RATE)
    apps = [
        WebApp("bare", "Starlette", asgi_driver(starlette_app())),
        WebApp("ratekeeper", "RateLimitMiddleware", asgi_driver(ours)),
    ]
    with contextlib.suppress(ImportError):
        apps.append(WebApp("slowapi", "SlowAPIASGIMiddleware", asgi_driver(slowapi_app())))
    return apps


def slowapi_app() -> Any:
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    app = starlette_app()
    app.state.limiter = Limiter(
        key_func=get_remote_address, default_limits=[RATE], headers_enabled=True
    )
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


def fastapi_redis_apps(url: str) -> list[WebApp]:
    """FastAPI on Redis: a route dependency each (ratekeeper ``RateLimit``, fastapi-limiter's
    ``RateLimiter`` on a pyrate-limiter ``RedisBucket``), one Redis round trip per request."""
    from fastapi import Depends, FastAPI
    from fastapi.responses import PlainTextResponse

    from ratekeeper.integrations.fastapi import RateLimit

    def app_with(dependencies: list[Any]) -> Any:
        app = FastAPI()

        @app.get("/", dependencies=dependencies, response_class=PlainTextResponse)
        async def home() -> str:
            return "ok"

        return app

    ours = RateLimit(RATE, store=url)
    apps = [
        WebApp("bare", "FastAPI", asgi_driver(app_with([]))),
        WebApp(
            "ratekeeper", "Depends(RateLimit), redis://", asgi_driver(app_with([Depends(ours)]))
        ),
    ]
    with contextlib.suppress(ImportError):
        apps.append(fastapi_limiter_app(url, app_with))
    return apps


def fastapi_limiter_app(url: str, app_with: Callable[[list[Any]], Any]) -> WebApp:
    import pyrate_limiter as pl
    from fastapi import Depends
    from fastapi_limiter.depends import RateLimiter
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    rates = [pl.Rate(AMOUNT, pl.Duration.HOUR)]
    built: list[Any] = []

    async def request() -> int:  # the bucket is made inside the loop that uses it
        if not built:
            bucket = await pl.RedisBucket.init(rates, client, f"bench:fl:{os.getpid()}")
            limiter = pl.Limiter(bucket)
            built.append(asgi_driver(app_with([Depends(RateLimiter(limiter=limiter))])))
        return await built[0]()  # type: ignore[no-any-return]

    return WebApp("fastapi-limiter", "Depends(RateLimiter), RedisBucket", request)


# ------------------------------------------------------------------------ WSGI


def wsgi_driver(app: Any, path: str = "/") -> Callable[[], int]:
    import io

    template = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": CLIENT[0],
        "REMOTE_PORT": str(CLIENT[1]),
        "HTTP_HOST": "localhost",
        "HTTP_USER_AGENT": "bench",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    status: list[str] = []

    def start_response(code: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(code)
        return None

    def request() -> int:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = app(environ, start_response)
        try:
            b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        code = status.pop()
        if not code.startswith("200"):
            raise RuntimeError(f"status {code}")
        return 200

    return request


def flask_apps() -> list[WebApp]:
    """Flask: bare; ratekeeper's ``Limiter``; flask-limiter (memory storage, headers on)."""
    from flask import Flask

    from ratekeeper.integrations.flask import Limiter

    def app() -> Flask:
        flask = Flask(f"bench{id(object())}")
        flask.add_url_rule("/", "home", lambda: "ok")
        return flask

    ours = app()
    Limiter(ours, default_limits=RATE)
    apps = [
        WebApp("bare", "Flask", wsgi_driver(app())),
        WebApp("ratekeeper", "Limiter", wsgi_driver(ours)),
    ]
    with contextlib.suppress(ImportError):
        from flask_limiter import Limiter as FlaskLimiter
        from flask_limiter.util import get_remote_address

        peer = app()
        FlaskLimiter(
            get_remote_address,
            app=peer,
            default_limits=[RATE],
            headers_enabled=True,
            storage_uri="memory://",
        )
        apps.append(WebApp("flask-limiter", "Limiter, memory://", wsgi_driver(peer)))
    return apps


def django_apps() -> list[WebApp]:
    """Django: bare; ratekeeper's middleware; django-ratelimit's ``@ratelimit`` on the view
    (local-memory cache; django-ratelimit sends no headers)."""
    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path

    def home(request: Any) -> Any:
        return HttpResponse("ok")

    peer_view: Callable[[Any], Any] = home
    with contextlib.suppress(ImportError):
        from django_ratelimit.decorators import ratelimit as peer_ratelimit

        peer_view = peer_ratelimit(key="ip", rate=f"{AMOUNT}/h", block=True)(home)
    module = type(sys)("bench_django_urls")
    module.urlpatterns = [path("", home), path("peer", peer_view)]  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=module.__name__,
            SECRET_KEY="bench",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            RATEKEEPER={"DEFAULT_LIMITS": RATE},
            RATELIMIT_USE_CACHE="default",
            SILENCED_SYSTEM_CHECKS=["django_ratelimit.E003", "django_ratelimit.W001"],
        )
        django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    settings.MIDDLEWARE = []
    bare = WSGIHandler()
    settings.MIDDLEWARE = ["ratekeeper.integrations.django.RateLimitMiddleware"]
    ours = WSGIHandler()
    settings.MIDDLEWARE = []
    apps = [
        WebApp("bare", "Django", wsgi_driver(bare)),
        WebApp("ratekeeper", "RateLimitMiddleware", wsgi_driver(ours)),
    ]
    if peer_view is not home:
        apps.append(WebApp("django-ratelimit", "@ratelimit(key='ip')", wsgi_driver(bare, "/peer")))
    return apps


# ------------------------------------------------------------------------ aiohttp


def aiohttp_apps() -> list[WebApp]:
    """aiohttp: bare; ratekeeper's middleware (no peer offers an aiohttp middleware)."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from ratekeeper.integrations.aiohttp import Limiter

    async def home(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def driver(app: web.Application) -> Callable[[], Any]:
        app.router.add_get("/", home)
        frozen: list[bool] = []

        made: list[Any] = []

        async def request() -> int:
            if not frozen:
                app.freeze()
                frozen.append(True)
                # one mocked request, reused: building one (unittest.mock objects) would cost
                # far more than the handling measured
                made.append(make_mocked_request("GET", "/", headers={"Host": "localhost"}, app=app))
                made[0]._transport_peername = CLIENT
            response = await app._handle(made[0])
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            return 200

        return request

    limiter = Limiter(default_limits=RATE)
    return [
        WebApp("bare", "aiohttp", driver(web.Application())),
        WebApp(
            "ratekeeper",
            "Limiter.middleware",
            driver(web.Application(middlewares=[limiter.middleware])),
        ),
    ]


# ------------------------------------------------------------------------ uvicorn + wrk

SERVED = """
import sys
sys.path[:0] = {paths!r}
from benchmarks.web import starlette_app, slowapi_app, RATE
from ratekeeper.integrations.starlette import RateLimitMiddleware
import uvicorn
kind, port = sys.argv[1], int(sys.argv[2])
if kind == "bare":
    app = starlette_app()
elif kind == "ratekeeper":
    app = starlette_app()
    app.add_middleware(RateLimitMiddleware, limits=RATE)
else:
    app = slowapi_app()
uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
"""


def has_wrk() -> bool:
    return shutil.which("wrk") is not None


@contextlib.contextmanager
def served(kinds: list[str]) -> Iterator[dict[str, int]]:
    """One uvicorn process per app kind; yields kind -> port."""
    root = Path(__file__).resolve().parent.parent
    script = Path(tempfile.mkdtemp(prefix="rk-bench-web-")) / "serve.py"
    script.write_text(SERVED.format(paths=[str(root), str(root / "src")]))
    ports = {kind: free_port() for kind in kinds}
    procs = [
        subprocess.Popen([sys.executable, str(script), kind, str(port)])
        for kind, port in ports.items()
    ]
    try:
        for port in ports.values():
            _wait_port(port)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(script.parent, ignore_errors=True)


def wrk_requests_per_second(port: int, seconds: int = WRK_SECONDS) -> float:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{WRK_CONNECTIONS}",
            f"-d{seconds}s",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors: {out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"no rate in wrk's output: {out}")
    return float(match.group(1))


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"uvicorn did not listen on {port} within {SERVER_START_TIMEOUT} s")
