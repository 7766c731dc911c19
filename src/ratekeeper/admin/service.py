"""The decision service: services in any language ask ratekeeper's limiters over HTTP.

``POST /v1/check`` with ``{"limiter": "api", "key": "user:42", "cost": 1}`` (cost optional)
consumes like ``hit`` and answers the decision as JSON with the standard rate-limit headers
(``RateLimit``, ``RateLimit-Policy``, ``X-RateLimit-*``, ``Retry-After`` on denial): status 200
when allowed, 429 when denied, 503 when the store cannot answer and the limiter's
``on_store_error`` is ``"raise"`` (with ``"allow"``/``"deny"`` the fallback decision is answered,
``"fallback": true``).

``POST /v1/check/batch`` with ``{"checks": [{...}, ...]}`` (at most `MAX_BATCH`) runs every check
(each on its own, not all-or-nothing; concurrently, so a network store pipelines them) and
answers ``{"results": [...]}`` in order, status 200; a check whose store failed has
``{"error": ...}`` in its place. Every check is validated before any runs: one bad entry is a 422
naming its index, and nothing is consumed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from ratekeeper.admin.http import (
    Problem,
    check_cost,
    check_key,
    check_name,
    check_object,
    decision_json,
    json_response,
    read_json,
)
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter
from ratekeeper.registry import Registry

__all__ = ["CHECK_FIELDS", "MAX_BATCH", "DecisionService", "Limiters"]

MAX_BATCH: Final = 100
CHECK_FIELDS: Final = ("limiter", "key", "cost")


class Limiters:
    """The registry's limiters as HTTP handlers use them: the asyncio face when the store has
    one, else the synchronous face in a worker thread; unknown names are 404, an unreachable
    store 503."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def face(self, name: str) -> AsyncRateLimiter | RateLimiter:
        try:
            return self.registry.get_async_limiter(name)
        except ConfigError as exc:
            if name not in self.registry.list_limiters():
                raise Problem(404, str(exc)) from None
            try:  # a synchronous store object has no asyncio face
                return self.registry.get_limiter(name)
            except ConfigError:
                raise Problem(500, f"limiter {name!r} cannot be built: {exc}") from None

    async def call(self, name: str, method: str, *args: Any) -> Any:
        face = self.face(name)
        function = getattr(face, method)
        try:
            if isinstance(face, AsyncRateLimiter):
                return await function(*args)
            return await run_in_threadpool(function, *args)
        except StoreUnavailable as exc:
            raise Problem(503, f"limiter {name!r}: store unavailable: {exc}") from None
        except ValueError as exc:
            raise Problem(422, f"limiter {name!r}: {exc}") from None


def _check(value: object, where: str) -> tuple[str, str, float]:
    fields = check_object(value, CHECK_FIELDS, where)
    for required in ("limiter", "key"):
        if required not in fields:
            raise Problem(422, f"{where}: missing field {required!r}")
    return (
        check_name(fields["limiter"], f"{where}: 'limiter'"),
        check_key(fields["key"]),
        check_cost(fields.get("cost", 1)),
    )


def _answer(name: str, key: str, decision: Decision) -> dict[str, Any]:
    return {"limiter": name, "key": key, **decision_json(decision)}


class DecisionService:
    """The two routes' handlers."""

    def __init__(self, limiters: Limiters) -> None:
        self.limiters = limiters

    async def check(self, request: Request) -> JSONResponse:
        name, key, cost = _check(await read_json(request), "the check")
        decision: Decision = await self.limiters.call(name, "hit", key, cost)
        return json_response(
            _answer(name, key, decision), 200 if decision.allowed else 429, decision.headers()
        )

    async def batch(self, request: Request) -> JSONResponse:
        body = check_object(await read_json(request), ("checks",), "the batch")
        checks = body.get("checks")
        if not isinstance(checks, list) or not checks:
            raise Problem(422, "the batch: 'checks' must be a non-empty list of checks")
        if len(checks) > MAX_BATCH:
            raise Problem(422, f"the batch has {len(checks)} checks; at most {MAX_BATCH}")
        parsed = [_check(item, f"checks[{i}]") for i, item in enumerate(checks)]
        for name, _, _ in parsed:
            self.limiters.face(name)  # every name known before anything is consumed
        results = await asyncio.gather(*(self._one(*check) for check in parsed))
        return json_response({"results": results})

    async def _one(self, name: str, key: str, cost: float) -> dict[str, Any]:
        try:
            decision: Decision = await self.limiters.call(name, "hit", key, cost)
        except Problem as problem:
            return {"limiter": name, "key": key, "error": problem.message}
        return _answer(name, key, decision)
