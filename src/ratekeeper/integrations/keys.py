"""What the web integrations share about requests: the framework-neutral request view, the key
functions (client address behind trusted proxies, user, API key, header, path, route), costs read
from headers, and the once-a-minute warning used for bad input everywhere in the integrations.

Malformed input never breaks a request: a key function that raises or returns nothing falls back
to the client address, a bad cost falls back to the rule's default cost; each is logged (at most
once a minute per kind).

Storage keys are built in one place, :func:`storage_key`: an unambiguous encoding of (scope, kind
of key, value). The built-in key functions return a :class:`Key` that carries its kind (``ip``,
``user``, ``apikey``...); whatever a custom key function returns is of kind ``custom``, so a key
function that returns ``"ip:203.0.113.7"`` (say, from a header the client controls) can never
land on that client address's budget.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import string
import time
from collections.abc import Callable, Iterable, Sequence
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
_MAX_COST_HEADER = 32  # characters: a longer cost header is malformed (no giant float parsing)
INF = math.inf
# Bounded memos of the client-address key (a busy server sees far fewer distinct peers per
# minute; past the bound a memo starts over, so its memory never grows with an attack).
CLIENT_KEYS_CACHED = 4096
PARSED_ADDRESSES_CACHED = 4096
_ADDRESS_TEXT_MAX = 64  # characters: '"[v6 address]:port"' fits; only texts this short are memoized
_last_logged: dict[str, float] = {}


def warn(kind: str, message: str, *args: object, exc_info: bool = False) -> None:
    """Log a warning about bad input, at most once a minute per ``kind`` (no log flooding)."""
    now = time.monotonic()
    if now - _last_logged.get(kind, -math.inf) >= _LOG_EVERY:
        _last_logged[kind] = now
        log.warning(message, *args, exc_info=exc_info)


def forget_warnings() -> None:
    """Let every kind of :func:`warn` warning be logged again at once (tests)."""
    _last_logged.clear()


# -- keys ----------------------------------------------------------------------------------------

CUSTOM = "custom"  # the kind of every key a user-supplied key function returns


def _escape(part: str) -> str:
    """``%`` and ``:`` percent-encoded, so a component never contains the separator."""
    return part.replace("%", "%25").replace(":", "%3A")


class Key(str):
    """A key from a built-in key function: reads as ``"kind:value"`` (``"ip:203.0.113.7"``), and
    carries ``kind`` and ``value`` apart, so :func:`storage_key` can keep the kind a component
    that no key function value can forge. ``Key("header", "x-tenant", "acme")`` keeps several
    value parts apart too."""

    kind: str
    value: str
    stored: str  # ``kind:value`` as :func:`storage_key` writes it (escaped once, here)

    def __new__(cls, kind: str, *parts: str) -> Key:
        self = super().__new__(cls, ":".join((kind, *parts)))
        self.kind = kind
        self.value = ":".join(map(_escape, parts)) if len(parts) > 1 else parts[0]
        self.stored = f"{_escape(kind)}:{_escape(self.value)}"
        return self


def kind_and_value(key: str) -> str:
    """``kind:value`` of a key, escaped: a :class:`Key`'s own kind, ``custom`` for any other."""
    return key.stored if isinstance(key, Key) else f"{CUSTOM}:{_escape(key)}"


def storage_key(scope: str, key: str, prefix: str = "") -> str:
    """The store key of ``key`` in budget ``scope``: ``[prefix:]scope:kind:value``, each component
    escaped (``%`` → ``%25``, ``:`` → ``%3A``), so distinct (prefix, scope, kind, value) never share
    a counter. ``key`` is a :class:`Key` (its kind) or any other string (kind ``custom``). The
    stores add their own namespace; ``prefix`` is only for several engines sharing one store."""
    return f"{budget_key(scope, prefix)}:{kind_and_value(key)}"


def budget_key(scope: str, prefix: str = "") -> str:
    """The part of :func:`storage_key` before the key: ``[prefix:]scope``, escaped."""
    return _escape(scope) if not prefix else f"{_escape(prefix)}:{_escape(scope)}"


# -- per-level key templates (chains) --------------------------------------------------------------

# The fields a key template may use: ``{ip}`` (client address), ``{user}`` (authenticated user
# id), ``{key}`` (the rule's key function's value), ``{method}``, ``{path}``, ``{route}``,
# ``{header[Name]}`` (a request header).
TEMPLATE_FIELDS = frozenset({"ip", "user", "key", "method", "path", "route", "header"})
TemplatePart: TypeAlias = tuple[str, str | None, str | None]  # literal, field, header name


