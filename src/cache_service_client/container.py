"""The dependency-injector container that builds everything from :class:`Settings`.

Services never import the container: they take a
:class:`~cache_service_client.DeviceMetadataRepository` (or the async one) as a plain constructor
argument, and the application wires them with ``@inject`` / ``Provide[...]``. In tests, override
the repository with the in-memory one::

    container = Container(settings=providers.Object(settings_from_url("memory://")))
    with container.async_repository.override(AsyncInMemoryDeviceMetadataRepository()):
        ...

Whatever needs closing (Redis clients, the near cache, the HTTP repositories) is a
``providers.Resource``: made on first use and closed by the container that made it, with
:func:`shutdown_resources` (every resource, awaited) or :func:`shutdown_sync_resources` (the
sync ones, without an event loop). The redis-py clients come from
``cache_service_client._factories``, which has their own retry switched off, so
:class:`~cache_service_client.RetryPolicy` is the one retry layer.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from dependency_injector import containers, providers

from cache_service_client import _otel
from cache_service_client._factories import (
    build_tracking,
    client_endpoint,
    init_async_cluster_client,
    init_async_redis_client,
    init_async_sentinel_client,
    init_cluster_client,
    init_redis_client,
    init_sentinel_client,
    redis_connection_kwargs,
)
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
    NearCache,
    NearCachedDeviceMetadataRepository,
)
from cache_service_client.repository.redis import (
    AsyncRedisDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
)
from cache_service_client.retry import RetryPolicy
from cache_service_client.telemetry import instrument_from_settings

logger = logging.getLogger("cache_service_client.near_cache")

__all__ = [
    "Container",
    "build_key_strategy",
    "build_memory_repository",
    "build_redis_repository",
    "build_retry_policy",
    "build_tracking",
    "init_async_cluster_client",
    "init_async_redis_client",
    "init_async_sentinel_client",
    "init_cluster_client",
    "init_near_cache",
    "init_redis_client",
    "init_sentinel_client",
    "near_cached",
    "redis_connection_kwargs",
    "resolve_async_repository",
    "shutdown_resources",
    "shutdown_sync_resources",
]


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
    """Close every resource ``container`` opened (Redis clients, ...), sync and async alike."""
    closing = container.shutdown_resources()
    if inspect.isawaitable(closing):
        await closing


def shutdown_sync_resources(container: Any) -> bool:
    """Close every sync resource ``container`` opened, without an event loop.

    Return True when async resources of it (async Redis clients, ...) remain open; close those
    with :func:`shutdown_resources`.
    """
    async_open = False
    for resource in container.traverse(types=[providers.Resource]):
        if not resource.initialized:
            continue
        if resource.is_async_mode_enabled():
            async_open = True
        else:
            resource.shutdown()
    return async_open


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


#: Numbers the near caches of the process apart in their metrics.
_near_caches = itertools.count(1)


def init_near_cache(
    settings: Settings, key_strategy: KeyStrategy, connection_pool: Any = None
) -> Iterator[NearCache | None]:
    """Resource: the near cache the settings ask for (None: none), closed on shutdown.

    ``connection_pool``: a caller's pool (or tuple of pools) the repositories read through;
    the cache tracks its server instead of the settings' address.
    """
    if settings.near_cache_size == 0 or settings.backend not in ("redis", "cluster", "sentinel"):
        yield None
        return
    tracking = build_tracking(settings, key_strategy, connection_pool=connection_pool)
    cache = NearCache(settings.near_cache_size, tracking)
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
    tracking = cache.tracking
    if tracking.discover is None and client_endpoint(repository.client) not in tracking.endpoints:
        # It reads from a server the cache does not hear (the other flavour than a caller's
        # pool, or a client overridden in the container): caching its reads would serve
        # stale values, so it reads from Redis every time.
        logger.warning(
            "near cache: %s reads from a server the near cache does not track; "
            "its reads are not cached",
            type(repository).__name__,
        )
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

    Every singleton is a ``ThreadSafeSingleton``: first calls of ``repository()`` from several
    threads at once build one repository and one client (the clients are resources, made while
    the singleton that needs them is being built). Resolve a resource provider such as
    ``redis_client()`` yourself from one thread, or through ``repository()``.
    """

    settings = providers.Object(Settings())

    key_strategy = providers.ThreadSafeSingleton(build_key_strategy, settings)
    codec = providers.ThreadSafeSingleton(MetadataCodec, settings.provided.codec)
    retry = providers.ThreadSafeSingleton(build_retry_policy, settings)

    redis_client = providers.Resource(init_redis_client, settings)
    async_redis_client = providers.Resource(init_async_redis_client, settings)
    cluster_client = providers.Resource(init_cluster_client, settings)
    async_cluster_client = providers.Resource(init_async_cluster_client, settings)
    sentinel_client = providers.Resource(init_sentinel_client, settings)
    http_repository = providers.Resource(init_http_repository, settings, retry)
    async_http_repository = providers.Resource(init_async_http_repository, settings, retry)
    async_sentinel_client = providers.Resource(init_async_sentinel_client, settings)

    memory_repository = providers.ThreadSafeSingleton(
        build_memory_repository, settings, key_strategy, codec
    )
    #: A caller's redis-py pool (or tuple of pools) that ``redis_client`` /
    #: ``async_redis_client`` were overridden with: the near cache tracks its server.
    connection_pool: providers.Object[Any] = providers.Object(None)
    near_cache = providers.Resource(init_near_cache, settings, key_strategy, connection_pool)

    # One Singleton per backend and flavour; each takes the same configuration.
    _config = (settings, key_strategy, codec, retry)
    backend_repository = providers.Selector(
        settings.provided.backend,
        memory=memory_repository,
        redis=providers.ThreadSafeSingleton(
            near_cached,
            providers.ThreadSafeSingleton(
                build_redis_repository, RedisDeviceMetadataRepository, redis_client, *_config
            ),
            near_cache,
        ),
        cluster=providers.ThreadSafeSingleton(
            near_cached,
            providers.ThreadSafeSingleton(
                build_redis_repository, RedisDeviceMetadataRepository, cluster_client, *_config
            ),
            near_cache,
        ),
        sentinel=providers.ThreadSafeSingleton(
            near_cached,
            providers.ThreadSafeSingleton(
                build_redis_repository, RedisDeviceMetadataRepository, sentinel_client, *_config
            ),
            near_cache,
        ),
        http=http_repository,
    )

    async_backend_repository = providers.Selector(
        settings.provided.backend,
        # Shares the sync core, so sync and async calls of one client see the same data.
        memory=providers.ThreadSafeSingleton(
            AsyncInMemoryDeviceMetadataRepository, core=memory_repository
        ),
        redis=providers.ThreadSafeSingleton(
            near_cached,
            providers.ThreadSafeSingleton(
                build_redis_repository,
                AsyncRedisDeviceMetadataRepository,
                async_redis_client,
                *_config,
            ),
            near_cache,
        ),
        cluster=providers.ThreadSafeSingleton(
            near_cached,
            providers.ThreadSafeSingleton(
                build_redis_repository,
                AsyncRedisDeviceMetadataRepository,
                async_cluster_client,
                *_config,
            ),
            near_cache,
        ),
        sentinel=providers.ThreadSafeSingleton(
            near_cached,
            providers.ThreadSafeSingleton(
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
    repository = providers.ThreadSafeSingleton(
        instrument_from_settings, backend_repository, settings
    )
    async_repository = providers.ThreadSafeSingleton(
        instrument_from_settings, async_backend_repository, settings
    )
