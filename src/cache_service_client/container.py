"""The dependency-injector container that builds everything from :class:`Settings`.

Services never import the container: they take a
:class:`~cache_service_client.DeviceMetadataRepository` (or the async one) as a plain constructor
argument, and the application wires them with ``@inject`` / ``Provide[...]``. In tests, override
the repository with the in-memory one::

    container = Container(settings=providers.Object(settings_from_url("memory://")))
    with container.async_repository.override(AsyncInMemoryDeviceMetadataRepository()):
        ...

Redis clients are ``providers.Resource``\\ s: created on first use and closed by
``shutdown_resources()`` (the async client with ``aclose()``). Clients built here have redis-py's
own retry switched off, so :class:`~cache_service_client.RetryPolicy` is the one retry layer.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
from dependency_injector import containers, providers
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from cache_service_client import _otel
from cache_service_client._pool import BoundedAsyncConnectionPool
from cache_service_client.codec import MetadataCodec
from cache_service_client.config import Settings
from cache_service_client.keys import KeyStrategy
from cache_service_client.repository.base import AsyncDeviceMetadataRepository
from cache_service_client.repository.memory import (
    AsyncInMemoryDeviceMetadataRepository,
    InMemoryDeviceMetadataRepository,
)
from cache_service_client.repository.near import (
    AsyncNearCachedDeviceMetadataRepository,
    Connection,
    Endpoint,
    NearCache,
    NearCachedDeviceMetadataRepository,
    Tracking,
)
from cache_service_client.repository.redis import (
    AsyncRedisDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
)
from cache_service_client.retry import RetryPolicy
from cache_service_client.telemetry import instrument_from_settings

__all__ = [
    "Container",
    "build_key_strategy",
    "build_memory_repository",
    "build_tracking",
    "build_redis_repository",
    "build_retry_policy",
    "init_async_cluster_client",
    "init_async_sentinel_client",
    "init_cluster_client",
    "init_near_cache",
    "init_sentinel_client",
    "init_async_redis_client",
    "init_redis_client",
    "near_cached",
    "redis_connection_kwargs",
    "resolve_async_repository",
    "shutdown_resources",
]

_CERT_REQS = {
    "required": ssl_module.CERT_REQUIRED,
    "optional": ssl_module.CERT_OPTIONAL,
    "none": ssl_module.CERT_NONE,
}


def redis_connection_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection arguments for redis-py pools, without any retry (the caller adds its own)."""
    kwargs: dict[str, Any] = {
        "db": settings.db,
        "username": settings.username,
        "password": settings.password,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry_on_timeout": False,
    }
    if settings.unix_socket_path is not None:
        kwargs["path"] = settings.unix_socket_path
        return kwargs
    kwargs["host"] = settings.host
    kwargs["port"] = settings.port
    if settings.ssl:
        kwargs.update(
            ssl_ca_certs=settings.ssl_ca_certs,
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
            ssl_cert_reqs=_CERT_REQS[settings.ssl_cert_reqs],
            ssl_check_hostname=settings.ssl_check_hostname and settings.ssl_cert_reqs != "none",
        )
    return kwargs


def _sync_connection_class(settings: Settings) -> type[redis.connection.AbstractConnection]:
    if settings.unix_socket_path is not None:
        return redis.UnixDomainSocketConnection
    return redis.SSLConnection if settings.ssl else redis.Connection


def _async_connection_class(
    settings: Settings,
) -> type[redis.asyncio.connection.AbstractConnection]:
    if settings.unix_socket_path is not None:
        return redis.asyncio.UnixDomainSocketConnection
    return redis.asyncio.SSLConnection if settings.ssl else redis.asyncio.Connection


def init_redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """Resource: a sync client on a blocking pool (callers wait for a free connection)."""
    pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout,
        connection_class=_sync_connection_class(settings),
        retry=redis.retry.Retry(NoBackoff(), 0),
        **redis_connection_kwargs(settings),
    )
    client = redis.Redis.from_pool(pool)
    try:
        yield client
    finally:
        client.close()


async def init_async_redis_client(settings: Settings) -> AsyncIterator[redis.asyncio.Redis]:
    """Resource: an async client on a bounded pool (callers wait), closed with ``aclose()``."""
    pool = BoundedAsyncConnectionPool(
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout,
        connection_class=_async_connection_class(settings),
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        **redis_connection_kwargs(settings),
    )
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        yield client
    finally:
        await client.aclose()


