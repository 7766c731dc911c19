"""Configuration: find a file, read it, check every field, and resolve it into definitions.

Pure: no registry state, and no I/O but reading the one file asked for. `ratekeeper.registry`
checks a whole file with these functions first and applies the result under its lock afterwards,
so a load that fails leaves the registry as it was.

A file has two tables, ``stores`` and ``limiters``, with one sub-table per name (TOML
``[limiters.api]``, YAML ``limiters: {api: {...}}``, ``[tool.ratekeeper.limiters.api]`` in
``pyproject.toml``). Strings may hold ``${VAR}`` and ``${VAR:-default}``; environment variables
such as ``RATEKEEPER_LIMITERS__API__LIMITS`` override fields (upper case, ``__`` between levels).
The field names of rate-sync (``rate_per_second``, ``limit`` + ``window_seconds``, ``engine``),
ratelink (``limit`` + ``window``) and netrun (``rate`` + ``period``, ``burst``) are turned into
`Limit` objects here, so a definition always holds limits, whatever the file said.

Every error is a `ConfigError` naming the source (file or environment variable), the table and
the field, with a suggestion when a name looks misspelled.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.errors import ConfigError
from ratekeeper.limiter import RateLimiter
from ratekeeper.limits import Limit, to_limits
from ratekeeper.stores import check_store_url

__all__ = [
    "CONFIG_ENV",
    "DISCOVERY",
    "BUILTIN_STORE",
    "Config",
    "LimiterDefinition",
    "StoreDefinition",
    "clone_definition",
    "discover",
    "limiter_definition",
    "load",
    "store_definition",
]

CONFIG_ENV = "RATEKEEPER_CONFIG"
ENV_PREFIX = "RATEKEEPER_"
ENV_SEPARATOR = "__"
# Looked for in the working directory, in this order, when $RATEKEEPER_CONFIG is not set.
DISCOVERY = ("ratekeeper.toml", "ratekeeper.yaml", "pyproject.toml")
PYPROJECT_TABLE = ("tool", "ratekeeper")
BUILTIN_STORE = "memory"
TABLES = ("stores", "limiters")
# rate_per_second = 0.3 becomes 3 per 10 s: the rate as a fraction with a bounded denominator.
RATE_DENOMINATOR = 10**6
SUGGESTION_CUTOFF = 0.6  # difflib similarity above which a name is offered as "did you mean"
ON_STORE_ERROR = ("raise", "allow", "deny")

# Fields of a limiter that describe its limits (ours and other libraries').
LIMIT_FORMS = ("limits", "rate_per_second", "limit", "window_seconds", "window", "rate", "period")
OWN_FIELDS = ("store", "timeout", "burst")
LIMIT_GROUPS = {
    "limits": {"limits"},
    "rate_per_second": {"rate_per_second"},
    "limit": {"limit", "window", "window_seconds"},  # rate-sync and ratelink
    "rate": {"rate", "period"},  # netrun
}
# Fields that are never parsed from text as numbers or booleans (environment, ${VAR}).
TEXT_FIELDS = frozenset({"url", "engine", "store", "limits", "algorithm", "on_store_error"})
STORE_FIELDS = ("url", "engine", "on_store_error")
ENGINES = {"memory": "memory", "redis": "redis", "postgres": "postgresql", "nats": "nats"}
ENGINE_SCHEMES = {
    "redis": ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel"),
    "postgresql": ("postgresql", "postgres"),
    "nats": ("nats",),
}

T = TypeVar("T")
_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.S)


@dataclass(frozen=True)
class StoreDefinition:
    """A named store: a URL (and options for its constructor) or, from code, a store object."""

    name: str
    url: str | None
    on_store_error: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    obj: Any = None
    source: str = "code"

    def settings(self) -> dict[str, Any]:
        """What `list_stores` shows: plain values, a password in the URL masked."""
        shown: dict[str, Any] = {"url": _masked(self.url) if self.url else repr(self.obj)}
        if self.on_store_error is not None:
            shown["on_store_error"] = self.on_store_error
        shown.update(self.options)
        return shown


@dataclass(frozen=True)
class LimiterDefinition:
    """A named limiter: its limits, its store's name, its acquire timeout and the other
    `RateLimiter` arguments (``options``)."""

    name: str
    limits: tuple[Limit, ...]
    store: str = BUILTIN_STORE
    timeout: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "code"

    def settings(self) -> dict[str, Any]:
        """What `list_limiters` shows: plain values only (a clock object is left out)."""
        shown: dict[str, Any] = {
            "limits": "; ".join(map(str, self.limits)),
            "store": self.store,
            "algorithm": "token_bucket",
            "timeout": self.timeout,
        }
        for key, value in self.options.items():
            if value is None or isinstance(value, str | int | float | bool):
                shown[key] = value
            elif key == "algorithm":
                shown[key] = getattr(value, "name", repr(value))
        return shown


@dataclass
class Config:
    """What one source defines, checked; ``path`` is None when no file was found."""

    path: Path | None = None
    stores: dict[str, StoreDefinition] = field(default_factory=dict)
    limiters: dict[str, LimiterDefinition] = field(default_factory=dict)


class Where:
    """Where a table comes from, for error messages: ``source: [table] message``."""

    def __init__(self, source: str, table: str, fields: Mapping[str, str] | None = None) -> None:
        self.source, self.table = source, table
        self.fields = fields or {}  # field -> its own source (an environment variable)

    def error(self, message: str, field: str | None = None) -> ConfigError:
        source = self.fields.get(field, self.source) if field is not None else self.source
        return ConfigError(f"{source}: [{self.table}] {message}")


def suggest(name: str, known: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` when ``name`` looks like a misspelling of one of ``known``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=SUGGESTION_CUTOFF)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, known: Collection[str]) -> str:
    """The message for an undefined store or limiter: the name, a suggestion, the known ones."""
    listed = ", ".join(repr(k) for k in sorted(known)) or "none"
    return f"unknown {kind} {name!r}{suggest(name, known)}; known {kind}s: {listed}"


# -- limiter and store fields ------------------------------------------------------------------


@functools.cache
def _limiter_arguments() -> frozenset[str]:
    """The keyword arguments of `RateLimiter` that a definition may set."""
    parameters = inspect.signature(RateLimiter.__init__).parameters
    return frozenset(parameters) - {"self", "limits", "store", "name"}


def limiter_fields() -> frozenset[str]:
    """Every field a limiter table may have."""
    return _limiter_arguments() | frozenset(LIMIT_FORMS) | frozenset(OWN_FIELDS)


def accepts_name() -> bool:
    """Whether `RateLimiter` takes ``name=`` (limiters get their registry name)."""
    return "name" in inspect.signature(RateLimiter.__init__).parameters


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(where: Where, name: str, value: object, *, positive: bool = False) -> float:
    """A number of seconds or units: not a bool, not NaN, >= 0 (> 0 when ``positive``)."""
    if not _is_number(value):
        raise where.error(
            f"field {name!r} must be a number, got {type(value).__name__} {value!r}", name
        )
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number) or number < 0 or (positive and number == 0):
        relation = "> 0" if positive else ">= 0"
        raise where.error(f"field {name!r} must be {relation}, got {value!r}", name)
    return number


def _integer(where: Where, name: str, value: object) -> int:
    """A positive integer (a float with no fraction, as YAML or an environment gives, is one)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(
            f"field {name!r} must be a whole number, got {type(value).__name__} {value!r}", name
        )
    if value <= 0:
        raise where.error(f"field {name!r} must be > 0, got {value!r}", name)
    return value


