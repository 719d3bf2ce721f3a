"""Queries and index integrity beyond the contract: memory vs Redis on random data, costs,
and concurrent writers."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_service_client import (
    DeviceMetadata,
    DeviceQuery,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    RedisDeviceMetadataRepository,
)
from tests.backends import at_ms, datatype_time_index

BASE = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def meta(
    device_id: str, datatype_id: str = "t", persist: bool = True, ms: int = 0
) -> DeviceMetadata:
    return at_ms(device_id, datatype_id, persist, ms, base=BASE)


devices = st.lists(
    st.builds(
        meta,
        st.text(alphabet="ab1-*?[é", min_size=1, max_size=4),
        st.sampled_from(["t", "h", "c"]),
        st.booleans(),
        st.integers(0, 5),
    ),
    max_size=25,
    unique_by=lambda m: m.device_id,
)
queries = st.builds(
    DeviceQuery,
    datatype_id=st.none() | st.sampled_from(["t", "h", "x"]),
    persist=st.none() | st.booleans(),
    updated_after=st.none() | st.integers(-1, 5).map(lambda n: BASE + timedelta(milliseconds=n)),
    updated_before=st.none() | st.integers(0, 6).map(lambda n: BASE + timedelta(milliseconds=n)),
    pattern=st.none() | st.text(alphabet="ab1-*?[é\\", max_size=4),
    sort=st.sampled_from(["device_id", "last_updated"]),
    descending=st.booleans(),
    limit=st.integers(1, 6),
)


def walk(repo: Any, query: DeviceQuery) -> list[tuple[list[str], str | None, int | None]]:
    pages = []
    while True:
        page = repo.query(query)
        pages.append(([m.device_id for m in page.items], page.next_cursor, page.total))
        if page.next_cursor is None or len(pages) > 40:
            return pages
        query = msgspec.structs.replace(query, cursor=page.next_cursor)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=devices, query=queries, buckets=st.sampled_from([1, 3]))
def test_memory_answers_every_query_exactly_as_redis(
    redis_client: redis.Redis, items: list[DeviceMetadata], query: DeviceQuery, buckets: int
) -> None:
    keys = KeyStrategy(prefix=f"q-{uuid.uuid4().hex[:10]}", buckets=buckets)
    memory = InMemoryDeviceMetadataRepository(key_strategy=keys)
    real = RedisDeviceMetadataRepository(redis_client, key_strategy=keys)
    memory.put_many(items)
    real.put_many(items)
    try:
        assert walk(real, query) == walk(memory, query)
    finally:
        real.delete_many([m.device_id for m in items])


writes = st.lists(
    st.tuples(
        st.booleans(),  # if_newer
        st.lists(
            st.builds(
                meta,
                st.sampled_from(["a", "b", "c"]),
                st.sampled_from(["t", "h"]),
                st.booleans(),
                st.integers(0, 3),
            ),
            min_size=1,
            max_size=4,
        ),
    ),
    max_size=12,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=writes, buckets=st.sampled_from([1, 3]))
def test_memory_writes_conditionally_exactly_as_redis(
    redis_client: redis.Redis, batches: list[tuple[bool, list[DeviceMetadata]]], buckets: int
) -> None:
    keys = KeyStrategy(prefix=f"w-{uuid.uuid4().hex[:10]}", buckets=buckets)
    memory = InMemoryDeviceMetadataRepository(key_strategy=keys)
    real = RedisDeviceMetadataRepository(redis_client, key_strategy=keys)
    try:
        for if_newer, batch in batches:
            if len(batch) == 1:
                assert real.put(batch[0], if_newer=if_newer) == memory.put(
                    batch[0], if_newer=if_newer
                )
            else:
                assert real.put_many(batch, if_newer=if_newer) == memory.put_many(
                    batch, if_newer=if_newer
                )
        assert real.get_many(["a", "b", "c"]) == memory.get_many(["a", "b", "c"])
        for query in (DeviceQuery(sort="last_updated"), DeviceQuery(datatype_id="h")):
            assert walk(real, query) == walk(memory, query)
    finally:
        real.delete_many(["a", "b", "c"])


def test_queries_never_scan_the_keyspace(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy)
    repo.put_many([meta(f"d{i}", ("t", "h")[i % 2], i % 3 == 0, i) for i in range(60)])
    redis_client.config_resetstat()
    repo.query(DeviceQuery())
    repo.query(DeviceQuery(sort="last_updated", descending=True, persist=True))
    repo.query(DeviceQuery(datatype_id="h", pattern="d1*"))
    repo.query(DeviceQuery(sort="last_updated", datatype_id="t", updated_after=BASE))
    stats = redis_client.info("commandstats")
    assert "cmdstat_scan" not in stats
    assert "cmdstat_keys" not in stats


def index_state(client: redis.Redis, keys: KeyStrategy) -> dict[str, Any]:
    """What the indexes say, per device: (datatype, score), and the ids index.

    Checks that the indexes agree with each other: the ids score is the persist flag, the
    by-type score the datatype's number and persist, the device is in its datatype's time
    index only, with its by-time score.
    """

    def scored(key: str) -> dict[bytes, float]:
        entries: list[Any] = client.zrange(key, 0, -1, withscores=True)
        return dict(entries)

    ids = scored(keys.ids_index())
    state: dict[str, Any] = {"ids": sorted(ids)}
    names = {int(n): dt for dt, n in client.hgetall(keys.types_index()).items()}
    placed, by_time = scored(keys.by_type_index()), scored(keys.by_time_index())
    assert set(placed) == set(ids) == set(by_time)
    datatype_entry = {}
    for number, dt in names.items():
        entries: list[Any] = client.zrange(keys.datatype_time_index(number), 0, -1, withscores=True)
        for member, score in entries:
            assert member not in datatype_entry, "a device in two datatype indexes"
            assert placed[member] == number * 2 + int(score) % 2
            assert ids[member] == int(score) % 2
            assert by_time[member] == score
            datatype_entry[member] = (dt, int(score))
    assert set(datatype_entry) == set(ids)
    state["datatype_entry"] = datatype_entry
    state["expiry"] = sorted(client.zrange(keys.expiry_index(), 0, -1))
    return state


def scan_state(client: redis.Redis, keys: KeyStrategy) -> dict[str, Any]:
    """What a full scan of the values says the indexes should be."""
    datatype_entry = {}
    for key in client.scan_iter(match=keys.device_pattern(), count=1000):
        value = msgspec.json.decode(client.get(key) or b"{}", type=DeviceMetadata)
        ms = int(
            (value.last_updated - datetime(1970, 1, 1, tzinfo=timezone.utc))
            / timedelta(milliseconds=1)
        )
        datatype_entry[value.device_id.encode()] = (
            value.datatype_id.encode(),
            ms * 2 + int(value.persist),
        )
    ids = sorted(datatype_entry)
    return {"ids": ids, "datatype_entry": datatype_entry, "expiry": ids}


def test_concurrent_writers_and_deleters_leave_exact_indexes(
    redis_url: str, key_strategy: KeyStrategy
) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        client = redis.Redis.from_url(redis_url)
        repo = RedisDeviceMetadataRepository(client, key_strategy=key_strategy, ttl=600)
        try:
            for i in range(150):
                device = f"d{(worker * 7 + i) % 40}"
                repo.put_many([meta(device, ("t", "h", "c")[(worker + i) % 3], i % 2 == 0, i)])
                if i % 4 == worker % 4:
                    repo.delete(f"d{(i * 3) % 40}")
                if i % 25 == 0:
                    repo.list_ids(pattern="d1*")
                    repo.query(DeviceQuery(sort="last_updated", limit=5))
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    client = redis.Redis.from_url(redis_url)
    assert index_state(client, key_strategy) == scan_state(client, key_strategy)
    repo = RedisDeviceMetadataRepository(client, key_strategy=key_strategy)
    assert repo.repair().indexed == 0
    client.close()


def test_repair_rebuilds_deleted_indexes(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy)
    repo.put_many([meta(f"d{i}", ("t", "h")[i % 2], True, i) for i in range(30)])
    expected = index_state(redis_client, key_strategy)
    redis_client.delete(
        key_strategy.ids_index(),
        datatype_time_index(redis_client, key_strategy, "t"),
        key_strategy.by_type_index(),
        key_strategy.expiry_index(),
    )
    report = repo.repair()
    assert report.indexed == 30
    assert report.scanned == 30
    state = index_state(redis_client, key_strategy)
    assert state["ids"] == expected["ids"]
    assert state["datatype_entry"] == expected["datatype_entry"]
    assert state["expiry"] == expected["expiry"]  # TTLs recovered from the keys' PTTL
    assert repo.count() == 30


def test_query_fields_name_every_field_of_a_query() -> None:
    from cache_service_client.models import DeviceQuery, QueryFields

    assert set(QueryFields.__optional_keys__) == set(DeviceQuery.__struct_fields__)
