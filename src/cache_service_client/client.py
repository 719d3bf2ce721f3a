"""CacheServiceClient: the friendly facade over the repositories.

Async methods and ``*_sync`` twins, ``with`` and ``async with``. The sync twins use the sync
Redis client directly (never ``asyncio.run``), so they work in plain scripts and inside a running
event loop's thread pool alike. The two sync methods whose names carry no ``_sync``
(``store_device_metadata``, ``close``) refuse to run when their result is awaited (``await
client.store_device_metadata(...)``, meant as the async method):
:class:`~cache_service_client.AsyncUsageError`, before any I/O, naming the async method.
"""

from __future__ import annotations

import dis
import functools
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from types import CodeType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec
from dependency_injector import providers

from cache_service_client._factories import build_tracking, clients_on_pools
from cache_service_client._validation import check_batch, check_text, metadata_from_dict
from cache_service_client.config import (
    DEFAULTS,
    MASK,
    ClientOptions,
    RuntimeSettings,
    Settings,
    SettingsFields,
    load_settings,
    mask_url,
    settings_from_env,
    settings_from_file,
    settings_from_url,
)
from cache_service_client.container import (
    Container,
    resolve_async_repository,
    shutdown_resources,
    shutdown_sync_resources,
)
from cache_service_client.exceptions import (
    AsyncUsageError,
    ConfigurationError,
    DeviceNotFoundError,
    ValidationError,
)
from cache_service_client.keys import KeyStrategy
from cache_service_client.models import (
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    NearCacheStats,
    Page,
    QueryFields,
    RepairReport,
)
from cache_service_client.repository.base import (
    AsyncDeviceMetadataRepository,
    DeviceMetadataRepository,
    unhealthy,
)
from cache_service_client.retry import RetryPolicy

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only annotations use it; type checkers know typing_extensions
    from typing_extensions import Unpack

__all__ = ["CacheServiceClient"]

logger = logging.getLogger("cache_service_client")

T = TypeVar("T")
_MISSING: Any = object()

_RUNTIME_SETTINGS = ("metadata_ttl", "socket_timeout")

MetadataInput = Mapping[str, Any] | DeviceMetadata


