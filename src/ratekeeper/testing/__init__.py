"""Tools for testing code that uses ratekeeper.

- time: `FakeClock` (pass ``clock=``) and `TimeMachine` (freeze the time of every limiter built
  without ``clock=``);
- limiters that answer as told: `MockRateLimiter` (``always_allow``, ``always_deny``,
  ``sequence``), `AsyncMockRateLimiter`, `AllowAll`, `DenyAll`;
- assertions: `assert_allowed`, `assert_denied`, `assert_limited_after` (and ``_async`` twins);
- `ratekeeper.testing.conformance`: the store conformance suite, for authors of stores;
- `ratekeeper.testing.pytest_plugin`: the ``rk_registry`` and ``rk_clock`` fixtures.

The last two import pytest; this package itself imports nothing beyond ratekeeper's core.
"""

from __future__ import annotations

from ratekeeper.testing.assertions import (
    assert_allowed,
    assert_allowed_async,
    assert_denied,
    assert_denied_async,
    assert_limited_after,
    assert_limited_after_async,
)
from ratekeeper.testing.clock import FakeClock, TimeMachine
from ratekeeper.testing.mock import AllowAll, AsyncMockRateLimiter, DenyAll, MockRateLimiter

__all__ = [
    "AllowAll",
    "AsyncMockRateLimiter",
    "DenyAll",
    "FakeClock",
    "MockRateLimiter",
    "TimeMachine",
    "assert_allowed",
    "assert_allowed_async",
    "assert_denied",
    "assert_denied_async",
    "assert_limited_after",
    "assert_limited_after_async",
]
