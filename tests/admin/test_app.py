"""Every endpoint of the admin app and the decision service, through an ASGI client."""

from __future__ import annotations

import base64
import io
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from ratekeeper import ConfigError, Registry
from ratekeeper.admin import AdminApp, DashboardStats, create_admin_app
from ratekeeper.admin.http import MAX_BODY_BYTES, MAX_KEY_LENGTH, MAX_NAME_LENGTH
from ratekeeper.admin.service import MAX_BATCH
from ratekeeper.observability import AuditLog
from ratekeeper.testing import FakeClock

from ..integrations.conftest import AsyncDownStore, DownStore
from .conftest import AUTH, BASIC, TOKEN


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    message: str = body["error"]
    return message


# -- building the app ------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "   ", "short"])
def test_no_admin_without_a_real_token(token: Any) -> None:
    with pytest.raises(ConfigError, match="token of at least 16 characters"):
        create_admin_app(Registry(discover=False), token=token)


# -- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": TOKEN},
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()},
        {"Authorization": "Bearer"},
    ],
    ids=[
        "missing",
        "wrong",
        "longer",
        "no-scheme",
        "other-scheme",
        "bad-basic",
        "basic-wrong",
        "empty",
    ],
)
async def test_missing_wrong_or_malformed_authorization_is_401_and_changes_nothing(
    client: httpx.AsyncClient, registry: Registry, headers: dict[str, str]
) -> None:
    bare = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with bare:
        for method, path, body in [
            ("GET", "/limiters", None),
            ("GET", "/", None),
            ("GET", "/no/such/route", None),
            ("PUT", "/limiters/api", {"limits": "1000/second"}),
            ("DELETE", "/limiters/login", None),
            ("DELETE", "/limiters/api/keys/k", None),
            ("POST", "/v1/check", {"limiter": "api", "key": "k"}),
        ]:
            response = await bare.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path)
            assert "token" in error_of(response)
            assert "WWW-Authenticate" in response.headers
    assert registry.list_limiters()["api"]["limits"] == "3/60s"
    assert "login" in registry.list_limiters()
    assert registry.metrics("api").allowed == 0


async def test_bearer_and_basic_credentials_are_accepted(client: httpx.AsyncClient) -> None:
    assert (await client.get("/limiters")).status_code == 200
    assert (await client.get("/limiters", headers=BASIC)).status_code == 200


