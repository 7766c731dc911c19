"""`RateLimiter` and `AsyncRateLimiter`.

One implementation: what is not I/O lives in `_limiter_base` (checks, the store failure policy,
``acquire``'s flow as a generator of steps); `AsyncRateLimiter` is written in `_async_limiter` and
`RateLimiter` generated from it into `_sync_limiter` (``scripts/unasync.py``).
"""

from __future__ import annotations

from ratekeeper._async_limiter import AsyncPermit, AsyncRateLimiter
from ratekeeper._limiter_base import AsyncAcquire, Limits, OnStoreError
from ratekeeper._sync_limiter import Permit, RateLimiter

__all__ = [
    "AsyncAcquire",
    "AsyncPermit",
    "AsyncRateLimiter",
    "Limits",
    "OnStoreError",
    "Permit",
    "RateLimiter",
]
