"""What the web integrations share about requests: the framework-neutral request view, the key
functions (client address behind trusted proxies, user, API key, header, path, route), costs read
from headers, and the once-a-minute warning used for bad input everywhere in the integrations.

Malformed input never breaks a request: a key function that raises or returns nothing falls back
to the client address, a bad cost falls back to the rule's default cost; each is logged (at most
once a minute per kind).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ratekeeper.errors import ConfigError
from ratekeeper.limits import Limit

log = logging.getLogger("ratekeeper.integrations")

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
LimitValue: TypeAlias = str | Limit | Sequence[Limit]
# A key/cost/limit callable gets the framework's own request (a `ViewFunction` gets the view);
# it may be a coroutine function.
KeySpec: TypeAlias = Callable[[Any], Any]
CostSpec: TypeAlias = float | Callable[[Any], Any]
LimitSpec: TypeAlias = LimitValue | Callable[[Any], Any]
_LOG_EVERY = 60.0
_last_logged: dict[str, float] = {}


def _warn(kind: str, message: str, *args: object, exc_info: bool = False) -> None:
    """Log a warning about bad input, at most once a minute per ``kind`` (no log flooding)."""
    now = time.monotonic()
    if now - _last_logged.get(kind, -math.inf) >= _LOG_EVERY:
        _last_logged[kind] = now
        log.warning(message, *args, exc_info=exc_info)


# -- the neutral request --------------------------------------------------------------------------


@dataclass(slots=True)
class RequestView:
    """What the engine needs from a request, whatever the framework.

    ``get_header(name)`` returns every value of a header joined by ``", "`` (or None);
    ``client`` is the socket peer address; ``route`` the route template when known; ``get_user``
    returns the authenticated user object (or None); ``native`` is the framework's request,
    handed to user-supplied key, cost and limit functions.
    """

    method: str
    path: str
    get_header: Callable[[str], str | None]
    client: str | None
    native: Any = None
    route: str | None = None
    get_user: Callable[[], Any] | None = None

    def header(self, name: str) -> str | None:
        return self.get_header(name)


class ViewFunction:
    """A built-in key or cost function: it reads the :class:`RequestView`, not the native
    request, so one function serves every framework. ``fallback`` answers when it finds
    nothing."""

    def __init__(
        self,
        name: str,
        func: Callable[[RequestView], Any],
        fallback: ViewFunction | None = None,
    ) -> None:
        self.name = name
        self.func = func
        self.fallback = fallback

    def __call__(self, view: RequestView) -> Any:
        value = self.func(view)
        if value is None and self.fallback is not None:
            return self.fallback(view)
        return value

    def __repr__(self) -> str:
        return f"<ratekeeper key {self.name}>"


# -- key functions --------------------------------------------------------------------------------


def _networks(items: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    if isinstance(items, str):
        items = [items]
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"trusted proxy {item!r} is not an IP address or CIDR") from exc
    return tuple(networks)


def _parse_ip(text: str) -> IPAddress | None:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:443``, ``"[::1]"``, ``2001:db8::1`` → address;
    anything else (``unknown``, ``_hidden``, garbage) → None."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        text = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _hops(value: str, header_name: str) -> list[str]:
    """The addresses of a forwarding header, left (client side) to right (nearest proxy)."""
    if header_name != "forwarded":
        return value.split(",")
    hops = []
    for element in value.split(","):  # RFC 7239: for=1.2.3.4;proto=https, for="[::1]:80"
        found = "invalid"
        for pair in element.split(";"):
            name, _, param = pair.partition("=")
            if name.strip().lower() == "for":
                found = param
        hops.append(found)
    return hops


def client_address(
    view: RequestView,
    trusted: tuple[IPNetwork, ...],
    proxy_header: str = "x-forwarded-for",
) -> IPAddress | None:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the
    right-most address of the forwarding header that is not itself a trusted proxy (addresses
    further left were written by the client and can be forged)."""
    peer = _parse_ip(view.client or "")
    if peer is None or not trusted or not _is_trusted(peer, trusted):
        return peer
    raw = view.header(proxy_header)
    if not raw:
        return peer
    current = peer
    for hop in reversed(_hops(raw, proxy_header)):
        address = _parse_ip(hop)
        if address is None:
            _warn(
                "forwarded",
                "ratekeeper: malformed %s hop %r (from %s); limiting by %s",
                proxy_header,
                hop.strip()[:64],
                peer,
                current,
            )
            return current
        if not _is_trusted(address, trusted):
            return address
        current = address
    return current  # every hop is a trusted proxy: the left-most one is the client


def _is_trusted(address: IPAddress, trusted: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in trusted)


