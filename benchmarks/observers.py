"""What an observer costs per decision: memory store, one key, every request admitted.

Cases, interleaved round by round (the median of the rounds is reported, with the ratio to the
limiter without observers):

    none                      no observer: the limiter builds no event at all
    null observer             an observer whose observe() does nothing: building and delivering
                              the event
    prometheus                PrometheusObserver on its own registry
    statsd, dead port         StatsdObserver sending to a port nobody listens on
    statsd, live              StatsdObserver sending to a UDP sink (a separate process drains it)
    dogstatsd, live           the same with tags="dogstatsd"
    opentelemetry             OpenTelemetryObserver, SDK meter provider (in-memory reader)
    opentelemetry + spans     the same with an SDK tracer provider (spans built, not exported)
    audit log                 AuditLog to a file: an admitted request writes nothing
    all                       prometheus, statsd live, opentelemetry + spans and the audit log
    none, denied              a drained key: every request denied, no observer
    audit log, denied         the same with the audit log writing every denial to a file

    PYTHONPATH=.:src .venv/bin/python benchmarks/observers.py [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.measure import key_sequence, ns_per_decision
from ratekeeper import RateLimiter
from ratekeeper.events import Event
from ratekeeper.observability import (
    AuditLog,
    OpenTelemetryObserver,
    PrometheusObserver,
    StatsdObserver,
)

ADMIT_ALL = "1000000000/second"  # so high that every request is admitted
DENY_ALL = "1/hour"  # drained by the first request: every later one is denied
HITS, ROUNDS = 10_000, 7
SMOKE_HITS, SMOKE_ROUNDS = 200, 2

# A UDP sink in its own process (so draining it takes nothing from the measured interpreter):
# prints its port, then reads datagrams until its stdin closes.
SINK = """
import socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
def drain():
    while True:
        s.recv(65536)
threading.Thread(target=drain, daemon=True).start()
sys.stdin.read()
"""


class NullObserver:
    def observe(self, event: Event) -> None:
        pass


@contextmanager
def udp_sink() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-c", SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=5)


def dead_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def cases(stack: ExitStack, folder: Path) -> dict[str, tuple[str, list[Any]]]:
    """name -> (limits, observers)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    live = stack.enter_context(udp_sink())

    def otel(spans: bool) -> OpenTelemetryObserver:
        meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
        stack.callback(meters.shutdown)
        return OpenTelemetryObserver(meters, TracerProvider() if spans else None)

    def statsd(port: int, **options: Any) -> StatsdObserver:
        return stack.enter_context(StatsdObserver("127.0.0.1", port, **options))

    def audit(name: str) -> AuditLog:
        return stack.enter_context(AuditLog(folder / name))

    return {
        "none": (ADMIT_ALL, []),
        "null observer": (ADMIT_ALL, [NullObserver()]),
        "prometheus": (ADMIT_ALL, [PrometheusObserver(CollectorRegistry())]),
        "statsd, dead port": (ADMIT_ALL, [statsd(dead_port())]),
        "statsd, live": (ADMIT_ALL, [statsd(live)]),
        "dogstatsd, live": (ADMIT_ALL, [statsd(live, tags="dogstatsd")]),
        "opentelemetry": (ADMIT_ALL, [otel(spans=False)]),
        "opentelemetry + spans": (ADMIT_ALL, [otel(spans=True)]),
        "audit log": (ADMIT_ALL, [audit("allowed.jsonl")]),
        "all": (
            ADMIT_ALL,
            [
                PrometheusObserver(CollectorRegistry()),
                statsd(live),
                otel(spans=True),
                audit("all.jsonl"),
            ],
        ),
        "none, denied": (DENY_ALL, []),
        "audit log, denied": (DENY_ALL, [audit("denied.jsonl")]),
    }


def measure(hits: int, rounds: int) -> dict[str, float]:
    """name -> median ns per decision."""
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        limiters: dict[str, Callable[[str], Any]] = {}
        for name, (limits, observers) in cases(stack, folder).items():
            limiter = RateLimiter(limits, name="bench", observers=observers)
            limiter.hit("bench:0")  # drains DENY_ALL; creates the key's state either way
            limiters[name] = limiter.hit
        seq = key_sequence(1, hits)
        for hit in limiters.values():  # warm up
            ns_per_decision(hit, seq)
        samples: dict[str, list[float]] = {name: [] for name in limiters}
        for _ in range(rounds):
            for name, hit in limiters.items():
                samples[name].append(ns_per_decision(hit, seq))
    return {name: statistics.median(values) for name, values in samples.items()}


def table(results: dict[str, float]) -> str:
    rows = ["| case | ns / decision | x none | + ns |", "|---|---:|---:|---:|"]
    for name, ns in results.items():
        base = results["none, denied" if name.endswith("denied") else "none"]
        rows.append(f"| {name} | {ns:,.0f} | {ns / base:.2f} | {ns - base:+,.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: checks that it runs")
    args = parser.parse_args(argv)
    hits, rounds = (SMOKE_HITS, SMOKE_ROUNDS) if args.smoke else (HITS, ROUNDS)
    print(f"memory store, one key, {hits:,} decisions x {rounds} rounds (median)\n")
    print(table(measure(hits, rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