def _no_retry() -> redis.retry.Retry:
    return redis.retry.Retry(NoBackoff(), 0)


def _node_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection arguments of cluster and sentinel-managed nodes (TCP only, no db for cluster)."""
    kwargs = redis_connection_kwargs(settings)
    kwargs.pop("path", None)
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if settings.ssl:
        kwargs["ssl"] = True
    return kwargs


def init_cluster_client(settings: Settings) -> Iterator[RedisCluster]:
    """Resource: a sync Redis Cluster client; redis-py follows MOVED/ASK, never retries."""
    kwargs = _node_kwargs(settings)
    kwargs.pop("db", None)
    kwargs.pop("retry_on_timeout", None)  # deprecated for clusters; retry=... says it all
    client = RedisCluster(
        host=settings.host,
        port=settings.port,
        retry=_no_retry(),
        max_connections=settings.max_connections,
        **kwargs,
    )
    try:
        yield client
    finally:
        client.close()


async def init_async_cluster_client(settings: Settings) -> AsyncIterator[AsyncRedisCluster]:
    """Resource: an async Redis Cluster client, closed with ``aclose()``."""
    kwargs = _node_kwargs(settings)
    kwargs.pop("db", None)
    kwargs.pop("retry_on_timeout", None)
    client = AsyncRedisCluster(
        host=settings.host,
        port=settings.port,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        max_connections=settings.max_connections,
        **kwargs,
    )
    try:
        yield client
    finally:
        await client.aclose()


def _sentinel_kwargs(settings: Settings, retry: Any) -> dict[str, Any]:
    # redis-py retries a connection three times with backoff (seconds) unless told otherwise;
    # the library's RetryPolicy is the only retry layer, for the sentinels too.
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": retry,
    }
    if settings.sentinel_password is not None:
        kwargs["password"] = settings.sentinel_password
    return kwargs


def init_sentinel_client(settings: Settings) -> Iterator[redis.Redis]:
    """Resource: a sync client on the master that Redis Sentinel names; follows failovers."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [(settings.host, settings.port)],
        sentinel_kwargs=_sentinel_kwargs(settings, _no_retry()),
        retry=_no_retry(),
        **_node_kwargs(settings),
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        str(settings.sentinel_service)
    )
    try:
        yield client
    finally:
        client.close()
        client.connection_pool.disconnect()  # master_for's pool is not closed by close()
        for node in sentinel.sentinels:
            node.close()


async def init_async_sentinel_client(settings: Settings) -> AsyncIterator[redis.asyncio.Redis]:
    """Resource: an async client on the master that Redis Sentinel names."""
    kwargs = _node_kwargs(settings)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        [(settings.host, settings.port)],
        sentinel_kwargs=_sentinel_kwargs(settings, redis.asyncio.retry.Retry(NoBackoff(), 0)),
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        **kwargs,
    )
    client = sentinel.master_for(str(settings.sentinel_service))
    try:
        yield client
    finally:
        await client.aclose()
        await client.connection_pool.disconnect()  # master_for's pool is not closed by aclose()
        for node in sentinel.sentinels:
            await node.aclose()


def build_key_strategy(settings: Settings) -> KeyStrategy:
    """The key strategy the settings describe (buckets only for Redis Cluster)."""
    buckets = settings.cluster_buckets if settings.backend == "cluster" else 1
    return KeyStrategy(settings.key_prefix, settings.key_separator, buckets=buckets)


def build_memory_repository(
    settings: Settings, key_strategy: KeyStrategy, codec: MetadataCodec
) -> InMemoryDeviceMetadataRepository:
    """The in-memory repository: on the named store ``memory_store``, else one of its own."""
    options: dict[str, Any] = {
        "key_strategy": key_strategy,
        "ttl": settings.metadata_ttl,
        "codec": codec,
    }
    if settings.memory_store is not None:
        return InMemoryDeviceMetadataRepository.shared(settings.memory_store, **options)
    return InMemoryDeviceMetadataRepository(**options)


