"""The near cache on real servers: hits, invalidations, races, lost connections, topologies.

The contract suite runs over near-cached backends too (tests/conftest.py); these tests cover
what only a near cache has. Every wait is a bounded poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.sentinel
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from cache_service_client import (
    AsyncNearCachedDeviceMetadataRepository,
    AsyncRedisDeviceMetadataRepository,
    BackendConnectionError,
    BatchGetResult,
    CacheServiceClient,
    ConfigurationError,
    DeviceMetadata,
    DeviceNotFoundError,
    KeyStrategy,
    NearCache,
    NearCachedDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
    RetryPolicy,
    load_settings,
    settings_from_url,
)
from cache_service_client.config import Settings, SettingsFields
from cache_service_client.container import (
    build_tracking,
    init_async_cluster_client,
    init_async_redis_client,
    init_async_sentinel_client,
    init_cluster_client,
    init_redis_client,
    init_sentinel_client,
)
from cache_service_client.repository.near import _Link as TrackingLink
from cache_service_client.testing import (
    RedisClusterServers,
    RedisSentinelServers,
    wait_for_invalidations,
)
from tests.backends import Flavour, meta
from tests.integration.test_topologies import migrate_slot
from tests.redis_server import RedisServer, command, server_binary

PLAN = {"datatype_id": "t", "datatype_name": "temperature", "persist": True}


def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.002)


@pytest.fixture
def near(
    redis_url: str, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> Iterator[tuple[NearCachedDeviceMetadataRepository, NearCache]]:
    """A near-cached repository (1000 entries) on the session's server, connected."""
    cache = NearCache(1000, build_tracking(settings_from_url(redis_url), key_strategy))
    repo = NearCachedDeviceMetadataRepository(
        RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy), cache
    )
    assert cache.wait_connected(5.0)
    try:
        yield repo, cache
    finally:
        cache.close()


@pytest.fixture
def other(redis_client: redis.Redis, key_strategy: KeyStrategy) -> RedisDeviceMetadataRepository:
    """Another writer of the same data, without a near cache."""
    return RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy)


def near_of(client: CacheServiceClient) -> NearCachedDeviceMetadataRepository:
    """The near-cached repository of ``client`` (under the telemetry wrapper, if any)."""
    repo: object = client.repository
    while not isinstance(repo, NearCachedDeviceMetadataRepository):
        repo = getattr(repo, "repository")  # noqa: B009 - the telemetry wrapper's
    return repo


def settle(repo: NearCachedDeviceMetadataRepository) -> None:
    """Wait until the cache has heard every change so far (its own writes' reports too)."""
    client = repo.wrapped.client
    assert isinstance(client, (redis.Redis, RedisCluster))
    wait_for_invalidations(repo.near_cache, client, repo.key_strategy)


def test_a_second_read_is_a_hit(near: tuple[NearCachedDeviceMetadataRepository, NearCache]) -> None:
    repo, cache = near
    repo.put(meta("a"))
    settle(repo)
    before = cache.stats()
    first = repo.get("a")
    assert repo.get("a") is first  # the decoded object itself: no decode
    stats = cache.stats()
    assert (stats.hits - before.hits, stats.misses - before.misses) == (1, 1)
    assert stats.connected
    assert repo.get_many(["a", "b"]) == {"a": first}
    assert repo.exists("a")
    assert not repo.exists("b")
    assert cache.stats().hits - before.hits == 4  # a twice more, then b's cached "not found"


def test_not_found_is_cached_until_the_device_is_written(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache],
    other: RedisDeviceMetadataRepository,
) -> None:
    repo, cache = near
    settle(repo)
    hits = cache.stats().hits
    for _ in range(2):
        with pytest.raises(DeviceNotFoundError):
            repo.get("late")
    assert cache.stats().hits == hits + 1
    other.put(meta("late"))
    eventually(lambda: repo.exists("late"), what="a device written elsewhere")
    assert repo.get("late") == meta("late")


def test_own_writes_are_seen_at_once(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache],
) -> None:
    repo, _ = near
    repo.put(meta("own"))
    repo.get("own")
    repo.put(meta("own", datatype_unit="K"))
    assert repo.get("own").datatype_unit == "K"
    repo.put_many(iter([meta("own", datatype_unit="F")]))
    assert repo.get("own").datatype_unit == "F"
    repo.delete_many(iter(["own"]))
    with pytest.raises(DeviceNotFoundError):
        repo.get("own")


def test_the_least_recently_used_entries_are_evicted(
    redis_url: str, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    cache = NearCache(3, build_tracking(settings_from_url(redis_url), key_strategy))
    try:
        inner = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy)
        repo = NearCachedDeviceMetadataRepository(inner, cache)
        assert cache.wait_connected(5.0)
        inner.put_many([meta(f"d{i}") for i in range(5)])
        settle(repo)
        evictions = cache.stats().evictions
        for device_id in ("d0", "d1", "d2", "d0", "d3", "d4"):
            repo.get(device_id)
        stats = cache.stats()
        assert (stats.entries, stats.evictions - evictions) == (3, 2)
        hits = stats.hits
        repo.get("d0")  # used recently: kept
        repo.get("d1")  # the least recently used: evicted
        assert cache.stats().hits == hits + 1
    finally:
        cache.close()


