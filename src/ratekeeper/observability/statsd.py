"""`StatsdObserver`: the contract's measures as StatsD datagrams over UDP.

Each event becomes one datagram (its lines joined by newlines, which StatsD and DogStatsD both
accept), sent by a non-blocking ``sendto``. Nothing here ever blocks a request or raises: a dead
port, a full socket buffer or a host that does not resolve drop the datagram (StatsD is
lossy by design); the host is resolved once, when the observer is built, and again at most every
``RESOLVE_INTERVAL`` seconds in a background thread while it does not resolve.

Names, plain StatsD (the limiter in the path, its name sanitized to ``[A-Za-z0-9_-]``)::

    ratekeeper.<limiter>.decisions.<result>:1|c      allowed, denied, shadow_denied, error
    ratekeeper.<limiter>.near_limit:1|c
    ratekeeper.<limiter>.wait:12.500|ms               acquire waits (got a slot or timed out)
    ratekeeper.<limiter>.timeouts:1|c
    ratekeeper.<limiter>.in_flight:3|g
    ratekeeper.store.<store>:0.210|ms                 store round trips, by store kind

DogStatsD (``tags="dogstatsd"``): the same measures, with the limiter (and result, store) as tags::

    ratekeeper.decisions.allowed:1|c|#limiter:api,result:allowed
    ratekeeper.near_limit:1|c|#limiter:api
    ratekeeper.wait:12.500|ms|#limiter:api
    ratekeeper.timeouts:1|c|#limiter:api
    ratekeeper.in_flight:3|g|#limiter:api
    ratekeeper.store:0.210|ms|#store:redis
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import weakref
from typing import Final, Literal

from ratekeeper.errors import ConfigError
from ratekeeper.events import Event
from ratekeeper.observability._common import (
    DEFAULT_NEAR_LIMIT_RATIO,
    RESULTS,
    headroom,
    is_near_limit,
    result_of,
    store_seconds,
    wait_seconds,
)

__all__ = ["StatsdObserver"]

RESOLVE_INTERVAL: Final = 30.0  # seconds between attempts to resolve a host that did not resolve
MS_PER_SECOND: Final = 1000.0
_PATH_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # a path segment: no dots, colons, pipes, spaces
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_./-]")  # a tag value: no commas, pipes, '#', ':', spaces

Address = tuple[str, int] | tuple[str, int, int, int]


class _Names:
    """The pre-built lines of one limiter (names are sanitized once, not per event)."""

    __slots__ = ("decisions", "in_flight", "near_limit", "timeouts", "wait")

    def __init__(self, prefix: str, limiter: str, dogstatsd: bool) -> None:
        if dogstatsd:
            tag = f"limiter:{_TAG_UNSAFE.sub('_', limiter)}"
            self.decisions = {
                r: f"{prefix}.decisions.{r}:1|c|#{tag},result:{r}".encode() for r in RESULTS
            }
            self.near_limit = f"{prefix}.near_limit:1|c|#{tag}".encode()
            self.timeouts = f"{prefix}.timeouts:1|c|#{tag}".encode()
            self.wait = (f"{prefix}.wait:", f"|ms|#{tag}")
            self.in_flight = (f"{prefix}.in_flight:", f"|g|#{tag}")
        else:
            path = f"{prefix}.{_PATH_UNSAFE.sub('_', limiter) or '_'}"
            self.decisions = {r: f"{path}.decisions.{r}:1|c".encode() for r in RESULTS}
            self.near_limit = f"{path}.near_limit:1|c".encode()
            self.timeouts = f"{path}.timeouts:1|c".encode()
            self.wait = (f"{path}.wait:", "|ms")
            self.in_flight = (f"{path}.in_flight:", "|g")


class StatsdObserver:
    """Sends every event to the StatsD (or DogStatsD, ``tags="dogstatsd"``) server at
    ``host:port`` over UDP, under ``prefix``. See the module's docstring for the names."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8125,
        prefix: str = "ratekeeper",
        tags: Literal["dogstatsd"] | None = None,
        near_limit_ratio: float = DEFAULT_NEAR_LIMIT_RATIO,
    ) -> None:
        if tags not in (None, "dogstatsd"):
            raise ConfigError(f"StatsdObserver tags must be None or 'dogstatsd', got {tags!r}")
        if not 0 < port < 65536:
            raise ConfigError(f"StatsdObserver port must be 1-65535, got {port!r}")
        self.host = host
        self.port = port
        self.prefix = ".".join(_PATH_UNSAFE.sub("_", part) for part in prefix.split("."))
        self.dogstatsd = tags == "dogstatsd"
        self._headroom = headroom(near_limit_ratio)
        self._names: dict[str, _Names] = {}
        self._stores: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self._address: Address | None = None
        self._socket: socket.socket | None = None
        self._next_resolve = 0.0
        self._closed = False
        self._resolve()

    def close(self) -> None:
        """Close the socket (later events are dropped)."""
        with self._lock:
            sock, self._socket, self._address = self._socket, None, None
            self._closed = True
        if sock is not None:
            sock.close()

    def __enter__(self) -> StatsdObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def observe(self, event: Event) -> None:
        names = self._names.get(event.limiter) or self._names_of(event.limiter)
        lines: list[bytes] = []
        if event.kind == "hit":
            result = result_of(event)
            if result is not None:
                lines.append(names.decisions[result])
                if result == "allowed" and is_near_limit(event.decision, self._headroom):
                    lines.append(names.near_limit)
            elapsed = store_seconds(event.store_seconds)
            if elapsed is not None:
                head, tail = self._stores.get(event.store) or self._store_names(event.store)
                lines.append(f"{head}{elapsed * MS_PER_SECOND:.3f}{tail}".encode())
        elif event.kind == "acquire" or event.kind == "timeout":
            head, tail = names.wait
            lines.append(
                f"{head}{wait_seconds(event.wait_seconds) * MS_PER_SECOND:.3f}{tail}".encode()
            )
            if event.kind == "timeout":
                lines.append(names.timeouts)
        head, tail = names.in_flight
        lines.append(f"{head}{int(event.in_flight)}{tail}".encode())
        self._send(b"\n".join(lines))

    def _send(self, datagram: bytes) -> None:
        sock, address = self._socket, self._address
        if sock is None or address is None:
            if time.monotonic() >= self._next_resolve and not self._closed:
                self._resolve_later()
            return
        # Nobody listening (ICMP refused), buffer full, network down: the datagram is dropped.
        with contextlib.suppress(OSError):
            sock.sendto(datagram, address)

    def _names_of(self, limiter: str) -> _Names:
        with self._lock:
            names = self._names.get(limiter)
            if names is None:
                names = self._names[limiter] = _Names(self.prefix, limiter, self.dogstatsd)
            return names

    def _store_names(self, kind: str) -> tuple[str, str]:
        with self._lock:
            names = self._stores.get(kind)
            if names is None:
                if self.dogstatsd:
                    names = (f"{self.prefix}.store:", f"|ms|#store:{_TAG_UNSAFE.sub('_', kind)}")
                else:
                    names = (f"{self.prefix}.store.{_PATH_UNSAFE.sub('_', kind) or '_'}:", "|ms")
                self._stores[kind] = names
            return names

    def _resolve_later(self) -> None:
        with self._lock:
            if time.monotonic() < self._next_resolve:
                return  # another thread started it
            self._next_resolve = time.monotonic() + RESOLVE_INTERVAL
        threading.Thread(
            target=self._resolve, name="ratekeeper-statsd-resolve", daemon=True
        ).start()

    def _resolve(self) -> None:
        """Resolve the host and open a non-blocking UDP socket of its family; on failure, leave
        the observer dropping datagrams until the next attempt."""
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError:
            return
        sock.setblocking(False)
        weakref.finalize(self, sock.close)  # closed with the observer if nobody calls close()
        with self._lock:
            if self._closed:
                sock.close()
                return
            old, self._socket = self._socket, sock
            self._address = address  # type: ignore[assignment]
        if old is not None:
            old.close()
