"""What the Redis repositories do to Redis itself: layout, indexes, costs, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache_service_client import (
    AsyncRedisDeviceMetadataRepository,
    BackendConnectionError,
    DeviceMetadata,
    DeviceQuery,
    IndexLayoutError,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    MetadataCodec,
    RedisDeviceMetadataRepository,
)
from tests import backends
from tests.backends import PLAIN, datatype_time_index, write_layout_1
from tests.redis_server import free_port

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def meta(device_id: str) -> DeviceMetadata:
    """The suite's factory (tests/backends.py), plain: no unit, no properties."""
    return backends.meta(device_id, **PLAIN, last_updated=NOW)


@pytest.fixture
def repo(redis_client: redis.Redis, key_strategy: KeyStrategy) -> RedisDeviceMetadataRepository:
    return RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy, ttl=60)


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def calls_during(client: redis.Redis, action: object) -> dict[str, int]:
    client.config_resetstat()
    assert callable(action)
    action()
    stats = commandstats(client)
    stats.pop("config|resetstat", None)
    stats.pop("config", None)
    return stats


def test_value_is_readable_json_with_ttl_and_schema_version(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put(meta("sensor-1"))
    raw = redis_client.get(key_strategy.device_key("sensor-1"))
    assert isinstance(raw, bytes)
    assert raw.startswith(b'{"v":1,"device_id":"sensor-1"')
    assert 59_000 < redis_client.pttl(key_strategy.device_key("sensor-1")) <= 60_000
    expiry = redis_client.zscore(key_strategy.expiry_index(), "sensor-1")
    assert expiry is not None
    assert abs(expiry - (time.time() * 1000 + 60_000)) < 2_000
    score = NOW.timestamp() * 1000 * 2 + 1  # ms * 2 + persist
    assert redis_client.zscore(key_strategy.by_time_index(), "sensor-1") == score
    assert (
        redis_client.zscore(datatype_time_index(redis_client, key_strategy, "t"), "sensor-1")
        == score
    )
    assert redis_client.hgetall(key_strategy.types_index()) == {b"t": b"1"}
    assert redis_client.zscore(key_strategy.by_type_index(), "sensor-1") == 1 * 2 + 1
    assert redis_client.zscore(key_strategy.ids_index(), "sensor-1") == 1  # persist
    assert redis_client.get(key_strategy.layout_key()) == b"2"


def test_no_ttl_means_no_expiry(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put(meta("d"))
    repo.ttl = None
    repo.put(meta("d"))
    assert redis_client.pttl(key_strategy.device_key("d")) == -1
    assert redis_client.zscore(key_strategy.expiry_index(), "d") is None


def test_scan_match_on_the_prefix_finds_only_device_values(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put_many([meta("a"), meta("b")])
    found = set(redis_client.scan_iter(match=key_strategy.device_pattern(), count=1000))
    assert found == {key_strategy.device_key("a").encode(), key_strategy.device_key("b").encode()}


def test_reads_never_scan_the_keyspace(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis
) -> None:
    repo.put_many([meta(f"d{i}") for i in range(50)])

    def reads() -> None:
        repo.list_ids()
        repo.list_ids(pattern="d1*")
        repo.list_ids(pattern="*9", limit=2)
        repo.count()
        repo.info()

    stats = calls_during(redis_client, reads)
    assert "scan" not in stats
    assert "keys" not in stats


def test_batches_are_one_round_trip(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis
) -> None:
    items = [meta(f"d{i}") for i in range(200)]
    stats = calls_during(redis_client, lambda: repo.put_many(items))
    assert stats.get("evalsha", 0) + stats.get("eval", 0) == 1
    stats = calls_during(redis_client, lambda: repo.get_many([f"d{i}" for i in range(200)]))
    assert stats == {"mget": 1}


def test_reads_skip_expired_entries_and_writes_remove_them(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.ttl = 0.2
    repo.put_many([meta(f"d{i}") for i in range(20)])
    repo.ttl = None
    repo.put(meta("stays"))
    time.sleep(0.35)
    t_index = datatype_time_index(redis_client, key_strategy, "t")
    indexes = (key_strategy.ids_index(), key_strategy.by_time_index(), t_index)

    def reads() -> None:
        assert repo.count() == 1
        assert repo.list_ids() == ["stays"]
        assert [m.device_id for m in repo.query(DeviceQuery(sort="last_updated")).items] == [
            "stays"
        ]
        assert repo.info().total_devices == 1

    stats = calls_during(redis_client, reads)  # counts the commands scripts call too
    assert not {"zrem", "srem", "del", "unlink", "zadd", "set", "hset"} & set(stats), stats
    for index in indexes:  # reads changed nothing
        assert redis_client.zcard(index) == 21
    # A put with a TTL removes up to 16 expired entries of its bucket, then the next one the rest.
    repo.ttl = 60
    repo.put(meta("new"))
    assert redis_client.zcard(key_strategy.expiry_index()) == 20 - 16 + 1
    repo.put(meta("new"))
    for index in indexes:
        assert sorted(redis_client.zrange(index, 0, -1)) == [b"new", b"stays"]
    assert redis_client.zrange(key_strategy.expiry_index(), 0, -1) == [b"new"]
    reads_after = repo.count(), repo.list_ids()
    assert reads_after == (2, ["new", "stays"])


def test_foreign_deletes_are_skipped_by_reads_and_removed_by_repair(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put_many([meta("a"), meta("b"), meta("c")])
    redis_client.delete(key_strategy.device_key("b"))
    assert repo.list_ids() == ["a", "c"]
    assert redis_client.zcard(key_strategy.ids_index()) == 3  # a read changes nothing
    report = repo.repair()
    assert report.orphans_removed >= 1
    assert redis_client.zcard(key_strategy.ids_index()) == 2
    assert repo.count() == 2


def test_time_walks_skip_gone_entries_once(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    # Damaged indexes, as another tool could leave them: the gone devices x0-x2 are listed in a
    # second datatype's time index too. The walks must skip them, and return no device twice.
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy, ttl=None)
    ms = [NOW + timedelta(milliseconds=i) for i in range(20)]
    repo.put_many(
        [
            *(msgspec.structs.replace(meta(f"x{i}"), last_updated=ms[i]) for i in range(3)),
            *(msgspec.structs.replace(meta(f"y{i}"), last_updated=ms[10 + i]) for i in range(9)),
            msgspec.structs.replace(meta("z"), datatype_id="other"),
        ]
    )
    other = datatype_time_index(redis_client, key_strategy, "other")
    redis_client.zadd(other, {f"x{i}": 1 for i in range(3)})
    redis_client.delete(*(key_strategy.device_key(f"x{i}") for i in range(3)))
    everything = repo.query(DeviceQuery(sort="last_updated", limit=100))
    assert [m.device_id for m in everything.items] == ["z", *(f"y{i}" for i in range(9))]
    only_other = repo.query(DeviceQuery(sort="last_updated", datatype_id="other"))
    assert [m.device_id for m in only_other.items] == ["z"]
    ids: list[str] = []
    query = DeviceQuery(sort="last_updated", limit=5, datatype_id="t")
    while True:
        page = repo.query(query)
        ids += [m.device_id for m in page.items]
        if page.next_cursor is None:
            break
        query = msgspec.structs.replace(query, cursor=page.next_cursor)
    assert ids == [f"y{i}" for i in range(9)]
    # The walk skipped the gone devices and changed no index (repair removes them).
    assert redis_client.zcard(datatype_time_index(redis_client, key_strategy, "t")) == 12
    assert redis_client.zcard(other) == 4


def test_scripts_are_reloaded_after_script_flush(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis
) -> None:
    repo.put(meta("a"))
    redis_client.script_flush()
    repo.put(meta("b"))
    assert repo.list_ids() == ["a", "b"]


def test_msgpack_codec_and_decode_responses_client(
    redis_url: str, key_strategy: KeyStrategy
) -> None:
    with redis.Redis.from_url(redis_url) as client:
        packed = RedisDeviceMetadataRepository(
            client, key_strategy=key_strategy, codec=MetadataCodec("msgpack")
        )
        packed.put(meta("m"))
        assert packed.get("m") == meta("m")
    text_keys = KeyStrategy(prefix=key_strategy.prefix + "-text")
    with redis.Redis.from_url(redis_url, decode_responses=True) as text_client:
        text = RedisDeviceMetadataRepository(text_client, key_strategy=text_keys)
        text.put_many([meta("é"), meta("a")])
        assert text.get("é") == meta("é")
        assert text.list_ids(pattern="*") == ["a", "é"]
        assert text.get_many(["a", "x"]) == {"a": meta("a")}
        assert text.info().total_devices == 2


def test_unreachable_server_raises_connection_error_and_health_is_unhealthy() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    repo = RedisDeviceMetadataRepository(client)
    with pytest.raises(BackendConnectionError) as caught:
        repo.get("a")
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    health = repo.health()
    assert health.status == "unhealthy"
    assert health.latency_ms is None


async def test_async_unreachable_server() -> None:
    client = redis.asyncio.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=AsyncRetry(NoBackoff(), 0)
    )
    repo = AsyncRedisDeviceMetadataRepository(client, close_client=True)
    with pytest.raises(BackendConnectionError):
        await repo.put(meta("a"))
    assert (await repo.health()).status == "unhealthy"
    await repo.close()


# -- index layout versions ---------------------------------------------------------------------


def fleet(n: int, prefix: str = "d") -> list[DeviceMetadata]:
    return [
        msgspec.structs.replace(
            meta(f"{prefix}{i:03d}"),
            datatype_id=("t", "h", "p")[i % 3],
            persist=i % 4 != 0,
            last_updated=NOW + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def test_a_layout_1_cache_asks_for_repair_which_rebuilds_it_in_place(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    devices = fleet(60)
    at = write_layout_1(redis_client, key_strategy, devices, 60_000)
    index_reads: list[Callable[[], object]] = [
        repo.count,
        repo.info,
        repo.list_ids,
        lambda: repo.query(DeviceQuery(datatype_id="t")),
        lambda: repo.query(DeviceQuery(sort="last_updated")),
        lambda: repo.put(meta("new")),
        lambda: repo.delete("d001"),
    ]
    own = f"{key_strategy.prefix}*"  # the test's keys only: the server is shared
    before = {key: redis_client.dump(key) for key in redis_client.keys(own)}
    for operation in index_reads:
        with pytest.raises(IndexLayoutError, match="layout version 1; run repair"):
            operation()
    assert {key: redis_client.dump(key) for key in redis_client.keys(own)} == before
    assert repo.get("d001") == devices[1]  # values read as ever
    assert repo.get_many(["d002", "x"]) == {"d002": devices[2]}

    report = repo.repair()
    assert report.scanned == 60
    assert report.indexed == 60
    assert redis_client.get(key_strategy.layout_key()) == b"2"
    assert not redis_client.exists(key_strategy.legacy_datatypes_index())
    assert not redis_client.keys(key_strategy.legacy_updated_index("*"))
    assert repo.count() == 60
    expiry = redis_client.zscore(key_strategy.expiry_index(), "d000")
    assert expiry is not None
    assert abs(expiry - at) <= 1000  # from the key's PTTL
    memory = InMemoryDeviceMetadataRepository(ttl=None)
    memory.put_many(devices)
    for query in (
        DeviceQuery(datatype_id="t", limit=7),
        DeviceQuery(persist=False, descending=True),
        DeviceQuery(sort="last_updated", datatype_id="h", persist=True),
        DeviceQuery(sort="device_id", updated_after=NOW + timedelta(seconds=30)),
    ):
        assert repo.query(query) == memory.query(query)
    assert repo.repair().indexed == 0


def test_repair_migrates_while_writers_go_on(
    redis_url: str, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    write_layout_1(redis_client, key_strategy, fleet(3000), 600_000)
    writer = RedisDeviceMetadataRepository(
        redis.Redis.from_url(redis_url), key_strategy=key_strategy, ttl=600
    )
    written: list[DeviceMetadata] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set() or i < 20:
            try:
                item = msgspec.structs.replace(fleet(1, f"w{i}-")[0], datatype_id=f"w{i % 4}")
                writer.put(item)
                written.append(item)
            except IndexLayoutError:
                pass  # before the repair marked the bucket: retried by the next write
            except BaseException as exc:
                errors.append(exc)
                return
            i += 1

    thread = threading.Thread(target=write)
    thread.start()
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy)
    try:
        repo.repair()
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert errors == []
    assert written
    assert repo.count() == 3000 + len(written)
    for item in written[-5:]:
        page = repo.query(DeviceQuery(datatype_id=item.datatype_id, pattern=item.device_id))
        assert page.items == [item]
    assert repo.repair().indexed == 0


def test_a_layout_newer_than_the_library_is_refused(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put(meta("a"))
    redis_client.set(key_strategy.layout_key(), "3")
    for operation in (repo.count, repo.list_ids, repo.repair, lambda: repo.put(meta("b"))):
        with pytest.raises(IndexLayoutError, match="layout version 3, which this library"):
            operation()
    assert repo.get("a") == meta("a")
