"""`PrometheusObserver`: the contract's metrics with prometheus-client, and `/metrics` apps.

Metrics (labels in braces; never the user key, so there is one series per limiter, result and
store kind, however many keys there are)::

    ratekeeper_decisions_total{limiter,result}   result: allowed, denied, shadow_denied, error
    ratekeeper_near_limit_total{limiter}         allowed with at most (1 - ratio) of the limit left
    ratekeeper_wait_seconds{limiter}             histogram of acquire waits (slot or timeout)
    ratekeeper_timeouts_total{limiter}           acquire gave up
    ratekeeper_in_flight{limiter}                gauge: concurrency slots held now
    ratekeeper_store_seconds{store}              histogram of store round trips, 50 us .. 1 s

The metrics are registered once per registry: several observers on one registry share them (a
second ``PrometheusObserver()`` does not raise "Duplicated timeseries").
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from ratekeeper.events import Event
from ratekeeper.observability._common import (
    DEFAULT_NEAR_LIMIT_RATIO,
    RESULTS,
    STORE_BUCKETS,
    WAIT_BUCKETS,
    headroom,
    is_near_limit,
    require,
    result_of,
    store_seconds,
    wait_seconds,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PrometheusObserver", "metrics_app", "metrics_wsgi_app"]

EXTRA = "prometheus"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _Metrics:
    """The collectors of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        prom = require("prometheus_client", EXTRA, "PrometheusObserver")
        self.decisions: Counter = prom.Counter(
            "ratekeeper_decisions",
            "Rate-limit decisions by limiter and result.",
            ["limiter", "result"],
            registry=registry,
        )
        self.near_limit: Counter = prom.Counter(
            "ratekeeper_near_limit",
            "Allowed decisions with little of the limit left (see near_limit_ratio).",
            ["limiter"],
            registry=registry,
        )
        self.wait: Histogram = prom.Histogram(
            "ratekeeper_wait_seconds",
            "How long acquire() waited, whether it got a slot or timed out.",
            ["limiter"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.timeouts: Counter = prom.Counter(
            "ratekeeper_timeouts",
            "acquire() calls that gave up.",
            ["limiter"],
            registry=registry,
        )
        self.in_flight: Gauge = prom.Gauge(
            "ratekeeper_in_flight",
            "Concurrency slots held now.",
            ["limiter"],
            registry=registry,
        )
        self.store: Histogram = prom.Histogram(
            "ratekeeper_store_seconds",
            "Store round trip of one decision, by store kind.",
            ["store"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()
_by_registry_lock = threading.Lock()


def _metrics_of(registry: CollectorRegistry) -> _Metrics:
    with _by_registry_lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = _Metrics(registry)
        return metrics


def _default_registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    prom = require("prometheus_client", EXTRA, "PrometheusObserver")
    default: CollectorRegistry = prom.REGISTRY
    return default


class _LimiterSeries:
    """The labelled children of one limiter, looked up once (``labels()`` takes a lock)."""

    __slots__ = ("decisions", "in_flight", "near_limit", "timeouts", "wait")

    def __init__(self, metrics: _Metrics, limiter: str) -> None:
        self.decisions = {r: metrics.decisions.labels(limiter, r) for r in RESULTS}
        self.near_limit = metrics.near_limit.labels(limiter)
        self.wait = metrics.wait.labels(limiter)
        self.timeouts = metrics.timeouts.labels(limiter)
        self.in_flight = metrics.in_flight.labels(limiter)


class PrometheusObserver:
    """Counts every event into the contract's metrics on ``registry`` (default: prometheus-client's
    global ``REGISTRY``, the one its ``start_http_server`` and ``make_asgi_app`` serve)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        near_limit_ratio: float = DEFAULT_NEAR_LIMIT_RATIO,
    ) -> None:
        self._headroom = headroom(near_limit_ratio)
        self.registry = _default_registry(registry)
        self._metrics = _metrics_of(self.registry)
        # Plain dicts filled under a lock, read without one: a lookup never sees a torn entry.
        self._limiters: dict[str, _LimiterSeries] = {}
        self._stores: dict[str, Histogram] = {}
        self._lock = threading.Lock()

    def observe(self, event: Event) -> None:
        series = self._limiters.get(event.limiter) or self._limiter(event.limiter)
        if event.kind == "hit":
            result = result_of(event)
            if result is not None:
                series.decisions[result].inc()
                if result == "allowed" and is_near_limit(event.decision, self._headroom):
                    series.near_limit.inc()
            elapsed = store_seconds(event.store_seconds)
            if elapsed is not None:
                (self._stores.get(event.store) or self._store(event.store)).observe(elapsed)
        elif event.kind == "acquire" or event.kind == "timeout":
            series.wait.observe(wait_seconds(event.wait_seconds))
            if event.kind == "timeout":
                series.timeouts.inc()
        series.in_flight.set(event.in_flight)

    def _limiter(self, name: str) -> _LimiterSeries:
        with self._lock:
            series = self._limiters.get(name)
            if series is None:
                series = self._limiters[name] = _LimiterSeries(self._metrics, name)
            return series

    def _store(self, kind: str) -> Histogram:
        with self._lock:
            child = self._stores.get(kind)
            if child is None:
                child = self._stores[kind] = self._metrics.store.labels(kind)
            return child


class MetricsApp:
    """An ASGI app answering every HTTP request with the Prometheus exposition of ``registry``
    (text or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``: prometheus-client's own
    ``make_asgi_app``); it also completes the lifespan protocol, so it can be served alone.

    A class instance, not a function, so a framework routes to it as an ASGI app:
    ``app.add_route("/metrics", metrics_app())`` (Starlette, FastAPI) or ``app.mount(...)``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = require("prometheus_client", EXTRA, "metrics_app")
        self.registry = _default_registry(registry)
        self._app: Callable[[Scope, Receive, Send], Awaitable[None]] = prom.make_asgi_app(
            self.registry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._app(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})


def metrics_app(registry: CollectorRegistry | None = None) -> MetricsApp:
    """The ASGI ``/metrics`` app (see `MetricsApp`)."""
    return MetricsApp(registry)


def metrics_wsgi_app(
    registry: CollectorRegistry | None = None,
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """A WSGI app serving the exposition of ``registry`` (prometheus-client's ``make_wsgi_app``);
    mount it at ``/metrics``, e.g. with werkzeug's ``DispatcherMiddleware``."""
    prom = require("prometheus_client", EXTRA, "metrics_wsgi_app")
    app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]] = prom.make_wsgi_app(
        _default_registry(registry)
    )
    return app