def test_a_read_that_overlapped_an_invalidation_is_not_cached(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache],
    redis_client: redis.Redis,
    other: RedisDeviceMetadataRepository,
    key_strategy: KeyStrategy,
) -> None:
    repo, cache = near
    other.put(meta("race"))
    started = time.monotonic()
    token = cache.begin(["race"])
    stale, pttls = repo.wrapped.get_many_expiring(["race"])  # the read's reply: the old value
    other.put(meta("race", datatype_unit="F"))  # a write lands before the reply is cached
    wait_for_invalidations(cache, redis_client, key_strategy)
    cache.finish(token, ["race"], stale, pttls, started)
    assert cache.lookup("race") is None
    assert repo.get("race").datatype_unit == "F"
    # A flush in between takes every read's right to be cached away too.
    token = cache.begin(["race"])
    cache.flush()
    cache.finish(token, ["race"], stale, pttls, started)
    assert cache.lookup("race") is None


def test_the_facade_shares_one_near_cache_between_sync_and_async(
    redis_url: str, key_strategy: KeyStrategy
) -> None:
    url = f"{redis_url}?near_cache_size=100"
    client = CacheServiceClient.from_url(url, key_prefix=key_strategy.prefix)
    assert client.near_cache_stats().size == 100
    assert not client.near_cache_stats().connected  # not started before the first call
    client.store_device_metadata("f", PLAN)
    near = near_of(client)
    settle(near)
    client.get_device_metadata_sync("f")
    client.get_device_metadata_sync("f")

    async def read() -> None:
        assert (await client.get_device_metadata("f")).device_id == "f"
        health = await client.check_health()
        assert health.details["near_cache"]["connected"] is True
        assert client.near_cache_stats().hits == 2  # the second sync read and the async one
        await client.aclose()

    asyncio.run(read())
    client.close()
    assert client.near_cache_stats().entries == 0
    eventually(
        lambda: not any("near cache" in t.name for t in threading.enumerate()),
        what="the tracking threads stopping",
    )


def test_the_setting_from_every_source(tmp_path: Path) -> None:
    assert load_settings(env={"CACHE_SERVICE_NEAR_CACHE_SIZE": "500"}).near_cache_size == 500
    assert settings_from_url("redis://h/0?near_cache_size=7").near_cache_size == 7
    file = tmp_path / "cache.toml"
    file.write_text("near_cache_size = 9\n")
    assert load_settings(file=file, env=False).near_cache_size == 9
    assert CacheServiceClient(near_cache_size=3).settings.near_cache_size == 3
    for bad in ("-1", "many", "1.5"):
        with pytest.raises(ConfigurationError, match="NEAR_CACHE_SIZE"):
            load_settings(env={"CACHE_SERVICE_NEAR_CACHE_SIZE": bad})
        with pytest.raises(ConfigurationError, match="near_cache_size"):
            settings_from_url(f"redis://h/0?near_cache_size={bad}")
    for toml in ("-1", '"many"', "1.5", "true"):
        file.write_text(f"near_cache_size = {toml}\n")
        with pytest.raises(ConfigurationError, match="near_cache_size"):
            load_settings(file=file, env=False)
    for value in (-1, "many", 1.5, True, None):
        with pytest.raises(ConfigurationError, match="argument near_cache_size"):
            CacheServiceClient(near_cache_size=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="near_cache_size needs a Redis backend"):
        settings_from_url("http://gateway:8000?near_cache_size=10")
    with pytest.raises(ConfigurationError, match="near_cache_size"):
        NearCache(0, build_tracking(settings_from_url("redis://h/0"), KeyStrategy()))
    memory = CacheServiceClient.from_url("memory://?near_cache_size=10")
    memory.store_device_metadata("m", PLAN)
    assert memory.get_device_metadata_sync("m").device_id == "m"
    assert memory.near_cache_stats().size == 0  # in the process already


