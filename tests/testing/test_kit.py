"""The testing kit: MockRateLimiter, TimeMachine, assert_limited_after and the pytest plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

import ratekeeper
from ratekeeper import AsyncRateLimiter, RateLimiter, RateLimitExceeded, RateLimitTimeout
from ratekeeper.clock import default_clock, system_clock
from ratekeeper.errors import ConfigError
from ratekeeper.registry import Registry
from ratekeeper.testing import (
    AsyncMockRateLimiter,
    MockRateLimiter,
    TimeMachine,
    assert_limited_after,
    assert_limited_after_async,
)
from ratekeeper.testing.pytest_plugin import RK_CLOCK_START


def test_mock_always_allow_and_always_deny_are_drop_in_limiters():
    allow = MockRateLimiter("always_allow")
    assert isinstance(allow, RateLimiter)
    assert all(allow.hit("k") for _ in range(100))
    assert allow.enforce("k") and allow.acquire("k", timeout=1)
    deny = MockRateLimiter("always_deny", retry_after=7)
    d = deny.hit("k")
    assert not d and d.retry_after == 7 and d.headers()["Retry-After"] == "7"
    with pytest.raises(RateLimitExceeded):
        deny.enforce("k")
    with pytest.raises(RateLimitTimeout):
        deny.acquire("k", timeout=5)
    with pytest.raises(RateLimitExceeded):  # never hangs: an always-deny limiter never admits
        deny.acquire("k")
    assert deny.calls[:2] == [("k", 1.0), ("k", 1.0)]
    with pytest.raises(ValueError):
        allow.hit("k", cost=-1)


def test_mock_sequence_answers_in_order_and_peek_does_not_consume():
    mock = MockRateLimiter("sequence", sequence=[True, False, True])
    assert mock.peek("a").allowed
    assert [bool(mock.hit(k)) for k in ("a", "b")] == [True, False]
    assert mock.peek("c").allowed
    assert mock.hit("c").allowed
    assert mock.calls == [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    with pytest.raises(AssertionError, match="used up"):
        mock.hit("d")
    # acquire takes answers until one allows, on a fake clock: no sleeping
    waiting = MockRateLimiter("sequence", sequence=[False, False, True])
    assert waiting.acquire("k").allowed and len(waiting.calls) == 3


def test_mock_rejects_bad_modes():
    with pytest.raises(ConfigError, match="mode"):
        MockRateLimiter("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sequence"):
        MockRateLimiter("sequence")
    with pytest.raises(ConfigError, match="sequence"):
        MockRateLimiter("always_allow", sequence=[True])


async def test_async_mock():
    mock = AsyncMockRateLimiter("sequence", sequence=[True, False])
    assert isinstance(mock, AsyncRateLimiter)
    assert (await mock.hit("k")).allowed and not (await mock.hit("k")).allowed
    deny = AsyncMockRateLimiter("always_deny")
    with pytest.raises(RateLimitTimeout):
        await deny.acquire("k", timeout=1)


def test_assert_limited_after():
    limiter = RateLimiter("3/minute", clock=TimeMachine(0).clock)
    denial = assert_limited_after(limiter, "k", 3)
    assert denial.retry_after > 0
    with pytest.raises(AssertionError, match="hit 4 of 4"):
        assert_limited_after(RateLimiter("3/minute"), "j", 4)  # the 4th is denied, not the 5th
    with pytest.raises(AssertionError, match="after 2 allowed was allowed"):
        assert_limited_after(RateLimiter("3/minute"), "j", 2)


async def test_assert_limited_after_async():
    await assert_limited_after_async(AsyncRateLimiter("2/minute"), "k", 2)


def test_time_machine_freezes_limiters_built_while_frozen():
    before = RateLimiter("1/minute")
    with TimeMachine(datetime(2030, 1, 1, tzinfo=UTC)) as tm:
        assert default_clock() is tm.clock
        limiter = RateLimiter("1/minute")
        assert limiter.clock() == tm() == datetime(2030, 1, 1, tzinfo=UTC).timestamp()
        assert_limited_after(limiter, "k", 1)
        tm.advance(60)
        assert_limited_after(limiter, "k", 1)
        tm.travel_to(datetime(2030, 1, 2))  # naive: UTC
        assert tm() == datetime(2030, 1, 2, tzinfo=UTC).timestamp()
        assert limiter.hit("k").allowed
        tm.travel_to(tm() - 3600)  # backwards: a clock stepping back grants nothing
        assert not limiter.hit("k").allowed
        with pytest.raises(ValueError):
            tm.advance(-1)
        # acquire waits by advancing the machine's clock, instantly
        assert limiter.acquire("k").allowed
    assert before.clock is system_clock and default_clock() is system_clock
    assert RateLimiter("1/minute").clock is system_clock


def test_time_machine_freeze_and_unfreeze_nest():
    outer, inner = TimeMachine(100), TimeMachine(200)
    try:
        outer.freeze()
        inner.freeze()
        assert default_clock() is inner.clock
        inner.unfreeze()
        assert default_clock() is outer.clock
    finally:  # never leave time frozen for the tests that follow
        inner.unfreeze()
        outer.unfreeze()
    outer.unfreeze()  # idempotent
    assert default_clock() is system_clock


def test_rk_clock_fixture(rk_clock):
    limiter = RateLimiter("2/minute", algorithm="fixed_window")
    assert limiter.clock() == RK_CLOCK_START
    assert_limited_after(limiter, "k", 2)
    rk_clock.advance(60)
    assert_limited_after(limiter, "k", 2)


def test_rk_registry_fixture_is_isolated_and_the_default(rk_registry, rk_clock):
    assert isinstance(rk_registry, Registry)
    ratekeeper.configure_limiter("github", "2/minute")
    assert ratekeeper.list_limiters().keys() == {"github"} == rk_registry.list_limiters().keys()
    limiter = ratekeeper.get_limiter("github")
    assert_limited_after(limiter, "k", 2)
    rk_clock.advance(60)
    assert limiter.hit("k")


def test_rk_registry_leaves_the_real_default_untouched():
    assert "github" not in ratekeeper.list_limiters()
    assert RateLimiter("1/minute").clock is system_clock  # no clock left frozen


PLUGIN_TEST = """
    from ratekeeper import RateLimiter, get_limiter, configure_limiter

    def test_fixtures(rk_clock, rk_registry):
        import ratekeeper
        ratekeeper.configure_limiter("api", "1/minute")
        limiter = ratekeeper.get_limiter("api")
        assert limiter.hit("k") and not limiter.hit("k")
        rk_clock.advance(60)
        assert limiter.hit("k")
"""


# Hypothesis's plugin takes seconds to import; these runs do not need it.
NO_HYPOTHESIS = ["-p", "no:hypothesispytest"]


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({}, NO_HYPOTHESIS),  # the pytest11 entry point loads it
        ({"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, ["-p", "ratekeeper.testing.pytest_plugin"]),
        ({}, [*NO_HYPOTHESIS, "-p", "ratekeeper.testing.pytest_plugin"]),  # both: loaded once
    ],
    ids=["autoload", "explicit", "explicit_and_autoload"],
)
def test_pytest_plugin_activation(tmp_path: Path, env, args):
    (tmp_path / "test_user.py").write_text(textwrap.dedent(PLUGIN_TEST))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert "1 passed" in result.stdout, result.stdout + result.stderr
