"""PrometheusObserver: exact values read back through prometheus-client's own parser."""

from __future__ import annotations

import sys
import threading

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from ratekeeper import ConfigError, RateLimiter, RateLimitTimeout
from ratekeeper.observability import (
    STORE_BUCKETS,
    PrometheusObserver,
    metrics_app,
    metrics_wsgi_app,
)
from ratekeeper.testing import FakeClock
from tests.observability.events import event, standard_events

THREADS = 8


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry: (name, sorted labels) -> value (``_created`` left out)."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return samples(registry).get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_measure_of_the_contract_exactly() -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    for e in standard_events():
        observer.observe(e)
    got = samples(registry)

    def v(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert v("ratekeeper_decisions_total", limiter="api", result="allowed") == 3
    assert v("ratekeeper_decisions_total", limiter="api", result="denied") == 2
    assert v("ratekeeper_decisions_total", limiter="api", result="shadow_denied") == 1
    assert v("ratekeeper_decisions_total", limiter="api", result="error") == 1
    assert v("ratekeeper_near_limit_total", limiter="api") == 1
    assert v("ratekeeper_timeouts_total", limiter="api") == 1
    assert v("ratekeeper_in_flight", limiter="api") == 0
    assert v("ratekeeper_wait_seconds_count", limiter="api") == 2
    assert v("ratekeeper_wait_seconds_sum", limiter="api") == pytest.approx(1.52)
    assert v("ratekeeper_wait_seconds_bucket", limiter="api", le="0.025") == 1
    assert v("ratekeeper_store_seconds_count", store="redis") == 7
    assert v("ratekeeper_store_seconds_sum", store="redis") == pytest.approx(0.5045)
    assert v("ratekeeper_store_seconds_bucket", store="redis", le="0.0001") == 1  # le is <=
    assert v("ratekeeper_store_seconds_bucket", store="redis", le="0.00025") == 2
    assert v("ratekeeper_store_seconds_bucket", store="redis", le="0.0005") == 5
    assert v("ratekeeper_store_seconds_bucket", store="redis", le="0.5") == 7


def test_store_buckets_resolve_sub_millisecond_round_trips() -> None:
    registry = CollectorRegistry()
    PrometheusObserver(registry).observe(event(store_seconds=0.00003))
    bounds = sorted(
        float(dict(labels)["le"])
        for (name, labels) in samples(registry)
        if name == "ratekeeper_store_seconds_bucket"
    )
    assert bounds[:-1] == list(STORE_BUCKETS)
    assert bounds[0] == 0.00005 and sum(b < 0.001 for b in bounds) >= 4
    assert value(registry, "ratekeeper_store_seconds_bucket", store="redis", le="5e-05") == 1


@pytest.mark.parametrize(
    ("ratio", "remaining", "near"),
    [(0.8, 2, True), (0.8, 3, False), (0.7, 3, True), (0.7, 4, False), (1.0, 0, True),
     (1.0, 1, False), (0.0, 10, True)],
)  # fmt: skip
def test_near_limit_is_at_most_one_minus_ratio_of_the_limit_left(
    ratio: float, remaining: int, near: bool
) -> None:
    from tests.observability.events import decision

    registry = CollectorRegistry()
    PrometheusObserver(registry, near_limit_ratio=ratio).observe(
        event(decision=decision(remaining=remaining))
    )
    assert value(registry, "ratekeeper_near_limit_total", limiter="api") == int(near)


def test_denials_are_never_near_limit() -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    observer.observe(event(result="denied"))
    observer.observe(event(result="shadow_denied", shadow_denied=True))
    assert value(registry, "ratekeeper_near_limit_total", limiter="api") == 0


def test_no_label_carries_the_user_key() -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    for i in range(50):
        observer.observe(event(key=f"user:{i}", store_seconds=0.001))
    text = generate_latest(registry).decode()
    assert "user:" not in text
    label_values = {v for (_, labels) in samples(registry) for _, v in labels}
    assert not any(v.startswith("user") for v in label_values)


def test_observers_on_one_registry_share_the_metrics() -> None:
    registry = CollectorRegistry()
    first, second = PrometheusObserver(registry), PrometheusObserver(registry)
    first.observe(event())
    second.observe(event())
    assert value(registry, "ratekeeper_decisions_total", limiter="api", result="allowed") == 2


def test_default_registry_is_prometheus_clients() -> None:
    from prometheus_client import REGISTRY

    assert PrometheusObserver().registry is REGISTRY
    assert PrometheusObserver().registry is REGISTRY  # a second one does not raise


def test_odd_events_raise_nothing_and_count_nothing_odd() -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    observer.observe(event(decision=None))  # allowed without a decision: counted, not near
    observer.observe(event(result="bogus"))  # not a result: not counted
    observer.observe(event(kind="bogus"))
    observer.observe(event(store_seconds=float("nan"), wait_seconds=float("inf")))
    observer.observe(event(kind="acquire", wait_seconds=float("nan")))
    observer.observe(event(kind="timeout", wait_seconds=-1.0))
    assert value(registry, "ratekeeper_decisions_total", limiter="api", result="allowed") == 2
    assert ("ratekeeper_decisions_total", (("limiter", "api"), ("result", "bogus"))) not in (
        samples(registry)
    )
    assert value(registry, "ratekeeper_store_seconds_count", store="redis") == 0
    assert value(registry, "ratekeeper_wait_seconds_count", limiter="api") == 2
    assert value(registry, "ratekeeper_wait_seconds_sum", limiter="api") == 0


def test_bad_ratio_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="near_limit_ratio"):
        PrometheusObserver(CollectorRegistry(), near_limit_ratio=1.5)


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"ratekeeper\[prometheus\]"):
        PrometheusObserver(CollectorRegistry())