def test_an_unreachable_server_means_no_caching_and_typed_errors(key_strategy: KeyStrategy) -> None:
    settings = settings_from_url("redis://127.0.0.1:1/0?socket_timeout=0.2")
    cache = NearCache(10, build_tracking(settings, key_strategy))
    try:
        client = redis.Redis(port=1, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
        inner = RedisDeviceMetadataRepository(
            client, key_strategy=key_strategy, retry=RetryPolicy.disabled()
        )
        repo = NearCachedDeviceMetadataRepository(inner, cache)
        assert not cache.wait_connected(0.3)
        with pytest.raises(BackendConnectionError):
            repo.get("x")
        assert cache.stats().entries == 0
        assert cache.lookup("x") is None
        assert cache.begin(["x"]) is None  # nothing may be cached while tracking is down
    finally:
        cache.close()


@pytest.fixture
def two_servers() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A server for a caller's pool, and a decoy standing where the settings point."""
    servers = (RedisServer(server_binary()), RedisServer(server_binary()))
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_a_callers_pool_is_the_server_tracked(
    two_servers: tuple[RedisServer, RedisServer], key_strategy: KeyStrategy
) -> None:
    """the near cache tracked the settings' address, not the pool's server."""
    real, decoy = two_servers
    pool = redis.ConnectionPool(host="127.0.0.1", port=real.port)
    writer = redis.Redis(host="127.0.0.1", port=real.port)
    other = RedisDeviceMetadataRepository(writer, key_strategy=key_strategy)
    client = CacheServiceClient(
        host="127.0.0.1",
        port=decoy.port,
        connection_pool=pool,
        near_cache_size=100,
        key_strategy=key_strategy,
    )
    try:
        repo = near_of(client)
        assert repo.near_cache.tracking.endpoints == (("127.0.0.1", real.port),)
        assert repo.near_cache.wait_connected(5.0)
        other.put(meta("a", datatype_name="old"))
        wait_for_invalidations(repo.near_cache, writer, key_strategy)
        assert client.get_device_metadata_sync("a").datatype_name == "old"
        assert client.get_device_metadata_sync("a").datatype_name == "old"  # a hit
        other.put(meta("a", datatype_name="new"))
        wait_for_invalidations(repo.near_cache, writer, key_strategy)
        assert client.get_device_metadata_sync("a").datatype_name == "new"
    finally:
        client.close()
        writer.close()
        pool.disconnect()


async def test_a_callers_async_pool_is_the_server_tracked(
    two_servers: tuple[RedisServer, RedisServer], key_strategy: KeyStrategy
) -> None:
    real, decoy = two_servers
    pool = redis.asyncio.ConnectionPool(host="127.0.0.1", port=real.port)
    writer = redis.Redis(host="127.0.0.1", port=real.port)
    other = RedisDeviceMetadataRepository(writer, key_strategy=key_strategy)
    client = CacheServiceClient(
        host="127.0.0.1",
        port=decoy.port,
        connection_pool=pool,
        near_cache_size=100,
        key_strategy=key_strategy,
    )
    try:
        other.put(meta("a", datatype_name="old"))
        assert (await client.get_device_metadata("a")).datatype_name == "old"
        cache = client.container.near_cache()
        assert isinstance(cache, NearCache)
        assert cache.tracking.endpoints == (("127.0.0.1", real.port),)
        assert cache.wait_connected(5.0)
        assert (await client.get_device_metadata("a")).datatype_name == "old"
        assert (await client.get_device_metadata("a")).datatype_name == "old"
        assert cache.stats().hits >= 1
        other.put(meta("a", datatype_name="new"))
        wait_for_invalidations(cache, writer, key_strategy)
        assert (await client.get_device_metadata("a")).datatype_name == "new"
        # The sync calls read from the settings' address (the decoy), which the cache does
        # not hear: they are not near-cached, so they never serve what the decoy held.
        decoy_writer = redis.Redis(host="127.0.0.1", port=decoy.port)
        decoy_repo = RedisDeviceMetadataRepository(decoy_writer, key_strategy=key_strategy)
        decoy_repo.put(meta("a", datatype_name="decoy-1"))
        assert client.get_device_metadata_sync("a").datatype_name == "decoy-1"
        decoy_repo.put(meta("a", datatype_name="decoy-2"))
        assert client.get_device_metadata_sync("a").datatype_name == "decoy-2"
        decoy_writer.close()
    finally:
        await client.aclose()
        writer.close()
        await pool.disconnect()


def test_a_pool_whose_server_cannot_be_named_is_refused_with_a_near_cache() -> None:
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", 1)])
    pool = redis.sentinel.SentinelConnectionPool("mymaster", sentinel)
    with pytest.raises(ConfigurationError, match="connection_pool and near_cache_size"):
        CacheServiceClient(connection_pool=pool, near_cache_size=10)
    CacheServiceClient(connection_pool=pool).close()  # without a near cache: fine


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1:1", "redis+sentinel://127.0.0.1:1/mymaster", "memory://"]
)
def test_a_pool_with_settings_of_another_backend_is_refused(url: str) -> None:
    # It would be left unused: the client would talk to the cluster (or nothing) instead.
    pool = redis.ConnectionPool(port=1)
    with pytest.raises(ConfigurationError, match=r"argument connection_pool: .* single Redis"):
        CacheServiceClient(url=url, connection_pool=pool, near_cache_size=10)
    with pytest.raises(ConfigurationError, match="argument connection_pool"):
        CacheServiceClient(url=url, connection_pool=pool)