def _text(where: Where, name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(
            f"field {name!r} must be a non-empty string, got {type(value).__name__} {value!r}",
            name,
        )
    return value


def _choice(where: Where, name: str, value: object, choices: Collection[str]) -> str:
    text = _text(where, name, value)
    if text not in choices:
        listed = ", ".join(repr(c) for c in sorted(choices))
        raise where.error(
            f"field {name!r}: unknown value {text!r}{suggest(text, choices)}; choose one of "
            f"{listed}",
            name,
        )
    return text


def _limits(where: Where, fields: dict[str, Any]) -> tuple[Limit, ...]:
    """The limits a table describes, in whichever one form it uses (popped from ``fields``)."""
    forms = [name for name in LIMIT_FORMS if name in fields]
    values = {name: fields.pop(name) for name in forms}
    burst = fields.pop("burst", None)
    if burst is not None:
        burst = _integer(where, "burst", burst)
    if not forms:
        raise where.error(
            "no limits: give 'limits' (e.g. \"100/minute\"), or 'rate_per_second', or 'limit' "
            "with 'window' / 'window_seconds', or 'rate' with 'period'"
        )
    used = [group for group in LIMIT_GROUPS if LIMIT_GROUPS[group] & set(values)]
    if len(used) != 1:
        raise where.error(f"fields {', '.join(map(repr, forms))} describe limits in two ways")
    if "limits" in values:
        text = values["limits"]
        if isinstance(text, list) and text and all(isinstance(item, str) for item in text):
            text = ";".join(text)  # a list of rate strings is several limits
        if not isinstance(text, str | Limit | list | tuple):
            raise where.error(
                f"field 'limits' must be a rate string such as \"100/minute\", got "
                f"{type(text).__name__} {text!r}",
                "limits",
            )
        limits = _made(where, "limits", to_limits, text)
        if burst is None:
            return limits
        if len(limits) != 1:
            raise where.error("field 'burst' needs exactly one limit", "burst")
        return (_made(where, "burst", Limit, limits[0].amount, limits[0].per, burst),)
    if "rate_per_second" in values:
        rate = _number(where, "rate_per_second", values["rate_per_second"], positive=True)
        fraction = Fraction(rate).limit_denominator(RATE_DENOMINATOR)
        # rate-sync spaces requests evenly: a burst of one unless the table says otherwise.
        return (
            _made(
                where,
                "rate_per_second",
                Limit,
                fraction.numerator,
                fraction.denominator,
                burst or 1,
            ),
        )
    if "limit" in values:
        if "window" in values and "window_seconds" in values:
            raise where.error("give 'window' or 'window_seconds', not both", "window")
        window = "window" if "window" in values else "window_seconds"
        if window not in values:
            raise where.error("field 'limit' needs 'window' (seconds)", "limit")
        amount = _integer(where, "limit", values.get("limit"))
        per = _number(where, window, values[window], positive=True)
        return (_made(where, "limit", Limit, amount, per, burst),)
    amount = _integer(where, "rate", values.get("rate"))
    per = _number(where, "period", values.get("period", 1.0), positive=True)
    return (_made(where, "rate", Limit, amount, per, burst),)


def _made(where: Where, name: str, make: Callable[..., T], *args: Any) -> T:
    """``make(*args)``, its `ConfigError` (a bad rate string, a limit out of range) placed."""
    try:
        return make(*args)
    except ConfigError as exc:
        raise where.error(f"field {name!r}: {exc}", name) from None


def limiter_definition(name: str, fields: Mapping[str, Any], where: Where) -> LimiterDefinition:
    """Check one limiter table (or `configure_limiter`'s arguments) and resolve its limits."""
    _check_name(where, name)
    fields = dict(fields)
    known = limiter_fields()
    for key in fields:
        if key not in known:
            raise where.error(f"unknown field {key!r}{suggest(key, known)}", key)
    fields = {key: value for key, value in fields.items() if value is not None}
    limits = _limits(where, fields)
    store = _text(where, "store", fields.pop("store", BUILTIN_STORE))
    timeout = fields.pop("timeout", None)
    if timeout is not None:
        timeout = _number(where, "timeout", timeout)
    algorithm = fields.get("algorithm")
    if isinstance(algorithm, str) or (algorithm is not None and not hasattr(algorithm, "name")):
        _choice(where, "algorithm", algorithm, ALGORITHMS)
    if "max_concurrent" in fields:
        fields["max_concurrent"] = _integer(where, "max_concurrent", fields["max_concurrent"])
    if "lease_ttl" in fields:
        fields["lease_ttl"] = _number(where, "lease_ttl", fields["lease_ttl"], positive=True)
    if "on_store_error" in fields:
        _choice(where, "on_store_error", fields["on_store_error"], ON_STORE_ERROR)
    if "local_cache" in fields and not isinstance(fields["local_cache"], bool):
        fields["local_cache"] = _integer(where, "local_cache", fields["local_cache"])
    if "local_quota" in fields:
        fields["local_quota"] = _integer(where, "local_quota", fields["local_quota"])
    if "local_quota_ttl" in fields:
        ttl = _number(where, "local_quota_ttl", fields["local_quota_ttl"], positive=True)
        if math.isinf(ttl):
            raise where.error(f"field 'local_quota_ttl' must be finite, got {ttl!r}")
        fields["local_quota_ttl"] = ttl
    if "shadow" in fields and not isinstance(fields["shadow"], bool):
        raise where.error(f"field 'shadow' must be true or false, got {fields['shadow']!r}")
    if "clock" in fields and not callable(fields["clock"]):
        raise where.error("field 'clock' must be a callable returning seconds", "clock")
    return LimiterDefinition(name, limits, store, timeout, fields, where.source)


def clone_definition(
    source: LimiterDefinition, name: str, overrides: Mapping[str, Any], where: Where
) -> LimiterDefinition:
    """``source`` under a new name, with some fields replaced (new limits replace all limits)."""
    fields: dict[str, Any] = {"store": source.store, "timeout": source.timeout, **source.options}
    if not any(key in overrides for key in (*LIMIT_FORMS, "burst")):
        fields["limits"] = source.limits
    fields.update(overrides)
    return limiter_definition(name, fields, where)


def store_definition(name: str, fields: Mapping[str, Any], where: Where) -> StoreDefinition:
    """Check one store table (or `configure_store`'s arguments). Fields other than ``url``,
    ``engine`` and ``on_store_error`` are options for the store's constructor."""
    _check_name(where, name)
    fields = {key: value for key, value in fields.items() if value is not None}
    obj = fields.pop("url", None)
    engine = fields.pop("engine", None)
    on_store_error = fields.pop("on_store_error", None)
    if on_store_error is not None:
        on_store_error = _choice(where, "on_store_error", on_store_error, ON_STORE_ERROR)
    for key in fields:  # an option one letter away from a field is a misspelled field
        if not isinstance(key, str) or not key.isidentifier():
            raise where.error(f"invalid option name {key!r}", str(key))
        hint = suggest(key, STORE_FIELDS)
        if hint:
            raise where.error(f"unknown field {key!r}{hint}", key)
    url: str | None = None
    if obj is None or isinstance(obj, str):
        url = obj
        if engine is not None:
            kind = ENGINES.get(_choice(where, "engine", engine, ENGINES))
            if kind == "memory" and url is None:
                url = "memory://"
            if url is None:
                raise where.error(f"engine {engine!r} needs a 'url'", "engine")
            scheme = urlsplit(url).scheme.lower()
            if kind != "memory" and scheme not in ENGINE_SCHEMES[str(kind)]:
                raise where.error(
                    f"engine {engine!r} does not match the URL scheme {scheme + '://'!r}", "url"
                )
        if url is None:
            raise where.error("no 'url' (e.g. url = \"redis://127.0.0.1:6379/0\")", "url")
        try:
            check_store_url(url)
        except ConfigError as exc:
            raise where.error(f"field 'url': {exc}", "url") from None
        obj = None
    elif engine is not None:
        raise where.error("give a store object or an engine, not both", "engine")
    return StoreDefinition(name, url, on_store_error, fields, obj, where.source)


def _check_name(where: Where, name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise where.error(f"a name must be a non-empty string, got {name!r}")


# -- files -------------------------------------------------------------------------------------


def discover(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The file zero configuration uses: ``$RATEKEEPER_CONFIG``, else the first of
    `DISCOVERY` in ``cwd`` (``pyproject.toml`` only with a ``[tool.ratekeeper]`` table)."""
    environ = os.environ if environ is None else environ
    named = environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={named}: no such file")
        return path
    base = Path.cwd() if cwd is None else cwd
    for candidate in DISCOVERY:
        path = base / candidate
        if path.is_file():
            if candidate == "pyproject.toml" and _pyproject_table(_read(path), path) is None:
                continue
            return path
    return None


def load(
    path: str | os.PathLike[str] | None,
    *,
    environ: Mapping[str, str] | None = None,
    defined: Callable[[str, str], bool] = lambda table, name: False,
) -> Config:
    """Read and check a file (``None``: the discovered one, or only the environment).

    ``defined(table, name)`` tells whether a name is already configured elsewhere: an
    environment override for a name the file does not define defines it only if not.
    """
    environ = os.environ if environ is None else environ
    found = discover(environ=environ) if path is None else Path(path)
    data: dict[str, Any] = {}
    label, prefix = "environment", ""
    if found is not None:
        label = str(found)
        data, prefix = _parse(found)
    fields_from_env = _apply_environment(data, environ, defined)
    config = Config(found)
    for table in TABLES:
        for name, fields in data.get(table, {}).items():
            where = Where(label, f"{prefix}{table}.{name}", fields_from_env.get((table, name)))
            if not isinstance(fields, dict):
                raise where.error(f"must be a table of fields, got {fields!r}")
            typed = table == "limiters"
            fields = {key: _expand(value, where, key, typed) for key, value in fields.items()}
            if table == "stores":
                config.stores[name] = store_definition(name, fields, where)
            else:
                config.limiters[name] = limiter_definition(name, fields, where)
    return config


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None


def _parse(path: Path) -> tuple[dict[str, Any], str]:
    """The file's ratekeeper tables, and the prefix of table names in messages."""
    suffix = path.suffix.lower()
    text = _read(path)
    prefix = ""
    if suffix == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        if path.name == "pyproject.toml":
            data = _pyproject_table(text, path)
            if data is None:
                raise ConfigError(f"{path}: no [tool.ratekeeper] table")
            prefix = "tool.ratekeeper."
    elif suffix in (".yaml", ".yml"):
        data = _yaml(text, path)
    else:
        raise ConfigError(f"{path}: unknown configuration format; use .toml, .yaml or .yml")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table, got {type(data).__name__}")
    for table, content in data.items():
        if table not in TABLES:
            raise ConfigError(
                f"{path}: unknown table [{prefix}{table}]{suggest(str(table), TABLES)}; "
                f"a configuration has [{prefix}stores] and [{prefix}limiters]"
            )
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: [{prefix}{table}] must be a table of names")
    return data, prefix


def _pyproject_table(text: str, path: Path) -> Any:
    try:
        data: Any = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in PYPROJECT_TABLE:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            f"{path}: reading YAML needs PyYAML; install it with `pip install ratekeeper[yaml]`"
        ) from None
    try:
        return yaml.load(text, Loader=_yaml_loader(path))  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def _yaml_loader(path: Path) -> Any:
    """A `yaml.SafeLoader` that refuses a key written twice in one mapping."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(
                    f"{path}: line {key_node.start_mark.line + 1}: duplicate key {key!r}"
                )
            seen.add(key)
        return loader.construct_mapping(node, deep=True)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


# -- environment ------------------------------------------------------------------------------


def _expand(value: Any, where: Where, name: str, typed: bool) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in a string (in lists too); a field of a limiter that
    is not text and was written as one ``${...}`` is read as a number or boolean."""
    if isinstance(value, list):
        return [_expand(item, where, name, typed) for item in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        body = _VAR_BODY.fullmatch(match[1])
        if body is None:
            raise where.error(f"field {name!r}: malformed {match[0]!r}", name)
        variable, default = body[1], body[2]
        found = os.environ.get(variable)
        if found:
            return found
        if default is not None:
            return default
        raise where.error(
            f"field {name!r}: environment variable {variable!r} is not set (write "
            f"${{{variable}:-default}} for a default)",
            name,
        )

    expanded = _VAR.sub(replace, value)
    if "${" in _VAR.sub("", value):
        raise where.error(f"field {name!r}: unclosed '${{' in {value!r}", name)
    if typed and _VAR.fullmatch(value):
        return _from_text(name, expanded)
    return expanded


def _from_text(name: str, text: str) -> Any:
    """An environment value: a number or boolean if it reads as one (TOML syntax) and the field
    is not one that holds text."""
    if name in TEXT_FIELDS:
        return text
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return value if isinstance(value, int | float | bool) else text


def _apply_environment(
    data: dict[str, Any], environ: Mapping[str, str], defined: Callable[[str, str], bool]
) -> dict[tuple[str, str], dict[str, str]]:
    """Override fields from ``RATEKEEPER_<TABLE>__<NAME>__<FIELD>`` variables (in place).

    A name matches ignoring case, with ``-`` written ``_``. Returns, per (table, name), the
    variable that set each field, for messages.
    """
    origins: dict[tuple[str, str], dict[str, str]] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or ENV_SEPARATOR not in variable:
            continue
        parts = variable[len(ENV_PREFIX) :].split(ENV_SEPARATOR)
        table = parts[0].lower()
        if table not in TABLES:
            if suggest(table, TABLES):  # RATEKEEPER_LIMITER__API__LIMITS
                raise ConfigError(
                    f"{variable}: unknown table {table!r}{suggest(table, TABLES)}; use "
                    f"{ENV_PREFIX}LIMITERS__<NAME>__<FIELD> or {ENV_PREFIX}STORES__<NAME>__<FIELD>"
                )
            continue
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ConfigError(f"{variable}: expected {ENV_PREFIX}{table.upper()}__<NAME>__<FIELD>")
        wanted, field_name = parts[1], parts[2].lower()
        entries = data.setdefault(table, {})
        name = next(
            (n for n in entries if str(n).upper().replace("-", "_") == wanted.upper()), None
        )
        if name is None:
            name = wanted.lower()
            if defined(table, name):
                continue  # configured in code: the environment overrides files only
            entries[name] = {}
        entries[name][field_name] = _from_text(field_name, environ[variable])
        origins.setdefault((table, name), {})[field_name] = variable
    return origins


def _masked(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
