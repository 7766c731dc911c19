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
is ``limits``; ``LIMITER`` a registry limiter's name instead; ``RULES`` is a list of dicts of
`LimitRule` arguments; ``OBSERVERS`` a list of observers or their dotted paths), except
``STORES`` and ``LIMITERS``: named stores and limiters, shaped like the tables of a config file
(``{"api": {"limits": "100/minute", "store": "main"}}``), defined in the registry (``REGISTRY``,
default: the default one, so ``rk.get_limiter("api")`` is the same limiter) for
``@ratelimit(limiter="api")``. ``ENABLED = False`` switches limiting off. The engine is built
when the middleware is loaded (or on first use) and rebuilt when the settings change
(``override_settings`` in tests); a wrong setting or an unknown limiter name is a `ConfigError`
then, or when a view is decorated, never at a request.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar, Unpack

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse, HttpResponseBase  # type: ignore[import-untyped]
from django.urls import Resolver404, resolve  # type: ignore[import-untyped]

import ratekeeper.registry as _registry
from ratekeeper._drive import drive, drive_async
from ratekeeper.errors import ConfigError
from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import LimitSpec, RequestView, ViewFunction
from ratekeeper.integrations.rules import (
    Denial,
    LimitRule,
    Outcome,
    RuleOptions,
    check_rule_options,
)
from ratekeeper.limits import to_limits

__all__ = ["RateLimitMiddleware", "get_engine", "ratelimit", "ratelimit_exempt", "view_of"]

F = TypeVar("F", bound=Callable[..., Any])
_EXEMPT = "ratekeeper_exempt"
_LIMITED = "ratekeeper_limited"  # set on @ratelimit views: their own limits replace the defaults
_CALLABLE_OPTIONS = ("key", "cost", "on_denied", "limits", "clock", "registry")
_NAME_TABLES = ("stores", "limiters")  # RATEKEEPER keys that define names, not engine options

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
    """An :class:`Engine` from a ``RATEKEEPER`` settings dict (its ``STORES`` and ``LIMITERS``
    defined in the registry first)."""
    options: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    for name, value in config.items():
        option = name.lower()
        if option == "default_limits":
            option = "limits"
        if option in _NAME_TABLES:
            tables[option] = value
            continue
        if option == "rules":
            try:
                value = [
                    LimitRule(**{"scope": None if "limiter" in rule else f"rule-{i}", **rule})
                    for i, rule in enumerate(value)
                ]
            except TypeError as exc:
                raise ConfigError(f"RATEKEEPER['RULES']: {exc}") from exc
        elif option == "observers":
            value = [_load(observer) for observer in value]
        elif option in _CALLABLE_OPTIONS and isinstance(value, str) and not _is_rate(value):
            value = _load(value)
        options[option] = value
    if tables:
        registry = options.get("registry") or _registry.default_registry
        registry.configure(tables, source="settings.RATEKEEPER", replace=True)
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
    _skipping.clear()  # any setting (ROOT_URLCONF...) may change what a path resolves to


setting_changed.connect(_reset, dispatch_uid="ratekeeper.integrations.django")


def view_of(request: HttpRequest) -> RequestView:
    """The neutral view of a Django request (``user`` is ``request.user`` when the
    authentication middleware ran)."""
    match = getattr(request, "resolver_match", None)
    return RequestView(
        method=request.method or "GET",
        path=request.path,
        get_header=lambda name: request.headers.get(name),  # built only when a header is read
        client=request.META.get("REMOTE_ADDR"),
        native=request,
        route=getattr(match, "route", None),
        get_user=lambda: getattr(request, "user", None),
    )


def _respond(denial: Denial) -> HttpResponse:
    return HttpResponse(
        denial.body, status=denial.status, content_type=denial.content_type, headers=denial.headers
    )


def _add_headers(engine: Engine, outcome: Outcome, response: Any) -> Any:
    if isinstance(response, HttpResponseBase):
        headers = response.headers  # the mapping itself: no HttpResponse method in between
        for name, value in engine.response_headers(outcome.decision).items():
            if name not in headers:
                headers[name] = value
    return response


