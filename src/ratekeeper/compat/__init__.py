"""The API shapes of the libraries ratekeeper grew from, as thin conveniences over its one core.

Each module keeps another library's names and call shapes, so moving to ratekeeper is an import
change; underneath, every call is a ratekeeper limiter from a :class:`~ratekeeper.Registry`, and
every web decorator is the FastAPI integration's (same keys, headers, 429s and store-outage
policy):

- :mod:`ratekeeper.compat.netrun`: ``rate_limit(rate=, period=)``, ``limit_by_user`` and
  ``limit_by_api_key`` route decorators for FastAPI; ``X-RateLimit-Reset`` as a Unix timestamp.
- :mod:`ratekeeper.compat.fastlimit`: ``await limiter.check(key, rate="50/second",
  tenant_type="premium")`` with per-call rates and tenant tiers namespaced in the key, and
  ``@limiter.limit(rate_or_callable, key=, cost=, tenant_type=)``.
- :mod:`ratekeeper.compat.distlimiter`: ``await limiter.allow(key)``, ``get_stats(key)``.

The pages under "Coming from" in the documentation map every call.
"""
