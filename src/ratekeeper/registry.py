"""The registry layer: it owns stores and the limiters built on them.

Integrations and (later) named limiters never build a store themselves: they ask a `Registry`.

- :class:`StorePair` is one store as both faces: given a URL it builds the synchronous store and
  the asyncio one on first use (each opens its own connections to the same server, so they share
  state); given a memory store, the two faces share one dict; given a store object, only that face
  exists and asking for the other is a `ConfigError` naming it. It closes what it built.
- :class:`Registry` holds one memory store shared by everything that uses it without a store, the
  store pairs it built, and a bounded cache of limiters keyed by what makes them differ (kind,
  store, algorithm, limits, options), so a dynamic limit costs a dict lookup, not a limiter.

A bad URL, an unknown scheme or a missing client library raises `ConfigError` when the pair is
made (at configuration time), never at the first request.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable, Generator, Hashable, Mapping
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import Any, ParamSpec, TypeVar

from ratekeeper.config import (
    BUILTIN_STORE,
    TABLES,
    Config,
    LimiterDefinition,
    StoreDefinition,
    Where,
    accepts_name,
    clone_definition,
    limiter_definition,
    load,
    store_definition,
    suggest,
    unknown_name,
)
from ratekeeper.errors import ConfigError
from ratekeeper.events import Observer
from ratekeeper.limiter import AsyncPermit, AsyncRateLimiter, Limits, Permit, RateLimiter
from ratekeeper.limits import Limit
from ratekeeper.metrics import LimiterMetrics
from ratekeeper.stores import (
    AsyncStore,
    Store,
    async_store_from_url,
    check_store_url,
    store_from_url,
)
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore

__all__ = [
    "DEFAULT_MAX_LIMITERS",
    "Acquisition",
    "Registry",
    "StorePair",
    "StoreSpec",
    "acquire",
    "clone_limiter",
    "configure_limiter",
    "configure_store",
    "default_registry",
    "get_async_limiter",
    "get_limiter",
    "initialize_all_limiters",
    "initialize_limiter",
    "list_limiters",
    "list_stores",
    "load_config",
    "observe",
    "rate_limited",
]

log = logging.getLogger("ratekeeper")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
L = TypeVar("L", bound=RateLimiter | AsyncRateLimiter)

StoreSpec = str | Store | AsyncStore | None
DEFAULT_MAX_LIMITERS = 1024


class StorePair:
    """One store, as a synchronous and an asyncio face (see the module docstring)."""

    def __init__(
        self,
        spec: StoreSpec,
        *,
        memory: MemoryStore | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.url: str | None = None
        self.options = dict(options or {})  # keyword arguments of the stores built from the URL
        self._sync: Store | None = None
        self._async: AsyncStore | None = None
        self._owned: list[Any] = []  # what this pair built, and so closes
        self._lock = threading.Lock()
        if spec is None or (isinstance(spec, str) and spec.lower().startswith("memory:")):
            if isinstance(spec, str):
                check_store_url(spec)
            shared = memory if memory is not None else MemoryStore()
            self._sync, self._async = shared, AsyncMemoryStore(shared)
        elif isinstance(spec, str):
            check_store_url(spec)
            self.url = spec
        elif isinstance(spec, MemoryStore):
            self._sync, self._async = spec, AsyncMemoryStore(spec)
        elif isinstance(spec, AsyncMemoryStore):
            self._sync, self._async = spec.sync, spec
        elif inspect.iscoroutinefunction(getattr(spec, "hit", None)):
            self._async = spec  # type: ignore[assignment]
        elif isinstance(spec, Store):
            self._sync = spec
        else:
            raise ConfigError(f"store must be a URL or a store object, got {spec!r}")

    def sync(self) -> Store:
        """The synchronous face (built from the URL on first use)."""
        store = self._sync
        if store is None:
            with self._lock:
                if self._sync is None:
                    if self.url is None:
                        raise ConfigError(
                            f"store {self.spec!r} is an asyncio store; this needs a synchronous "
                            "store (or a URL)"
                        )
                    self._sync = store_from_url(self.url, **self.options)
                    self._owned.append(self._sync)
                store = self._sync
        return store

    def async_(self) -> AsyncStore:
        """The asyncio face (built from the URL on first use, inside the running loop)."""
        store = self._async
        if store is None:
            with self._lock:
                if self._async is None:
                    if self.url is None:
                        raise ConfigError(
                            f"store {self.spec!r} is synchronous; this needs an asyncio store "
                            "(or a URL)"
                        )
                    self._async = async_store_from_url(self.url, **self.options)
                    self._owned.append(self._async)
                store = self._async
        return store

    def close(self) -> None:
        """Close the synchronous store this pair built (the asyncio one needs :meth:`aclose`)."""
        for store in self._owned:
            if isinstance(store, Store) and not inspect.iscoroutinefunction(store.close):
                store.close()
                self._forget(store)

    async def aclose(self) -> None:
        """Close every store this pair built."""
        for store in list(self._owned):
            result = store.close()
            if inspect.isawaitable(result):
                await result
            self._forget(store)

    def _forget(self, store: Any) -> None:
        self._owned.remove(store)
        if store is self._sync:
            self._sync = None
        if store is self._async:
            self._async = None


class Registry:
    """Stores and limiters for one application (several registries never share state)."""

    def __init__(
        self,
        *,
        max_limiters: int = DEFAULT_MAX_LIMITERS,
        discover: bool = True,
        observed_by: Registry | None = None,
    ) -> None:
        """``observed_by``: a registry whose observers, present and future, this one's limiters
        report to as well (an integration's private registry follows `default_registry`)."""
        if isinstance(max_limiters, bool) or not isinstance(max_limiters, int) or max_limiters < 1:
            raise ConfigError(f"max_limiters must be a positive integer, got {max_limiters!r}")
        self.memory = MemoryStore()
        self.max_limiters = max_limiters
        self._lock = threading.Lock()
        self._limiters: dict[Hashable, RateLimiter | AsyncRateLimiter] = {}
        self._warned = False
        # Limiters dropped from the cache so far: whoever remembers this registry's limiters
        # (an engine, per rule) forgets them when it changes.
        self.evictions = 0
        # Named stores and limiters: definitions, and what was built from them (see `Named`).
        self._named_lock = threading.RLock()
        self._discovery_lock = threading.Lock()
        self._discovered = not discover  # zero configuration: read a file on first unknown name
        self._store_defs: dict[str, StoreDefinition] = {}
        self._limiter_defs: dict[str, LimiterDefinition] = {}
        self._pairs: dict[str, StorePair] = {BUILTIN_STORE: StorePair(None, memory=self.memory)}
        self._built: dict[tuple[str, bool], RateLimiter | AsyncRateLimiter] = {}
        self._observers: list[Observer] = []
        self._followers: weakref.WeakSet[Registry] = weakref.WeakSet()
        if observed_by is not None:
            with observed_by._lock:
                self._observers.extend(observed_by._observers)
                observed_by._followers.add(self)

    def observe(self, observer: Observer) -> None:
        """Send the events of every limiter of this registry, present and future, to
        ``observer`` (see `ratekeeper.events`; `ratekeeper.observability` has ready ones)."""
        with self._lock, self._named_lock:
            if observer in self._observers:
                return
            self._observers.append(observer)
            for limiter in [*self._limiters.values(), *self._built.values()]:
                limiter.add_observer(observer)
            followers = list(self._followers)
        for follower in followers:
            follower.observe(observer)

    def _observed(self, limiter: L) -> L:
        """``limiter``, reporting to this registry's observers."""
        for observer in self._observers:
            limiter.add_observer(observer)
        return limiter

    def store(self, spec: StoreSpec = None) -> StorePair:
        """The store for ``spec``: this registry's memory store for ``None``, else a new pair."""
        return StorePair(spec, memory=self.memory)

    def limiter(
        self,
        store: StorePair,
        limits: tuple[Limit, ...],
        *,
        asynchronous: bool,
        **options: Any,
    ) -> RateLimiter | AsyncRateLimiter:
        """The cached limiter for ``limits`` on ``store`` with these options (built once)."""
        cache_key = (store, asynchronous, limits, tuple(sorted(options.items())))
        found = self._limiters.get(cache_key)
        if found is not None:
            return found
        with self._lock:
            found = self._limiters.get(cache_key)
            if found is None:
                if len(self._limiters) >= self.max_limiters:
                    if not self._warned:
                        self._warned = True
                        log.warning(
                            "ratekeeper: more than %d distinct limits; the oldest limiters are "
                            "rebuilt when used again",
                            self.max_limiters,
                        )
                    self._limiters.pop(next(iter(self._limiters)))
                    self.evictions += 1
                if asynchronous:
                    found = AsyncRateLimiter(limits, store=store.async_(), **options)
                else:
                    found = RateLimiter(limits, store=store.sync(), **options)
                self._limiters[cache_key] = self._observed(found)
        return found

    # -- named stores and limiters ----------------------------------------------------------

    def configure_store(
        self,
        name: str,
        url: str | Store | AsyncStore | None = None,
        *,
        replace: bool = False,
        **options: Any,
    ) -> None:
        """Name a store: a URL (``options`` go to its constructor, but ``on_store_error``, which
        applies to its limiters that do not set their own) or a store object. rate-sync's
        ``engine=`` may give the kind: ``configure_store("local", engine="memory")``."""
        where = Where(f"configure_store({name!r})", f"stores.{name}")
        definition = store_definition(name, {"url": url, **options}, where)
        self._apply(Config(stores={name: definition}), replace)

    def configure_limiter(
        self,
        name: str,
        limits: Limits | None = None,
        *,
        replace: bool = False,
        **fields: Any,
    ) -> None:
        """Name a limiter: its limits (or another form of them, such as ``rate_per_second``),
        ``store`` (a configured name, default the built-in ``"memory"``), ``timeout`` (the default
        wait of `acquire` and `rate_limited`) and any `RateLimiter` argument."""
        where = Where(f"configure_limiter({name!r})", f"limiters.{name}")
        if limits is not None:
            fields["limits"] = limits
        definition = limiter_definition(name, fields, where)
        self._apply(Config(limiters={name: definition}), replace)

    def clone_limiter(
        self, source: str, name: str, *, replace: bool = False, **fields: Any
    ) -> None:
        """Define ``name`` as a copy of ``source`` with some fields replaced (``limits=`` or another
        form of limits replaces all of its limits)."""
        where = Where(f"clone_limiter({source!r}, {name!r})", f"limiters.{name}")
        definition = clone_definition(self._definition(source), name, fields, where)
        self._apply(Config(limiters={name: definition}), replace)

    def configure(
        self, tables: Mapping[str, Any], *, source: str = "code", replace: bool = False
    ) -> None:
        """Define the stores and limiters of ``tables``, shaped like a config file
        (``{"stores": {name: fields}, "limiters": {name: fields}}``), all or nothing, as
        `load_config` does; ``source`` names it in errors (e.g. ``"settings.RATEKEEPER"``)."""
        config = Config()
        for table, entries in tables.items():
            if table not in TABLES:
                raise ConfigError(
                    f"{source}: unknown table {table!r}{suggest(str(table), TABLES)}; "
                    f"use {' and '.join(TABLES)}"
                )
            if not isinstance(entries, Mapping):
                raise ConfigError(f"{source}: [{table}] must map names to fields, got {entries!r}")
            for name, fields in entries.items():
                where = Where(source, f"{table}.{name}")
                if not isinstance(fields, Mapping):
                    raise where.error(f"must be a table of fields, got {fields!r}")
                if table == "stores":
                    config.stores[name] = store_definition(name, fields, where)
                else:
                    config.limiters[name] = limiter_definition(name, fields, where)
        self._apply(config, replace)

    def load_config(
        self, path: str | os.PathLike[str] | None = None, *, replace: bool = False
    ) -> Path | None:
        """Read a TOML or YAML file (``None``: the one zero configuration finds) and define what
        it names; returns the file read. Everything is checked before anything is applied: on
        `ConfigError`, the registry is as it was. A name already defined (in code or by another
        file) is an error unless ``replace``. Loading a file explicitly turns discovery off."""
        config = load(path, defined=self._defined)
        self._apply(config, replace)
        self._discovered = True
        return config.path

    def get_limiter(self, name: str) -> RateLimiter:
        """The `RateLimiter` named ``name`` (built on first use, then always the same object)."""
        found = self._built.get((name, False))
        if found is None:
            found = self._build(name, asynchronous=False)
        return found  # type: ignore[return-value]

    def get_async_limiter(self, name: str) -> AsyncRateLimiter:
        """The `AsyncRateLimiter` named ``name``: same store and same state as `get_limiter`'s."""
        found = self._built.get((name, True))
        if found is None:
            found = self._build(name, asynchronous=True)
        return found  # type: ignore[return-value]

    def list_limiters(self) -> dict[str, dict[str, Any]]:
        """``{name: settings}`` of every limiter, as plain values (after zero configuration)."""
        self._discover()
        with self._named_lock:
            limiters = dict(self._limiter_defs)
            stores = dict(self._store_defs)
        shown = {}
        for name, definition in sorted(limiters.items()):
            settings = definition.settings()
            store = stores.get(definition.store)
            if "on_store_error" not in settings and store is not None and store.on_store_error:
                settings["on_store_error"] = store.on_store_error
            shown[name] = settings
        return shown

    def remove_limiter(self, name: str) -> None:
        """Forget the limiter ``name`` (`ConfigError` naming the known ones if it is unknown);
        limiters already handed out keep working on their store, their state is not touched."""
        self._definition(name)
        with self._named_lock:
            self._limiter_defs.pop(name, None)
            for asynchronous in (False, True):
                self._built.pop((name, asynchronous), None)

    def store_url(self, name: str) -> str | None:
        """The URL of the store named ``name``, password included (None for a store given as
        an object); for code that keeps its own data beside the limiters (the admin app's rules).
        `ConfigError` if the name is unknown."""
        self._discover()
        with self._named_lock:
            if name == BUILTIN_STORE:
                return "memory://"
            definition = self._store_defs.get(name)
        if definition is None:
            raise ConfigError(unknown_name("store", name, [BUILTIN_STORE, *self._store_defs]))
        return definition.url

    def metrics(self, name: str) -> LimiterMetrics:
        """What the limiter ``name`` did so far: its synchronous and asyncio faces added up
        (only those built; zeros when none is). `ConfigError` if the name is unknown."""
        self._definition(name)
        with self._named_lock:
            faces = [self._built.get((name, False)), self._built.get((name, True))]
        return LimiterMetrics.total(name, [f.metrics() for f in faces if f is not None])

    def list_stores(self) -> dict[str, dict[str, Any]]:
        """``{name: settings}`` of every store, the built-in ``"memory"`` included (passwords in
        URLs masked)."""
        self._discover()
        with self._named_lock:
            stores = dict(self._store_defs)
        shown = {BUILTIN_STORE: {"url": "memory://"}}
        shown.update((name, d.settings()) for name, d in sorted(stores.items()))
        return shown

    def initialize_limiter(self, name: str) -> None:
        """Build the limiter now and check its store answers (`StoreUnavailable` otherwise), so
        that a wrong file or an unreachable store fails at startup, not at the first request.
        An asyncio-only store object is built but not pinged (that needs the event loop)."""
        definition = self._definition(name)
        pair = self._pair(definition.store)
        if pair.url is None and pair._sync is None:  # an asyncio store object
            self.get_async_limiter(name)
            return
        self.get_limiter(name).ping()

    def initialize_all_limiters(self) -> None:
        """`initialize_limiter` for every limiter (each store pinged once)."""
        self._discover()
        with self._named_lock:
            definitions = sorted(self._limiter_defs.items())
        pinged: set[str] = set()
        for name, definition in definitions:
            if definition.store in pinged:
                self._build(name, asynchronous=not self._has_sync(name))
            else:
                self.initialize_limiter(name)
                pinged.add(definition.store)

    def acquire(
        self,
        name: str,
        key: str | None = None,
        *,
        cost: float = 1,
        timeout: float | EllipsisType | None = ...,
    ) -> Acquisition:
        """Wait until ``key`` (default: the name) may proceed under limiter ``name``, at most its
        configured ``timeout`` unless ``timeout`` is given (`RateLimitTimeout` then). The result
        is awaitable, an async context manager and a sync context manager (which blocks); a
        concurrency slot is held until the block exits."""
        self._definition(name)  # an unknown name fails here, not when awaited
        return Acquisition(self, name, name if key is None else key, cost, timeout)

    def rate_limited(
        self,
        name: str,
        *,
        key: str | Callable[..., str] | None = None,
        cost: float | Callable[..., float] = 1,
        timeout: float | EllipsisType | None = ...,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function (``def`` or ``async def``, whose wrapper stays a coroutine
        function) so that each call first waits under limiter ``name`` (see `acquire`).
        ``key`` and ``cost`` are values or callables given the function's arguments. The name
        is looked up at the first call, so a decorator may run before configuration."""

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            def arguments(args: Any, kwargs: Any) -> tuple[str, float]:
                k = key(*args, **kwargs) if callable(key) else (name if key is None else key)
                c = cost(*args, **kwargs) if callable(cost) else cost
                return k, c

            if inspect.iscoroutinefunction(function):

                @functools.wraps(function)
                async def waiting(*args: P.args, **kwargs: P.kwargs) -> Any:
                    k, c = arguments(args, kwargs)
                    async with self.acquire(name, k, cost=c, timeout=timeout):
                        return await function(*args, **kwargs)

                return waiting  # type: ignore[return-value]

            @functools.wraps(function)
            def blocking(*args: P.args, **kwargs: P.kwargs) -> R:
                k, c = arguments(args, kwargs)
                with self.acquire(name, k, cost=c, timeout=timeout):
                    return function(*args, **kwargs)

            return blocking

        return decorate

    def close(self) -> None:
        """Close the synchronous stores this registry built (asyncio ones need `aclose`)."""
        with self._named_lock:
            pairs = list(self._pairs.values())
        for pair in pairs:
            pair.close()

    async def aclose(self) -> None:
        """Close every store this registry built."""
        with self._named_lock:
            pairs = list(self._pairs.values())
        for pair in pairs:
            await pair.aclose()

    # -- internals ---------------------------------------------------------------------------

    def _defined(self, table: str, name: str) -> bool:
        if table == "stores":
            return name == BUILTIN_STORE or name in self._store_defs
        return name in self._limiter_defs

    def _discover(self) -> None:
        """Zero configuration: load the file found (if any) once, at the first need."""
        if self._discovered:
            return
        with self._discovery_lock:
            if not self._discovered:
                self._apply(load(None, defined=self._defined), replace=False)
                self._discovered = True

    def _definition(self, name: str) -> LimiterDefinition:
        definition = self._limiter_defs.get(name)
        if definition is None:
            self._discover()
            definition = self._limiter_defs.get(name)
            if definition is None:
                raise ConfigError(unknown_name("limiter", name, self._limiter_defs))
        return definition

    def _apply(self, config: Config, replace: bool) -> None:
        """Define what ``config`` holds, all or nothing: every check first, then the changes."""
        with self._named_lock:
            stores = {**self._store_defs, **config.stores}
            for name, store in config.stores.items():
                if name == BUILTIN_STORE:
                    if store.url != "memory://" or store.options or store.on_store_error:
                        raise ConfigError(
                            f"{store.source}: [stores.{name}] {name!r} is the built-in memory "
                            "store and cannot be redefined; choose another name"
                        )
                    del stores[name]
                elif name in self._store_defs and not replace:
                    raise ConfigError(self._duplicate("store", name, store.source))
            for name, limiter in config.limiters.items():
                if name in self._limiter_defs and not replace:
                    raise ConfigError(self._duplicate("limiter", name, limiter.source))
                if limiter.store != BUILTIN_STORE and limiter.store not in stores:
                    known = [BUILTIN_STORE, *stores]
                    raise ConfigError(
                        f"{limiter.source}: [limiters.{name}] field 'store': "
                        f"{unknown_name('store', limiter.store, known)}"
                    )
            # Checked: apply. Limiters built from a replaced definition are rebuilt when next
            # asked for (those already handed out keep working on their store).
            changed_stores = set(config.stores) & set(stores)
            for name in changed_stores:
                self._store_defs[name] = stores[name]
                self._pairs.pop(name, None)
            for name, definition in config.limiters.items():
                self._limiter_defs[name] = definition
            for (name, asynchronous), _ in list(self._built.items()):
                definition = self._limiter_defs[name]
                if name in config.limiters or definition.store in changed_stores:
                    del self._built[(name, asynchronous)]

    def _duplicate(self, kind: str, name: str, source: str) -> str:
        defs: Mapping[str, Any] = self._store_defs if kind == "store" else self._limiter_defs
        table = "stores" if kind == "store" else "limiters"
        return (
            f"{source}: [{table}.{name}] {kind} {name!r} is already defined (by "
            f"{defs[name].source}); remove one, or pass replace=True"
        )

    def _pair(self, store: str) -> StorePair:
        with self._named_lock:
            pair = self._pairs.get(store)
            if pair is None:
                definition = self._store_defs[store]
                if definition.obj is not None:
                    pair = StorePair(definition.obj)
                elif str(definition.url).lower().startswith("memory:"):
                    pair = StorePair(self._made(definition, MemoryStore, **definition.options))
                else:
                    pair = StorePair(definition.url, options=definition.options)
                self._pairs[store] = pair
            return pair

    def _has_sync(self, name: str) -> bool:
        pair = self._pair(self._limiter_defs[name].store)
        return pair.url is not None or pair._sync is not None

    def _build(self, name: str, *, asynchronous: bool) -> RateLimiter | AsyncRateLimiter:
        """Build the limiter ``name`` once (threads asking at the same time get one object)."""
        self._definition(name)
        with self._named_lock:
            found = self._built.get((name, asynchronous))
            if found is not None:
                return found
            definition = self._limiter_defs[name]
            options = dict(definition.options)
            store = self._store_defs.get(definition.store)
            if "on_store_error" not in options and store is not None and store.on_store_error:
                options["on_store_error"] = store.on_store_error
            if accepts_name():
                options["name"] = name
            pair = self._pair(definition.store)
            if store is not None:
                face = self._made(store, pair.async_ if asynchronous else pair.sync)
            else:
                face = pair.async_() if asynchronous else pair.sync()
            limits = definition.limits
            if asynchronous:
                found = self._made(definition, AsyncRateLimiter, limits, store=face, **options)
            else:
                found = self._made(definition, RateLimiter, limits, store=face, **options)
            self._built[(name, asynchronous)] = self._observed(found)
            return found

    @staticmethod
    def _made(definition: Any, make: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``make(...)``, a failure named by the definition it was built from (`ConfigError`)."""
        try:
            return make(*args, **kwargs)
        except (ConfigError, TypeError, ValueError) as exc:
            table = "stores" if isinstance(definition, StoreDefinition) else "limiters"
            raise ConfigError(f"{definition.source}: [{table}.{definition.name}] {exc}") from exc


class Acquisition:
    """What `Registry.acquire` returns: ``await`` it, or use ``async with`` / ``with``.

    The limiter is looked up when the wait starts: the asyncio face for ``await`` and ``async
    with``, the synchronous one for ``with``.
    """

    __slots__ = ("_async", "_cost", "_key", "_name", "_permit", "_registry", "_timeout")

    def __init__(
        self,
        registry: Registry,
        name: str,
        key: str,
        cost: float,
        timeout: float | EllipsisType | None,
    ) -> None:
        self._registry, self._name, self._key, self._cost = registry, name, key, cost
        self._timeout = timeout
        self._permit: Permit | None = None
        self._async: Any = None

    def _wait_for(self) -> float | None:
        if self._timeout is ...:
            return self._registry._definition(self._name).timeout
        return self._timeout

    def _waiting(self) -> Any:
        limiter = self._registry.get_async_limiter(self._name)
        return limiter.acquire(self._key, self._cost, self._wait_for())

    def __await__(self) -> Generator[Any, None, AsyncPermit]:
        permit: AsyncPermit = yield from self._waiting().__await__()
        return permit

    async def __aenter__(self) -> AsyncPermit:
        self._async = self._waiting()
        permit: AsyncPermit = await self._async.__aenter__()
        return permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        waiting, self._async = self._async, None
        if waiting is not None:
            await waiting.__aexit__(exc_type, exc, tb)

    def __enter__(self) -> Permit:
        limiter = self._registry.get_limiter(self._name)
        self._permit = limiter.acquire(self._key, self._cost, self._wait_for())
        return self._permit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        permit, self._permit = self._permit, None
        if permit is not None:
            permit.__exit__(exc_type, exc, tb)


# The default registry, and its methods as the module-level functions of `ratekeeper`.
default_registry = Registry()
configure_store = default_registry.configure_store
configure_limiter = default_registry.configure_limiter
clone_limiter = default_registry.clone_limiter
get_limiter = default_registry.get_limiter
get_async_limiter = default_registry.get_async_limiter
list_limiters = default_registry.list_limiters
list_stores = default_registry.list_stores
load_config = default_registry.load_config
initialize_limiter = default_registry.initialize_limiter
initialize_all_limiters = default_registry.initialize_all_limiters
acquire = default_registry.acquire
rate_limited = default_registry.rate_limited
observe = default_registry.observe
