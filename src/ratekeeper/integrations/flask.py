"""Flask: an extension with app-wide default limits, ``@limiter.limit(...)`` and
``@limiter.exempt``.

.. code-block:: python

    limiter = Limiter(default_limits="200/hour", key=api_key())
    limiter.init_app(app)

    @app.post("/search")
    @limiter.limit("10/minute", cost=2)
    def search(): ...

As in flask-limiter, a route with its own limits is not also counted against the default limits
(``override_defaults=False`` counts both). Every response of a limited request carries the
rate-limit headers; a denial is a JSON 429 (or ``on_denied``'s response). A `RateLimitExceeded`
raised by a view (``some_limiter.enforce(key)``) becomes a 429 too. ``RATEKEEPER_ENABLED = False``
in ``app.config`` switches limiting off.

``app.config["RATEKEEPER"]``, shaped like a config file (``{"stores": {...}, "limiters":
{...}}``), defines named stores and limiters in the engine's registry (the default one unless
``registry=``; a name defined again is replaced) when ``init_app`` runs, for
``@limiter.limit(limiter="api")`` and ``Limiter(limiter="api")``. Names are checked when a view
is decorated, or, for names not known yet, by ``init_app``: an unknown one is a `ConfigError`
there, never at a request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, Unpack

from flask import Flask, Request, Response, g, request

import ratekeeper.registry as _registry
from ratekeeper.decision import Decision
from ratekeeper.errors import RateLimitExceeded
from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import LimitSpec, RequestView, joined_header
from ratekeeper.integrations.rules import Denial, LimitRule, Outcome, RuleOptions

__all__ = ["Limiter", "view_of"]

F = TypeVar("F", bound=Callable[..., Any])
_RULES = "__ratekeeper_rules__"
_EXEMPT = "__ratekeeper_exempt__"
_OVERRIDE = "__ratekeeper_override__"
_OUTCOME = "ratekeeper.outcome"  # the request's outcome, in its WSGI environ until the response


def view_of(req: Request) -> RequestView:
    """The neutral view of a Flask (Werkzeug) request. ``user`` is ``g.user`` if set."""
    return RequestView(
        method=req.method,
        path=req.path,
        get_header=joined_header(req.headers.getlist),
        client=req.remote_addr,
        native=req,
        route=req.url_rule.rule if req.url_rule is not None else None,
        get_user=lambda: g.get("user"),
    )


class Limiter:
    """The Flask extension. ``default_limits`` apply to every request that is not exempt; every
    other keyword is an :class:`Engine` option (``key``, ``cost``, ``store``, ``trusted_proxies``,
    ``exempt_paths``, ``headers``, ``on_denied``, ``on_store_error`` (default ``"allow"``),
    ``limiter`` (a registry limiter's name for the default limits), ``shadow``, ``observers``,
    ``registry``…)."""

    def __init__(
        self, app: Flask | None = None, default_limits: LimitSpec | None = None, **options: Any
    ) -> None:
        if app is not None:  # the app's names first: the engine checks its default limiter's
            _configure(options.get("registry") or _registry.default_registry, app)
        self.engine = Engine(default_limits, check_names=app is not None, **options)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``app.config["RATEKEEPER"]`` into the registry, check the limiter names used so
        far (`ConfigError`), and hook the limiter into ``app``."""
        _configure(self.engine.names, app)
        self.engine.check_names()
        app.extensions["ratekeeper"] = self
        app.before_request(functools.partial(self._before_request, app))
        app.after_request(self._after_request)
        app.register_error_handler(RateLimitExceeded, self._on_exceeded)

    def limit(
        self,
        limit: LimitSpec | None = None,
        *,
        override_defaults: bool = True,
        **options: Unpack[RuleOptions],
    ) -> Callable[[F], F]:
        """Limit a view (above or below ``@app.route``; stack several for several limits).
        ``options`` are the `RuleOptions` (``key``, ``cost``, ``scope`` (a budget shared with
        other views), ``methods``, ``algorithm``, ``limiter`` (a registry limiter instead of
        ``limit``), ``shadow``, ``shadow_limits``)."""

        def decorate(func: F) -> F:
            rule = self.engine.rule(limit, target=func, **options)
            rules: list[LimitRule] = getattr(func, _RULES, [])
            setattr(func, _RULES, [rule, *rules])  # decorators apply bottom-up: keep source order
            setattr(func, _OVERRIDE, override_defaults and getattr(func, _OVERRIDE, True))
            return func

        return decorate

    def exempt(self, func: F) -> F:
        """Exempt a view from every limit (default limits included)."""
        setattr(func, _EXEMPT, True)
        return func

    def _rules(self, app: Flask, req: Request) -> list[LimitRule] | None:
        func = app.view_functions.get(req.endpoint or "")
        if func is None:
            return self.engine.rules
        if getattr(func, _EXEMPT, False):
            return None
        own: list[LimitRule] = getattr(func, _RULES, [])
        if not own:
            return self.engine.rules  # the engine's own list: its plan is kept
        if getattr(func, _OVERRIDE, True):
            return own
        return [*self.engine.rules, *own]

    def _before_request(self, app: Flask) -> Response | Any:
        if not app.config.get("RATEKEEPER_ENABLED", True):
            return None
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        view = view_of(req)
        rules = self._rules(app, req)
        if not rules or self.engine.is_exempt(view):
            return None
        outcome = self.engine.check(view, rules)
        req.environ[_OUTCOME] = outcome
        if not outcome.allowed:
            assert outcome.decision is not None
            return self._denial(req, outcome.decision)
        return None

    def _after_request(self, response: Response) -> Response:
        outcome: Outcome | None = request.environ.pop(_OUTCOME, None)
        if outcome is not None:
            headers = self.engine.response_headers(outcome.decision)
            if headers:  # none the view set itself (one pass: Headers.setdefault scans them all)
                present = {name.lower() for name in response.headers.keys()}  # noqa: SIM118
                for name, value in headers.items():
                    if name.lower() not in present:
                        response.headers.add(name, value)
        return response

    def _denial(self, native: Any, decision: Decision) -> Response | Any:
        return self.engine.deny(native, decision, _respond)

    def _on_exceeded(self, exc: RateLimitExceeded) -> Response | Any:
        request.environ.pop(_OUTCOME, None)  # the view's own denial wins over the default's
        return self._denial(request._get_current_object(), exc.decision)  # type: ignore[attr-defined]


def _configure(registry: _registry.Registry, app: Flask) -> None:
    """Define the names of ``app.config["RATEKEEPER"]`` in ``registry``."""
    tables = app.config.get("RATEKEEPER")
    if tables:
        registry.configure(tables, source="app.config['RATEKEEPER']", replace=True)


def _respond(denial: Denial) -> Response:
    return Response(denial.body, denial.status, denial.headers, mimetype=denial.content_type)
