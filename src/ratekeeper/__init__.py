"""ratekeeper: rate limiting for Python, from one process to a fleet.

>>> from ratekeeper import RateLimiter
>>> RateLimiter("100/minute").hit("user:42").allowed
True
"""

from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, RateLimitExceeded, RateLimitTimeout, StoreUnavailable
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter
from ratekeeper.limits import Limit, parse_limits
from ratekeeper.metrics import LimiterMetrics
from ratekeeper.policies._async_chain import AsyncChain
from ratekeeper.policies._async_reservation import AsyncReservation
from ratekeeper.policies._sync_chain import Chain
from ratekeeper.policies._sync_reservation import Reservation
from ratekeeper.policies.adaptive import AdaptiveLimiter, AsyncAdaptiveLimiter
from ratekeeper.policies.penalty import AsyncPenalty, Penalty
from ratekeeper.policies.quota import AsyncQuotaPool, QuotaPool
from ratekeeper.registry import (
    Registry,
    acquire,
    clone_limiter,
    configure_limiter,
    configure_store,
    get_async_limiter,
    get_limiter,
    initialize_all_limiters,
    initialize_limiter,
    list_limiters,
    list_stores,
    load_config,
    observe,
    rate_limited,
)

__all__ = [
    "AdaptiveLimiter",
    "AsyncAdaptiveLimiter",
    "AsyncChain",
    "AsyncPenalty",
    "AsyncQuotaPool",
    "AsyncRateLimiter",
    "AsyncReservation",
    "Chain",
    "ConfigError",
    "Decision",
    "Limit",
    "LimiterMetrics",
    "Penalty",
    "QuotaPool",
    "RateLimitExceeded",
    "RateLimitTimeout",
    "RateLimiter",
    "Registry",
    "Reservation",
    "StoreUnavailable",
    "acquire",
    "clone_limiter",
    "configure_limiter",
    "configure_store",
    "get_async_limiter",
    "get_limiter",
    "initialize_all_limiters",
    "initialize_limiter",
    "list_limiters",
    "list_stores",
    "load_config",
    "observe",
    "parse_limits",
    "rate_limited",
]

__version__ = "0.1.0"