def build_retry_policy(settings: Settings) -> RetryPolicy:
    """The retry policy the settings describe."""
    return RetryPolicy(
        attempts=settings.retry_attempts,
        deadline=settings.retry_deadline,
        backoff_base=settings.retry_backoff_base,
        backoff_max=settings.retry_backoff_max,
    )


async def resolve_async_repository(container: Any) -> AsyncDeviceMetadataRepository:
    """Return ``container.async_repository()``, awaited when the backend needs it.

    The Redis branch depends on an async resource (the client), so dependency-injector returns an
    awaitable for it; the in-memory branch (or an override) returns the repository itself.
    Concurrent first calls share that one awaitable, so it is shielded: a caller cancelled while
    it waits never cancels the initialisation the other callers (and later ones) wait for.
    """
    repository = container.async_repository()
    if inspect.isawaitable(repository):
        repository = await asyncio.shield(repository)
    if not isinstance(repository, AsyncDeviceMetadataRepository):
        raise TypeError(f"async_repository provided {type(repository).__name__}")
    return repository


async def shutdown_resources(container: Any) -> None:
    """Close every resource (Redis clients) ``container`` opened, sync and async alike."""
    closing = container.shutdown_resources()
    if inspect.isawaitable(closing):
        await closing


def build_redis_repository(
    factory: Any,
    client: Any,
    settings: Settings,
    key_strategy: KeyStrategy,
    codec: MetadataCodec,
    retry: RetryPolicy,
) -> Any:
    """Build a (sync or async) Redis repository on ``client`` as the settings describe."""
    return factory(
        client,
        key_strategy=key_strategy,
        codec=codec,
        ttl=settings.metadata_ttl,
        retry=retry,
        health_slow_ms=settings.health_slow_ms,
        health_memory_ratio=settings.health_memory_ratio,
    )


# -- near cache ------------------------------------------------------------------------------


def _tracking_connector(settings: Settings) -> Callable[[Endpoint], Connection]:
    """Makes tracking connections: RESP2 (invalidations arrive as messages), no retry."""
    kwargs = redis_connection_kwargs(settings)
    kwargs.pop("path", None)
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if settings.backend == "cluster":
        kwargs.pop("db", None)
    kwargs.update(protocol=2, retry=_no_retry())
    connection_class = redis.SSLConnection if settings.ssl else redis.Connection

    def connect(endpoint: Endpoint) -> Connection:
        if isinstance(endpoint, str):
            ssl_free = {k: v for k, v in kwargs.items() if not k.startswith("ssl")}
            return redis.UnixDomainSocketConnection(  # type: ignore[abstract, no-untyped-call, unused-ignore]
                path=endpoint, **ssl_free
            )
        host, port = endpoint
        return connection_class(host=host, port=port, **kwargs)

    return connect


def _ask(connect: Callable[[], Connection], *command: Any) -> Any:
    """Send one command on a connection of its own and return the reply."""
    connection = connect()
    try:
        connection.connect()
        connection.send_command(*command)
        return connection.read_response()
    finally:
        connection.disconnect()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cluster_discovery(
    settings: Settings, connect: Callable[[Endpoint], Connection]
) -> Callable[[], tuple[tuple[Endpoint, ...], Any]]:
    """Finds the primaries and the slot map with CLUSTER SLOTS, asking any node that answers."""
    seed: Endpoint = (settings.host, settings.port)
    known: list[Endpoint] = []

    def discover() -> tuple[tuple[Endpoint, ...], Any]:
        error: Exception | None = None
        for endpoint in [*known, seed]:
            try:
                slots = _ask(functools.partial(connect, endpoint), "CLUSTER", "SLOTS")
            except Exception as exc:  # ask the next node
                error = exc
                continue
            ranges = []
            for entry in slots:
                host = _text(entry[2][0]) or settings.host
                ranges.append((int(entry[0]), int(entry[1]), host, int(entry[2][1])))
            ranges.sort()
            primaries = tuple(sorted({(host, port) for _, _, host, port in ranges}))
            known[:] = primaries
            return primaries, tuple(ranges)
        raise ConnectionError(f"no cluster node answered CLUSTER SLOTS: {error}")

    return discover


