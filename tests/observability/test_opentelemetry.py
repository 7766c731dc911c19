"""OpenTelemetryObserver through the OTel SDK's in-memory metric reader and span exporter."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ratekeeper import ConfigError, RateLimiter
from ratekeeper.observability import STORE_BUCKETS, WAIT_BUCKETS, OpenTelemetryObserver
from ratekeeper.testing import FakeClock
from tests.observability.events import TIME, event, standard_events

THREADS = 8
NS = 1_000_000_000


class Reader(InMemoryMetricReader):
    """The SDK's in-memory reader, with the meter provider it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.provider = MeterProvider(metric_readers=[self])


@pytest.fixture
def reader() -> Iterator[Reader]:
    reader = Reader()
    yield reader
    reader.provider.shutdown()


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
    """metric name -> (sorted attributes) -> data point."""
    data = reader.get_metrics_data()
    out: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "ratekeeper"
            for metric in scope.metrics:
                out[metric.name] = {
                    tuple(sorted((p.attributes or {}).items())): p for p in metric.data.data_points
                }
    return out


def observer(reader: Reader, **options: Any) -> OpenTelemetryObserver:
    return OpenTelemetryObserver(reader.provider, **options)


API = (("limiter", "api"),)


def result(name: str) -> tuple[tuple[str, str], ...]:
    return (("limiter", "api"), ("result", name))


def test_every_measure_of_the_contract_exactly(reader: Reader) -> None:
    obs = observer(reader)
    for e in standard_events():
        obs.observe(e)
    got = points(reader)
    assert set(got) == {
        "ratekeeper.decisions",
        "ratekeeper.near_limit",
        "ratekeeper.wait",
        "ratekeeper.timeouts",
        "ratekeeper.in_flight",
        "ratekeeper.store.duration",
    }
    decisions = {k: p.value for k, p in got["ratekeeper.decisions"].items()}
    assert decisions == {
        result("allowed"): 3,
        result("denied"): 2,
        result("shadow_denied"): 1,
        result("error"): 1,
    }
    assert got["ratekeeper.near_limit"][API].value == 1
    assert got["ratekeeper.timeouts"][API].value == 1
    assert got["ratekeeper.in_flight"][API].value == 0
    wait = got["ratekeeper.wait"][API]
    assert (wait.count, wait.sum) == (2, pytest.approx(1.52))
    assert list(wait.explicit_bounds) == list(WAIT_BUCKETS)
    store = got["ratekeeper.store.duration"][(("store", "redis"),)]
    assert (store.count, store.sum) == (7, pytest.approx(0.5045))
    assert list(store.explicit_bounds) == list(STORE_BUCKETS)
    assert list(store.bucket_counts[:4]) == [0, 1, 1, 3]  # <=50us, <=100us, <=250us, <=500us


def test_in_flight_is_the_last_value_per_limiter(reader: Reader) -> None:
    obs = observer(reader)
    obs.observe(event(kind="acquire", in_flight=3))
    obs.observe(event(kind="acquire", limiter="jobs", in_flight=1))
    obs.observe(event(kind="release", in_flight=2))
    gauge = {k: p.value for k, p in points(reader)["ratekeeper.in_flight"].items()}
    assert gauge == {API: 2, (("limiter", "jobs"),): 1}


def test_a_span_per_decision_covers_its_store_round_trip(
    reader: Reader, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    obs = observer(reader, tracer_provider=provider)
    for e in standard_events():
        obs.observe(e)
    finished = exporter.get_finished_spans()
    assert len(finished) == 7  # the hits; acquire, timeout and release are no round trips
    first = finished[0]
    assert first.name == "ratekeeper.decision" and first.kind is SpanKind.CLIENT
    assert dict(first.attributes or {}) == {
        "ratekeeper.limiter": "api",
        "ratekeeper.algorithm": "token_bucket",
        "ratekeeper.store": "redis",
        "ratekeeper.result": "allowed",
    }
    assert first.end_time == int(TIME * NS)
    assert first.end_time - (first.start_time or 0) == 100_000  # 0.0001 s
    results = [(s.attributes or {})["ratekeeper.result"] for s in finished]
    assert results == ["allowed"] * 3 + ["denied"] * 2 + ["shadow_denied", "error"]
    error = finished[-1]
    assert error.status.status_code is StatusCode.ERROR
    assert error.status.description == "StoreUnavailable"
    assert all(s.status.status_code is StatusCode.UNSET for s in finished[:-1])


def test_no_spans_without_a_tracer_provider(
    reader: Reader, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    observer(reader).observe(event())
    assert spans[1].get_finished_spans() == ()


def test_the_user_key_is_in_no_attribute(
    reader: Reader, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    obs = observer(reader, tracer_provider=spans[0])
    for e in standard_events():
        obs.observe(e)
    values = [v for series in points(reader).values() for key in series for _, v in key]
    values += [v for s in spans[1].get_finished_spans() for v in (s.attributes or {}).values()]
    assert values and not any("secret-42" in str(v) for v in values)


def test_odd_events_raise_nothing(
    reader: Reader, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    obs = observer(reader, tracer_provider=spans[0])
    obs.observe(event(decision=None))
    obs.observe(event(result="bogus", store_seconds=float("nan")))
    obs.observe(event(kind="bogus"))
    obs.observe(event(kind="timeout", wait_seconds=float("-inf")))
    got = points(reader)
    assert {k: p.value for k, p in got["ratekeeper.decisions"].items()} == {result("allowed"): 1}
    assert got["ratekeeper.wait"][API].sum == 0


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    with pytest.raises(ConfigError, match=r"ratekeeper\[opentelemetry\]"):
        OpenTelemetryObserver()


def test_through_a_limiter_with_8_threads_counts_exactly(
    reader: Reader, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    limiter = RateLimiter(
        "100/minute",
        name="api",
        clock=FakeClock(),
        observers=[observer(reader, tracer_provider=spans[0])],
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
    got = points(reader)
    decisions = {k: p.value for k, p in got["ratekeeper.decisions"].items()}
    assert decisions == {result("allowed"): 100, result("denied"): 300}
    assert got["ratekeeper.near_limit"][API].value == 21
    assert got["ratekeeper.store.duration"][(("store", "memory"),)].count == 400
    finished = spans[1].get_finished_spans()
    assert len(finished) == 400
    assert {(s.attributes or {})["ratekeeper.store"] for s in finished} == {"memory"}
