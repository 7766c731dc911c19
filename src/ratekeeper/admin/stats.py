"""`DashboardStats`: the admin app's own observer, the data behind the live dashboard.

Per limiter it keeps, in bounded memory whatever the traffic:

- decisions per second by result (allowed, denied, shadow_denied, error) for the last
  `SERIES_SECONDS` seconds: a ring of one slot per second, each slot stamped with the second it
  holds, so a quiet spell needs no clean-up (a stale slot reads as zero);
- the near-limit count and the store-error count since the app started (near limit is counted
  exactly as `PrometheusObserver` counts it: the same rule from ``observability._common``);
- the most denied keys: at most `TRACKED_KEYS` counters; when that is full, every count is halved
  and those that fall to zero are dropped (amortised O(1), the heavy hitters stay). With
  ``hash_keys`` the keys are replaced by the HMAC-SHA256 digest `AuditLog` writes (pass its
  secret to compare the two).

At most `TRACKED_LIMITERS` limiters are followed (names can be made per request); events of
further names are counted in ``untracked`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from typing import Any, Final

from ratekeeper.events import Event
from ratekeeper.observability import DEFAULT_NEAR_LIMIT_RATIO
from ratekeeper.observability._common import RESULTS, headroom, is_near_limit, result_of

__all__ = ["SERIES_SECONDS", "TOP_KEYS", "TRACKED_KEYS", "TRACKED_LIMITERS", "DashboardStats"]

SERIES_SECONDS: Final = 300  # the chart's span: five minutes, one point a second
TOP_KEYS: Final = 10  # denied keys shown per limiter
TRACKED_KEYS: Final = 1000  # denied-key counters kept per limiter
TRACKED_LIMITERS: Final = 256
SECRET_BYTES: Final = 32
_INDEX: Final = {result: i for i, result in enumerate(RESULTS)}


class _Limiter:
    """The series and counters of one limiter (guarded by the owner's lock)."""

    __slots__ = ("counts", "denied_keys", "near_limit", "seconds", "store_errors")

    def __init__(self) -> None:
        self.seconds = [-1] * SERIES_SECONDS  # the second each slot holds
        self.counts = [[0] * len(RESULTS) for _ in range(SERIES_SECONDS)]
        self.near_limit = 0
        self.store_errors = 0
        self.denied_keys: dict[str, int] = {}

    def count(self, second: int, index: int) -> None:
        slot = second % SERIES_SECONDS
        if self.seconds[slot] != second:
            if second < self.seconds[slot]:
                return  # older than the span
            self.seconds[slot] = second
            self.counts[slot] = [0] * len(RESULTS)
        self.counts[slot][index] += 1

    def deny(self, key: str) -> None:
        keys = self.denied_keys
        if key not in keys and len(keys) >= TRACKED_KEYS:
            for name in list(keys):
                keys[name] //= 2
                if not keys[name]:
                    del keys[name]
        keys[key] = keys.get(key, 0) + 1

    def series(self, now: int, seconds: int) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {result: [] for result in RESULTS}
        for second in range(now - seconds + 1, now + 1):
            slot = second % SERIES_SECONDS
            counts = self.counts[slot] if self.seconds[slot] == second else None
            for result, index in _INDEX.items():
                out[result].append(counts[index] if counts else 0)
        return out


class DashboardStats:
    """An observer (``registry.observe(stats)``) keeping what the dashboard shows."""

    def __init__(
        self,
        *,
        hash_keys: bool = False,
        secret: bytes | str | None = None,
        near_limit_ratio: float = DEFAULT_NEAR_LIMIT_RATIO,
        clock: Any = time.time,
    ) -> None:
        self.hash_keys = hash_keys
        if isinstance(secret, str):
            secret = secret.encode()
        self._secret = secret if secret is not None else secrets.token_bytes(SECRET_BYTES)
        self._headroom = headroom(near_limit_ratio)
        self._clock = clock
        self._lock = threading.Lock()
        self._limiters: dict[str, _Limiter] = {}
        self.untracked = 0

    def digest(self, key: str) -> str:
        """What the dashboard shows for ``key`` when ``hash_keys`` (`AuditLog.digest`'s value)."""
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def observe(self, event: Event) -> None:
        if event.kind != "hit":
            return
        result = result_of(event)
        if result is None:
            return
        with self._lock:
            limiter = self._limiters.get(event.limiter)
            if limiter is None:
                if len(self._limiters) >= TRACKED_LIMITERS:
                    self.untracked += 1
                    return
                limiter = self._limiters[event.limiter] = _Limiter()
            limiter.count(int(event.time), _INDEX[result])
            if result == "allowed" and is_near_limit(event.decision, self._headroom):
                limiter.near_limit += 1
            elif result == "error":
                limiter.store_errors += 1
            elif result == "denied":
                limiter.deny(self.digest(event.key) if self.hash_keys else str(event.key))

    def snapshot(self, seconds: int = SERIES_SECONDS) -> dict[str, Any]:
        """What ``GET /stats`` answers: per limiter, one count per second and result for the
        last ``seconds`` seconds (oldest first, ending with the current second), the near-limit
        and store-error counts, and the top denied keys."""
        seconds = max(1, min(seconds, SERIES_SECONDS))
        now = int(self._clock())
        with self._lock:
            limiters = {
                name: {
                    "series": limiter.series(now, seconds),
                    "near_limit": limiter.near_limit,
                    "store_errors": limiter.store_errors,
                    "top_denied": [
                        {"key": key, "count": count}
                        for key, count in sorted(
                            limiter.denied_keys.items(), key=lambda item: (-item[1], item[0])
                        )[:TOP_KEYS]
                    ],
                }
                for name, limiter in sorted(self._limiters.items())
            }
        return {
            "now": now,
            "seconds": seconds,
            "hash_keys": self.hash_keys,
            "untracked": self.untracked,
            "limiters": limiters,
        }
