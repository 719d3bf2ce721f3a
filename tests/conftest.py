from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from cache_service_client import (
    AsyncInMemoryDeviceMetadataRepository,
    AsyncNearCachedDeviceMetadataRepository,
    AsyncRedisDeviceMetadataRepository,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    NearCache,
    NearCachedDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
    settings_from_url,
)
from cache_service_client.container import build_tracking, init_sentinel_client
from cache_service_client.testing import RedisClusterServers, RedisSentinelServers
from tests.backends import (
    Backend,
    Flavour,
    MemoryBackdoor,
    NearBackdoor,
    RedisBackdoor,
    SyncAsAsync,
)
from tests.http_gateway import (  # noqa: F401 - fixtures
    HTTP_BACKENDS,
    http_contract_backend,
    http_gateway,
)
from tests.redis_server import (
    RedisServer,
    server_binary,
    server_description,
    session_redis_url,
)

# "redis-buckets" runs the cluster code path (indexes sharded into buckets, merged by the
# client) on a single node: the same keys, hash tags and scripts, without the cluster.
BACKENDS = [
    "memory-sync",
    "memory-async",
    "redis-sync",
    "redis-async",
    "redis-buckets",
    "cluster-sync",
    "cluster-async",
    "near-sync",
    "near-async",
    "near-cluster",
    "near-cluster-sync",
    "near-sentinel",
    *HTTP_BACKENDS,
]


