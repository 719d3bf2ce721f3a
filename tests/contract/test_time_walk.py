"""Walks by ``last_updated`` at the ends of the datetime range answer as the in-memory twin does.

Index scores there have 15 digits, which Lua's ``%.14g`` once rounded, so a cursor whose device
was deleted skipped its neighbours on Redis.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_service_client import (
    DeviceMetadata,
    DeviceMetadataRepository,
    DeviceQuery,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    RedisDeviceMetadataRepository,
)
from tests.backends import PLAIN, meta

LATEST = datetime.max.replace(tzinfo=timezone.utc)
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def device(device_id: str, when: datetime, datatype_id: str, persist: bool) -> DeviceMetadata:
    plain = {**PLAIN, "datatype_id": datatype_id, "datatype_name": datatype_id}
    return meta(device_id, **plain, persist=persist, last_updated=when)


def walk(
    repos: tuple[DeviceMetadataRepository, ...], query: DeviceQuery, deletes: list[bool]
) -> list[list[str]]:
    """Page through ``query`` on each repository alike; after page i, delete its last device
    when ``deletes[i]`` (the device the next cursor names). Returns each repository's pages."""
    pages: list[list[list[str]]] = [[] for _ in repos]
    cursors: list[str | None] = [None] * len(repos)
    for step in range(40):
        ids = []
        for i, repo in enumerate(repos):
            page = repo.query(msgspec_replace(query, cursors[i]))
            pages[i].append([m.device_id for m in page.items])
            cursors[i] = page.next_cursor
            ids.append(pages[i][-1])
        assert all(got == ids[0] for got in ids), (step, ids)
        if ids[0] and step < len(deletes) and deletes[step]:
            for repo in repos:
                repo.delete(ids[0][-1])
        if all(c is None for c in cursors):
            break
    return pages[0]


def msgspec_replace(query: DeviceQuery, cursor: str | None) -> DeviceQuery:
    return DeviceQuery(
        datatype_id=query.datatype_id,
        persist=query.persist,
        sort=query.sort,
        descending=query.descending,
        limit=query.limit,
        cursor=cursor,
    )


times = st.one_of(
    st.integers(1, 12).map(lambda ms: LATEST - timedelta(milliseconds=ms)),
    st.integers(0, 12).map(lambda ms: EARLIEST + timedelta(milliseconds=ms)),
)
fleets = st.dictionaries(
    st.sampled_from([f"d{i}" for i in range(10)]),
    st.tuples(times, st.sampled_from(["t", "h"]), st.booleans()),
    min_size=2,
    max_size=10,
)


@given(
    fleet=fleets,
    datatype=st.sampled_from([None, "t"]),
    persist=st.sampled_from([None, True]),
    descending=st.booleans(),
    limit=st.integers(1, 3),
    deletes=st.lists(st.booleans(), min_size=10, max_size=10),
)
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_time_walks_at_the_ends_of_time_answer_as_the_twin(
    redis_client: redis.Redis,
    fleet: dict[str, tuple[datetime, str, bool]],
    datatype: str | None,
    persist: bool | None,
    descending: bool,
    limit: int,
    deletes: list[bool],
) -> None:
    keys = KeyStrategy(prefix=f"test-{uuid.uuid4().hex[:12]}")
    on_redis = RedisDeviceMetadataRepository(redis_client, key_strategy=keys, ttl=None)
    twin = InMemoryDeviceMetadataRepository(key_strategy=keys, ttl=None)
    devices = [device(d, when, dt, p) for d, (when, dt, p) in sorted(fleet.items())]
    try:
        for repo in (on_redis, twin):
            repo.put_many(devices)
        query = DeviceQuery(
            datatype_id=datatype,
            persist=persist,
            sort="last_updated",
            descending=descending,
            limit=limit,
        )
        walk((on_redis, twin), query, deletes)
    finally:
        on_redis.delete_many(list(fleet))


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("end", ["latest", "earliest"])
def test_a_cursor_at_a_deleted_device_skips_none_at_the_ends_of_time(
    redis_client: redis.Redis, key_strategy: KeyStrategy, descending: bool, end: str
) -> None:
    # Ten devices a millisecond apart near datetime.max (min): whichever one the cursor names
    # is deleted, every other one is still listed, as the twin lists them.
    if end == "latest":
        stamps = [LATEST - timedelta(milliseconds=ms) for ms in range(1, 11)]
    else:
        stamps = [EARLIEST + timedelta(milliseconds=ms) for ms in range(10)]
    devices = [device(f"d{i}", when, "t", True) for i, when in enumerate(stamps)]
    query = DeviceQuery(sort="last_updated", descending=descending, limit=1)
    for victim in range(len(devices) - 1):
        keys = KeyStrategy(prefix=f"{key_strategy.prefix}-{victim}")
        on_redis = RedisDeviceMetadataRepository(redis_client, key_strategy=keys, ttl=None)
        twin = InMemoryDeviceMetadataRepository(key_strategy=keys, ttl=None)
        for repo in (on_redis, twin):
            repo.put_many(devices)
        pages = walk((on_redis, twin), query, [i == victim for i in range(len(devices))])
        assert sum(len(page) for page in pages) == len(devices)
