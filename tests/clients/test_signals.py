"""Reading upstream signals, and the gate's pure logic (explicit times, no I/O)."""

from __future__ import annotations

from email.utils import formatdate

import httpx
import pytest

from ratekeeper import RateLimiter
from ratekeeper.clients.gate import PROBE_POLL, Gate
from ratekeeper.clients.signals import (
    BARE_429_PAUSE,
    Signals,
    parse_retry_after,
    parse_structured_list,
    read_signals,
)
from ratekeeper.testing import FakeClock

NOW = 1_700_000_000.0


def signals(status: int = 200, **headers: str) -> Signals:
    return read_signals(
        status, httpx.Headers({k.replace("_", "-"): v for k, v in headers.items()}), NOW
    )


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(formatdate(NOW + 30, usegmt=True), NOW) == pytest.approx(30)
    assert parse_retry_after(formatdate(NOW - 30, usegmt=True), NOW) == 0  # in the past
    for bad in (None, "", "soon", "-5", "1.5e3x"):
        assert parse_retry_after(bad, NOW) is None


def test_structured_list():
    value = '"a;b";r=4;t=10, token;q=5;w=60;pk=:cHJ:, "x,y";r=0'
    assert parse_structured_list(value) == [
        ("a;b", {"r": "4", "t": "10"}),
        ("token", {"q": "5", "w": "60", "pk": ":cHJ:"}),
        ("x,y", {"r": "0"}),
    ]


def test_draft10_binding_item_and_its_quota():
    s = signals(
        RateLimit='"burst";r=3;t=1, "daily";r=1;t=3600',
        RateLimit_Policy='"burst";q=10;w=1, "daily";q=1000;w=86400',
    )
    assert s == Signals(remaining=1, reset=3600, retry_after=None, quota=1000)


def test_our_own_headers_read_back():
    limiter = RateLimiter("2/minute", clock=FakeClock(NOW))
    limiter.hit("k")
    s = read_signals(200, httpx.Headers(limiter.hit("k").headers()), NOW)
    assert (s.remaining, s.quota) == (0, 2) and s.reset == pytest.approx(60)
    denial = read_signals(429, httpx.Headers(limiter.hit("k").headers()), NOW)
    assert denial.remaining == 0 and denial.retry_after == 30


def test_classic_headers_seconds_or_epoch():
    s = signals(X_RateLimit_Remaining="7", X_RateLimit_Reset="30", X_RateLimit_Limit="60")
    assert s == Signals(remaining=7, reset=30, quota=60)
    s = signals(X_RateLimit_Remaining="0", X_RateLimit_Reset=str(int(NOW) + 45))  # GitHub
    assert s.remaining == 0 and s.reset == pytest.approx(45)


def test_a_bare_429_and_malformed_headers():
    assert signals(429) == Signals(remaining=0, reset=BARE_429_PAUSE, retry_after=BARE_429_PAUSE)
    assert signals(429, Retry_After="3") == Signals(remaining=0, reset=3, retry_after=3)
    junk = signals(X_RateLimit_Remaining="lots", RateLimit="garbage;;;", Retry_After="x")
    assert not junk.said_anything
    assert not signals().said_anything


def test_gate_probes_one_at_a_time_then_spends_a_budget_exactly():
    gate, t = Gate(), 0.0
    assert gate.admit("k", t) == (0.0, 1)  # nothing known: one probe
    assert gate.admit("k", t) == (PROBE_POLL, 0)
    gate.answered("k", 1, Signals(remaining=3, reset=10, quota=4), t)
    assert [gate.admit("k", t)[1] for _ in range(4)] == [2, 3, 4, 0]  # r=3: three more
    # late answers of requests 2..4 describe the same window and change nothing
    gate.answered("k", 3, Signals(remaining=1, reset=9, quota=4), t + 1)
    gate.answered("k", 2, Signals(remaining=2, reset=9, quota=4), t + 1)
    assert gate.admit("k", t + 1) == (pytest.approx(9), 0)
    gate.answered("k", 4, None, t + 1)  # a request that failed: no answer
    # the window ends: one probe learns the new budget (requests of the old window may have
    # been served in the new one)
    assert [gate.admit("k", t + 10)[1] for _ in range(2)] == [5, 0]
    gate.answered("k", 5, Signals(remaining=2, reset=10, quota=4), t + 10)
    assert [gate.admit("k", t + 10)[1] for _ in range(3)] == [6, 7, 0]


def test_gate_counts_older_requests_still_in_flight():
    gate = Gate()
    gate.admit("k", 0)
    gate.answered("k", 1, Signals(remaining=5, reset=10), 0)
    for _ in range(3):
        gate.admit("k", 0)  # 2, 3, 4 leave
    # 4 is answered first with r=2; 2 and 3 may be served after it: no more may leave
    gate.answered("k", 4, Signals(remaining=2, reset=10), 0)
    assert gate.admit("k", 0)[1] == 0


def test_gate_pauses_on_retry_after_and_frees_silent_upstreams():
    gate = Gate()
    gate.admit("k", 0)
    gate.answered("k", 1, Signals(remaining=0, reset=5, retry_after=5), 0)
    assert gate.admit("k", 4.9)[0] == pytest.approx(0.1)
    assert gate.admit("k", 5)[1] == 2  # no quota known: probe again
    assert gate.admit("k", 5)[1] == 0
    gate.answered("k", 2, Signals(), 5.1)  # says nothing: requests flow freely
    assert [gate.admit("k", 5.1)[1] for _ in range(3)] == [3, 4, 5]
    assert gate.admit("other", 0)[1] == 1  # keys are independent