def pytest_configure(config: pytest.Config) -> None:
    """Stop the run at once when the server kind ``CSC_TEST_SERVER`` names is unknown or not
    installed: the suite never falls back to another kind."""
    try:
        server_description()
    except (ValueError, RuntimeError) as exc:
        raise pytest.UsageError(f"CSC_TEST_SERVER: {exc}") from exc


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which server binary and version the run starts its servers with."""
    line = f"servers: {server_description()}"
    if os.environ.get("REDIS_URL"):
        line += "; the session's own Redis is the one REDIS_URL names"
    return [line]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the Redis server for this test session (started here unless REDIS_URL is set)."""
    url, server = session_redis_url()
    try:
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A ``redis+cluster://`` URL of a three-master cluster started for this session.

    ``REDIS_CLUSTER_URL`` names an existing cluster instead.
    """
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    cluster = RedisClusterServers(binary=server_binary())
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterServers]:
    """A three-master cluster of this test's own, for tests that change it (migrate slots, add
    nodes, break a master); stopped after the test."""
    with RedisClusterServers(binary=server_binary()) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sentinel_url() -> Iterator[str]:
    """A ``redis+sentinel://`` URL of a master, its replica and a sentinel, for this session.

    Never failed over (tests that fail over start their own).
    """
    setup = RedisSentinelServers(binary=server_binary())
    setup.start()
    try:
        yield setup.url
    finally:
        setup.stop()


@pytest.fixture
def cluster_client(cluster_url: str) -> Iterator[RedisCluster]:
    """A sync cluster client (bytes replies), redis-py's retry off."""
    client = RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def async_cluster_client(cluster_url: str) -> AsyncIterator[AsyncRedisCluster]:
    """An async cluster client (bytes replies)."""
    client = AsyncRedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain sync redis-py client (bytes replies) on the session's server."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def async_redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An async redis-py client (bytes replies) on the session's server.

    A blocking pool makes surplus concurrent calls wait for a connection instead of failing.
    """
    pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url, max_connections=32)
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        yield client
    finally:
        await client.aclose()
        await pool.disconnect()


@pytest.fixture
def key_strategy() -> KeyStrategy:
    """A key namespace of this test's own, so tests never see each other's data."""
    return KeyStrategy(prefix=f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, key_strategy: KeyStrategy) -> Backend:
    """Each repository implementation in turn, behind the async protocol."""
    name: str = request.param
    if name.startswith("http-"):
        http: Backend = request.getfixturevalue("http_contract_backend")
        return http
    if name.startswith("memory"):
        core = InMemoryDeviceMetadataRepository(key_strategy=key_strategy)
        if name == "memory-sync":
            return Backend(name, SyncAsAsync(core), MemoryBackdoor(core), key_strategy)
        repo = AsyncInMemoryDeviceMetadataRepository(core=core)
        return Backend(name, repo, MemoryBackdoor(core), key_strategy)
    if name.startswith("near"):
        return near_backend(request, name, key_strategy)
    if name.startswith("cluster"):
        keys = KeyStrategy(prefix=key_strategy.prefix, buckets=8)
        cluster: RedisCluster = request.getfixturevalue("cluster_client")
        cluster_backdoor = RedisBackdoor(cluster, keys)
        if name == "cluster-sync":
            on_cluster = RedisDeviceMetadataRepository(cluster, key_strategy=keys)
            return Backend(name, SyncAsAsync(on_cluster), cluster_backdoor, keys)
        acluster: AsyncRedisCluster = request.getfixturevalue("async_cluster_client")
        arepo = AsyncRedisDeviceMetadataRepository(acluster, key_strategy=keys)
        return Backend(name, arepo, cluster_backdoor, keys)
    sync_client: redis.Redis = request.getfixturevalue("redis_client")
    if name == "redis-buckets":
        key_strategy = KeyStrategy(prefix=key_strategy.prefix, buckets=4)
    backdoor = RedisBackdoor(sync_client, key_strategy)
    if name in ("redis-sync", "redis-buckets"):
        sync_repo = RedisDeviceMetadataRepository(sync_client, key_strategy=key_strategy)
        return Backend(name, SyncAsAsync(sync_repo), backdoor, key_strategy)
    async_client: redis.asyncio.Redis = request.getfixturevalue("async_redis_client")
    async_repo = AsyncRedisDeviceMetadataRepository(async_client, key_strategy=key_strategy)
    return Backend(name, async_repo, backdoor, key_strategy)


def near_backend(request: pytest.FixtureRequest, name: str, keys: KeyStrategy) -> Backend:
    """A Redis repository behind a near cache of its own: one node (sync, async), the cluster
    (async, sync) or Sentinel (sync)."""
    inner: AsyncRedisDeviceMetadataRepository | None = None
    backdoor_client: redis.Redis | RedisCluster
    if name.startswith("near-cluster"):
        keys = KeyStrategy(prefix=keys.prefix, buckets=8)
        url: str = request.getfixturevalue("cluster_url")
        backdoor_client = request.getfixturevalue("cluster_client")
        if name == "near-cluster":
            acluster: AsyncRedisCluster = request.getfixturevalue("async_cluster_client")
            inner = AsyncRedisDeviceMetadataRepository(acluster, key_strategy=keys)
    elif name == "near-sentinel":
        url = request.getfixturevalue("sentinel_url")
        on_master = contextlib.contextmanager(init_sentinel_client)(settings_from_url(url))
        backdoor_client = on_master.__enter__()
        request.addfinalizer(lambda: on_master.__exit__(None, None, None))
    else:
        url = request.getfixturevalue("redis_url")
        backdoor_client = request.getfixturevalue("redis_client")
    cache = NearCache(1000, build_tracking(settings_from_url(url), keys))
    request.addfinalizer(cache.close)
    assert cache.wait_connected(5.0)
    backdoor = NearBackdoor(backdoor_client, keys, cache)
    if name == "near-async":
        aclient: redis.asyncio.Redis = request.getfixturevalue("async_redis_client")
        inner = AsyncRedisDeviceMetadataRepository(aclient, key_strategy=keys)
    if inner is None:  # a sync flavour: near-sync, near-cluster-sync, near-sentinel
        sync_repo = RedisDeviceMetadataRepository(backdoor_client, key_strategy=keys)
        near = NearCachedDeviceMetadataRepository(sync_repo, cache)
        return Backend(name, SyncAsAsync(near), backdoor, keys)
    return Backend(name, AsyncNearCachedDeviceMetadataRepository(inner, cache), backdoor, keys)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (free loopback port), for tests that change or break
    the server (configuration, ACLs, pauses, crashes); stopped after the test."""
    server = RedisServer(server_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def scan_client() -> Iterator[redis.Redis]:
    """A client of a redis-server that holds only what a test puts there and deletes again,
    for tests that compare with SCAN MATCH: SCAN walks every key of its server, and on the
    session's server, which other tests fill, each call would get slower as the suite runs."""
    server = RedisServer(server_binary())
    server.start()
    client = redis.Redis(port=server.port)
    try:
        yield client
    finally:
        client.close()
        server.stop()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    """Each test that takes it runs once per flavour, sync and async."""
    return Flavour(request.param)