def _skips_defaults(request: HttpRequest) -> bool:
    """Whether the view is exempt from the default limits, or has its own (``@ratelimit``);
    remembered per path (bounded; forgotten when a setting changes)."""
    where = (request.path_info, getattr(request, "urlconf", None))
    found = _skipping.get(where)
    if found is None:
        found = _resolves_to_skipping(request)
        if len(_skipping) >= SKIPPING_PATHS_CACHED:
            _skipping.clear()
        _skipping[where] = found
    return found


def _resolves_to_skipping(request: HttpRequest) -> bool:
    try:
        match = resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return False
    func = match.func
    view_class = getattr(func, "view_class", None)
    return any(getattr(func, mark, False) or getattr(view_class, mark, False) for mark in _MARKS)


_MARKS = (_EXEMPT, _LIMITED)
SKIPPING_PATHS_CACHED = 4096  # paths whose view's marks are remembered
_skipping: dict[tuple[str, Any], bool] = {}
Rules = Callable[[Engine], list[LimitRule]]


def _limited(
    request: HttpRequest, call_next: Callable[[], Any], own: Rules | None, asynchronous: bool
) -> Generator[Any, Any, Any]:
    """The one flow of the middleware (``own`` None: the default limits) and of ``@ratelimit``
    views (``own(engine)``: the view's rules). Each step is yielded: a value in blocking code, an
    awaitable in async code (:func:`_run` and :func:`_run_async` drive it)."""
    engine = get_engine()
    if own is None:
        view = view_of(request)
        if not engine.rules or engine.is_exempt(view) or _skips_defaults(request):
            return (yield call_next())
        rules = None
    elif engine.enabled:
        view, rules = view_of(request), own(engine)
    else:
        return (yield call_next())
    check, deny = (
        (engine.check_async, engine.deny_async) if asynchronous else (engine.check, engine.deny)
    )
    outcome: Outcome = yield check(view, rules)
    if not outcome.allowed:
        assert outcome.decision is not None
        return (yield deny(request, outcome.decision, _respond))
    return _add_headers(engine, outcome, (yield call_next()))


def _run(flow: Generator[Any, Any, Any]) -> Any:
    return drive(flow, _value)


async def _run_async(flow: Generator[Any, Any, Any]) -> Any:
    return await drive_async(flow, _awaited)


def _value(step: Any) -> Any:
    return step


async def _awaited(step: Awaitable[Any]) -> Any:
    return await step


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
        get_engine()  # wrong settings fail when the middleware is loaded, not at a request

    def __call__(self, request: HttpRequest) -> Any:
        call_next = functools.partial(self.get_response, request)
        if self.is_async:
            return _run_async(_limited(request, call_next, None, True))
        return _run(_limited(request, call_next, None, False))


def ratelimit(limit: LimitSpec | None = None, **options: Unpack[RuleOptions]) -> Callable[[F], F]:
    """Limit a view (sync or async function view, or ``as_view()`` result), on the engine of
    ``settings.RATEKEEPER``. ``options`` are the `RuleOptions`; ``scope`` names a budget shared
    with other views; ``limiter="api"`` uses a registry limiter (``RATEKEEPER["LIMITERS"]``, or
    defined in code or a config file) instead of ``limit``. The view's own limits replace the
    middleware's default limits for it."""
    check_rule_options(options)  # a bad rule fails at import time, not on the first request
    if isinstance(limit, str):
        to_limits(limit)
    named = options.get("limiter") is not None and settings.configured

    def decorate(func: F) -> F:
        rules: dict[int, list[LimitRule]] = {}

        def own(engine: Engine) -> list[LimitRule]:
            found = rules.get(id(engine))
            if found is None:
                rules.clear()  # settings changed: one engine at a time
                found = rules[id(engine)] = [engine.rule(limit, target=func, **options)]
            return found

        if named:  # check the name now (settings are read by the time views are imported)
            own(get_engine())
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                call_next = functools.partial(func, request, *args, **kwargs)
                return await _run_async(_limited(request, call_next, own, True))

        else:

            @functools.wraps(func)
            def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                call_next = functools.partial(func, request, *args, **kwargs)
                return _run(_limited(request, call_next, own, False))

        setattr(limited, _LIMITED, True)
        return limited  # type: ignore[return-value]

    return decorate


def ratelimit_exempt(func: F) -> F:
    """Exempt a view from the middleware's default limits."""
    setattr(func, _EXEMPT, True)
    return func