def test_a_cache_closed_while_it_follows_the_topology_tracks_nothing(cluster_url: str) -> None:
    # The first topology check runs as the cache is made; a close() during it must stop the
    # links it starts (or keep it from starting them), and never fail.
    settings = settings_from_url(cluster_url)
    keys = KeyStrategy(buckets=4)
    for pause in (0.0, 0.001, 0.003, 0.005, 0.01, 0.02, 0.05):
        for _ in range(3):
            cache = NearCache(10, build_tracking(settings, keys))
            time.sleep(pause)
            cache.close()
            time.sleep(0.05)
            assert not cache.connected
            assert cache.tracked_endpoints() == ()
            links = [t for t in threading.enumerate() if isinstance(t, TrackingLink)]
            assert not [t for t in links if t._cache is cache and t.is_alive()], pause


def test_flushdb_and_flushall_flush_the_cache_and_swapdb_is_not_reported(
    key_strategy: KeyStrategy,
) -> None:
    """What docs/near-cache.md claims about whole-database commands.

    FLUSHDB and FLUSHALL arrive as one report that drops everything; SWAPDB arrives as none
    (Redis renames no key, so tracking has nothing to report), and only a flush of the cache
    by its owner drops what the swapped-out database held.
    """
    server = RedisServer(server_binary())  # of its own: these commands hit every key
    server.start()
    raw = redis.Redis(port=server.port)
    other_db = redis.Redis(port=server.port, db=1)
    settings = settings_from_url(server.url)
    cache = NearCache(100, build_tracking(settings, key_strategy))
    repo = NearCachedDeviceMetadataRepository(
        RedisDeviceMetadataRepository(raw, key_strategy=key_strategy), cache
    )
    try:
        assert cache.wait_connected(5.0)
        for flush in (raw.flushdb, raw.flushall):
            repo.wrapped.put(meta("a"))
            wait_for_invalidations(cache, raw, key_strategy)
            assert repo.get("a") is repo.get("a")  # cached
            flushes = cache.stats().flushes
            flush()
            wait_for_invalidations(cache, raw, key_strategy)
            assert cache.stats().flushes == flushes + 1
            with pytest.raises(DeviceNotFoundError):
                repo.get("a")
        repo.wrapped.put(meta("a", datatype_name="db0"))
        RedisDeviceMetadataRepository(other_db, key_strategy=key_strategy).put(
            meta("a", datatype_name="db1")
        )
        wait_for_invalidations(cache, raw, key_strategy)
        assert repo.get("a").datatype_name == "db0"
        flushes = cache.stats().flushes
        command(raw, "SWAPDB", 0, 1)
        wait_for_invalidations(cache, raw, key_strategy)
        assert repo.wrapped.get("a").datatype_name == "db1"  # what Redis holds now
        assert repo.get("a").datatype_name == "db0"  # the limit: no report, no flush
        assert cache.stats().flushes == flushes
        cache.flush()  # what the docs tell whoever runs SWAPDB to do
        assert repo.get("a").datatype_name == "db1"
    finally:
        cache.close()
        raw.close()
        other_db.close()
        server.stop()


def test_batch_reads_fetch_only_what_is_not_cached(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache], redis_client: redis.Redis
) -> None:
    repo, cache = near
    repo.put_many([meta(f"b{i}") for i in range(10)])
    settle(repo)
    repo.get_many([f"b{i}" for i in range(5)])
    before = redis_client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    result = repo.get_many_detailed([f"b{i}" for i in range(12)])
    after = redis_client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    assert after - before == 1
    assert list(result.found) == [f"b{i}" for i in range(10)]
    assert result.missing == ["b10", "b11"]
    assert cache.stats().entries == 12
    assert repo.get_many_detailed([]) == BatchGetResult(found={}, missing=[], corrupted={})


# -- every topology, both flavours ----------------------------------------------------------------

#: The topologies the tests that take ``env`` run on (each server set up once per session).
TOPOLOGIES = ["single", "cluster", "sentinel"]


