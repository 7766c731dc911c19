"""Django: a middleware (sync and async) and a view decorator, configured from settings.

.. code-block:: python

    # settings.py
    MIDDLEWARE = [..., "ratekeeper.integrations.django.RateLimitMiddleware"]
    RATEKEEPER = {
        "DEFAULT_LIMITS": "200/hour",              # every request that is not exempt
        "STORE": "redis://127.0.0.1:6379/0",       # URL or store object; memory by default
        "KEY": "ratekeeper.integrations.user",     # a key function, or its dotted path (a
                                                   # factory such as user() is called once)
        "TRUSTED_PROXIES": ["10.0.0.0/8"],
        "EXEMPT_PATHS": ["/health", "/static/"],
    }

    # views.py
    @ratelimit("10/minute", cost=2)
    def search(request): ...

A view with ``@ratelimit`` is limited by its own limits instead of the default limits (as in
flask-limiter); ``@ratelimit_exempt`` removes a view from the default limits.

Every key of ``RATEKEEPER`` is an :class:`Engine` option in upper case (``DEFAULT_LIMITS``
is ``limits``; ``RULES`` is a list of dicts of `LimitRule` arguments). ``ENABLED = False`` switches
limiting off. The engine is built on first use and rebuilt when the settings change
(``override_settings`` in tests).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse, HttpResponseBase  # type: ignore[import-untyped]
from django.urls import Resolver404, resolve  # type: ignore[import-untyped]

from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError
from ratekeeper.integrations._core import (
    CostSpec,
    Engine,
    KeySpec,
    LimitRule,
    LimitSpec,
    Outcome,
    RequestView,
    ViewFunction,
    scope_of,
)
from ratekeeper.limits import to_limits

__all__ = ["RateLimitMiddleware", "get_engine", "ratelimit", "ratelimit_exempt", "view_of"]

F = TypeVar("F", bound=Callable[..., Any])
_EXEMPT = "ratekeeper_exempt"
_LIMITED = "ratekeeper_limited"  # set on @ratelimit views: their own limits replace the defaults
_OUTCOME = "_ratekeeper_outcome"
_CALLABLE_OPTIONS = ("key", "cost", "on_denied", "limits", "clock")

_engine: Engine | None = None
_lock = threading.Lock()


def _load(value: Any) -> Any:
    """A dotted path to its object; a factory of key functions (``user``) to its product."""
    if isinstance(value, str) and "." in value and "/" not in value:
        module, _, name = value.rpartition(".")
        try:
            value = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"RATEKEEPER: cannot import {value!r}: {exc}") from exc
        if callable(value) and not isinstance(value, ViewFunction):
            try:
                params = inspect.signature(value).parameters.values()
                if all(
                    p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                    for p in params
                ):
                    return value()  # a factory such as "ratekeeper.integrations.user"
            except (TypeError, ValueError):
                pass
    return value


def _is_rate(text: str) -> bool:
    try:
        to_limits(text)
    except ConfigError:
        return False
    return True


def engine_from_settings(config: dict[str, Any]) -> Engine:
    """An :class:`Engine` from a ``RATEKEEPER`` settings dict."""
    options: dict[str, Any] = {}
    for name, value in config.items():
        option = name.lower()
        if option == "default_limits":
            option = "limits"
        if option == "rules":
            try:
                value = [
                    LimitRule(**{"scope": f"rule-{i}", **dict(rule)})
                    for i, rule in enumerate(value)
                ]
            except TypeError as exc:
                raise ConfigError(f"RATEKEEPER['RULES']: {exc}") from exc
        elif option in _CALLABLE_OPTIONS and isinstance(value, str) and not _is_rate(value):
            value = _load(value)
        options[option] = value
    try:
        return Engine(**options)
    except TypeError as exc:
        raise ConfigError(f"RATEKEEPER settings: {exc}") from exc


def get_engine() -> Engine:
    """The engine configured by ``settings.RATEKEEPER`` (built once, reset on setting change)."""
    global _engine
    engine = _engine
    if engine is None:
        with _lock:  # one engine (one memory store) even when threads race at startup
            if _engine is None:
                _engine = engine_from_settings(dict(getattr(settings, "RATEKEEPER", {}) or {}))
            engine = _engine
    return engine


def _reset(setting: str = "", **kwargs: Any) -> None:
    global _engine
    if setting == "RATEKEEPER":
        _engine = None


setting_changed.connect(_reset, dispatch_uid="ratekeeper.integrations.django")


def view_of(request: HttpRequest) -> RequestView:
    """The neutral view of a Django request (``user`` is ``request.user`` when the
    authentication middleware ran)."""
    headers = request.headers
    match = getattr(request, "resolver_match", None)
    return RequestView(
        method=request.method or "GET",
        path=request.path,
        get_header=headers.get,
        client=request.META.get("REMOTE_ADDR"),
        native=request,
        route=getattr(match, "route", None),
        get_user=lambda: getattr(request, "user", None),
    )


def _denial(engine: Engine, decision: Decision) -> HttpResponse:
    response = HttpResponse(
        engine.denial_body(decision), status=429, content_type="application/json"
    )
    for name, value in engine.response_headers(decision).items():
        response[name] = value
    return response


def _add_headers(engine: Engine, outcome: Outcome | None, response: Any) -> Any:
    if outcome is not None and isinstance(response, HttpResponseBase):
        for name, value in engine.response_headers(outcome.decision).items():
            if name not in response:
                response[name] = value
    return response


def _skips_defaults(request: HttpRequest) -> bool:
    """Whether the view is exempt from the default limits, or has its own (``@ratelimit``)."""
    try:
        match = resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return False
    func = match.func
    view_class = getattr(func, "view_class", None)
    return any(getattr(func, mark, False) or getattr(view_class, mark, False) for mark in _MARKS)


_MARKS = (_EXEMPT, _LIMITED)


class RateLimitMiddleware:
    """Apply ``RATEKEEPER["DEFAULT_LIMITS"]`` (and ``RULES``) to every request that is not exempt
    and send the rate-limit headers. Works in sync (WSGI) and async (ASGI) stacks."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _view(self, engine: Engine, request: HttpRequest) -> RequestView | None:
        if not engine.rules:
            return None
        view = view_of(request)
        if engine.is_exempt(view) or _skips_defaults(request):
            return None
        return view

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        engine = get_engine()
        view = self._view(engine, request)
        if view is None:
            return self.get_response(request)
        outcome = engine.check(view)
        if not outcome.allowed:
            assert outcome.decision is not None
            custom = engine.call_on_denied(request, outcome.decision)
            return custom if custom is not None else _denial(engine, outcome.decision)
        return _add_headers(engine, outcome, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> Any:
        engine = get_engine()
        view = self._view(engine, request)
        if view is None:
            return await self.get_response(request)
        outcome = await engine.check_async(view)
        if not outcome.allowed:
            assert outcome.decision is not None
            custom = await engine.call_on_denied_async(request, outcome.decision)
            return custom if custom is not None else _denial(engine, outcome.decision)
        return _add_headers(engine, outcome, await self.get_response(request))


def ratelimit(
    limit: LimitSpec,
    *,
    key: KeySpec | None = None,
    cost: CostSpec | None = None,
    scope: str | None = None,
    methods: list[str] | None = None,
    algorithm: str | None = None,
) -> Callable[[F], F]:
    """Limit a view (sync or async function view, or ``as_view()`` result), on the engine of
    ``settings.RATEKEEPER``. ``scope`` names a budget shared with other views. The view's own
    limits replace the middleware's default limits for it."""
    if isinstance(limit, str):
        to_limits(limit)  # a bad rate fails at import time, not on the first request

    def decorate(func: F) -> F:
        name = scope or scope_of(func)
        rules: dict[int, LimitRule] = {}

        def rule_for(engine: Engine) -> LimitRule:
            rule = rules.get(id(engine))
            if rule is None:
                rules.clear()  # settings changed: one engine at a time
                rule = rules[id(engine)] = engine.rule(
                    limit, scope=name, key=key, cost=cost, methods=methods, algorithm=algorithm
                )
            return rule

        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                engine = get_engine()
                if not engine.enabled:
                    return await func(request, *args, **kwargs)
                outcome = await engine.check_async(view_of(request), [rule_for(engine)])
                if not outcome.allowed:
                    assert outcome.decision is not None
                    custom = await engine.call_on_denied_async(request, outcome.decision)
                    return custom if custom is not None else _denial(engine, outcome.decision)
                return _add_headers(engine, outcome, await func(request, *args, **kwargs))

            setattr(async_view, _LIMITED, True)
            return async_view  # type: ignore[return-value]

        @functools.wraps(func)
        def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            engine = get_engine()
            if not engine.enabled:
                return func(request, *args, **kwargs)
            outcome = engine.check(view_of(request), [rule_for(engine)])
            if not outcome.allowed:
                assert outcome.decision is not None
                custom = engine.call_on_denied(request, outcome.decision)
                return custom if custom is not None else _denial(engine, outcome.decision)
            return _add_headers(engine, outcome, func(request, *args, **kwargs))

        setattr(sync_view, _LIMITED, True)
        return sync_view  # type: ignore[return-value]

    return decorate


def ratelimit_exempt(func: F) -> F:
    """Exempt a view from the middleware's default limits."""
    setattr(func, _EXEMPT, True)
    return func