def client_ip(
    trusted_proxies: Iterable[str | IPNetwork] = (),
    *,
    proxy_header: str = "x-forwarded-for",
    ipv6_prefix: int | None = None,
) -> ViewFunction:
    """Key by client address (``ip:203.0.113.7``).

    By default the socket peer, so a client cannot pick its own key by sending
    ``X-Forwarded-For``. Give ``trusted_proxies`` (addresses or CIDRs of your load balancers)
    to use the forwarding header (``proxy_header``: ``"x-forwarded-for"``, ``"forwarded"`` for
    RFC 7239, or e.g. ``"x-real-ip"``) when, and only when, the peer is one of them.
    ``ipv6_prefix=64`` keys IPv6 clients by their /64 (one host usually owns a whole /64).
    """
    trusted = _networks(trusted_proxies)
    header_name = proxy_header.lower()
    if ipv6_prefix is not None and not 0 <= ipv6_prefix <= 128:
        raise ConfigError(f"ipv6_prefix must be between 0 and 128, got {ipv6_prefix!r}")

    def key(view: RequestView) -> str:
        address = client_address(view, trusted, header_name)
        if address is None:
            return f"ip:{view.client or 'unknown'}"
        if ipv6_prefix is not None and isinstance(address, ipaddress.IPv6Address):
            return f"ip:{ipaddress.ip_network(f'{address}/{ipv6_prefix}', strict=False)}"
        return f"ip:{address}"

    return ViewFunction("client_ip", key)


def header(
    name: str, *, fallback: ViewFunction | None = None, hashed: bool = False
) -> ViewFunction:
    """Key by the value of header ``name`` (``header:x-tenant:acme``); without the header, by
    ``fallback`` (the client address by default). ``hashed=True`` stores a digest, not the
    value (for secrets)."""
    lowered = name.lower()

    def key(view: RequestView) -> str | None:
        value = (view.header(lowered) or "").strip()
        if not value:
            return None
        if hashed:
            value = hashlib.sha256(value.encode()).hexdigest()[:32]
        return f"header:{lowered}:{value}"

    return ViewFunction(f"header({name})", key, fallback or client_ip())


def api_key(name: str = "X-API-Key", *, fallback: ViewFunction | None = None) -> ViewFunction:
    """Key by API key header (stored as a digest, never the key itself); requests without one
    by ``fallback`` (the client address by default)."""
    lowered = name.lower()

    def key(view: RequestView) -> str | None:
        value = (view.header(lowered) or "").strip()
        if not value:
            return None
        return "apikey:" + hashlib.sha256(value.encode()).hexdigest()[:32]

    return ViewFunction(f"api_key({name})", key, fallback or client_ip())


def user_id(user: Any) -> str | None:
    """The id of an authenticated user object (Django, Flask-Login, Starlette auth, a string),
    or None for anonymous users."""
    if user is None:
        return None
    if isinstance(user, str | int):
        return str(user) or None
    if getattr(user, "is_authenticated", True) is False:
        return None
    for attribute in ("pk", "id", "identity", "username"):
        value = getattr(user, attribute, None)
        if value is not None and not callable(value):
            return str(value)
    get_id = getattr(user, "get_id", None)
    if callable(get_id):
        return str(get_id())
    return None


def user(*, fallback: ViewFunction | None = None) -> ViewFunction:
    """Key by authenticated user (``user:42``); anonymous requests by ``fallback`` (the client
    address by default)."""

    def key(view: RequestView) -> str | None:
        if view.get_user is None:
            return None
        uid = user_id(view.get_user())
        return None if uid is None else f"user:{uid}"

    return ViewFunction("user", key, fallback or client_ip())


def path() -> ViewFunction:
    """Key by request path (``path:/search``): one budget per path for everyone."""
    return ViewFunction("path", lambda view: f"path:{view.path}")


def route() -> ViewFunction:
    """Key by route template (``route:/items/{id}``), or the path when the route is unknown."""
    return ViewFunction("route", lambda view: f"route:{view.route or view.path}")


def cost_from_header(
    name: str, *, default: float = 1, maximum: float | None = None
) -> ViewFunction:
    """Cost read from header ``name`` (e.g. a batch size). Missing, non-numeric, negative or
    non-finite values cost ``default``; values above ``maximum`` are capped."""
    lowered = name.lower()

    def cost(view: RequestView) -> float:
        raw = view.header(lowered)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            _warn("cost-header", "ratekeeper: bad %s header %r; using cost %s", name, raw, default)
            return default
        return value if maximum is None else min(value, maximum)

    return ViewFunction(f"cost_from_header({name})", cost)
