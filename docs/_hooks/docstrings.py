"""mkdocs hook: every public name of the documented modules has a docstring.

mkdocstrings renders a name without a docstring as a bare signature and says nothing, so this
hook reads the same sources with griffe (statically: no optional client library is imported)
and logs a warning, which ``mkdocs build --strict`` turns into a failed build, for each public
module, class, function, method and property that has none.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import griffe

log = logging.getLogger("mkdocs.plugins.ratekeeper.docstrings")

SRC = Path(__file__).resolve().parents[2] / "src"

# The modules of the API reference (docs/reference/): their public names are the contract.
DOCUMENTED = (
    "ratekeeper",
    "ratekeeper.registry",
    "ratekeeper.stores",
    "ratekeeper.stores.memory",
    "ratekeeper.stores.redis",
    "ratekeeper.stores.postgres",
    "ratekeeper.stores.nats",
    "ratekeeper.stores.dynamodb",
    "ratekeeper.observability",
    "ratekeeper.testing",
    "ratekeeper.testing.conformance",
    "ratekeeper.clients",
    "ratekeeper.clients.httpx",
    "ratekeeper.clients.requests",
    "ratekeeper.integrations",
    "ratekeeper.integrations.starlette",
    "ratekeeper.integrations.fastapi",
    "ratekeeper.integrations.flask",
    "ratekeeper.integrations.django",
    "ratekeeper.integrations.aiohttp",
    "ratekeeper.integrations.websockets",
    "ratekeeper.compat",
    "ratekeeper.compat.netrun",
    "ratekeeper.compat.fastlimit",
    "ratekeeper.compat.distlimiter",
)

# Methods whose contract is an interface's, described there: the `Store`/`AsyncStore` protocol
# (ratekeeper.stores.base), the observer protocol (``observe``), httpx's transports and requests'
# adapters.
INTERFACES = {
    "ratekeeper.stores.base.Store",
    "ratekeeper.stores.base.AsyncStore",
    "ratekeeper.stores.base.CheckStore",
    "ratekeeper.stores.base.AsyncCheckStore",
}
FOREIGN_INTERFACE_METHODS = frozenset(
    {"observe", "handle_request", "handle_async_request", "close", "aclose", "send"}
)


def undocumented() -> list[str]:
    """The dotted paths of the public objects of `DOCUMENTED` that have no docstring."""
    package = griffe.load("ratekeeper", search_paths=[str(SRC)], resolve_aliases=True)
    missing: set[str] = set()
    interface_methods = set(FOREIGN_INTERFACE_METHODS)
    for path in INTERFACES:
        protocol = package[path.removeprefix("ratekeeper.")]
        interface_methods.update(protocol.members)
        _check(protocol, missing, frozenset())
    for path in DOCUMENTED:
        module = package if path == "ratekeeper" else package[path.removeprefix("ratekeeper.")]
        if not module.docstring:
            missing.add(path)
        for name in module.exports or ():
            obj = module[name]
            target = obj.final_target if obj.is_alias else obj
            _check(target, missing, frozenset(interface_methods))
    return sorted(missing)


def _check(obj: Any, missing: set[str], interface_methods: frozenset[str]) -> None:
    if obj.kind not in (griffe.Kind.CLASS, griffe.Kind.FUNCTION):
        return  # constants and type aliases are described by their module
    if not obj.docstring:
        missing.add(obj.path)
    if obj.kind is griffe.Kind.CLASS:
        for name, member in obj.members.items():
            if member.is_alias or name.startswith("_") or member.kind is not griffe.Kind.FUNCTION:
                continue  # private, dunder (protocol plumbing), re-exported or not a method
            if name in interface_methods or name.startswith("test_"):
                continue  # described by its interface; a conformance check by its name
            if not member.docstring and not _described_elsewhere(obj, name):
                missing.add(member.path)


def _described_elsewhere(cls: Any, name: str) -> bool:
    """A method overriding a documented one of a base class inherits its description, and a
    method of a sync/async twin (``Store``/``AsyncStore``) shares its twin's."""
    twin_name = (
        cls.name.removeprefix("Async") if cls.name.startswith("Async") else "Async" + cls.name
    )
    candidates = [*cls.mro()]
    twin = cls.parent.members.get(twin_name) if cls.parent is not None else None
    if twin is not None:
        twin = twin.final_target if twin.is_alias else twin
        candidates.append(twin)
    for other in candidates:
        member = other.members.get(name)
        if member is not None and not member.is_alias and member.docstring:
            return True
    return False


def on_pre_build(config: Any) -> None:
    """Warn (a failure under ``--strict``) about each public object without a docstring."""
    for path in undocumented():
        log.warning("public name without a docstring: %s", path)