class KeyTemplate:
    """A per-level key written as a template: ``"tenant:{header[X-Tenant]}"``, ``"user:{user}"``,
    ``"global"`` (no field: one budget for everyone). Parsed once; unknown fields, conversions
    and format specs are a `ConfigError` when the rule is made. :meth:`render` fills the fields
    from ``values(field, header_name)``; each value is escaped (``%`` and ``:``) so two field
    values can never read as one; a field without a value (an anonymous user, a missing header)
    makes the whole key None (the engine then keys the level by client address, logged)."""

    __slots__ = ("fields", "parts", "text")

    def __init__(self, text: str) -> None:
        parts: list[TemplatePart] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ConfigError(f"key template {text!r}: {exc}") from None
        for literal, field, spec, conversion in parsed:
            if field is None:
                parts.append((literal, None, None))
                continue
            name, _, rest = field.partition("[")
            argument = rest[:-1] if rest.endswith("]") else None
            bad = (
                name not in TEMPLATE_FIELDS
                or (name == "header") != bool(argument)
                or (rest and argument is None)
                or spec
                or conversion
            )
            if bad:
                raise ConfigError(
                    f"key template {text!r}: bad field {{{field}}}; use {{ip}}, {{user}}, "
                    "{key}, {method}, {path}, {route} or {header[Name]}"
                )
            parts.append((literal, name, argument.lower() if argument else None))
        self.text = text
        self.parts: tuple[TemplatePart, ...] = tuple(parts)
        self.fields = frozenset(name for _, name, _ in parts if name is not None)

    def render(self, values: Callable[[str, str | None], str | None]) -> str | None:
        out: list[str] = []
        for literal, name, argument in self.parts:
            out.append(literal)
            if name is not None:
                value = values(name, argument)
                if not value:
                    return None
                out.append(_escape(value))
        return "".join(out)

    def __repr__(self) -> str:
        return f"KeyTemplate({self.text!r})"


# -- the neutral request --------------------------------------------------------------------------