class CacheServiceClient:
    """Typed, validated access to cached device metadata, sync or async.

    The positional parameters are the original plan's, with its defaults; everything after them
    is keyword-only. Settings can also come from a URL, the environment or a TOML file: see
    :meth:`from_url`, :meth:`from_env`, :meth:`from_file` and :meth:`from_settings`.

    Args:
        host: Redis host.
        port: Redis port.
        password: Redis password (never shown in repr, logs or errors).
        db: Redis database number.
        socket_timeout: Seconds to wait for Redis; also bounds :meth:`check_health`.
        connection_pool: A redis-py pool to use instead of building one (sync
            ``redis.ConnectionPool`` and/or async ``redis.asyncio.ConnectionPool``; give a
            tuple for both). The caller keeps ownership: :meth:`close` does not close it.
        metadata_ttl: Seconds until stored metadata expires; 0 or None: never.
        use_http: Read through the cache service's REST gateway instead of Redis.
        http_url: The gateway's base URL.
        http_timeout: Seconds per HTTP request.
        http_auth_token: Bearer token for the gateway (never shown).
        url: A connection URL (``redis://``, ``rediss://``, ``unix://``, ``memory://``); explicit
            arguments that differ from their defaults override its parts.
        settings: Start from these settings (other arguments override them).
        key_strategy: Key naming (default from the ``key_prefix``/``key_separator`` settings).
        retry: The retry policy (default from the ``retry_*`` settings).
        repository: Use this sync repository instead of building one.
        async_repository: Use this async repository instead of building one.
        **options: Any other setting by name (``username``, ``ssl``, ``ssl_ca_certs``,
            ``max_connections``, ``key_prefix``, ``codec``, ``retry_deadline``, ...; see
            :class:`~cache_service_client.config.Settings`).

    Raises:
        ConfigurationError: For any invalid setting, naming it (``port=-1`` fails here).
    """

    def __init__(
        self,
        host: str = DEFAULTS.host,
        port: int = DEFAULTS.port,
        password: str | None = DEFAULTS.password,
        db: int = DEFAULTS.db,
        socket_timeout: float = DEFAULTS.socket_timeout,
        connection_pool: Any = None,
        metadata_ttl: float | None = DEFAULTS.metadata_ttl,
        use_http: bool = DEFAULTS.use_http,
        http_url: str | None = DEFAULTS.http_url,
        http_timeout: float = DEFAULTS.http_timeout,
        http_auth_token: str | None = DEFAULTS.http_auth_token,
        *,
        url: str | None = None,
        settings: Settings | None = None,
        key_strategy: KeyStrategy | None = None,
        retry: RetryPolicy | None = None,
        repository: DeviceMetadataRepository | None = None,
        async_repository: AsyncDeviceMetadataRepository | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        plan = {
            "host": host,
            "port": port,
            "password": password,
            "db": db,
            "socket_timeout": socket_timeout,
            "metadata_ttl": metadata_ttl,
            "use_http": use_http,
            "http_url": http_url,
            "http_timeout": http_timeout,
            "http_auth_token": http_auth_token,
        }
        # An argument equal to its default (the setting's) does not override what a URL says.
        arguments: dict[str, Any] = {
            name: value for name, value in plan.items() if not _is_default(name, value)
        }
        arguments.update(options)
        if settings is not None:
            self._settings = settings.replace(**arguments) if arguments else settings
            if url is not None:
                raise ConfigurationError("argument url: give either settings or url, not both")
        else:
            self._settings = load_settings(arguments=arguments, env=False, url=url)
        # What the caller gave instead of settings, by container provider; every container this
        # client builds (a new one when configure() changes the socket timeout) gets them.
        self._overrides: dict[str, Any] = {}
        if key_strategy is not None:
            self._overrides["key_strategy"] = key_strategy
        if retry is not None:
            self._overrides["retry"] = retry
        sync_client, async_client = clients_on_pools(connection_pool)
        if sync_client is not None:
            self._overrides["redis_client"] = sync_client
        if async_client is not None:
            self._overrides["async_redis_client"] = async_client
        self._callers_pool = sync_client is not None or async_client is not None
        if self._callers_pool:
            if self._settings.backend != "redis":
                raise ConfigurationError(
                    "argument connection_pool: a redis-py pool is for a single Redis server, "
                    f"but the settings name the {self._settings.backend!r} backend "
                    f"({_address(self._settings)}), which would not use it: drop the pool, or "
                    "give a redis://, rediss:// or unix:// URL"
                )
            self._overrides["connection_pool"] = connection_pool
            if self._settings.near_cache_size and self._settings.backend == "redis":
                # The near cache tracks the pool's server: one it cannot name fails now.
                build_tracking(self._settings, KeyStrategy(), connection_pool=connection_pool)
        if repository is not None:
            self._overrides["repository"] = repository
        if async_repository is not None:
            self._overrides["async_repository"] = async_repository
        _check_extras(self._settings, self._overrides)
        self._container = self._new_container()
        # Containers replaced by configure(): calls already running finish on their
        # connections, which close() and aclose() close.
        self._retired: list[Container] = []
        self._repository: DeviceMetadataRepository | None = None
        self._async_repository: AsyncDeviceMetadataRepository | None = None
        logger.debug("created %r", self)

    def _new_container(self) -> Container:
        container = Container()
        container.settings.override(providers.Object(self._settings))
        for name, value in self._overrides.items():
            getattr(container, name).override(providers.Object(value))
        return container

    # -- construction from other sources ---------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **overrides: Unpack[SettingsFields]) -> CacheServiceClient:
        """Connect as a URL says.

        Schemes: ``redis://[user:password@]host[:port][/db][?option=value]``, ``rediss://``
        (TLS, certificates verified), ``unix:///path.sock?db=0`` or ``memory://``.
        ``overrides`` are settings that win over the URL.
        """
        return cls(settings=settings_from_url(url, **overrides))

    @classmethod
    def from_env(
        cls,
        prefix: str = "CACHE_SERVICE_",
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Unpack[SettingsFields],
    ) -> CacheServiceClient:
        """Configure from ``{prefix}<SETTING>`` environment variables (``{prefix}URL`` too)."""
        return cls(settings=settings_from_env(prefix, environ, **overrides))

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], **overrides: Unpack[SettingsFields]
    ) -> CacheServiceClient:
        """Configure from a TOML file (settings at the top level or under ``[cache_service]``)."""
        return cls(settings=settings_from_file(path, **overrides))

    @classmethod
    def from_settings(cls, settings: Settings) -> CacheServiceClient:
        """Build a client from validated :class:`Settings`."""
        return cls(settings=settings)

    # -- state -----------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force (secrets are masked in its repr)."""
        return self._settings

    @property
    def container(self) -> Container:
        """The dependency-injector container that built this client's parts."""
        return self._container

    def __repr__(self) -> str:
        return (
            f"CacheServiceClient({_address(self._settings)!r}, backend={self._settings.backend!r})"
        )

    def configure(self, **changes: Unpack[RuntimeSettings]) -> None:
        """Change settings at run time: ``metadata_ttl`` and ``socket_timeout``.

        Values are validated like constructor arguments. A new TTL applies to the next write.
        A new socket timeout applies to every call that starts afterwards: the client opens new
        connections with it (sync and async, on every Redis backend) and closes the old ones in
        :meth:`close` / :meth:`aclose`, so calls already running finish undisturbed. It does not
        apply to the HTTP gateway (``http_timeout`` does) nor to repositories given to the
        constructor.

        Raises:
            ConfigurationError: For an invalid value, a setting that cannot change at run time,
                or ``socket_timeout`` on a client whose ``connection_pool`` the caller owns.
        """
        for name in changes:
            if name not in _RUNTIME_SETTINGS:
                raise ConfigurationError(
                    f"configure() {name}: cannot change at run time (only "
                    f"{', '.join(_RUNTIME_SETTINGS)}); create a new client instead"
                )
        settings = self._settings.replace("configure()", **changes)
        reconnect = (
            "socket_timeout" in changes
            and settings.socket_timeout != self._settings.socket_timeout
            and settings.backend not in ("memory", "http")
        )
        if reconnect and self._callers_pool:
            raise ConfigurationError(
                "configure() socket_timeout: this client uses the caller's connection_pool, "
                "whose connections keep their own timeout; set socket_timeout on that pool"
            )
        self._settings = settings
        if reconnect:
            self._retired.append(self._container)
            self._container = self._new_container()
            self._repository = None
            self._async_repository = None
            return
        self._container.settings.override(providers.Object(settings))
        if "metadata_ttl" in changes:
            for repo in (self._repository, self._async_repository):
                if repo is not None and hasattr(repo, "ttl"):
                    repo.ttl = settings.metadata_ttl

    # -- repositories ----------------------------------------------------------------------

    @property
    def repository(self) -> DeviceMetadataRepository:
        """The sync repository behind this client (built on first use)."""
        if self._repository is None:
            self._repository = self._container.repository()
        return self._repository

    async def get_async_repository(self) -> AsyncDeviceMetadataRepository:
        """The async repository behind this client (built on first use)."""
        if self._async_repository is None:
            self._async_repository = await resolve_async_repository(self._container)
        return self._async_repository

    def near_cache_stats(self) -> NearCacheStats:
        """The near cache's counters and state, without I/O.

        The near cache starts with the first call that needs Redis. Until then, and when there
        is none (``near_cache_size=0``, the memory backend), every counter is 0 and
        ``connected`` is False; ``size`` is the configured size on a Redis backend.
        """
        provider = self._container.near_cache
        cache = provider() if provider.initialized else None
        if cache is not None:
            return cache.stats()  # type: ignore[no-any-return, unused-ignore]
        size = self._settings.near_cache_size if self._settings.backend in _TRACKED else 0
        return NearCacheStats(size=size)

    @staticmethod
    def _metadata(device_id: str, metadata: MetadataInput) -> DeviceMetadata:
        if isinstance(metadata, DeviceMetadata):
            if metadata.device_id != device_id:
                return metadata_from_dict(metadata.to_dict(), device_id)
            return metadata
        return metadata_from_dict(metadata, device_id)

    @classmethod
    def _many(
        cls, items: Mapping[str, MetadataInput] | Iterable[DeviceMetadata]
    ) -> list[DeviceMetadata]:
        if isinstance(items, Mapping):
            batch = []
            for device_id, data in items.items():
                try:
                    batch.append(cls._metadata(device_id, data))
                except ValidationError as exc:
                    raise _in_mapping(exc, device_id) from None
            return batch
        return list(check_batch(items, "items", "DeviceMetadata (or a mapping of id to dict)"))

    # -- async API -------------------------------------------------------------------------

    @overload
    async def get_device_metadata(self, device_id: str) -> DeviceMetadata: ...

    @overload
    async def get_device_metadata(self, device_id: str, default: T) -> DeviceMetadata | T: ...

    async def get_device_metadata(self, device_id: str, default: Any = _MISSING) -> Any:
        """Return the metadata of ``device_id``.

        Args:
            device_id: The device.
            default: Returned when the device has no metadata; without it,
                :class:`~cache_service_client.DeviceNotFoundError` (a ``KeyError``) is raised.
        """
        repo = await self.get_async_repository()
        try:
            return await repo.get(device_id)
        except DeviceNotFoundError:
            if default is _MISSING:
                raise
            return default

    async def get_many_device_metadata(
        self, device_ids: Iterable[str]
    ) -> dict[str, DeviceMetadata]:
        """Return the metadata of every given device that has some (one MGET)."""
        return await (await self.get_async_repository()).get_many(device_ids)

    async def store_device_metadata_async(
        self, device_id: str, metadata: MetadataInput, *, if_newer: bool = False
    ) -> bool:
        """Store metadata given as a dict (or a DeviceMetadata); True if it was written.

        The dict holds the plan's fields (``datatype_id``, ``datatype_name``, ``datatype_unit``,
        ``persist``, ``last_updated``, ``additional_properties``); ``last_updated`` defaults to
        now (UTC) and unknown keys are kept in ``additional_properties``.

        With ``if_newer``, the device is written only if nothing is stored for it or the
        stored ``last_updated`` is strictly older (whole milliseconds; equal: not written, so
        a redelivered message changes nothing), in one atomic step; False when it was not.
        Without it, True always. Failures raise.
        """
        item = self._metadata(device_id, metadata)
        return await (await self.get_async_repository()).put(item, if_newer=if_newer)

    async def store_many_device_metadata(
        self,
        items: Mapping[str, MetadataInput] | Iterable[DeviceMetadata],
        *,
        if_newer: bool = False,
    ) -> int:
        """Store several devices; return how many were written (see the repository's put_many).

        ``if_newer`` as in :meth:`store_device_metadata_async`, for each device.
        """
        repository = await self.get_async_repository()
        return await repository.put_many(self._many(items), if_newer=if_newer)

    async def delete_device_metadata(self, device_id: str) -> bool:
        """Delete a device's metadata; True if it was stored."""
        return await (await self.get_async_repository()).delete(device_id)

    async def delete_many_device_metadata(self, device_ids: Iterable[str]) -> int:
        """Delete several devices; return how many were stored."""
        return await (await self.get_async_repository()).delete_many(device_ids)

    async def device_exists(self, device_id: str) -> bool:
        """True if metadata is stored for ``device_id``."""
        return await (await self.get_async_repository()).exists(device_id)

    async def list_devices(
        self, limit: int | None = None, offset: int | None = None, pattern: str | None = None
    ) -> list[str]:
        """Return device ids in ascending order, paged, filtered by a Redis glob."""
        repo = await self.get_async_repository()
        return await repo.list_ids(pattern=pattern, limit=limit, offset=offset)

    async def count_devices(self) -> int:
        """Return how many devices are stored."""
        return await (await self.get_async_repository()).count()

    async def query_devices(
        self, query: DeviceQuery | None = None, **filters: Unpack[QueryFields]
    ) -> Page[DeviceMetadata]:
        """Return one page of devices matching a query (filters, sort, cursor).

        Give a :class:`~cache_service_client.DeviceQuery`, or its fields as keywords:
        ``await client.query_devices(datatype_id="temp", sort="last_updated", limit=50)``.
        Pass ``cursor=page.next_cursor`` for the next page.
        """
        return await (await self.get_async_repository()).query(_query(query, filters))

    async def repair_indexes(self) -> RepairReport:
        """Rebuild the indexes from the stored values and report what was fixed."""
        return await (await self.get_async_repository()).repair()

    async def get_cache_info(self) -> CacheInfo:
        """Return total devices, memory usage and the oldest and newest entries."""
        return await (await self.get_async_repository()).info()

    async def check_health(self) -> HealthStatus:
        """Check the backend; never raises, returns within about ``socket_timeout``."""
        try:
            return await (await self.get_async_repository()).health()
        except Exception as exc:
            return unhealthy(f"{type(exc).__name__}: {exc}", type(exc).__name__)

    async def aclose(self) -> None:
        """Close every connection (sync and async) this client opened."""
        for container in [*self._retired, self._container]:
            await shutdown_resources(container)
        self._retired = []
        self._repository = None
        self._async_repository = None

    async def __aenter__(self) -> CacheServiceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- sync API --------------------------------------------------------------------------

    @overload
    def get_device_metadata_sync(self, device_id: str) -> DeviceMetadata: ...

    @overload
    def get_device_metadata_sync(self, device_id: str, default: T) -> DeviceMetadata | T: ...

    def get_device_metadata_sync(self, device_id: str, default: Any = _MISSING) -> Any:
        """Sync twin of :meth:`get_device_metadata`."""
        try:
            return self.repository.get(device_id)
        except DeviceNotFoundError:
            if default is _MISSING:
                raise
            return default

    def get_many_device_metadata_sync(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """Sync twin of :meth:`get_many_device_metadata`."""
        return self.repository.get_many(device_ids)

    def store_device_metadata(
        self, device_id: str, metadata: MetadataInput, *, if_newer: bool = False
    ) -> bool:
        """Store metadata given as a dict; True if it was written. Failures raise.

        Without ``if_newer``, True always. See :meth:`store_device_metadata_async` for the
        dict's fields and ``if_newer``.

        This is the sync method (the original plan's name): async code awaits
        :meth:`store_device_metadata_async`.

        Raises:
            AsyncUsageError: When awaited (``await client.store_device_metadata(...)``),
                before anything is written: async code awaits
                :meth:`store_device_metadata_async`.
        """
        _refuse_in_coroutine("store_device_metadata", "store_device_metadata_async")
        return self._store(device_id, metadata, if_newer)

    def _store(self, device_id: str, metadata: MetadataInput, if_newer: bool) -> bool:
        return self.repository.put(self._metadata(device_id, metadata), if_newer=if_newer)

    def store_device_metadata_sync(
        self, device_id: str, metadata: MetadataInput, *, if_newer: bool = False
    ) -> bool:
        """The same as :meth:`store_device_metadata` (named for symmetry).

        It blocks wherever it is called, from a coroutine too (where it holds up the event
        loop); async code normally awaits :meth:`store_device_metadata_async`.
        """
        return self._store(device_id, metadata, if_newer)

    def store_many_device_metadata_sync(
        self,
        items: Mapping[str, MetadataInput] | Iterable[DeviceMetadata],
        *,
        if_newer: bool = False,
    ) -> int:
        """Sync twin of :meth:`store_many_device_metadata`."""
        return self.repository.put_many(self._many(items), if_newer=if_newer)

    def delete_device_metadata_sync(self, device_id: str) -> bool:
        """Sync twin of :meth:`delete_device_metadata`."""
        return self.repository.delete(device_id)

    def delete_many_device_metadata_sync(self, device_ids: Iterable[str]) -> int:
        """Sync twin of :meth:`delete_many_device_metadata`."""
        return self.repository.delete_many(device_ids)

    def device_exists_sync(self, device_id: str) -> bool:
        """Sync twin of :meth:`device_exists`."""
        return self.repository.exists(device_id)

    def list_devices_sync(
        self, limit: int | None = None, offset: int | None = None, pattern: str | None = None
    ) -> list[str]:
        """Sync twin of :meth:`list_devices`."""
        return self.repository.list_ids(pattern=pattern, limit=limit, offset=offset)

    def count_devices_sync(self) -> int:
        """Sync twin of :meth:`count_devices`."""
        return self.repository.count()

    def query_devices_sync(
        self, query: DeviceQuery | None = None, **filters: Unpack[QueryFields]
    ) -> Page[DeviceMetadata]:
        """Sync twin of :meth:`query_devices`."""
        return self.repository.query(_query(query, filters))

    def repair_indexes_sync(self) -> RepairReport:
        """Sync twin of :meth:`repair_indexes`."""
        return self.repository.repair()

    def get_cache_info_sync(self) -> CacheInfo:
        """Sync twin of :meth:`get_cache_info`."""
        return self.repository.info()

    def check_health_sync(self) -> HealthStatus:
        """Sync twin of :meth:`check_health`; never raises."""
        try:
            return self.repository.health()
        except Exception as exc:
            return unhealthy(f"{type(exc).__name__}: {exc}", type(exc).__name__)

    def close(self) -> None:
        """Close the sync connections. Use :meth:`aclose` when async methods were used.

        Raises:
            AsyncUsageError: When awaited (``await client.close()``), before closing
                anything: async code awaits :meth:`aclose`, which closes the sync connections
                too.
        """
        _refuse_in_coroutine("close", "aclose")
        self._close_sync()

    def _close_sync(self) -> None:
        shutdown_sync_resources(self._container)
        # A replaced container stays until aclose() when async connections of it are open.
        self._retired = [c for c in self._retired if shutdown_sync_resources(c)]
        self._repository = None

    def __enter__(self) -> CacheServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_sync()


def _refuse_in_coroutine(method: str, instead: str) -> None:
    """Raise AsyncUsageError if the caller of ``method`` awaits what it returns.

    A sync method without ``_sync`` in its name, awaited (``await client.close()``), can only
    have been meant as the async method: the ``await`` would fail after the blocking work was
    done. The caller's next instruction tells, before any of that work starts; a call that is
    not awaited (sync code, a thread, a deliberate blocking call in a coroutine) goes on.
    """
    caller = sys._getframe(2)
    if caller.f_code.co_flags & _ASYNC_CODE and _awaited(caller.f_code, caller.f_lasti):
        raise AsyncUsageError(method, instead)


_ASYNC_CODE = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


@functools.lru_cache(maxsize=1024)
def _awaited(code: CodeType, offset: int) -> bool:
    """True if the instruction after the call at ``offset`` in ``code`` is ``GET_AWAITABLE``.

    ``offset`` is the frame's ``f_lasti``: the call itself, or (Python 3.11+) its last inline
    cache entry, which :func:`dis.get_instructions` does not list. Where the bytecode reads
    otherwise (another interpreter), False: the call goes on as before.
    """
    for instruction in dis.get_instructions(code):
        if instruction.offset > offset:
            return instruction.opname == "GET_AWAITABLE"
    return False


def _in_mapping(exc: ValidationError, device_id: object) -> ValidationError:
    """``exc`` about the item of ``device_id`` in a ``{id: metadata}`` batch, naming the id."""
    message = str(exc).removeprefix(f"{exc.field}: ")
    where = f"[{device_id!r}]"
    field = where if exc.field == "metadata" else f"{where}.{exc.field}"
    return ValidationError(field, message)


def _is_default(name: str, value: Any) -> bool:
    default = getattr(DEFAULTS, name)
    return type(value) is type(default) and value == default


# backend -> (the module it imports, the extra that installs it)
_EXTRAS = {"http": ("httpx", "http")}


def _check_extras(settings: Settings, overrides: Mapping[str, Any]) -> None:
    """Raise ConfigurationError now, naming the extra, when the backend's extra is missing."""
    needed = _EXTRAS.get(settings.backend)
    if needed is None or {"repository", "async_repository"} <= overrides.keys():
        return
    module, extra = needed
    if importlib.util.find_spec(module) is None:
        raise ConfigurationError(
            f"backend {settings.backend!r} needs the [{extra}] extra ({module} is not "
            f"installed): pip install 'cache-service-client[{extra}]'"
        )


def _address(s: Settings) -> str:
    """Where the client really connects, as a URL built from the settings in force.

    Built from the settings rather than the URL they came from, so that an argument that
    overrode a part of the URL (``port=...``) shows; secrets are masked.
    """
    if s.backend == "memory":
        return "memory://"
    if s.backend == "http":
        return mask_url(s.http_url or "")
    user = s.username or ""
    credentials = f"{user}:{MASK}@" if s.password is not None else (f"{user}@" if user else "")
    if s.unix_socket_path is not None:
        return f"unix://{credentials}{s.unix_socket_path}?db={s.db}"
    scheme = "rediss" if s.ssl else "redis"
    host = f"[{s.host}]" if ":" in s.host else s.host
    base = f"{credentials}{host}:{s.port}"
    if s.backend == "cluster":
        return f"{scheme}+cluster://{base}"
    if s.backend == "sentinel":
        return f"{scheme}+sentinel://{base}/{s.sentinel_service}"
    return f"{scheme}://{base}/{s.db}"


_TRACKED = frozenset({"redis", "cluster", "sentinel"})
_QUERY_FIELDS = frozenset(DeviceQuery.__struct_fields__)


def _query(query: DeviceQuery | None, filters: Mapping[str, Any]) -> DeviceQuery:
    if query is not None and filters:
        raise ValidationError("query", "give a DeviceQuery or keyword filters, not both")
    if query is not None:
        return query
    for name, value in filters.items():
        if name not in _QUERY_FIELDS:
            raise ValidationError(
                name,
                "is not a query field (the fields: "
                + ", ".join(DeviceQuery.__struct_fields__)
                + ")",
            )
        if type(value) is str:
            check_text(value, name)  # msgspec would raise UnicodeEncodeError on its message
    try:
        return msgspec.convert(filters, DeviceQuery)
    except msgspec.ValidationError as exc:
        field = str(exc).rsplit("`$.", 1)[-1].rstrip("`") if "`$." in str(exc) else "query"
        raise ValidationError(field, str(exc)) from None
