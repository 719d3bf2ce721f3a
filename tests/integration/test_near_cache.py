"""The near cache on real servers: hits, invalidations, races, lost connections, topologies.

The contract suite runs over near-cached backends too (tests/conftest.py); these tests cover
what only a near cache has. Every wait is a bounded poll.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from cache_service_client import (
    BackendConnectionError,
    BatchGetResult,
    CacheServiceClient,
    ConfigurationError,
    DeviceNotFoundError,
    KeyStrategy,
    NearCache,
    NearCachedDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
    RetryPolicy,
    load_settings,
    settings_from_url,
)
from cache_service_client.config import SettingsFields
from cache_service_client.container import build_tracking
from cache_service_client.testing import (
    RedisClusterServers,
    RedisSentinelServers,
    wait_for_invalidations,
)
from tests.backends import meta
from tests.integration.test_topologies import migrate_slot
from tests.redis_server import RedisServer, command

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
    assert isinstance(client, redis.Redis)
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


def test_writes_deletes_and_expiry_by_another_client_are_seen(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache],
    other: RedisDeviceMetadataRepository,
) -> None:
    repo, _ = near
    other.put_many([meta("w"), meta("d")])
    assert repo.get("w").datatype_unit == "C"
    repo.get("d")
    other.put(meta("w", datatype_unit="F"))
    other.delete("d")
    eventually(lambda: repo.get("w").datatype_unit == "F", what="a write elsewhere")
    eventually(lambda: not repo.exists("d"), what="a delete elsewhere")
    other.ttl = 0.3
    other.put(meta("e"))
    assert repo.get("e") == meta("e")
    time.sleep(0.35)
    # Gone on the cache's own clock, whenever Redis reports the expiry.
    with pytest.raises(DeviceNotFoundError):
        repo.get("e")


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


def test_a_racing_writer_leaves_no_stale_reads(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache],
    redis_client: redis.Redis,
    other: RedisDeviceMetadataRepository,
    key_strategy: KeyStrategy,
) -> None:
    repo, cache = near
    stale = 0
    for trial in range(20):
        device_id = f"hot-{trial}"
        other.put(meta(device_id, additional_properties={"n": 0}))
        seen: list[int] = []
        done = threading.Event()

        def read(
            device_id: str = device_id, seen: list[int] = seen, done: threading.Event = done
        ) -> None:
            while not done.is_set():
                seen.append(repo.get(device_id).additional_properties["n"])

        reader = threading.Thread(target=read)
        reader.start()
        for n in range(1, 60):
            other.put(meta(device_id, additional_properties={"n": n}))
        wait_for_invalidations(cache, redis_client, key_strategy)
        done.set()
        reader.join()
        assert seen == sorted(seen), "a reader saw a version older than one it had seen"
        # Every change has been heard: from now on, only the final value.
        for _ in range(50):
            if repo.get(device_id).additional_properties["n"] != 59:
                stale += 1
    assert stale == 0


def test_killed_connections_flush_the_cache_and_nothing_stale_survives(
    near: tuple[NearCachedDeviceMetadataRepository, NearCache],
    redis_client: redis.Redis,
    other: RedisDeviceMetadataRepository,
    key_strategy: KeyStrategy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "cache_service_client.near_cache")
    repo, cache = near
    other.put(meta("k", additional_properties={"n": 0}))
    assert repo.get("k").additional_properties["n"] == 0
    done = threading.Event()
    written = [0]

    def write() -> None:
        while not done.is_set():
            written[0] += 1
            other.put(meta("k", additional_properties={"n": written[0]}))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(5):
            flushes = cache.stats().flushes
            command(redis_client, "CLIENT", "KILL", "TYPE", "pubsub")
            command(redis_client, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            eventually(lambda f=flushes: cache.stats().flushes > f, what="a flush")  # type: ignore[misc]
            assert cache.wait_connected(5.0)
            repo.get("k")
    finally:
        done.set()
        writer.join()
    wait_for_invalidations(cache, redis_client, key_strategy)
    assert repo.get("k").additional_properties["n"] == written[0]
    # Each loss and each reconnection is logged at INFO, naming the server in extra= fields.
    logged = [r for r in caplog.records if r.name == "cache_service_client.near_cache"]
    lost = [r for r in logged if "lost" in r.getMessage()]
    tracking = [r for r in logged if r not in lost and "tracking" in r.getMessage()]
    assert lost
    assert tracking
    assert {r.levelno for r in lost + tracking} == {logging.INFO}
    server = redis_client.connection_pool.connection_kwargs
    assert {getattr(r, "near_cache_server", None) for r in lost + tracking} == {
        f"{server['host']}:{server['port']}"
    }
    assert all(getattr(r, "near_cache_error", "") for r in lost)


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


# -- cluster and Sentinel ---------------------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterServers]:
    """A cluster of this test's own: a slot gets migrated."""
    cluster = RedisClusterServers()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


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
        flushes = reader.near_cache_stats().flushes
        assert migrate_slot(own_cluster, key_slot(keys.device_key(moved_id).encode()), 0.0) > 0
        # The slot map changed: the next topology check flushes the cache.
        eventually(lambda: reader.near_cache_stats().flushes > flushes, what="a topology flush")
        assert near.near_cache.wait_connected(10.0)
        reader.get_many_device_metadata_sync(ids)
        for device_id in ids:
            writer.store_device_metadata(device_id, {**PLAN, "n": 1})
        for device_id in ids:
            eventually(
                lambda d=device_id: (
                    reader.get_device_metadata_sync(d).additional_properties["n"]  # type: ignore[misc]
                    == 1
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
    setup = RedisSentinelServers()
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
