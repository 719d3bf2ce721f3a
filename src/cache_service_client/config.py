"""Settings: one validated Struct, loaded from arguments, the environment, a TOML file or a URL.

Sources, highest precedence first:

1. arguments (constructor, ``from_*(**overrides)``, :func:`load_settings` ``arguments``),
2. environment variables ``CACHE_SERVICE_<SETTING>`` (``CACHE_SERVICE_PORT``, ...),
3. a TOML file: setting names as keys, at the top level or under a ``[cache_service]`` table,
4. a connection URL: its parts (host, port, db, username, password, TLS, query options) fill in
   what no other source sets. The URL itself is the ``url`` setting of the highest source that
   has one.

Each setting's type, constraints and default are declared once, on :class:`Settings`; every
source is converted with ``msgspec.convert`` (lax for the text of environment variables and URL
query options, where ``"1"``, ``"true"`` and ``"0.5"`` become values). Every invalid value raises
:class:`~cache_service_client.ConfigurationError` naming its source and the setting, e.g.
``CACHE_SERVICE_PORT: 'abc' is not an integer``. Secrets (the password, the HTTP token,
credentials inside URLs) are masked in every repr and message.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypedDict, cast, get_args, get_type_hints
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit, urlunsplit

import msgspec
import msgspec.inspect
from msgspec import Meta

from cache_service_client._validation import MAX_TTL
from cache_service_client.exceptions import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "DEFAULTS",
    "DEFAULT_ENV_PREFIX",
    "Backend",
    "ClientOptions",
    "RuntimeSettings",
    "Settings",
    "SettingsFields",
    "load_settings",
    "mask_url",
    "settings_from_env",
    "settings_from_file",
    "settings_from_url",
]

#: The prefix of the environment variables that :func:`settings_from_env` reads.
DEFAULT_ENV_PREFIX = "CACHE_SERVICE_"
MASK = "***"

#: Which backend a client uses (:attr:`Settings.backend`).
Backend = Literal["redis", "memory", "cluster", "sentinel", "http"]


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Every setting of the client, validated.

    Build it with :func:`load_settings`, :meth:`load` or the ``settings_from_*`` helpers rather
    than directly, so that values are checked.

    Attributes:
        backend: ``"redis"`` (one node), ``"cluster"`` (Redis Cluster), ``"sentinel"`` (a master
            found through Redis Sentinel) or ``"memory"`` (in-process, for demos and tests).
        host: Redis host.
        port: Redis port (1-65535).
        db: Redis database number (>= 0).
        username: Redis ACL user name.
        password: Redis password (masked in every repr).
        unix_socket_path: Connect through this Unix socket instead of TCP.
        url: The connection URL these settings came from, if any (credentials masked in repr).
        ssl: Use TLS (``rediss://``). Certificates are verified by default.
        ssl_ca_certs: CA bundle file to verify the server with.
        ssl_certfile: Client certificate file.
        ssl_keyfile: Client key file.
        ssl_cert_reqs: ``"required"`` (default), ``"optional"`` or ``"none"``.
        ssl_check_hostname: Check the server's host name against its certificate.
        socket_timeout: Seconds to wait for a reply (> 0); also bounds a health check.
        socket_connect_timeout: Seconds to wait for a connection; None: ``socket_timeout``.
        max_connections: Connections per pool (sync and async each); extra callers wait.
        cluster: Use Redis Cluster (the same as ``backend="cluster"``; ``redis+cluster://``).
        cluster_buckets: Redis Cluster only: how many buckets devices are spread over (a
            bucket: a device group whose value and index keys share one hash slot).
        sentinel_service: Sentinel only: the monitored master's name.
        sentinel_password: Sentinel only: the password of the sentinels themselves, if any
            (masked in every repr).
        metadata_ttl: Seconds until stored metadata expires; 0 or None: never.
        key_prefix: Prefix of every key (see :class:`~cache_service_client.KeyStrategy`).
        key_separator: Between the prefix and the device id.
        codec: ``"json"`` (readable in redis-cli) or ``"msgpack"``.
        retry_attempts: Tries per call, the first included (1: no retry).
        retry_deadline: Seconds a call may take with all its retries; None: no bound.
        retry_backoff_base: First backoff delay in seconds (exponential, full jitter).
        retry_backoff_max: Longest backoff delay in seconds.
        health_slow_ms: A PING slower than this makes the health check "degraded".
        health_memory_ratio: used_memory / maxmemory above this makes it "degraded".
        use_http: Read through the cache service's REST gateway instead of Redis.
        http_url: The gateway's base URL.
        http_timeout: Seconds per HTTP request.
        http_auth_token: Bearer token for the gateway (masked in every repr).
        memory_store: The memory backend only: the name of an in-process store shared by every
            client and repository of the process that names it (``memory://NAME``); None
            (``memory://``): a store of this client's own.
        near_cache_size: Redis backends only: how many devices a near cache keeps in the
            process, kept right by Redis client tracking (see the "Near cache" page); 0: no
            near cache. The memory backend ignores it (it is in the process already).
        telemetry: Report every repository operation to OpenTelemetry (spans and the
            ``db.client.operation.duration`` histogram) when opentelemetry-api is installed
            (the ``[otel]`` extra); see :mod:`cache_service_client.telemetry`. Without the
            extra, or with False, repositories are not wrapped at all.
    """

    backend: Backend = "redis"
    host: Annotated[str, Meta(min_length=1)] = "localhost"
    port: Annotated[int, Meta(ge=1, le=65535)] = 6379
    db: Annotated[int, Meta(ge=0)] = 0
    username: str | None = None
    password: str | None = None
    unix_socket_path: Annotated[str, Meta(min_length=1)] | None = None
    url: str | None = None
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    ssl_check_hostname: bool = True
    socket_timeout: Annotated[float, Meta(gt=0)] = 5.0
    socket_connect_timeout: Annotated[float, Meta(gt=0)] | None = None
    max_connections: Annotated[int, Meta(ge=1)] = 50
    cluster: bool = False
    cluster_buckets: Annotated[int, Meta(ge=2, le=1024)] = 16
    sentinel_service: Annotated[str, Meta(min_length=1)] | None = None
    sentinel_password: str | None = None
    metadata_ttl: Annotated[float, Meta(ge=0, le=MAX_TTL)] | None = 86400
    key_prefix: Annotated[str, Meta(min_length=1)] = "device"
    key_separator: Annotated[str, Meta(min_length=1)] = ":"
    codec: Literal["json", "msgpack"] = "json"
    retry_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    retry_deadline: Annotated[float, Meta(gt=0)] | None = 10.0
    retry_backoff_base: Annotated[float, Meta(ge=0)] = 0.05
    retry_backoff_max: Annotated[float, Meta(ge=0)] = 1.0
    health_slow_ms: Annotated[float, Meta(gt=0)] = 100.0
    health_memory_ratio: Annotated[float, Meta(ge=0, le=1)] = 0.9
    use_http: bool = False
    http_url: str | None = None
    http_timeout: Annotated[float, Meta(gt=0)] = 10.0
    http_auth_token: str | None = None
    memory_store: Annotated[str, Meta(min_length=1)] | None = None
    near_cache_size: Annotated[int, Meta(ge=0, le=100_000_000)] = 0
    telemetry: bool = True

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self.to_dict(masked=True).items())})"

    __str__ = __repr__

    def to_dict(self, *, masked: bool = True) -> dict[str, Any]:
        """Return the settings as a dict; secrets masked unless ``masked=False``."""
        values = {name: getattr(self, name) for name in self.__struct_fields__}
        if masked:
            for name in _SECRETS:
                if values[name] is not None:
                    values[name] = MASK
            if values["url"] is not None:
                values["url"] = mask_url(values["url"])
            if values["http_url"] is not None:
                values["http_url"] = mask_url(values["http_url"])
        return values

    @property
    def connect_timeout(self) -> float:
        """The effective connection timeout in seconds."""
        if self.socket_connect_timeout is None:
            return self.socket_timeout
        return self.socket_connect_timeout

    def replace(self, source: str = "argument", **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied, validated as arguments from ``source``."""
        layer = {name: (value, f"{source} {name}") for name, value in changes.items()}
        values = self.to_dict(masked=False)
        values.update(_convert(layer, text=False))
        return _build(values, source)

    @classmethod
    def load(
        cls,
        *,
        url: str | None = None,
        file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | bool = True,
        env_prefix: str = DEFAULT_ENV_PREFIX,
        **arguments: Any,
    ) -> Settings:
        """Load settings from every source; see :func:`load_settings`."""
        return load_settings(
            url=url, file=file, env=env, env_prefix=env_prefix, arguments=arguments
        )


#: Every setting at its default: what other constructors of the library default to as well.
DEFAULTS: Final = Settings()


class ClientOptions(TypedDict, total=False):
    """The settings :class:`~cache_service_client.CacheServiceClient` takes as ``**options``.

    Every field of :class:`Settings` but those the constructor names itself (``host``,
    ``port``, ``password``, ``db``, ``socket_timeout``, ``metadata_ttl``, ``use_http`` and the
    ``http_*`` ones). Typed, so that a type checker catches a misspelt setting; at run time an
    unknown one is a :class:`~cache_service_client.ConfigurationError`.
    """

    backend: Backend
    username: str | None
    unix_socket_path: str | None
    ssl: bool
    ssl_ca_certs: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_cert_reqs: Literal["required", "optional", "none"]
    ssl_check_hostname: bool
    socket_connect_timeout: float | None
    max_connections: int
    cluster: bool
    cluster_buckets: int
    sentinel_service: str | None
    sentinel_password: str | None
    key_prefix: str
    key_separator: str
    codec: Literal["json", "msgpack"]
    retry_attempts: int
    retry_deadline: float | None
    retry_backoff_base: float
    retry_backoff_max: float
    health_slow_ms: float
    health_memory_ratio: float
    memory_store: str | None
    near_cache_size: int
    telemetry: bool


class SettingsFields(ClientOptions, total=False):
    """The overrides of the ``from_*`` helpers: every field of :class:`Settings` but ``url``.

    (The URL is the helper's own argument, or comes from the source it reads.)
    """

    host: str
    port: int
    db: int
    password: str | None
    socket_timeout: float
    metadata_ttl: float | None
    use_http: bool
    http_url: str | None
    http_timeout: float
    http_auth_token: str | None


class RuntimeSettings(TypedDict, total=False):
    """What :meth:`~cache_service_client.CacheServiceClient.configure` can change at run time."""

    metadata_ttl: float | None
    socket_timeout: float


_SECRETS = ("password", "http_auth_token", "sentinel_password")


def mask_url(url: str) -> str:
    """Return ``url`` with every secret in it replaced by ``***``.

    Secrets are the password (or a token given as the user) and the values of the query options
    that name a secret setting (``password``, ``http_auth_token``, ``sentinel_password``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password is not None or parts.username is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is not None:
            host = f"{host}:{port}"
        user = parts.username or ""
        credentials = f"{user}:{MASK}" if parts.password is not None else MASK
        netloc = f"{credentials}@{host}"
    query = _mask_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def check_http_url(url: object, label: str) -> str:
    """Return the gateway URL ``url`` without a trailing slash, or raise naming ``label``.

    It must be an ``http://`` or ``https://`` URL with a host and without query or fragment.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"{label}: must be a str, not {type(url).__name__}")
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigurationError(f"{label} {shown}: not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{label} {shown}: must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{label} {shown}: must have no query or fragment")
    return url.rstrip("/")


def _mask_query(query: str) -> str:
    """Mask the values of secret options in a URL query, leaving the rest as written."""
    if not query:
        return query
    pieces = []
    for piece in query.split("&"):
        name, equals, _ = piece.partition("=")
        if equals and unquote_plus(name).strip() in _SECRETS:
            piece = f"{name}={MASK}"
        pieces.append(piece)
    return "&".join(pieces)


# -- conversion and checks --------------------------------------------------------------------

Layer = dict[str, tuple[Any, str]]  # setting -> (raw value, source label)


def _field_types() -> dict[str, tuple[msgspec.inspect.Type, bool]]:
    """Each setting's type as msgspec sees it (None taken out) and whether it may be None."""
    info = cast(msgspec.inspect.StructType, msgspec.inspect.type_info(Settings))
    types: dict[str, tuple[msgspec.inspect.Type, bool]] = {}
    for field in info.fields:
        kind = field.type
        if isinstance(kind, msgspec.inspect.UnionType):
            others = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
            types[field.name] = (others[0], len(others) < len(kind.types))
        else:
            types[field.name] = (kind, False)
    return types


_TYPES = _field_types()
# Words for booleans in environment variables and URL queries, besides msgspec's own (lax
# conversion takes true/false/1/0 in any case).
_BOOLEAN_WORDS = {"yes": "true", "on": "true", "no": "false", "off": "false"}
_PYTHON_TYPES: dict[type[msgspec.inspect.Type], type] = {
    msgspec.inspect.StrType: str,
    msgspec.inspect.IntType: int,
    msgspec.inspect.FloatType: float,
    msgspec.inspect.BoolType: bool,
}
_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
_ERROR_PATH = re.compile(r" - at `\$\.(\w+)`$")


def _shown(name: str, value: Any) -> str:
    return MASK if name in _SECRETS and value is not None else repr(value)


def _from_text(name: str, value: str) -> Any:
    """An environment variable's or URL query option's text, ready for lax conversion."""
    kind, optional = _TYPES[name]
    value = value.strip()
    if value == "" and optional:
        return None
    if isinstance(kind, msgspec.inspect.BoolType):
        return _BOOLEAN_WORDS.get(value.lower(), value)
    return value


def _complaint(name: str, value: Any, *, strict: bool) -> str | None:
    """What is wrong with ``value`` for the setting ``name``, as the Struct's type says."""
    kind, _ = _TYPES[name]
    shown = _shown(name, value)
    if value is None:
        return "must be set, not None"
    if isinstance(kind, msgspec.inspect.LiteralType):
        choices = get_args(get_type_hints(Settings)[name])  # as written (msgspec sorts them)
        return f"{shown} is not one of {', '.join(choices)}"
    python_type = _PYTHON_TYPES.get(type(kind))
    if python_type is None:
        return None
    try:
        value = msgspec.convert(value, python_type, strict=strict)
    except msgspec.ValidationError:
        hint = " (use true or false)" if python_type is bool and not strict else ""
        return f"{shown} is not {_KIND_NAMES[python_type]}{hint}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if isinstance(kind, msgspec.inspect.StrType) and kind.min_length == 1 and value == "":
        return "must not be empty"
    if isinstance(kind, (msgspec.inspect.IntType, msgspec.inspect.FloatType)):
        if kind.ge is not None and kind.le is not None:
            return f"must be between {kind.ge:g} and {kind.le:g}, not {value!r}"
        if kind.gt is not None:
            return f"must be > {kind.gt:g}, not {value!r}"
        if kind.ge is not None:
            return f"must be >= {kind.ge:g}, not {value!r}"
    return None


def _is_text(value: object) -> bool:
    """True unless ``value`` holds a string that UTF-8 cannot encode (a lone surrogate).

    msgspec cannot handle such a string, so it is refused before conversion.
    """
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_is_text(item) for item in value)
    if isinstance(value, dict):
        return all(_is_text(k) and _is_text(v) for k, v in value.items())
    return True


def _convert(layer: Layer, *, text: bool) -> dict[str, Any]:
    """Convert and check one source's values with msgspec (lax for ``text``: env, URL query).

    Raises:
        ConfigurationError: Naming the value's source and what is wrong with it.
    """
    raw: dict[str, Any] = {}
    for name, (value, source) in layer.items():
        if name not in _TYPES:
            raise ConfigurationError(f"{source}: unknown setting {name!r}")
        if not _is_text(value):
            raise ConfigurationError(f"{source}: {value!r} is not valid text (a lone surrogate)")
        raw[name] = _from_text(name, value) if text and isinstance(value, str) else value
    try:
        converted = msgspec.convert(raw, Settings, strict=not text)
    except msgspec.ValidationError as exc:
        found = _ERROR_PATH.search(str(exc))
        if found is None or found[1] not in raw:  # pragma: no cover - every error has a path
            raise ConfigurationError(f"settings: {exc}") from None
        name = found[1]
        complaint = _complaint(name, raw[name], strict=not text)
        if complaint is None:
            complaint = str(exc)[: found.start()]
        raise ConfigurationError(f"{layer[name][1]}: {complaint}") from None
    values = {name: getattr(converted, name) for name in raw}
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(f"{layer[name][1]}: {value!r} is not a finite number")
    return values


def _build(values: dict[str, Any], source: str) -> Settings:
    if values.get("metadata_ttl") == 0:
        values["metadata_ttl"] = None
    if values.get("use_http"):
        values["backend"] = "http"
    values["use_http"] = values.get("backend") == "http"
    if values["use_http"] and not values.get("http_url"):
        raise ConfigurationError(f"{source}: use_http needs http_url")
    if values.get("http_url") is not None:
        check_http_url(values["http_url"], f"{source}: http_url")
    if values.get("cluster") and values.get("backend") == "redis":
        values["backend"] = "cluster"
    if values.get("sentinel_service") and values.get("backend") == "redis":
        values["backend"] = "sentinel"
    values["cluster"] = values.get("backend") == "cluster"
    if values.get("backend") == "sentinel" and not values.get("sentinel_service"):
        raise ConfigurationError(f"{source}: the sentinel backend needs sentinel_service")
    if values.get("backend") == "cluster" and values.get("db"):
        raise ConfigurationError(f"{source}: Redis Cluster has only database 0")
    if values.get("memory_store") is not None and values.get("backend") != "memory":
        raise ConfigurationError(f"{source}: memory_store needs the memory backend (memory://)")
    if values.get("near_cache_size") and values.get("backend") == "http":
        raise ConfigurationError(
            f"{source}: near_cache_size needs a Redis backend (client tracking); the HTTP "
            "gateway sends no invalidations"
        )
    if values.get("ssl_keyfile") and not values.get("ssl_certfile"):
        raise ConfigurationError(f"{source}: ssl_keyfile needs ssl_certfile")
    return Settings(**values)


# -- sources -----------------------------------------------------------------------------------

# scheme -> (backend, TLS)
_URL_SCHEMES = {
    "redis": ("redis", False),
    "rediss": ("redis", True),
    "unix": ("redis", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}


def _url_layers(url: str, source: str) -> tuple[Layer, Layer]:
    """Split a connection URL into settings: those of its parts, and its query options (text)."""
    label = f"{source} {mask_url(url)}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{label}: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    layer: Layer = {}
    if scheme == "memory":
        layer["backend"] = ("memory", label)
        # memory://NAME (taken as written: a host name would be lower-cased)
        name = unquote(parts.netloc + parts.path.rstrip("/"))
        if name:
            layer["memory_store"] = (name, label)
    elif scheme in ("http", "https"):
        # The REST gateway: the URL without its query (query options are settings).
        layer["backend"] = ("http", label)
        layer["http_url"] = (urlunsplit((scheme, parts.netloc, parts.path, "", "")), label)
    elif scheme in _URL_SCHEMES:
        backend, tls = _URL_SCHEMES[scheme]
        layer["backend"] = (backend, label)
        layer["ssl"] = (tls, label)
        if parts.username:
            layer["username"] = (unquote(parts.username), label)
        if parts.password is not None:
            layer["password"] = (unquote(parts.password), label)
        if scheme == "unix":
            if not parts.path:
                raise ConfigurationError(f"{label}: a unix:// URL needs a socket path")
            layer["unix_socket_path"] = (unquote(parts.path), label)
        else:
            if parts.hostname:
                layer["host"] = (unquote(parts.hostname), label)
            if port is not None:
                layer["port"] = (port, label)
            path = parts.path.strip("/")
            if backend == "sentinel":
                # redis+sentinel://host:26379/service-name[/db]
                service, _, path = path.partition("/")
                if not service:
                    raise ConfigurationError(f"{label}: a sentinel URL needs /service-name")
                layer["sentinel_service"] = (unquote(service), label)
            if backend == "cluster" and path:
                raise ConfigurationError(f"{label}: Redis Cluster has only database 0")
            if path:
                try:
                    layer["db"] = (int(path), label)
                except ValueError:
                    raise ConfigurationError(
                        f"{label}: database {path!r} is not an integer"
                    ) from None
    else:
        known = ", ".join(f"{s}://" for s in (*_URL_SCHEMES, "memory"))  # noqa: RUF100
        raise ConfigurationError(f"{label}: unsupported scheme {scheme!r} (use {known})")
    options: Layer = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _TYPES or name in ("url", "password"):
            raise ConfigurationError(f"{label}: unknown or unsupported query option {name!r}")
        options[name] = (value, f"{label}: {name}")
    return layer, options


def _env_layer(env: Mapping[str, str], prefix: str) -> Layer:
    layer: Layer = {}
    for name in _TYPES:
        variable = prefix + name.upper()
        if variable in env:
            layer[name] = (env[variable], variable)
    return layer


def _file_layer(path: str | os.PathLike[str]) -> Layer:
    location = Path(path)
    label = f"file {location}"
    try:
        with location.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"{label}: no such file") from None
    except OSError as exc:
        raise ConfigurationError(f"{label}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{label}: not valid TOML ({exc})") from None
    table = document.get("cache_service", document)
    if not isinstance(table, dict):
        raise ConfigurationError(f"{label}: [cache_service] must be a table")
    layer: Layer = {}
    for name, value in table.items():
        if name not in _TYPES:
            if table is document and isinstance(value, dict):
                continue  # another application's table in a shared file
            raise ConfigurationError(f"{label}: unknown setting {name!r}")
        layer[name] = (value, f"{label}: {name}")
    return layer


def load_settings(
    *,
    arguments: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | bool = True,
    env_prefix: str = DEFAULT_ENV_PREFIX,
    file: str | os.PathLike[str] | None = None,
    url: str | None = None,
) -> Settings:
    """Merge every source into one validated :class:`Settings`.

    Args:
        arguments: Highest precedence, e.g. constructor arguments.
        env: Read ``{env_prefix}<SETTING>`` variables from this mapping, from ``os.environ``
            when True, or not at all when False.
        env_prefix: Prefix of the environment variables.
        file: A TOML file.
        url: A connection URL, used when no other source sets ``url``.

    Raises:
        ConfigurationError: Naming the source and the setting of the first invalid value.
    """
    layers: list[tuple[Layer, bool]] = []  # lowest precedence first; bool: values are text
    file_layer = _file_layer(file) if file is not None else {}
    environ: Mapping[str, str] = os.environ if env is True else (env or {})
    env_layer = _env_layer(environ, env_prefix)
    argument_layer: Layer = {
        name: (value, f"argument {name}") for name, value in (arguments or {}).items()
    }
    # The URL of the highest source that names one is split into the lowest layer.
    chosen_url: tuple[Any, str] | None = None if url is None else (url, "URL")
    for layer in (file_layer, env_layer, argument_layer):
        named = layer.pop("url", None)
        if named is not None and named[0] not in (None, ""):
            chosen_url = named
    if chosen_url is not None:
        value, source = chosen_url
        if not isinstance(value, str):
            raise ConfigurationError(f"{source}: must be a string")
        parts, options = _url_layers(value, source)
        layers += [({**parts, "url": (value, source)}, False), (options, True)]
    layers += [(file_layer, False), (env_layer, True), (argument_layer, False)]
    values = DEFAULTS.to_dict(masked=False)
    for layer, text in layers:
        values.update(_convert(layer, text=text))
    return _build(values, "settings")


def settings_from_url(url: str, **overrides: Any) -> Settings:
    """Settings from a connection URL, with ``overrides`` on top (no environment, no file)."""
    return load_settings(url=url, arguments=overrides, env=False)


def settings_from_env(
    prefix: str = DEFAULT_ENV_PREFIX, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings from ``{prefix}<SETTING>`` environment variables (and ``{prefix}URL``)."""
    return load_settings(
        env=os.environ if environ is None else environ, env_prefix=prefix, arguments=overrides
    )


def settings_from_file(path: str | os.PathLike[str], **overrides: Any) -> Settings:
    """Settings from a TOML file (top level or ``[cache_service]``), ``overrides`` on top."""
    return load_settings(file=path, arguments=overrides, env=False)