async def test_browsers_get_a_basic_challenge_on_the_dashboard_api_clients_a_bearer_one(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/", headers={"Authorization": ""})
    api = await client.get("/limiters", headers={"Authorization": ""})
    assert page.headers["WWW-Authenticate"].startswith("Basic ")
    assert api.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_requests_from_another_site_are_refused_even_with_credentials(
    client: httpx.AsyncClient, registry: Registry, site: str
) -> None:
    response = await client.delete("/limiters/login", headers={"Sec-Fetch-Site": site})
    assert response.status_code == 403
    assert "another site" in error_of(response)
    assert "login" in registry.list_limiters()
    same = await client.get("/limiters", headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200


async def test_no_cors_headers_are_sent(client: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = await client.options(
        "/limiters/api", headers={**origin, "Access-Control-Request-Method": "DELETE"}
    )
    assert preflight.status_code in (401, 405)
    answer = await client.get("/limiters", headers=origin)
    for response in (preflight, answer):
        assert not any(h.lower().startswith("access-control-") for h in response.headers)


# -- limiters --------------------------------------------------------------------------------


async def test_list_and_get_limiters_with_settings_and_metrics(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    registry.get_limiter("api").hit("a")
    await registry.get_async_limiter("api").hit("a")
    listed = (await client.get("/limiters")).json()["limiters"]
    assert [entry["name"] for entry in listed] == ["api", "login"]
    one = (await client.get("/limiters/api")).json()
    assert one == listed[0]
    assert one["settings"]["limits"] == "3/60s"
    assert one["settings"]["algorithm"] == "token_bucket"
    assert one["metrics"]["allowed"] == 2  # both faces added up
    assert one["shared"] is False and one["version"] is None
    assert (await client.get("/limiters/login")).json()["settings"]["algorithm"] == (
        "sliding_window"
    )


async def test_unknown_limiter_is_404_naming_it(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/limiters/nope"),
        ("DELETE", "/limiters/nope"),
        ("GET", "/limiters/nope/keys/k"),
        ("DELETE", "/limiters/nope/keys/k"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 404
        assert "unknown limiter 'nope'" in error_of(response)
        assert "'api'" in error_of(response)


async def test_unknown_route_and_method_are_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nothing/here")
    assert missing.status_code == 404 and "/nothing/here" in error_of(missing)
    wrong = await client.post("/limiters")
    assert wrong.status_code == 405 and "POST" in error_of(wrong)


async def test_put_creates_then_replaces_a_limiter(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    created = await client.put("/limiters/search", json={"limits": "2/second", "algorithm": "gcra"})
    assert created.status_code == 201
    assert created.json()["settings"]["limits"] == "2/1s"
    assert registry.get_limiter("search").hit("k").allowed
    replaced = await client.put(
        "/limiters/search", json={"limits": ["10/second", "100/hour"], "shadow": True}
    )
    assert replaced.status_code == 200
    settings = registry.list_limiters()["search"]
    assert settings["limits"] == "10/1s; 100/3600s"
    assert settings["algorithm"] == "token_bucket"  # PUT replaces the whole definition
    assert settings["shadow"] is True


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (b"{", 400, "invalid JSON"),
        (b"\xff\xfe", 400, "not UTF-8"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"limts": "5/second"}', 422, "unknown field 'limts' (did you mean 'limits'?)"),
        (b'{"limits": "5/fortnight"}', 422, "'5/fortnight'"),
        (b'{"limits": "5/second", "algorithm": "fastest"}', 422, "unknown value 'fastest'"),
        (b'{"limits": "5/second", "store": "elsewhere"}', 422, "unknown store 'elsewhere'"),
        (b'{"limits": "5/second", "max_concurrent": -1}', 422, "max_concurrent"),
        (b'{"limits": {"a": 1}}', 422, "plain value"),
        (b'{"limits": "5/second", "clock": 1}', 422, "unknown field 'clock'"),
        (b"{}", 422, "no limits"),
    ],
)
async def test_bad_limiter_bodies_are_4xx_naming_the_problem_and_change_nothing(
    client: httpx.AsyncClient, registry: Registry, body: bytes, status: int, names: str
) -> None:
    before = registry.list_limiters()
    for name in ("api", "fresh"):
        response = await client.put(
            f"/limiters/{name}", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert names in error_of(response)
    assert registry.list_limiters() == before


async def test_body_must_be_json_and_bounded(client: httpx.AsyncClient, registry: Registry) -> None:
    before = registry.list_limiters()
    form = await client.put("/limiters/api", data={"limits": "9/second"})
    assert form.status_code == 415 and "application/json" in error_of(form)
    huge = json.dumps({"limits": "9/second", "pad": "x" * MAX_BODY_BYTES}).encode()
    big = await client.put(
        "/limiters/api", content=huge, headers={"Content-Type": "application/json"}
    )
    assert big.status_code == 413
    assert registry.list_limiters() == before


async def test_long_names_and_keys_are_refused(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    long_name = "n" * (MAX_NAME_LENGTH + 1)
    response = await client.put(f"/limiters/{long_name}", json={"limits": "1/second"})
    assert response.status_code == 422 and f"at most {MAX_NAME_LENGTH}" in error_of(response)
    assert long_name not in registry.list_limiters()
    long_key = "k" * (MAX_KEY_LENGTH + 1)
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/limiters/api/keys/{long_key}")
        assert response.status_code == 422 and f"at most {MAX_KEY_LENGTH}" in error_of(response)
    check = await client.post("/v1/check", json={"limiter": "api", "key": long_key})
    assert check.status_code == 422
    assert registry.metrics("api").allowed == 0


async def test_delete_removes_a_limiter(client: httpx.AsyncClient, registry: Registry) -> None:
    response = await client.delete("/limiters/login")
    assert response.status_code == 200
    assert response.json() == {"deleted": "login", "version": None}
    assert "login" not in registry.list_limiters()
    assert (await client.get("/limiters/login")).status_code == 404


# -- keys --------------------------------------------------------------------------------------


async def test_key_state_is_peek_and_never_consumes(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    registry.get_limiter("api").hit("user:1")
    first = (await client.get("/limiters/api/keys/user:1")).json()
    second = (await client.get("/limiters/api/keys/user:1")).json()
    assert first == second
    assert first["limiter"] == "api" and first["key"] == "user:1"
    assert first["allowed"] is True
    assert first["remaining"] == 1  # after the hypothetical hit, as peek reports it
    assert first["limit"] == 3 and first["policy"] == "3/60s"
    assert registry.metrics("api").allowed == 1
    big = (await client.get("/limiters/api/keys/user:1", params={"cost": 3})).json()
    assert big["allowed"] is False and big["retry_after"] == pytest.approx(20.0)
    never = (await client.get("/limiters/api/keys/user:1", params={"cost": 4})).json()
    assert never["retry_after"] is None  # more than the capacity: never
    bad = await client.get("/limiters/api/keys/user:1", params={"cost": "lots"})
    assert bad.status_code == 422 and "cost" in error_of(bad)


async def test_keys_with_slashes_and_markup_are_addressable(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    limiter = registry.get_limiter("api")
    for key in ("a/b/c", "<script>alert(1)</script>", "ünï code?#"):
        limiter.hit(key)
        path = "/limiters/api/keys/" + quote(key, safe="")
        state = (await client.get(path)).json()
        assert state["key"] == key and state["remaining"] == 1


async def test_reset_gives_a_key_its_full_limit(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    limiter = registry.get_limiter("api")
    for _ in range(3):
        limiter.hit("u")
    assert not limiter.hit("u").allowed
    response = await client.delete("/limiters/api/keys/u")
    assert response.json() == {"limiter": "api", "key": "u", "reset": True}
    assert limiter.peek("u").remaining == 2


async def test_store_unavailable_is_503(clock: FakeClock) -> None:
    registry = Registry(discover=False)
    registry.configure_store("down", DownStore())
    registry.configure_store("adown", AsyncDownStore())
    registry.configure_limiter("strict", "5/second", store="down")
    registry.configure_limiter("astrict", "5/second", store="adown")
    registry.configure_limiter("open", "5/second", store="adown", on_store_error="allow")
    app = create_admin_app(registry, token=TOKEN)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c:
            for name in ("strict", "astrict"):
                for method, path in [("GET", "/keys/k"), ("DELETE", "/keys/k")]:
                    response = await c.request(method, f"/limiters/{name}{path}")
                    assert response.status_code == 503
                    assert "store unavailable" in error_of(response)
                check = await c.post("/v1/check", json={"limiter": name, "key": "k"})
                assert check.status_code == 503
            fallback = await c.post("/v1/check", json={"limiter": "open", "key": "k"})
            assert fallback.status_code == 200
            assert fallback.json()["fallback"] is True
            stats = (await c.get("/stats")).json()["limiters"]
            assert stats["open"]["store_errors"] == 1
            assert stats["astrict"]["store_errors"] == 1
    finally:
        app.close()


# -- decision service ------------------------------------------------------------------------


async def test_check_consumes_and_answers_with_the_standard_headers(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    answers = [
        await client.post("/v1/check", json={"limiter": "api", "key": "svc"}) for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    ok, denied = answers[0].json(), answers[3].json()
    assert ok["allowed"] is True and ok["remaining"] == 2 and ok["limiter"] == "api"
    assert denied["allowed"] is False and denied["retry_after"] == pytest.approx(20.0)
    assert answers[0].headers["RateLimit-Policy"] == '"3-per-60s";q=3;w=60'
    assert answers[0].headers["RateLimit"] == '"3-per-60s";r=2;t=20'
    assert answers[0].headers["X-RateLimit-Remaining"] == "2"
    assert "Retry-After" not in answers[0].headers
    assert answers[3].headers["Retry-After"] == "20"
    assert registry.metrics("api").denied == 1
    costly = await client.post("/v1/check", json={"limiter": "login", "key": "x", "cost": 5})
    assert costly.status_code == 200 and costly.json()["remaining"] == 0
    assert [d["policy"] for d in costly.json()["limits"]] == ["5/60s", "20/3600s"]


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"key": "k"}, "missing field 'limiter'"),
        ({"limiter": "api"}, "missing field 'key'"),
        ({"limiter": "api", "key": "k", "extra": 1}, "unknown field(s) 'extra'"),
        ({"limiter": "api", "key": "k", "cost": -1}, "cost must be >= 0"),
        ({"limiter": "api", "key": "k", "cost": "1"}, "cost must be a number"),
        ({"limiter": "api", "key": 7}, "key must be a non-empty string"),
        ({"limiter": "", "key": "k"}, "'limiter' must be a non-empty string"),
        ([], "must be a JSON object"),
    ],
)
async def test_bad_checks_are_422_and_consume_nothing(
    client: httpx.AsyncClient, registry: Registry, body: Any, names: str
) -> None:
    response = await client.post("/v1/check", json=body)
    assert response.status_code == 422
    assert names in error_of(response)
    assert registry.metrics("api").allowed == 0


async def test_check_of_an_unknown_limiter_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/check", json={"limiter": "nope", "key": "k"})
    assert response.status_code == 404 and "'nope'" in error_of(response)


async def test_batch_answers_each_check_in_order(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    checks = [{"limiter": "api", "key": "b"} for _ in range(4)] + [
        {"limiter": "login", "key": "b", "cost": 2}
    ]
    response = await client.post("/v1/check/batch", json={"checks": checks})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["allowed"] for r in results] == [True, True, True, False, True]
    assert [r["limiter"] for r in results] == ["api"] * 4 + ["login"]
    assert results[4]["remaining"] == 3


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"checks": []}, 422, "non-empty list"),
        ({"checks": "x"}, 422, "non-empty list"),
        ({"check": []}, 422, "unknown field(s) 'check'"),
        ({"checks": [{"limiter": "api", "key": "k"}, {"limiter": "api"}]}, 422, "checks[1]"),
        ({"checks": [{"limiter": "api", "key": "k"}, {"limiter": "zz", "key": "k"}]}, 404, "zz"),
        ({"checks": [{"limiter": "api", "key": "k"}] * (MAX_BATCH + 1)}, 422, "at most"),
    ],
)
async def test_a_bad_batch_consumes_nothing(
    client: httpx.AsyncClient, registry: Registry, body: Any, status: int, names: str
) -> None:
    response = await client.post("/v1/check/batch", json=body)
    assert response.status_code == status
    assert names in error_of(response)
    assert registry.metrics("api").allowed == 0


# -- metrics, stats, dashboard -----------------------------------------------------------------


async def test_metrics_is_prometheus_text(client: httpx.AsyncClient, registry: Registry) -> None:
    await client.post("/v1/check", json={"limiter": "api", "key": "m"})
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'ratekeeper_decisions_total{limiter="api",result="allowed"} 1.0' in response.text


async def test_stats_keep_series_near_limit_errors_and_top_denied_keys(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    limiter = registry.get_limiter("api")
    for key, hits in [("heavy", 6), ("<script>x</script>", 4), ("light", 1)]:
        for _ in range(hits):
            limiter.hit(key)
    stats = (await client.get("/stats", params={"seconds": 60})).json()
    assert stats["seconds"] == 60 and stats["hash_keys"] is False
    api = stats["limiters"]["api"]
    assert all(len(values) == 60 for values in api["series"].values())
    assert sum(api["series"]["allowed"]) == 7
    assert sum(api["series"]["denied"]) == 4
    assert api["near_limit"] == 2  # one per key that reached its last unit
    assert api["top_denied"] == [
        {"key": "heavy", "count": 3},
        {"key": "<script>x</script>", "count": 1},
    ]
    bad = await client.get("/stats", params={"seconds": "-1"})
    assert bad.status_code == 422


async def test_shadow_denials_are_their_own_series(client: httpx.AsyncClient) -> None:
    await client.put("/limiters/trial", json={"limits": "1/minute", "shadow": True})
    for _ in range(3):
        assert (await client.post("/v1/check", json={"limiter": "trial", "key": "t"})).is_success
    series = (await client.get("/stats")).json()["limiters"]["trial"]["series"]
    assert sum(series["allowed"]) == 1 and sum(series["shadow_denied"]) == 2


async def test_hash_keys_shows_digests_matching_the_audit_log(clock: FakeClock) -> None:
    registry = Registry(discover=False)
    registry.configure_limiter("api", "1/minute", clock=clock)
    app = create_admin_app(registry, token=TOKEN, hash_keys=True, key_secret="s3cret")
    try:
        registry.get_limiter("api").hit("alice")
        registry.get_limiter("api").hit("alice")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c:
            stats = (await c.get("/stats")).json()
        digest = AuditLog(io.StringIO(), hash_keys=True, secret="s3cret").digest("alice")
        assert stats["hash_keys"] is True
        assert stats["limiters"]["api"]["top_denied"] == [{"key": digest, "count": 1}]
    finally:
        app.close()


def test_dashboard_memory_is_bounded() -> None:
    from ratekeeper.admin.stats import TRACKED_KEYS, TRACKED_LIMITERS
    from ratekeeper.decision import Decision
    from ratekeeper.events import Event
    from ratekeeper.limits import Limit

    stats = DashboardStats()
    denial = Decision(False, 1, 0, 1.0, 1.0, 0.0, Limit(1, 1))
    for i in range(TRACKED_KEYS * 3):
        stats.observe(Event("hit", "api", "gcra", "memory", f"k{i}", "denied", denial, 1e9))
    stats.observe(Event("hit", "api", "gcra", "memory", "k0", "denied", denial, 1e9))
    assert len(stats._limiters["api"].denied_keys) <= TRACKED_KEYS
    for i in range(TRACKED_LIMITERS + 5):
        stats.observe(Event("hit", f"l{i}", "gcra", "memory", "k", "allowed", denial, 1e9))
    assert len(stats._limiters) == TRACKED_LIMITERS
    assert stats.untracked == 6


async def test_dashboard_page_and_assets_are_served_with_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script" in page.text and "http" not in page.text.replace("http-equiv", "")
    script = await client.get("/assets/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text  # everything shown goes in as text
    assert (await client.get("/assets/dashboard.css")).status_code == 200
    assert (await client.get("/assets/secrets.txt")).status_code == 404


async def test_mounted_in_fastapi(registry: Registry, app: AdminApp) -> None:
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/admin", app)
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/admin/limiters")).status_code == 401
        listed = await c.get("/admin/limiters", headers=AUTH)
        assert [e["name"] for e in listed.json()["limiters"]] == ["api", "login"]
        page = await c.get("/admin/", headers=AUTH)
        assert page.status_code == 200 and 'src="assets/dashboard.js"' in page.text
        assert (await c.get("/admin/assets/dashboard.js", headers=AUTH)).status_code == 200
