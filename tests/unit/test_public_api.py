import subprocess
import sys

import ratekeeper


def test_exported_names():
    assert set(ratekeeper.__all__) == {
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
    }
    for name in ratekeeper.__all__:
        assert getattr(ratekeeper, name).__module__.startswith("ratekeeper.")


def test_error_hierarchy():
    assert issubclass(ratekeeper.ConfigError, ValueError)
    assert issubclass(ratekeeper.RateLimitTimeout, ratekeeper.RateLimitExceeded)


def test_core_imports_no_optional_dependency():
    code = (
        "import sys, ratekeeper, ratekeeper.testing, ratekeeper.cli;"
        "bad = [m for m in ('redis', 'psycopg', 'nats', 'fastapi', 'starlette', 'flask',"
        " 'django', 'aiohttp') if m in sys.modules];"
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
