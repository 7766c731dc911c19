"""What the per-request caches of the integrations (issue 17, point 1) must not change: the
client-address key per peer (and behind trusted proxies), the escaped storage key, headers a
response already has, the memory store's state shared by blocking and asyncio code, and a Django
path's view marks after the URLconf changes."""

from __future__ import annotations

import asyncio
from typing import Any

from ratekeeper import Limit
from ratekeeper.decision import Decision
from ratekeeper.integrations import Engine, Key, RequestView, client_ip, storage_key
from ratekeeper.integrations import keys as keys_module
from ratekeeper.integrations.starlette import RateLimitMiddleware


def view(client: str | None, forwarded: str | None = None) -> RequestView:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return RequestView("GET", "/", lambda name: headers.get(name.lower()), client)


def test_the_client_key_is_per_peer_every_time() -> None:
    key = client_ip()
    for _ in range(2):  # the second round comes from the memo
        assert key(view("203.0.113.7")) == "ip:203.0.113.7"
        assert key(view("203.0.113.8:4431")) == "ip:203.0.113.8"
        assert key(view("::ffff:203.0.113.9")) == "ip:203.0.113.9"
        assert key(view("garbage")) == "ip:garbage"
        assert key(view(None)) == "ip:unknown"


def test_the_client_key_memo_is_bounded_and_stays_right() -> None:
    key = client_ip()
    count = keys_module.CLIENT_KEYS_CACHED + 10
    for i in range(count):
        assert key(view(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")) == (
            f"ip:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        )
    memo = next(
        c.cell_contents for c in key.func.__closure__ or () if isinstance(c.cell_contents, dict)
    )
    assert len(memo) <= keys_module.CLIENT_KEYS_CACHED


def test_behind_a_trusted_proxy_the_header_still_counts_per_request() -> None:
    key = client_ip(["10.0.0.0/8"])
    assert key(view("10.0.0.1", "198.51.100.1")) == "ip:198.51.100.1"
    assert key(view("10.0.0.1", "198.51.100.2")) == "ip:198.51.100.2"  # same peer, new client
    assert key(view("203.0.113.7", "198.51.100.1")) == "ip:203.0.113.7"  # untrusted peer


def test_a_long_address_text_is_parsed_not_remembered() -> None:
    text = "1" * (keys_module._ADDRESS_TEXT_MAX + 1)
    before = keys_module._parse_remembered.cache_info().currsize
    assert keys_module._parse_ip(text) is None
    assert keys_module._parse_remembered.cache_info().currsize == before


def test_the_escaped_storage_key_is_unambiguous() -> None:
    assert storage_key("s", Key("ip", "1.2.3.4")) == "s:ip:1.2.3.4"
    assert storage_key("s", "ip:1.2.3.4") == "s:custom:ip%3A1.2.3.4"
    assert storage_key("a:b", Key("header", "x:y", "v%"), "p") == "p:a%3Ab:header:x%253Ay%3Av%2525"
    assert storage_key("s", Key("header", "x", "a:b")) != storage_key(
        "s", Key("header", "x:a", "b")
    )


def test_single_and_several_limit_headers_agree() -> None:
    limit = Limit(10, per=60)
    one = Decision(True, 10, 7, 17.2, 0.0, 0.0, limit)
    assert one.headers() == {
        "RateLimit-Policy": '"10-per-60s";q=10;w=60',
        "RateLimit": '"10-per-60s";r=7;t=18',
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "7",
        "X-RateLimit-Reset": "18",
    }
    denied = Decision(False, 10, 0, 60.0, 5.5, 0.0, limit)
    assert denied.headers()["Retry-After"] == "6"
    assert denied.headers()["RateLimit"] == '"10-per-60s";r=0;t=6'


async def _start(app: Any) -> list[tuple[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("1.2.3.4", 5)}
    await app(scope, receive, send)
    headers: list[tuple[bytes, bytes]] = sent[0]["headers"]
    return headers


def test_asgi_headers_the_app_set_are_kept_and_not_doubled() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        own = [(b"X-RateLimit-Limit", b"app's"), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": own})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = RateLimitMiddleware(inner, limits="5/minute")
    for remaining in (b"4", b"3"):
        headers = asyncio.run(_start(middleware))
        names = [name.lower() for name, _ in headers]
        assert names.count(b"x-ratelimit-limit") == 1
        assert (b"X-RateLimit-Limit", b"app's") in headers
        assert (b"x-ratelimit-remaining", remaining) in headers


def test_blocking_and_asyncio_checks_share_the_memory_budget() -> None:
    engine = Engine("3/minute")
    assert engine.check(view("1.2.3.4")).decision.remaining == 2  # type: ignore[union-attr]
    outcome = asyncio.run(engine.check_async(view("1.2.3.4")))
    assert outcome.decision is not None and outcome.decision.remaining == 1
    assert engine.check(view("1.2.3.4")).decision.remaining == 0  # type: ignore[union-attr]
    assert not asyncio.run(engine.check_async(view("1.2.3.4"))).allowed


def _decisions() -> list[Decision]:
    """Decisions of every algorithm: allowed, denied, never passing, several limits, fallback."""
    from ratekeeper import RateLimiter
    from ratekeeper.algorithms import ALGORITHMS
    from ratekeeper.testing import FakeClock

    found: list[Decision] = []
    for algorithm in ALGORITHMS:
        for limits in ("3/minute", "2/second;5/minute", Limit(4, per=0.3, burst=6)):
            clock = FakeClock(start=1_700_000_000.25)
            limiter = RateLimiter(limits, algorithm=algorithm, clock=clock)
            for cost in (1, 2, 1, 0, 50):
                found.append(limiter.hit("k", cost))
                clock.advance(0.37)
    limit = Limit(10, per=60)
    found.append(Decision(True, 10, 10, 0.0, 0.0, 0.0, limit, fallback=True))
    found.append(Decision(False, 10, 0, 1.0, 1.0, 0.0, limit, fallback=True))
    return found


def test_asgi_header_bytes_are_the_engines_headers_encoded() -> None:
    """The bytes the ASGI middleware writes for a decision are exactly the engine's headers,
    for every header setting (the allowed single-limit case is written straight into bytes)."""
    from ratekeeper.integrations.starlette import header_items

    engines = [
        Engine("1/minute"),
        Engine("1/minute", headers=["ratelimit"]),
        Engine("1/minute", headers=False),
        Engine("1/minute", reset_header="epoch", clock=lambda: 1_700_000_000.0),
    ]
    decisions = _decisions()
    assert any(d.allowed and not d.details for d in decisions)
    assert any(d.details for d in decisions) and any(not d.allowed for d in decisions)
    for engine in engines:
        for decision in [None, *decisions]:
            expected = [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in engine.response_headers(decision).items()
            ]
            assert header_items(engine, decision) == expected, (engine.header_groups, decision)


def test_asgi_a_lower_case_header_of_ours_set_by_the_app_is_kept_alone() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        own = [(b"content-type", b"text/plain"), (b"ratelimit", b"the app's")]
        await send({"type": "http.response.start", "status": 200, "headers": own})
        await send({"type": "http.response.body", "body": b"ok"})

    headers = asyncio.run(_start(RateLimitMiddleware(inner, limits="5/minute")))
    assert [value for name, value in headers if name == b"ratelimit"] == [b"the app's"]
    assert (b"x-ratelimit-remaining", b"4") in headers
    assert headers[:2] == [(b"content-type", b"text/plain"), (b"ratelimit", b"the app's")]


def test_asgi_header_bytes_of_a_decision_with_odd_numbers_are_its_headers() -> None:
    """A custom store may answer a float or NaN ``remaining``: the bytes are still exactly the
    engine's headers (no crash formatting them)."""
    from ratekeeper.integrations.starlette import header_items

    engine = Engine("1/minute")
    limit = Limit(10, per=60)
    odd = [(10, 3.5), (10, float("nan")), (float("nan"), 3), (12.5, 3)]
    for limit_field, remaining in odd:
        decision = Decision(True, limit_field, remaining, 12.0, 0.0, 0.0, limit)  # type: ignore[arg-type]
        expected = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in engine.response_headers(decision).items()
        ]
        assert header_items(engine, decision) == expected
