"""Observers of rate-limit events: metrics for Prometheus, StatsD and OpenTelemetry, and an audit
log of denials (DESIGN.md, "Observability").

Attach them to a limiter (``RateLimiter(..., observers=[...])``) or to every limiter of a
registry (``rk.observe(...)``). Each client library is imported when its observer is built,
never when this package is imported; a missing one raises `ConfigError` naming the extra
(``pip install 'ratekeeper[prometheus]'``, ``'ratekeeper[opentelemetry]'``). StatsD and the audit
log need nothing beyond the standard library.
"""

from ratekeeper.observability._common import DEFAULT_NEAR_LIMIT_RATIO, STORE_BUCKETS, WAIT_BUCKETS
from ratekeeper.observability.audit import AuditLog
from ratekeeper.observability.opentelemetry import OpenTelemetryObserver
from ratekeeper.observability.prometheus import (
    MetricsApp,
    PrometheusObserver,
    metrics_app,
    metrics_wsgi_app,
)
from ratekeeper.observability.statsd import StatsdObserver

__all__ = [
    "DEFAULT_NEAR_LIMIT_RATIO",
    "STORE_BUCKETS",
    "WAIT_BUCKETS",
    "AuditLog",
    "MetricsApp",
    "OpenTelemetryObserver",
    "PrometheusObserver",
    "StatsdObserver",
    "metrics_app",
    "metrics_wsgi_app",
]
