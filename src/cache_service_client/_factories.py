"""Every redis-py client, pool and connection the library makes, built from :class:`Settings`.

The container (:mod:`cache_service_client.container`) turns the ``init_*`` generators into
``providers.Resource``\\ s, which close what they made on ``shutdown_resources()``; the client
facade wraps a caller's pool with :func:`clients_on_pools`; near caches connect through
:func:`build_tracking`. Every client made here has redis-py's own retry switched off, so
:class:`~cache_service_client.RetryPolicy` is the one retry layer.
"""

from __future__ import annotations

import functools
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from cache_service_client._pool import BoundedAsyncConnectionPool
from cache_service_client.config import Settings
from cache_service_client.exceptions import ConfigurationError
from cache_service_client.keys import KeyStrategy
from cache_service_client.repository.near import Connection, Endpoint, Tracking
from cache_service_client.repository.redis.driver import DRIVER_ERRORS, translate_error

__all__ = [
    "build_tracking",
    "client_endpoint",
    "clients_on_pools",
    "init_async_cluster_client",
    "init_async_redis_client",
    "init_async_sentinel_client",
    "init_cluster_client",
    "init_redis_client",
    "init_sentinel_client",
    "redis_connection_kwargs",
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


def _no_retry() -> redis.retry.Retry:
    return redis.retry.Retry(NoBackoff(), 0)


def _async_no_retry() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(NoBackoff(), 0)


def _endpoint_free_kwargs(settings: Settings) -> dict[str, Any]:
    """:func:`redis_connection_kwargs` without the address (the caller names each node)."""
    kwargs = redis_connection_kwargs(settings)
    for name in ("path", "host", "port"):
        kwargs.pop(name, None)
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
    pool = redis.BlockingConnectionPool(
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout,
        connection_class=_sync_connection_class(settings),
        retry=_no_retry(),
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
        retry=_async_no_retry(),
        **redis_connection_kwargs(settings),
    )
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        yield client
    finally:
        await client.aclose()


def _node_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection arguments of sentinel-managed nodes (TCP only)."""
    kwargs = _endpoint_free_kwargs(settings)
    if settings.ssl:
        kwargs["ssl"] = True
    return kwargs


def _cluster_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments of the cluster clients: the nodes' (no db), ``retry`` left to the caller."""
    kwargs = _node_kwargs(settings)
    kwargs.pop("db", None)
    kwargs.pop("retry_on_timeout", None)  # deprecated for clusters; retry=... says it all
    kwargs.update(host=settings.host, port=settings.port, max_connections=settings.max_connections)
    return kwargs


def init_cluster_client(settings: Settings) -> Iterator[RedisCluster]:
    """Resource: a sync Redis Cluster client; redis-py follows MOVED/ASK, never retries.

    Raises:
        BackendConnectionError: If no node answers (the client maps the cluster when made).
    """
    try:
        # redis-py 5.0 declares connection_pool abstract on RedisCluster (fixed later)
        client = RedisCluster(  # type: ignore[abstract, unused-ignore]
            retry=_no_retry(), **_cluster_kwargs(settings)
        )
    except DRIVER_ERRORS as exc:
        raise translate_error(exc) from exc
    try:
        yield client
    finally:
        client.close()


async def init_async_cluster_client(settings: Settings) -> AsyncIterator[AsyncRedisCluster]:
    """Resource: an async Redis Cluster client, closed with ``aclose()``."""
    # redis-py 5.0 declares connection_pool abstract on RedisCluster (fixed later)
    client = AsyncRedisCluster(  # type: ignore[abstract, unused-ignore]
        retry=_async_no_retry(), **_cluster_kwargs(settings)
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
    sentinel = Sentinel(
        [(settings.host, settings.port)],
        sentinel_kwargs=_sentinel_kwargs(settings, _no_retry()),
        retry=_no_retry(),
        **_node_kwargs(settings),
    )
    client: redis.Redis = sentinel.master_for(str(settings.sentinel_service))
    try:
        yield client
    finally:
        client.close()
        client.connection_pool.disconnect()  # master_for's pool is not closed by close()
        for node in sentinel.sentinels:
            node.close()


async def init_async_sentinel_client(settings: Settings) -> AsyncIterator[redis.asyncio.Redis]:
    """Resource: an async client on the master that Redis Sentinel names."""
    sentinel = AsyncSentinel(
        [(settings.host, settings.port)],
        sentinel_kwargs=_sentinel_kwargs(settings, _async_no_retry()),
        retry=_async_no_retry(),
        **_node_kwargs(settings),
    )
    client = sentinel.master_for(str(settings.sentinel_service))
    try:
        yield client
    finally:
        await client.aclose()
        await client.connection_pool.disconnect()  # master_for's pool is not closed by aclose()
        for node in sentinel.sentinels:
            await node.aclose()


# -- near-cache tracking connections --------------------------------------------------------


def _tracking_connector(settings: Settings) -> Callable[[Endpoint], Connection]:
    """Makes tracking connections: RESP2 (invalidations arrive as messages), no retry."""
    kwargs = _endpoint_free_kwargs(settings)
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


def _ask_each(connect: Callable[[], Connection], *commands: tuple[Any, ...]) -> list[Any]:
    """Send commands one after the other on a connection of its own; return the replies."""
    connection = connect()
    try:
        connection.connect()
        replies = []
        for command in commands:
            connection.send_command(*command)
            replies.append(connection.read_response())
        return replies
    finally:
        connection.disconnect()


def _slotless_primaries(nodes: Any, default_host: str) -> set[Endpoint]:
    """The primaries that CLUSTER NODES lists without a slot (a node just added)."""
    found: set[Endpoint] = set()
    for line in _text(nodes).splitlines():
        fields = line.split()
        # From the ninth field on: the node's slots, then "[slot->-id]" / "[slot-<-id]" for
        # slots moving out or in (which own nothing yet).
        if len(fields) < 8 or any(not f.startswith("[") for f in fields[8:]):
            continue
        flags = set(fields[2].split(","))
        if "master" not in flags or flags & {"fail", "fail?", "handshake", "noaddr"}:
            continue
        address = fields[1].split("@", 1)[0]
        host, _, port = address.rpartition(":")
        if port.isdigit() and int(port) > 0:
            found.add((host or default_host, int(port)))
    return found


def _cluster_discovery(
    settings: Settings, connect: Callable[[Endpoint], Connection]
) -> Callable[[], tuple[tuple[Endpoint, ...], Any]]:
    """Finds the primaries and the slot map with CLUSTER SLOTS, asking any node that answers.

    Primaries that own no slot yet (CLUSTER NODES) are tracked too: the first reshard onto a
    new node redirects reads of the keys already moved there (ASK) before the slot map says so.
    """
    seed: Endpoint = (settings.host, settings.port)
    known: list[Endpoint] = []

    def discover() -> tuple[tuple[Endpoint, ...], Any]:
        error: Exception | None = None
        for endpoint in [*known, seed]:
            ask = functools.partial(_ask_each, functools.partial(connect, endpoint))
            try:
                try:
                    slots, nodes = ask(("CLUSTER", "SLOTS"), ("CLUSTER", "NODES"))
                except redis.ResponseError:  # CLUSTER NODES denied (an ACL): the owners only
                    (slots,), nodes = ask(("CLUSTER", "SLOTS")), ""
            except Exception as exc:  # ask the next node
                error = exc
                continue
            ranges = []
            for entry in slots:
                host = _text(entry[2][0]) or settings.host
                ranges.append((int(entry[0]), int(entry[1]), host, int(entry[2][1])))
            ranges.sort()
            owners = {(host, port) for _, _, host, port in ranges}
            slotless = _slotless_primaries(nodes, settings.host) - owners
            primaries = tuple(sorted(owners | slotless))
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
            lambda: redis.Connection(
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


#: The arguments of a caller's pool that a tracking connection takes over: where the server is,
#: how to log in and the socket's options. Not its protocol, decoding or retry (a tracking
#: connection reads RESP2 bytes, without retry).
_POOL_ARGUMENTS = frozenset(
    {
        "host",
        "port",
        "path",
        "username",
        "password",
        "credential_provider",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "client_name",
    }
)
_SSL_CLASSES: tuple[type[Any], ...] = (redis.SSLConnection, redis.asyncio.SSLConnection)
_UNIX_CLASSES: tuple[type[Any], ...] = (
    redis.UnixDomainSocketConnection,
    redis.asyncio.UnixDomainSocketConnection,
)
_TCP_CLASSES: tuple[type[Any], ...] = (redis.Connection, redis.asyncio.Connection)
_SENTINEL_CLASSES: tuple[type[Any], ...] = (
    redis.sentinel.SentinelManagedConnection,
    redis.asyncio.sentinel.SentinelManagedConnection,
)


def _pool_server(pool: Any) -> tuple[Endpoint, Callable[[], Connection]]:
    """The server a caller's pool connects to, and how to open a tracking connection to it.

    Raises:
        ConfigurationError: When the pool does not say where its server is (a Sentinel pool
            finds its master per connection), or its arguments make no connection.
    """
    kwargs: dict[str, Any] = dict(getattr(pool, "connection_kwargs", {}))
    connection_class = getattr(pool, "connection_class", None)
    unix = "path" in kwargs or (
        isinstance(connection_class, type) and issubclass(connection_class, _UNIX_CLASSES)
    )
    # A plain TCP connection class defaults to localhost:6379, as redis-py's Connection does
    # (a pool made without host or port leaves them out of its connection_kwargs).
    plain = (
        isinstance(connection_class, type)
        and issubclass(connection_class, _TCP_CLASSES)
        and not issubclass(connection_class, _SENTINEL_CLASSES)
    )
    if not unix and plain:
        kwargs.setdefault("host", "localhost")
        kwargs.setdefault("port", 6379)
    if not kwargs.get("path" if unix else "host"):
        raise ConfigurationError(
            "arguments connection_pool and near_cache_size: the near cache must follow the "
            f"server the pool reads from, and a {type(pool).__name__} does not say which it "
            "is; give the address in the settings instead of a pool, or set near_cache_size=0"
        )
    arguments = {k: v for k, v in kwargs.items() if k in _POOL_ARGUMENTS}
    arguments.update(protocol=2, retry=_no_retry())
    make: Callable[..., Any]
    if unix:
        arguments.pop("host", None)
        arguments.pop("port", None)
        make = redis.UnixDomainSocketConnection
        endpoint: Endpoint = str(kwargs["path"])
    else:
        arguments.pop("path", None)
        arguments.setdefault("port", 6379)
        endpoint = (str(kwargs["host"]), int(kwargs.get("port") or 6379))
        make = redis.Connection
        if isinstance(connection_class, type) and issubclass(connection_class, _SSL_CLASSES):
            make = redis.SSLConnection
            arguments.update({k: v for k, v in kwargs.items() if k.startswith("ssl_")})

    def open_connection() -> Connection:
        connection: Connection = make(**arguments)  # type: ignore[abstract, unused-ignore]
        return connection

    try:
        open_connection()  # made, not connected: bad arguments fail here, not in a tracking thread
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"argument connection_pool: a near cache cannot connect as the pool does: {exc}"
        ) from exc
    return endpoint, open_connection


def _pools_tracking(connection_pool: Any, common: dict[str, Any]) -> Tracking:
    """Tracking of the servers of a caller's pool (or tuple of pools)."""
    pools = connection_pool if isinstance(connection_pool, tuple) else (connection_pool,)
    connectors: dict[Endpoint, Callable[[], Connection]] = {}
    for pool in pools:
        if pool is not None:
            endpoint, opener = _pool_server(pool)
            connectors.setdefault(endpoint, opener)

    def connect(endpoint: Endpoint) -> Connection:
        return connectors[endpoint]()

    return Tracking(connect=connect, endpoints=tuple(connectors), **common)


def client_endpoint(client: Any) -> Endpoint | None:
    """The one server a redis-py single-node client reads from (None: not known)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return None
    if kwargs.get("path"):
        return str(kwargs["path"])
    if kwargs.get("host"):
        return (str(kwargs["host"]), int(kwargs.get("port", 6379)))
    return None


def build_tracking(
    settings: Settings, key_strategy: KeyStrategy, *, connection_pool: Any = None
) -> Tracking:
    """How a near cache tracks the servers the settings name (one node, cluster, Sentinel).

    Args:
        settings: The settings; their address unless ``connection_pool`` is given.
        key_strategy: Names the device keys to track.
        connection_pool: A caller's redis-py pool (sync or async, or a tuple of both) that
            the repositories read through: its server is tracked, not the settings' address.

    Raises:
        ConfigurationError: When ``connection_pool`` does not say where its server is.
    """
    prefixes = tuple(key_strategy.bucket_device_prefix(b) for b in range(key_strategy.buckets))
    common: dict[str, Any] = {"prefixes": prefixes, "device_id": key_strategy.device_id}
    if connection_pool is not None and settings.backend == "redis":
        return _pools_tracking(connection_pool, common)
    connect = _tracking_connector(settings)
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


# -- a caller's pools -----------------------------------------------------------------------


def clients_on_pools(connection_pool: Any) -> tuple[redis.Redis | None, redis.asyncio.Redis | None]:
    """The sync and async clients on a caller's pool (or a tuple of a sync and an async one).

    The caller keeps the pools: closing these clients leaves them open.

    Raises:
        ConfigurationError: For anything but a ``redis.ConnectionPool`` or a
            ``redis.asyncio.ConnectionPool``.
    """
    sync_client: redis.Redis | None = None
    async_client: redis.asyncio.Redis | None = None
    pools = connection_pool if isinstance(connection_pool, tuple) else (connection_pool,)
    for pool in pools:
        if pool is None:
            continue
        if isinstance(pool, redis.asyncio.ConnectionPool):
            async_client = redis.asyncio.Redis(connection_pool=pool)
        elif isinstance(pool, redis.ConnectionPool):
            sync_client = redis.Redis(connection_pool=pool)
        else:
            raise ConfigurationError(
                "argument connection_pool: expected a redis.ConnectionPool or "
                f"redis.asyncio.ConnectionPool, not {type(pool).__name__}"
            )
    return sync_client, async_client