async def test_metrics_app_serves_the_exposition_under_starlette() -> None:
    registry = CollectorRegistry()
    PrometheusObserver(registry).observe(event())
    app = Starlette()
    app.add_route("/metrics", metrics_app(registry))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    counts = {
        s.labels["result"]: s.value
        for s in families["ratekeeper_decisions"].samples
        if s.name.endswith("_total")
    }
    # every result's series exists from the limiter's first event, so rate() sees it start at 0
    assert counts == {"allowed": 1, "denied": 0, "shadow_denied": 0, "error": 0}


async def test_metrics_app_completes_the_lifespan_protocol() -> None:
    app = metrics_app(CollectorRegistry())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, str]] = []

    async def receive() -> dict[str, str]:
        return incoming.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_metrics_wsgi_app_serves_the_exposition() -> None:
    registry = CollectorRegistry()
    PrometheusObserver(registry).observe(event(result="denied"))
    app = metrics_wsgi_app(registry)
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""}
    body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"]
    assert 'ratekeeper_decisions_total{limiter="api",result="denied"} 1.0' in body.decode()


def test_through_a_limiter_with_8_threads_counts_exactly() -> None:
    registry = CollectorRegistry()
    limiter = RateLimiter(
        "100/minute", name="api", clock=FakeClock(), observers=[PrometheusObserver(registry)]
    )
    per_thread = 50
    barrier = threading.Barrier(THREADS)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            limiter.hit("user:1")

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = samples(registry)
    assert got[("ratekeeper_decisions_total", (("limiter", "api"), ("result", "allowed")))] == 100
    assert got[("ratekeeper_decisions_total", (("limiter", "api"), ("result", "denied")))] == 300
    # remaining after the allowed hits runs 99..0; 0..20 are at most 20% of the limit
    assert got[("ratekeeper_near_limit_total", (("limiter", "api"),))] == 21
    assert got[("ratekeeper_store_seconds_count", (("store", "memory"),))] == 400
    assert limiter.metrics().allowed == 100 and limiter.metrics().denied == 300


def test_through_a_limiter_acquire_timeout_and_slots() -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    limiter = RateLimiter(
        "1/minute",
        name="jobs",
        clock=clock,
        max_concurrent=2,
        observers=[PrometheusObserver(registry)],
    )
    with limiter.acquire("k"):
        assert value(registry, "ratekeeper_in_flight", limiter="jobs") == 1
        with pytest.raises(RateLimitTimeout):
            limiter.acquire("k", timeout=5.0)
    assert value(registry, "ratekeeper_in_flight", limiter="jobs") == 0
    assert value(registry, "ratekeeper_timeouts_total", limiter="jobs") == 1
    assert value(registry, "ratekeeper_wait_seconds_count", limiter="jobs") == 2
    waited = limiter.metrics().wait_seconds_total
    assert value(registry, "ratekeeper_wait_seconds_sum", limiter="jobs") == pytest.approx(waited)
