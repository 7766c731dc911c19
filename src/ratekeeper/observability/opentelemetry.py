"""`OpenTelemetryObserver`: the contract's measures as OpenTelemetry instruments, and a span per
decision when a tracer provider is given.

Instruments (meter ``ratekeeper``)::

    ratekeeper.decisions        counter         {limiter, result}
    ratekeeper.near_limit       counter         {limiter}
    ratekeeper.wait             histogram, s    {limiter}   acquire waits (slot or timeout)
    ratekeeper.timeouts         counter         {limiter}
    ratekeeper.in_flight        observable gauge {limiter}  concurrency slots held
    ratekeeper.store.duration   histogram, s    {store}     store round trips

The span ``ratekeeper.decision`` (kind CLIENT) covers the store round trip of one decision: it
starts ``store_seconds`` before the event and ends at it, as a child of the span current where
the decision was made (the limiter calls observers synchronously, in the caller's context), with
the attributes ``ratekeeper.limiter``, ``ratekeeper.algorithm``, ``ratekeeper.store`` and
``ratekeeper.result``; a store error sets the span's status to ERROR.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Final

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
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = ["OpenTelemetryObserver"]

EXTRA = "opentelemetry"
SCOPE: Final = "ratekeeper"  # the instrumentation scope of the meter and the tracer
SPAN_NAME: Final = "ratekeeper.decision"
NS_PER_SECOND: Final = 1_000_000_000


class OpenTelemetryObserver:
    """Records every event on a meter of ``meter_provider`` (default: the global one), and spans
    on a tracer of ``tracer_provider`` (default: none, no spans)."""

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        near_limit_ratio: float = DEFAULT_NEAR_LIMIT_RATIO,
    ) -> None:
        otel_metrics = require("opentelemetry.metrics", EXTRA, "OpenTelemetryObserver")
        self._metrics_api = otel_metrics
        self._headroom = headroom(near_limit_ratio)
        if meter_provider is None:
            meter_provider = otel_metrics.get_meter_provider()
        meter = meter_provider.get_meter(SCOPE)
        self._in_flight: dict[str, int] = {}
        # Attribute dicts built once per limiter (and result), store kind.
        self._attributes: dict[str, dict[str, dict[str, str]]] = {}
        self._store_attributes: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._decisions = meter.create_counter(
            "ratekeeper.decisions", "{decision}", "Rate-limit decisions by limiter and result."
        )
        self._near_limit = meter.create_counter(
            "ratekeeper.near_limit",
            "{decision}",
            "Allowed decisions with little of the limit left (see near_limit_ratio).",
        )
        self._wait = meter.create_histogram(
            "ratekeeper.wait",
            "s",
            "How long acquire() waited, whether it got a slot or timed out.",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )
        self._timeouts = meter.create_counter(
            "ratekeeper.timeouts", "{call}", "acquire() calls that gave up."
        )
        self._store = meter.create_histogram(
            "ratekeeper.store.duration",
            "s",
            "Store round trip of one decision, by store kind.",
            explicit_bucket_boundaries_advisory=STORE_BUCKETS,
        )
        meter.create_observable_gauge(
            "ratekeeper.in_flight", [self._observe_in_flight], "{slot}", "Concurrency slots held."
        )
        self._tracer: Tracer | None = None
        self._trace: ModuleType | None = None
        if tracer_provider is not None:
            self._trace = require("opentelemetry.trace", EXTRA, "OpenTelemetryObserver")
            self._tracer = tracer_provider.get_tracer(SCOPE)

    def observe(self, event: Event) -> None:
        attributes = self._attributes.get(event.limiter) or self._limiter(event.limiter)
        if event.kind == "hit":
            result = result_of(event)
            if result is not None:
                self._decisions.add(1, attributes[result])
                if result == "allowed" and is_near_limit(event.decision, self._headroom):
                    self._near_limit.add(1, attributes[""])
            elapsed = store_seconds(event.store_seconds)
            if elapsed is not None:
                store = self._store_attributes.get(event.store) or self._store_of(event.store)
                self._store.record(elapsed, store)
            if self._tracer is not None and self._trace is not None:
                self._span(self._tracer, self._trace, event, elapsed or 0.0)
        elif event.kind == "acquire" or event.kind == "timeout":
            self._wait.record(wait_seconds(event.wait_seconds), attributes[""])
            if event.kind == "timeout":
                self._timeouts.add(1, attributes[""])
        self._in_flight[event.limiter] = int(event.in_flight)

    @staticmethod
    def _span(tracer: Tracer, trace: ModuleType, event: Event, elapsed: float) -> None:
        end = int(event.time * NS_PER_SECOND)
        span = tracer.start_span(
            SPAN_NAME,
            kind=trace.SpanKind.CLIENT,
            start_time=end - int(elapsed * NS_PER_SECOND),
            attributes={
                "ratekeeper.limiter": event.limiter,
                "ratekeeper.algorithm": event.algorithm,
                "ratekeeper.store": event.store,
                "ratekeeper.result": result_of(event) or str(event.result),
            },
        )
        if event.result == "error":
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.error or None))
        span.end(end_time=end)

    def _observe_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        observation = self._metrics_api.Observation
        # dict.copy() is one C call: it never sees the dict change size under it.
        return [
            observation(value, self._attributes[name][""])
            for name, value in self._in_flight.copy().items()
        ]

    def _limiter(self, name: str) -> dict[str, dict[str, str]]:
        with self._lock:
            attributes = self._attributes.get(name)
            if attributes is None:
                attributes = {r: {"limiter": name, "result": r} for r in RESULTS}
                attributes[""] = {"limiter": name}
                self._attributes[name] = attributes
            return attributes

    def _store_of(self, kind: str) -> dict[str, str]:
        with self._lock:
            attributes = self._store_attributes.get(kind)
            if attributes is None:
                attributes = self._store_attributes[kind] = {"store": kind}
            return attributes