@dataclasses.dataclass
class Topology:
    """One way to run Redis, and how to reach it: a URL the library understands."""

    name: str
    url: str
    buckets: int

    @property
    def settings(self) -> Settings:
        return settings_from_url(self.url)

    def sync_client(self) -> contextlib.AbstractContextManager[Any]:
        """A sync client of the library's own making (no redis-py retry; RetryPolicy retries)."""
        init = {"cluster": init_cluster_client, "sentinel": init_sentinel_client}.get(
            self.name, init_redis_client
        )
        return contextlib.contextmanager(init)(self.settings)

    def async_client(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """An async client of the library's own making."""
        init = {"cluster": init_async_cluster_client, "sentinel": init_async_sentinel_client}.get(
            self.name, init_async_redis_client
        )
        return contextlib.asynccontextmanager(init)(self.settings)

    def masters(self) -> list[tuple[str, int]]:
        """The servers that hold the data now: every primary of a cluster, Sentinel's master."""
        settings = self.settings
        if self.name == "cluster":
            with RedisCluster(host=settings.host, port=settings.port) as cluster:
                return sorted((n.host, int(n.port)) for n in cluster.get_primaries())
        if self.name == "sentinel":
            with redis.Redis(host=settings.host, port=settings.port) as sentinel:
                host, port = command(
                    sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", str(settings.sentinel_service)
                )
            return [(host.decode(), int(port))]
        return [(settings.host, settings.port)]


@pytest.fixture(scope="module", params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest) -> Topology:
    """Each topology in turn: the session's node, cluster and Sentinel (tests/conftest.py)."""
    name: str = request.param
    if name == "cluster":
        return Topology(name, request.getfixturevalue("cluster_url"), buckets=4)
    if name == "sentinel":
        return Topology(name, request.getfixturevalue("sentinel_url"), buckets=1)
    return Topology(name, request.getfixturevalue("redis_url"), buckets=1)


@dataclasses.dataclass
class Env:
    """A near-cached reader of one flavour on one topology, another client, and the tools."""

    topology: Topology
    flavour: Flavour
    keys: KeyStrategy
    cache: NearCache
    repo: Any  # the reader: NearCached... or AsyncNearCached...DeviceMetadataRepository
    other: RedisDeviceMetadataRepository  # another client's writer, without a near cache
    direct: RedisDeviceMetadataRepository  # reads Redis itself (a client of its own)
    raw: redis.Redis | RedisCluster  # the direct reader's client: barriers, CLIENT KILL

    async def get(self, device_id: str) -> DeviceMetadata:
        """A near-cached read of the reader's flavour."""
        value: DeviceMetadata = await self.flavour.run(self.repo.get(device_id))
        return value

    async def n(self, device_id: str) -> int:
        """The version (``additional_properties["n"]``) a near-cached read returns."""
        return int((await self.get(device_id)).additional_properties["n"])

    def n_in_redis(self, device_id: str) -> int:
        """The version Redis holds now, read without the near cache."""
        return int(self.direct.get(device_id).additional_properties["n"])

    def settle(self) -> None:
        """Wait until the cache has heard every change made so far, on every server."""
        wait_for_invalidations(self.cache, self.raw, self.keys)

    def kill(self) -> None:
        """CLIENT KILL every tracking and every other client connection on every master.

        But a sentinel's own links (named ``sentinel-...``): a sentinel that takes more than its
        down-after time to reconnect on a loaded machine would start a failover.
        """
        for host, port in self.topology.masters():
            with redis.Redis(host=host, port=port, decode_responses=True) as server:
                me = server.client_id()
                for client in server.client_list():
                    replication = set(client["flags"]) & {"S", "M"}  # a replica's or master's link
                    if int(client["id"]) == me or replication:
                        continue
                    if not client["name"].startswith("sentinel-"):
                        command(server, "CLIENT", "KILL", "ID", client["id"])


@pytest.fixture
async def env(
    topology: Topology, flavour: Flavour, key_strategy: KeyStrategy
) -> AsyncIterator[Env]:
    """A connected near cache (1000 entries) on ``topology``, its reader of ``flavour``."""
    keys = KeyStrategy(prefix=key_strategy.prefix, buckets=topology.buckets)
    with contextlib.ExitStack() as stack:
        writer_client = stack.enter_context(topology.sync_client())
        raw = stack.enter_context(topology.sync_client())
        cache = NearCache(1000, build_tracking(topology.settings, keys))
        stack.callback(cache.close)
        async with contextlib.AsyncExitStack() as astack:
            repo: Any
            if flavour.is_async:
                aclient = await astack.enter_async_context(topology.async_client())
                inner = AsyncRedisDeviceMetadataRepository(aclient, key_strategy=keys)
                repo = AsyncNearCachedDeviceMetadataRepository(inner, cache)
            else:
                reader_client = stack.enter_context(topology.sync_client())
                repo = NearCachedDeviceMetadataRepository(
                    RedisDeviceMetadataRepository(reader_client, key_strategy=keys), cache
                )
            assert cache.wait_connected(10.0)
            yield Env(
                topology=topology,
                flavour=flavour,
                keys=keys,
                cache=cache,
                repo=repo,
                other=RedisDeviceMetadataRepository(writer_client, key_strategy=keys),
                direct=RedisDeviceMetadataRepository(raw, key_strategy=keys),
                raw=raw,
            )
    if topology.name == "cluster":
        # redis-py's cluster clients drop node connections they replaced (after CLIENT KILL)
        # without closing them; collect them here, quietly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "") -> None:
    """Await ``check`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.002)


#: Trials per case of the racing test (six cases: three topologies, two flavours).
RACING_TRIALS = 10


async def test_a_racing_writer_leaves_no_stale_reads(env: Env) -> None:
    stale = trials = 0
    for trial in range(RACING_TRIALS):
        device_id = f"hot-{trial}"
        env.other.put(meta(device_id, additional_properties={"n": 0}))
        done = threading.Event()
        errors: list[BaseException] = []

        def write(
            device_id: str = device_id,
            done: threading.Event = done,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                for n in range(1, 60):
                    env.other.put(meta(device_id, additional_properties={"n": n}))
                env.settle()  # writes have stopped, and the cache has heard every one
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        writer = threading.Thread(target=write)
        seen = [await env.n(device_id)]
        writer.start()
        while not done.is_set():
            seen.append(await env.n(device_id))
        writer.join()
        assert errors == []
        assert seen == sorted(seen), "a reader saw a version older than one it had seen"
        # Every change has been heard: from now on, only the final value.
        for _ in range(50):
            if await env.n(device_id) != 59:
                stale += 1
        trials += 1
    assert trials == RACING_TRIALS
    assert stale == 0


async def test_killed_connections_flush_the_cache_and_nothing_stale_survives(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "cache_service_client.near_cache")
    cache = env.cache
    env.other.put(meta("k", additional_properties={"n": 0}))
    assert await env.n("k") == 0
    done = threading.Event()
    written = [0]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while not done.is_set():
                written[0] += 1
                env.other.put(meta("k", additional_properties={"n": written[0]}))
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(3):
            flushes = cache.stats().flushes
            env.kill()
            eventually(lambda f=flushes: cache.stats().flushes > f, what="a flush")  # type: ignore[misc]
            assert cache.wait_connected(10.0)
            # Reconnected: a read is at least as new as what Redis held before it...
            n0 = env.n_in_redis("k")
            assert await env.n("k") >= n0
            assert await env.n("k") >= n0  # (a hit, now)
            # ... and an entry cached since is dropped by the reports that follow.
            n1 = env.n_in_redis("k")
            env.settle()
            assert await env.n("k") >= n1
            assert errors == []
    finally:
        done.set()
        writer.join()
    assert errors == []
    assert written[0] > 3
    env.settle()
    assert await env.n("k") == written[0]
    # Each loss and each reconnection is logged at INFO, naming the server in extra= fields.
    logged = [r for r in caplog.records if r.name == "cache_service_client.near_cache"]
    lost = [r for r in logged if "lost" in r.getMessage()]
    tracking = [r for r in logged if r not in lost and hasattr(r, "near_cache_server")]
    assert lost
    assert tracking
    assert {r.levelno for r in lost + tracking} == {logging.INFO}
    masters = {f"{host}:{port}" for host, port in env.topology.masters()}
    assert {getattr(r, "near_cache_server", None) for r in lost + tracking} == masters
    assert all(getattr(r, "near_cache_error", "") for r in lost)


async def test_writes_deletes_and_expiry_by_another_client_are_seen(env: Env) -> None:
    other, cache = env.other, env.cache
    other.put_many([meta("w"), meta("d")])
    assert (await env.get("w")).datatype_unit == "C"
    await env.get("d")
    before = cache.stats().invalidations
    other.put(meta("w", datatype_unit="F"))
    other.delete("d")

    async def written() -> bool:
        return (await env.get("w")).datatype_unit == "F"

    async def deleted() -> bool:
        return not await env.flavour.run(env.repo.exists("d"))

    await until(written, what="a write elsewhere")
    await until(deleted, what="a delete elsewhere")
    # Both entries were dropped by Redis's reports (nothing else drops them), counted.
    assert cache.stats().invalidations >= before + 2
    other.ttl = 0.3
    other.put(meta("e"))
    assert await env.get("e") == meta("e")
    await asyncio.sleep(0.35)
    # Gone on the cache's own clock, whenever Redis reports the expiry.
    with pytest.raises(DeviceNotFoundError):
        await env.get("e")
    # The read above made Redis expire the key, and Redis reports that too.
    eventually(lambda: cache.stats().invalidations >= before + 3, what="an expiry's report")


def test_an_entry_never_outlives_its_ttl_without_a_report(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache],
) -> None:
    _, cache = near
    value = meta("ttl")
    before = cache.stats()
    # Nothing is written to Redis: no report can come for these ids.
    ids = ["ttl", "forever", "gone"]
    found = BatchGetResult(found={i: value for i in [*ids, "late"]}, missing=[], corrupted={})
    token = cache.begin(ids)
    cache.finish(token, ids, found, [100, -1, -2], time.monotonic())
    assert "ttl" in cache
    assert "forever" in cache
    assert "gone" not in cache  # expired between the read and its reply: never cached
    # The deadline counts from before the read was sent, not from when its reply came.
    held = len(cache)
    token = cache.begin(["late"])
    cache.finish(token, ["late"], found, [100], time.monotonic() - 0.2)
    assert "late" not in cache
    assert len(cache) == held  # not even held: it would take a live entry's place
    assert cache.lookup("late") is None
    time.sleep(0.15)
    assert "ttl" not in cache
    assert cache.lookup("ttl") is None
    assert cache.lookup("forever") is value
    stats = cache.stats()
    assert stats.invalidations == before.invalidations
    assert stats.flushes == before.flushes


# -- cluster and Sentinel ---------------------------------------------------------------------


def test_waiting_for_invalidations_hears_every_primary_of_a_cluster(
    cluster_url: str, cluster_client: RedisCluster, key_strategy: KeyStrategy
) -> None:
    keys = KeyStrategy(prefix=key_strategy.prefix, buckets=4)
    primaries = {n.name: n for n in cluster_client.get_primaries()}
    owner = cluster_client.get_node_from_key
    owners = {
        owner(keys.bucket_device_prefix(b) + "x").name  # type: ignore[no-untyped-call]
        for b in range(keys.buckets)
    }
    assert owners == set(primaries)  # the buckets' slots are spread over every primary

    def sets() -> dict[str, int]:
        calls = {}
        for name, node in primaries.items():
            with redis.Redis(host=node.host, port=node.port) as server:
                calls[name] = server.info("commandstats").get("cmdstat_set", {}).get("calls", 0)
        return calls

    cache = NearCache(1000, build_tracking(settings_from_url(cluster_url), keys))
    small = NearCache(1, build_tracking(settings_from_url(cluster_url), keys))
    try:
        assert cache.wait_connected(10.0)
        inner = RedisDeviceMetadataRepository(cluster_client, key_strategy=keys)
        repo = NearCachedDeviceMetadataRepository(inner, cache)
        ids = [f"c{i}" for i in range(40)]
        assert {keys.bucket_of(i) for i in ids} == set(range(keys.buckets))
        inner.put_many([meta(i) for i in ids])
        wait_for_invalidations(cache, cluster_client, keys)
        repo.get_many(ids)
        assert all(i in cache for i in ids)
        inner.put_many([meta(i, datatype_unit="F") for i in ids])  # by "another client"
        before = sets()
        wait_for_invalidations(cache, cluster_client, keys)
        after = sets()
        # A marker on every primary, and every primary's reports heard: no entry is left.
        assert all(after[name] > before[name] for name in primaries)
        assert [i for i in ids if i in cache] == []
        assert {d.datatype_unit for d in repo.get_many(ids).values()} == {"F"}
        # A cache smaller than the markers waits for them in rounds.
        wait_for_invalidations(small, cluster_client, keys)
        # The markers' keys are gone again.
        assert list(cluster_client.scan_iter(match=keys.device_pattern("barrier-*"))) == []
    finally:
        cache.close()
        small.close()


def test_cluster_invalidations_survive_a_slot_migration(own_cluster: RedisClusterServers) -> None:
    prefix = f"near-{uuid.uuid4().hex[:6]}"
    options: SettingsFields = {
        "key_prefix": prefix,
        "cluster_buckets": 4,
        "retry_deadline": 20.0,
        "retry_attempts": 100,
    }
    reader = CacheServiceClient.from_url(own_cluster.url + "?near_cache_size=1000", **options)
    writer = CacheServiceClient.from_url(own_cluster.url, **options)
    try:
        ids = [f"dev-{i:03d}" for i in range(40)]
        writer.store_many_device_metadata_sync({i: {**PLAN, "n": 0} for i in ids})
        near = near_of(reader)
        assert near.near_cache.wait_connected(10.0)
        assert len(reader.get_many_device_metadata_sync(ids)) == 40
        assert reader.near_cache_stats().entries == 40
        keys: KeyStrategy = reader.container.key_strategy()
        moved_id = ids[0]
        moving = [i for i in ids if keys.bucket_of(i) == keys.bucket_of(moved_id)]
        # Another client writes, and the near-cached reader reads, all along the migration.
        last = dict.fromkeys(ids, 0)
        newest = dict.fromkeys(ids, 0)  # the newest version the reader has seen, per id
        errors: list[BaseException] = []
        regressions: list[str] = []
        stop_writing, stop_reading = threading.Event(), threading.Event()
        migrating = threading.Event()
        during = {"writes": 0, "reads": 0}

        def write() -> None:
            try:
                n = 0
                while not stop_writing.is_set():
                    n += 1
                    for device_id in ids:
                        writer.store_device_metadata(device_id, {**PLAN, "n": n})
                        last[device_id] = n
                        if migrating.is_set() and device_id in moving:
                            during["writes"] += 1
            except BaseException as exc:
                errors.append(exc)

        def read() -> None:
            try:
                while not stop_reading.is_set():
                    for device_id in moving + ids[::7]:
                        n = reader.get_device_metadata_sync(device_id).additional_properties["n"]
                        if n < newest[device_id]:
                            regressions.append(f"{device_id}: {n} after {newest[device_id]}")
                        newest[device_id] = max(n, newest[device_id])
                        if migrating.is_set():
                            during["reads"] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write), threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.1)
            flushes = reader.near_cache_stats().flushes
            migrating.set()
            moved = migrate_slot(own_cluster, key_slot(keys.device_key(moved_id).encode()), 0.05)
            migrating.clear()
            assert moved > 0
            # The slot map changed: the next topology check flushes the cache.
            eventually(lambda: reader.near_cache_stats().flushes > flushes, what="a topology flush")
            assert near.near_cache.wait_connected(10.0)
            time.sleep(0.2)  # traffic after the migration too
        finally:
            stop_writing.set()
            threads[0].join()
            stop_reading.set()
            threads[1].join()
        assert errors == []
        assert regressions == []
        assert during["writes"] > 0
        assert during["reads"] > 0
        # Writes have stopped and every report has come: no stale read, of any device.
        settle(near)
        stale = [
            device_id
            for _ in range(3)
            for device_id in ids
            if reader.get_device_metadata_sync(device_id).additional_properties["n"]
            != last[device_id]
        ]
        assert stale == []
        # And writes after the migration are seen as they come.
        for device_id in ids:
            writer.store_device_metadata(device_id, {**PLAN, "n": -1})
        for device_id in ids:
            eventually(
                lambda d=device_id: (
                    reader.get_device_metadata_sync(d).additional_properties["n"]  # type: ignore[misc]
                    == -1
                ),
                what=f"a write of {device_id} on the cluster",
            )
    finally:
        reader.close()
        writer.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def test_sentinel_failover_flushes_and_follows_the_new_master() -> None:
    setup = RedisSentinelServers(binary=server_binary())
    setup.start()
    try:
        options: SettingsFields = {"retry_deadline": 20.0, "socket_timeout": 1.0}
        reader = CacheServiceClient.from_url(setup.url + "?near_cache_size=100", **options)
        writer = CacheServiceClient.from_url(setup.url, **options)
        writer.store_device_metadata("s", {**PLAN, "n": 0})
        near = near_of(reader)
        settle(near)
        reader.get_device_metadata_sync("s")
        reader.get_device_metadata_sync("s")
        assert reader.near_cache_stats().hits == 1
        flushes = reader.near_cache_stats().flushes
        time.sleep(0.3)  # let the replica catch up
        setup.failover()
        eventually(lambda: reader.near_cache_stats().flushes > flushes, 10.0, "a failover flush")
        writer.store_device_metadata("s", {**PLAN, "n": 1})
        eventually(
            lambda: reader.get_device_metadata_sync("s").additional_properties["n"] == 1,
            10.0,
            "a write on the new master",
        )
        assert near.near_cache.wait_connected(10.0)
        writer.store_device_metadata("s", {**PLAN, "n": 2})
        eventually(
            lambda: reader.get_device_metadata_sync("s").additional_properties["n"] == 2,
            what="a write after the failover",
        )
        reader.close()
        writer.close()
    finally:
        setup.stop()


def test_the_counters_are_observed_by_opentelemetry(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache],
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from cache_service_client import _otel

    repo, cache = near
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        _otel.observe_near_cache(cache, {"server.address": "here"}, provider)
        repo.put(meta("o"))
        settle(repo)
        repo.get("o")
        repo.get("o")
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[str, list[Any]] = {
            metric.name: list(metric.data.data_points)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        stats = cache.stats()
        hits = points["cache_service_client.near_cache.hits"]
        assert [(p.value, dict(p.attributes or {})) for p in hits] == [
            (stats.hits, {"server.address": "here"})
        ]
        assert points["cache_service_client.near_cache.misses"][0].value == stats.misses
        assert points["cache_service_client.near_cache.entries"][0].value == stats.entries
        assert set(points) >= set(_otel.NEAR_CACHE_COUNTERS)
    finally:
        provider.shutdown()


def test_a_server_that_stops_answering_is_noticed_by_the_heartbeat(
    own_redis: RedisServer, key_strategy: KeyStrategy
) -> None:
    tracking = build_tracking(settings_from_url(own_redis.url), key_strategy)
    cache = NearCache(10, dataclasses.replace(tracking, heartbeat=0.2))
    try:
        assert cache.wait_connected(5.0)
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)  # silent, connection still open
        try:
            eventually(lambda: not cache.connected, 3.0, "the heartbeat noticing")
            assert cache.stats().flushes >= 1
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        assert cache.wait_connected(5.0)
    finally:
        cache.close()


@pytest.mark.parametrize(
    ("make_pool", "endpoint"),
    [
        (lambda: redis.ConnectionPool(host="127.0.0.1"), ("127.0.0.1", 6379)),
        (lambda: redis.ConnectionPool.from_url("redis://localhost"), ("localhost", 6379)),
        (lambda: redis.asyncio.ConnectionPool(), ("localhost", 6379)),
    ],
)
def test_a_callers_pool_without_host_or_port_is_tracked_at_redis_pys_defaults(
    make_pool: Callable[[], Any], endpoint: tuple[str, int]
) -> None:
    # redis-py leaves a default host or port out of the pool's connection_kwargs.
    pool = make_pool()
    client = CacheServiceClient(connection_pool=pool, near_cache_size=10)
    try:
        cache = client.container.near_cache()
        assert isinstance(cache, NearCache)
        assert cache.tracking.endpoints == (endpoint,)
    finally:
        client.close()