def _sentinel_discovery(
    settings: Settings, connect: Callable[[Endpoint], Connection]
) -> Callable[[], tuple[tuple[Endpoint, ...], Any]]:
    """Finds the master with SENTINEL GET-MASTER-ADDR-BY-NAME.

    A server tracked before stays tracked while it still says it is a master: after a
    failover, clients keep their connections to the old master until Sentinel reconfigures it
    (and drops them), so reads may come from either for a while.
    """
    sentinel_kwargs = _sentinel_kwargs(settings, _no_retry())
    tracked: list[Endpoint] = []

    def still_master(endpoint: Endpoint) -> bool:
        try:
            role = _ask(functools.partial(connect, endpoint), "ROLE")
        except Exception:  # gone: its clients are gone too
            return False
        return bool(role) and _text(role[0]) == "master"

    def discover() -> tuple[tuple[Endpoint, ...], Any]:
        reply = _ask(
            lambda: redis.Connection(  # type: ignore[no-untyped-call, unused-ignore]
                host=settings.host, port=settings.port, protocol=2, **sentinel_kwargs
            ),
            "SENTINEL",
            "GET-MASTER-ADDR-BY-NAME",
            str(settings.sentinel_service),
        )
        if not reply:
            raise ConnectionError(f"the sentinels know no master {settings.sentinel_service!r}")
        master: Endpoint = (_text(reply[0]), int(reply[1]))
        old = [e for e in tracked if e != master and still_master(e)]
        tracked[:] = [master, *old]
        endpoints = tuple(sorted(tracked, key=str))
        return endpoints, endpoints

    return discover


def build_tracking(settings: Settings, key_strategy: KeyStrategy) -> Tracking:
    """How a near cache tracks the servers the settings name (one node, cluster, Sentinel)."""
    connect = _tracking_connector(settings)
    prefixes = tuple(key_strategy.bucket_device_prefix(b) for b in range(key_strategy.buckets))
    common: dict[str, Any] = {"prefixes": prefixes, "device_id": key_strategy.device_id}
    if settings.backend == "cluster":
        return Tracking(
            connect=connect, endpoints=(), discover=_cluster_discovery(settings, connect), **common
        )
    if settings.backend == "sentinel":
        return Tracking(
            connect=connect, endpoints=(), discover=_sentinel_discovery(settings, connect), **common
        )
    endpoint: Endpoint = (
        settings.unix_socket_path
        if settings.unix_socket_path is not None
        else (settings.host, settings.port)
    )
    return Tracking(connect=connect, endpoints=(endpoint,), **common)


#: Numbers the near caches of the process apart in their metrics.
_near_caches = itertools.count(1)


def init_near_cache(settings: Settings, key_strategy: KeyStrategy) -> Iterator[NearCache | None]:
    """Resource: the near cache the settings ask for (None: none), closed on shutdown."""
    if settings.near_cache_size == 0 or settings.backend not in ("redis", "cluster", "sentinel"):
        yield None
        return
    cache = NearCache(settings.near_cache_size, build_tracking(settings, key_strategy))
    if settings.telemetry and _otel.AVAILABLE:
        attributes: dict[str, str | int] = {
            "server.address": settings.unix_socket_path or settings.host,
            "cache_service_client.near_cache.number": next(_near_caches),
        }
        if settings.unix_socket_path is None:
            attributes["server.port"] = settings.port
        _otel.observe_near_cache(cache, attributes)
    try:
        yield cache
    finally:
        cache.close()


def near_cached(repository: Any, cache: NearCache | None) -> Any:
    """``repository`` behind ``cache`` (the sync or async wrapper); itself when there is none."""
    if cache is None:
        return repository
    if isinstance(repository, AsyncRedisDeviceMetadataRepository):
        return AsyncNearCachedDeviceMetadataRepository(repository, cache)
    return NearCachedDeviceMetadataRepository(repository, cache)


def _http_options(settings: Settings, retry: RetryPolicy) -> dict[str, Any]:
    """The keyword arguments both HTTP repositories take from the settings."""
    return {
        "auth_token": settings.http_auth_token,
        "timeout": settings.http_timeout,
        "retry": retry,
    }


def init_http_repository(settings: Settings, retry: RetryPolicy) -> Iterator[Any]:
    """Resource: the sync HTTP repository (httpx is imported here only: the [http] extra)."""
    from cache_service_client.repository.http import HttpDeviceMetadataRepository

    repository = HttpDeviceMetadataRepository(
        settings.http_url or "", **_http_options(settings, retry)
    )
    try:
        yield repository
    finally:
        repository.close()


