"""ratekeeper: rate limiting for Python, from one process to a fleet.

>>> from ratekeeper import RateLimiter
>>> RateLimiter("100/minute").hit("user:42").allowed
True
"""

from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, RateLimitExceeded, RateLimitTimeout, StoreUnavailable
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter
from ratekeeper.limits import Limit, parse_limits

__all__ = [
    "AsyncRateLimiter",
    "ConfigError",
    "Decision",
    "Limit",
    "RateLimitExceeded",
    "RateLimitTimeout",
    "RateLimiter",
    "StoreUnavailable",
    "parse_limits",
]

__version__ = "0.1.0"
