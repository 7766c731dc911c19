"""One adapter per (library, algorithm, store): each builds a fresh limiter and exposes its public
"decide one request for this key" call as ``hit(key)``.

Equivalent work, by construction:

- every limiter enforces the same limit, ``AMOUNT`` units per hour, one unit per request; the
  amount is so high that every request is admitted, so the cases measure the decision path (read
  state, decide, write state) and never a denial shortcut;
- every limiter keeps one independent budget per key (pyrate-limiter's ``Limiter`` shares one
  bucket between all names, so it gets a small bucket factory that routes each name to its own
  bucket, as its documentation recommends for per-key limits);
- throttled-py's memory store keeps at most 1,024 keys by default and silently forgets older ones;
  it gets ``MAX_SIZE`` large enough to hold every key of a case, like the other stores;
- the public call each library documents for one request: ratekeeper ``RateLimiter.hit(key)``,
  limits ``strategy.hit(item, key)``, throttled-py ``Throttled.limit(key)``, pyrate-limiter
  ``Limiter.try_acquire(key, blocking=False)``.

The algorithm families (``FAMILIES``) map each library's algorithms onto ratekeeper's names.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ratekeeper import AsyncRateLimiter, Limit, RateLimiter

AMOUNT = 1_000_000_000
PER = 3600
MAX_KEYS = 10_000_000

FAMILIES = (
    "fixed_window",
    "sliding_window",
    "sliding_log",
    "token_bucket",
    "gcra",
    "leaky_bucket",
)

# family -> library -> that library's name for the algorithm
LIMITS_MEMORY = {
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
    "sliding_log": "MovingWindowRateLimiter",
}
THROTTLED = {
    "fixed_window": "fixed_window",
    "sliding_window": "sliding_window",
    "token_bucket": "token_bucket",
    "gcra": "gcra",
    "leaky_bucket": "leaking_bucket",
}
PYRATE = {
    "fixed_window": "FixedWindow",
    "sliding_log": "SlidingWindowLog",
    "token_bucket": "TokenBucket",
    "gcra": "GCRA",
}

PYRATE_NAMES = {
    "FixedWindow": "fixed window",
    "SlidingWindowLog": "sliding window log",
    "TokenBucket": "token bucket (GCRA)",
    "GCRA": "GCRA",
}

LIBRARIES = ("ratekeeper", "limits", "throttled-py", "pyrate-limiter")


@dataclass
class Contender:
    """A ready limiter: ``hit(key)`` decides one request (``ahit`` for asyncio ones)."""

    library: str
    algorithm: str
    hit: Callable[[str], Any]
    close: Callable[[], Any] = field(default=lambda: None)
    is_async: bool = False


Factory = Callable[[], Contender]


def _nothing() -> None:
    return None


# --------------------------------------------------------------------------- ratekeeper


def ratekeeper(family: str, url: str | None = None, **options: Any) -> Factory:
    def build() -> Contender:
        limiter = RateLimiter(Limit(AMOUNT, per=PER), algorithm=family, store=url, **options)
        return Contender("ratekeeper", family, limiter.hit, limiter.close)

    return build


def ratekeeper_async(family: str, url: str, **options: Any) -> Factory:
    def build() -> Contender:
        limiter = AsyncRateLimiter(Limit(AMOUNT, per=PER), algorithm=family, store=url, **options)
        return Contender("ratekeeper", family, limiter.hit, limiter.close, is_async=True)

    return build


# --------------------------------------------------------------------------- limits


def limits_(family: str, url: str | None = None, amount: int = AMOUNT) -> Factory | None:
    name = LIMITS_MEMORY.get(family)
    if name is None:
        return None

    def build() -> Contender:
        from limits import RateLimitItemPerHour, storage, strategies

        store = storage.MemoryStorage() if url is None else storage.storage_from_string(url)
        strategy = getattr(strategies, name)(store)
        item = RateLimitItemPerHour(amount)
        return Contender("limits", _words(name), functools.partial(strategy.hit, item), _nothing)

    return build


def limits_async(family: str, url: str) -> Factory | None:
    name = LIMITS_MEMORY.get(family)
    if name is None:
        return None

    def build() -> Contender:
        from limits import RateLimitItemPerHour
        from limits.aio import strategies
        from limits.storage import storage_from_string

        store = storage_from_string("async+" + url)
        strategy = getattr(strategies, name)(store)
        item = RateLimitItemPerHour(AMOUNT)
        return Contender(
            "limits", _words(name), functools.partial(strategy.hit, item), _nothing, True
        )

    return build


def _words(class_name: str) -> str:
    base = class_name.removesuffix("RateLimiter")
    return "".join(" " + c.lower() if c.isupper() else c for c in base).strip()


# --------------------------------------------------------------------------- throttled-py


def throttled(family: str, url: str | None = None, amount: int = AMOUNT) -> Factory | None:
    using = THROTTLED.get(family)
    if using is None:
        return None

    def build() -> Contender:
        from throttled import MemoryStore, RedisStore, Throttled, per_hour

        if url is None:
            store: Any = MemoryStore(options={"MAX_SIZE": MAX_KEYS})
        else:
            store = RedisStore(server=url)
        limiter = Throttled(using=using, quota=per_hour(amount), store=store)
        return Contender("throttled-py", using.replace("_", " "), limiter.limit, _nothing)

    return build


def throttled_async(family: str, url: str) -> Factory | None:
    using = THROTTLED.get(family)
    if using is None:
        return None

    def build() -> Contender:
        from throttled.asyncio import RedisStore, Throttled, per_hour

        limiter = Throttled(using=using, quota=per_hour(AMOUNT), store=RedisStore(server=url))
        return Contender("throttled-py", using.replace("_", " "), limiter.limit, _nothing, True)

    return build


# --------------------------------------------------------------------------- pyrate-limiter


def pyrate(family: str) -> Factory | None:
    name = PYRATE.get(family)
    if name is None:
        return None

    def build() -> Contender:
        import pyrate_limiter as pl

        rates = [pl.Rate(AMOUNT, pl.Duration.HOUR)]
        algorithm = getattr(pl, name)
        if name in ("GCRA", "TokenBucket"):

            def bucket() -> Any:
                return pl.StateBucket(rates, algorithm=algorithm())
        else:

            def bucket() -> Any:
                return pl.InMemoryBucket(rates, algorithm=algorithm())

        limiter = pl.Limiter(_per_key_factory(pl, bucket))
        hit = functools.partial(limiter.try_acquire, blocking=False)
        return Contender("pyrate-limiter", PYRATE_NAMES[name], hit, limiter.close)

    return build


def _per_key_factory(pl: Any, make_bucket: Callable[[], Any]) -> Any:
    """pyrate-limiter routes every name to one bucket unless a factory says otherwise."""

    class PerKey(pl.BucketFactory):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.buckets: dict[str, Any] = {}
            self.clock = pl.MonotonicClock()

        def wrap_item(self, name: str, weight: int = 1) -> Any:
            return pl.RateItem(name, self.clock.now(), weight=weight)

        def get(self, item: Any) -> Any:
            bucket = self.buckets.get(item.name)
            if bucket is None:
                bucket = self.buckets[item.name] = make_bucket()
            return bucket

    return PerKey()


# --------------------------------------------------------------------------- the floor


def redis_floor(url: str, command: str) -> Factory:
    """The raw redis-py round trip every Redis limiter pays at least once per decision."""

    def build() -> Contender:
        import redis

        client = redis.Redis.from_url(url)
        if command == "EVALSHA":
            sha = client.script_load("return 1")
            hit: Callable[[str], Any] = functools.partial(client.evalsha, sha, 1)
        elif command == "PING":

            def hit(key: str) -> Any:
                return client.ping()
        else:
            hit = client.incr
        return Contender("redis-py", f"{command} (floor)", hit, client.close)

    return build


def redis_floor_async(url: str) -> Factory:
    def build() -> Contender:
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(url)
        script = client.register_script("return 1")

        def hit(key: str) -> Awaitable[Any]:
            return script(keys=[key])

        return Contender("redis-py", "EVALSHA (floor)", hit, client.aclose, True)

    return build
