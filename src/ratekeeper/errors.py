"""The exceptions ratekeeper raises."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratekeeper.decision import Decision

__all__ = ["ConfigError", "RateLimitExceeded", "RateLimitTimeout", "StoreUnavailable"]


class ConfigError(ValueError):
    """A limit, algorithm, store URL or option is wrong; raised at configuration time."""


class RateLimitExceeded(Exception):
    """A request was denied; ``decision`` holds the denied :class:`Decision`."""

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        self.decision = decision
        if message is None:
            if decision.retry_after == float("inf"):
                message = (
                    f"rate limit {decision.policy} exceeded: this cost is larger than the "
                    "capacity and can never pass"
                )
            else:
                message = (
                    f"rate limit {decision.policy} exceeded; retry after "
                    f"{decision.retry_after:.3f}s"
                )
        super().__init__(message)

    # Typed as Starlette's ``HTTPException.headers`` (FastAPI's denial is both); never None here.
    @property
    def headers(self) -> Mapping[str, str] | None:
        """The HTTP headers of this denial (netrun's ``exc.headers``), a new dict: the
        rate-limit headers of :meth:`Decision.headers`, or those a web integration chose to
        send (it sets them)."""
        given: Mapping[str, str] | None = self.__dict__.get("_headers")
        return dict(given) if given is not None else self.decision.headers()

    @headers.setter
    def headers(self, value: Mapping[str, str] | None) -> None:
        self.__dict__["_headers"] = None if value is None else dict(value)


class RateLimitTimeout(RateLimitExceeded, TimeoutError):
    """``acquire(timeout=...)`` could not get a slot in time; ``decision`` is the last denial."""


class StoreUnavailable(ConnectionError):
    """The store cannot be reached (connection refused, timed out, authentication failed...)."""