class RequestView:
    """What the engine needs from a request, whatever the framework.

    ``get_header(name)`` returns every value of a header joined by ``", "`` (or None);
    ``client`` is the socket peer address; ``route`` the route template when known; ``get_user``
    returns the authenticated user object (or None); ``native`` is the framework's request,
    handed to user-supplied key, cost and limit functions. An adapter whose native request costs
    something to build passes ``make_native`` instead: it is called the first time ``native`` is
    read (a request that only needs the built-in keys never builds one).
    """

    __slots__ = (
        "_make_native",
        "_native",
        "client",
        "get_header",
        "get_user",
        "method",
        "path",
        "route",
    )

    def __init__(
        self,
        method: str,
        path: str,
        get_header: Callable[[str], str | None],
        client: str | None,
        native: Any = None,
        route: str | None = None,
        get_user: Callable[[], Any] | None = None,
        *,
        make_native: Callable[[], Any] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.get_header = get_header
        self.client = client
        self._native = native
        self._make_native = make_native
        self.route = route
        self.get_user = get_user

    @property
    def native(self) -> Any:
        """The framework's request (built on first use when the adapter gave ``make_native``)."""
        if self._native is None and self._make_native is not None:
            self._native = self._make_native()
        return self._native

    def header(self, name: str) -> str | None:
        """The value of request header ``name`` (any case), or None when it is absent."""
        return self.get_header(name)

    def __repr__(self) -> str:
        return f"RequestView({self.method} {self.path} from {self.client})"


def joined_header(values: Callable[[str], Iterable[str]]) -> Callable[[str], str | None]:
    """A ``get_header`` for :class:`RequestView` from a framework's "every value of this header"
    lookup: the values joined by ``", "``, None when there is none."""

    def get_header(name: str) -> str | None:
        return ", ".join(values(name)) or None

    return get_header


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
        # For a function of the socket peer alone: its values so far, by peer (read by the
        # engine before calling it: one dict lookup per request).
        self.by_peer: dict[str | None, Key] | None = None

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
    """The address in ``text`` (see :func:`_parse_address`), remembered for short texts (an
    address with its port and brackets is short; a long text is garbage, parsed every time)."""
    if len(text) <= _ADDRESS_TEXT_MAX:
        return _parse_remembered(text)
    return _parse_address(text)


def _parse_address(text: str) -> IPAddress | None:
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


_parse_remembered = functools.lru_cache(maxsize=PARSED_ADDRESSES_CACHED)(_parse_address)


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
            warn(
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


def peer_key(view: RequestView) -> Key:
    """The socket peer as a key, verbatim (``ip:unknown`` when there is none): the last resort."""
    return Key("ip", view.client or "unknown")


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
    # Without trusted proxies the key is a function of the socket peer alone: remembered per
    # peer (bounded), so a request pays a dict lookup, not an address parse.
    by_peer: dict[str | None, Key] = {}

    def of_address(view: RequestView, address: IPAddress | None) -> Key:
        if address is None:
            return peer_key(view)
        if ipv6_prefix is not None and isinstance(address, ipaddress.IPv6Address):
            return Key("ip", str(ipaddress.ip_network(f"{address}/{ipv6_prefix}", strict=False)))
        return Key("ip", str(address))

    def key(view: RequestView) -> Key:
        if trusted:  # the forwarding header counts too (and a malformed one is logged)
            return of_address(view, client_address(view, trusted, header_name))
        peer = view.client
        found = by_peer.get(peer)
        if found is None:
            found = of_address(view, _parse_ip(peer or ""))
            if len(by_peer) >= CLIENT_KEYS_CACHED:
                by_peer.clear()
            by_peer[peer] = found
        return found

    function = ViewFunction("client_ip", key)
    if not trusted:
        function.by_peer = by_peer
    return function


def header(
    name: str, *, fallback: ViewFunction | None = None, hashed: bool = False
) -> ViewFunction:
    """Key by the value of header ``name`` (``header:x-tenant:acme``); without the header, by
    ``fallback`` (the client address by default). ``hashed=True`` stores a digest, not the
    value (for secrets)."""
    lowered = name.lower()

    def key(view: RequestView) -> Key | None:
        value = (view.header(lowered) or "").strip()
        if not value:
            return None
        if hashed:
            value = hashlib.sha256(value.encode()).hexdigest()[:32]
        return Key("header", lowered, value)

    return ViewFunction(f"header({name})", key, fallback or client_ip())


def api_key(name: str = "X-API-Key", *, fallback: ViewFunction | None = None) -> ViewFunction:
    """Key by API key header (stored as a digest, never the key itself); requests without one
    by ``fallback`` (the client address by default)."""
    lowered = name.lower()

    def key(view: RequestView) -> Key | None:
        value = (view.header(lowered) or "").strip()
        if not value:
            return None
        return Key("apikey", hashlib.sha256(value.encode()).hexdigest()[:32])

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

    def key(view: RequestView) -> Key | None:
        if view.get_user is None:
            return None
        uid = user_id(view.get_user())
        return None if uid is None else Key("user", uid)

    return ViewFunction("user", key, fallback or client_ip())


def path() -> ViewFunction:
    """Key by request path (``path:/search``): one budget per path for everyone."""
    return ViewFunction("path", lambda view: Key("path", view.path))


def route() -> ViewFunction:
    """Key by route template (``route:/items/{id}``), or the path when the route is unknown."""
    return ViewFunction("route", lambda view: Key("route", view.route or view.path))


def _number(text: str) -> float:
    """``text`` as a float; NaN when it is not a number or longer than a cost header may be."""
    if len(text) > _MAX_COST_HEADER:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def cost_from_header(
    name: str, *, default: float = 1, minimum: float = 1, maximum: float | None = None
) -> ViewFunction:
    """Cost read from header ``name`` (e.g. a batch size). The client writes this header, so it
    is bounded: a value below ``minimum`` (default 1) costs ``minimum`` (``"0"``, ``"0.000001"``
    or ``"1e-320"`` cannot make requests free); a value above ``maximum`` is capped; a missing
    header costs ``default``, and so does a malformed, negative, NaN, infinite or over-long
    (more than 32 characters) one (logged at most once a minute)."""
    for option, value in (("default", default), ("minimum", minimum), ("maximum", maximum)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < INF
        ):
            raise ConfigError(f"cost_from_header: {option} must be a number >= 0, got {value!r}")
    if maximum is not None and maximum < minimum:
        raise ConfigError(f"cost_from_header: maximum {maximum} is below minimum {minimum}")
    lowered = name.lower()

    def cost(view: RequestView) -> float:
        raw = view.header(lowered)
        if raw is None:
            return default
        value = _number(raw)
        if not math.isfinite(value) or value < 0:
            warn(
                "cost-header",
                "ratekeeper: bad %s header %r; using cost %s",
                name,
                raw[:_MAX_COST_HEADER],
                default,
            )
            return default
        value = max(value, minimum)
        return value if maximum is None else min(value, maximum)

    return ViewFunction(f"cost_from_header({name})", cost)
