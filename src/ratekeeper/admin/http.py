"""What the admin app and the decision service share about HTTP: JSON in and out, the limits on
what a request may carry, and `Problem`, the error that becomes a JSON answer naming it.

Bad input never changes anything: every handler reads and checks all of its input first, and
only then acts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from ratekeeper.decision import Decision

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "Problem",
    "check_key",
    "check_name",
    "decision_json",
    "json_response",
    "read_json",
]

MAX_NAME_LENGTH: Final = 200  # characters of a limiter name
MAX_KEY_LENGTH: Final = 1024  # characters of a key
MAX_BODY_BYTES: Final = 256 * 1024  # a request body (a batch of checks is the largest)
SECURITY_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class Problem(Exception):
    """An HTTP error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON answer with the admin app's security headers."""
    return JSONResponse(content, status, headers={**SECURITY_HEADERS, **(headers or {})})


def decision_json(decision: Decision) -> dict[str, Any]:
    """A `Decision` as plain JSON values (``retry_after`` is null when the cost can never pass);
    ``limits`` has one entry per limit that applied."""
    return {
        "allowed": decision.allowed,
        "limit": decision.limit,
        "remaining": decision.remaining,
        "reset_after": _finite(decision.reset_after),
        "retry_after": _finite(decision.retry_after),
        "delay": decision.delay,
        "policy": str(decision.policy),
        "fallback": decision.fallback,
        "limits": [
            {
                "policy": str(d.policy),
                "allowed": d.allowed,
                "remaining": d.remaining,
                "reset_after": _finite(d.reset_after),
                "retry_after": _finite(d.retry_after),
            }
            for d in decision.per_limit
        ],
    }


async def read_json(request: Request) -> Any:
    """The request's JSON body: 415 unless it says JSON, 413 past `MAX_BODY_BYTES`, 400 when it
    does not parse (naming where)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise Problem(415, f"the body must be JSON (Content-Type: application/json), got {media!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Problem(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Problem(400, f"invalid JSON: not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise Problem(
            400, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def check_name(name: object, what: str = "limiter name") -> str:
    """A limiter name: a non-empty string of at most `MAX_NAME_LENGTH` characters (422)."""
    if not isinstance(name, str) or not name:
        raise Problem(422, f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise Problem(422, f"{what} is {len(name)} characters long; at most {MAX_NAME_LENGTH}")
    return name


def check_key(key: object) -> str:
    """A key: a non-empty string of at most `MAX_KEY_LENGTH` characters (422)."""
    if not isinstance(key, str) or not key:
        raise Problem(422, f"key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise Problem(422, f"key is {len(key)} characters long; at most {MAX_KEY_LENGTH}")
    return key


def check_cost(cost: object) -> float:
    """A cost: a finite number >= 0 (422)."""
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost):
        raise Problem(422, f"cost must be a number, got {cost!r}")
    if cost < 0:
        raise Problem(422, f"cost must be >= 0, got {cost!r}")
    return float(cost)


def check_object(value: object, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """A JSON object whose fields are all in ``allowed`` (422 naming the unknown ones)."""
    if not isinstance(value, dict):
        raise Problem(422, f"{where} must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise Problem(
            422,
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(map(repr, allowed))}",
        )
    return value