async def init_async_http_repository(settings: Settings, retry: RetryPolicy) -> AsyncIterator[Any]:
    """Resource: the async HTTP repository, closed with ``await close()``."""
    from cache_service_client.repository.http import AsyncHttpDeviceMetadataRepository

    repository = AsyncHttpDeviceMetadataRepository(
        settings.http_url or "", **_http_options(settings, retry)
    )
    try:
        yield repository
    finally:
        await repository.close()


class Container(containers.DeclarativeContainer):
    """Builds clients, key strategy, codec, retry policy and repositories from ``settings``.

    Override ``settings`` (``providers.Object(Settings(...))``) to configure it; ``repository``
    and ``async_repository`` are the backend named by ``settings.backend``
    (``backend_repository`` and ``async_backend_repository``), reporting to OpenTelemetry
    when the ``[otel]`` extra is installed (see :mod:`cache_service_client.telemetry`).
    """

    settings = providers.Object(Settings())

    key_strategy = providers.Singleton(build_key_strategy, settings)
    codec = providers.Singleton(MetadataCodec, settings.provided.codec)
    retry = providers.Singleton(build_retry_policy, settings)

    redis_client = providers.Resource(init_redis_client, settings)
    async_redis_client = providers.Resource(init_async_redis_client, settings)
    cluster_client = providers.Resource(init_cluster_client, settings)
    async_cluster_client = providers.Resource(init_async_cluster_client, settings)
    sentinel_client = providers.Resource(init_sentinel_client, settings)
    http_repository = providers.Resource(init_http_repository, settings, retry)
    async_http_repository = providers.Resource(init_async_http_repository, settings, retry)
    async_sentinel_client = providers.Resource(init_async_sentinel_client, settings)

    memory_repository = providers.Singleton(build_memory_repository, settings, key_strategy, codec)
    near_cache = providers.Resource(init_near_cache, settings, key_strategy)

    # One Singleton per backend and flavour; each takes the same configuration.
    _config = (settings, key_strategy, codec, retry)
    backend_repository = providers.Selector(
        settings.provided.backend,
        memory=memory_repository,
        redis=providers.Singleton(
            near_cached,
            providers.Singleton(
                build_redis_repository, RedisDeviceMetadataRepository, redis_client, *_config
            ),
            near_cache,
        ),
        cluster=providers.Singleton(
            near_cached,
            providers.Singleton(
                build_redis_repository, RedisDeviceMetadataRepository, cluster_client, *_config
            ),
            near_cache,
        ),
        sentinel=providers.Singleton(
            near_cached,
            providers.Singleton(
                build_redis_repository, RedisDeviceMetadataRepository, sentinel_client, *_config
            ),
            near_cache,
        ),
        http=http_repository,
    )

    async_backend_repository = providers.Selector(
        settings.provided.backend,
        # Shares the sync core, so sync and async calls of one client see the same data.
        memory=providers.Singleton(AsyncInMemoryDeviceMetadataRepository, core=memory_repository),
        redis=providers.Singleton(
            near_cached,
            providers.Singleton(
                build_redis_repository,
                AsyncRedisDeviceMetadataRepository,
                async_redis_client,
                *_config,
            ),
            near_cache,
        ),
        cluster=providers.Singleton(
            near_cached,
            providers.Singleton(
                build_redis_repository,
                AsyncRedisDeviceMetadataRepository,
                async_cluster_client,
                *_config,
            ),
            near_cache,
        ),
        sentinel=providers.Singleton(
            near_cached,
            providers.Singleton(
                build_redis_repository,
                AsyncRedisDeviceMetadataRepository,
                async_sentinel_client,
                *_config,
            ),
            near_cache,
        ),
        http=async_http_repository,
    )

    # OpenTelemetry (the [otel] extra): every backend's repository, wrapped once; the
    # repository itself without the extra or with the telemetry setting off.
    repository = providers.Singleton(instrument_from_settings, backend_repository, settings)
    async_repository = providers.Singleton(
        instrument_from_settings, async_backend_repository, settings
    )
