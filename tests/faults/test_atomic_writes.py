"""Writes that cannot half-happen: a write that fails leaves every key exactly as it was.

Each failure is one the server raises inside a write script: an index key of the wrong type, an
ACL user denied one index key (or, on Redis 7, allowed only to read it), and maxmemory. Each is
tried on put, put_many, delete and delete_many, with expired entries waiting to be removed (a
put with a TTL removes them), and the whole keyspace is compared before and after, value by
value (DUMP) and TTL by TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
import redis

from cache_service_client import (
    AuthenticationError,
    BackendError,
    DeviceMetadata,
    KeyStrategy,
    RedisDeviceMetadataRepository,
)
from tests import backends
from tests.backends import PLAIN, datatype_time_index
from tests.redis_server import RedisServer

KEYS = KeyStrategy()
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def meta(device_id: str, datatype_id: str = "t") -> DeviceMetadata:
    """The suite's factory (tests/backends.py), plain, named after its datatype."""
    plain = {**PLAIN, "datatype_id": datatype_id, "datatype_name": datatype_id}
    return backends.meta(device_id, **plain, last_updated=NOW)


def snapshot(admin: redis.Redis) -> dict[bytes | str, tuple[bytes | None, bool]]:
    """Every key's serialized value, and whether it has an expiry."""
    return {key: (admin.dump(key), admin.pttl(key) > 0) for key in admin.keys("*")}


@pytest.fixture
def seeded(own_redis: RedisServer) -> Iterator[tuple[RedisDeviceMetadataRepository, redis.Redis]]:
    """Devices in two datatypes, some with a TTL, and three expired ones still indexed."""
    admin = redis.Redis(port=own_redis.port)
    repo = RedisDeviceMetadataRepository(redis.Redis(port=own_redis.port), ttl=0.2)
    repo.put_many([meta(f"old-{i}", ("t", "h")[i % 2]) for i in range(3)])
    repo.ttl = 3600
    repo.put_many([meta(f"d{i}", ("t", "h")[i % 2]) for i in range(8)])
    time.sleep(0.3)
    assert admin.zcard(KEYS.expiry_index()) == 11  # the three expired ones wait for a write
    try:
        yield repo, admin
    finally:
        repo.close()
        admin.close()


def writes(repo: RedisDeviceMetadataRepository, datatype: str) -> list[Callable[[], object]]:
    """Each write path, on devices of ``datatype`` (stored and new ones)."""
    return [
        lambda: repo.put(meta("d1", datatype)),
        lambda: repo.put(meta("new", datatype)),
        lambda: repo.put_many([meta("d0"), meta("d3", datatype), meta("new-2", datatype)]),
        lambda: repo.delete("d1"),
        lambda: repo.delete_many(["d0", "d1", "d2"]),
    ]


def test_an_index_key_of_the_wrong_type_changes_nothing(
    seeded: tuple[RedisDeviceMetadataRepository, redis.Redis],
) -> None:
    repo, admin = seeded
    damaged_keys = (
        datatype_time_index(admin, KEYS, "h"),
        KEYS.expiry_index(),
        KEYS.ids_index(),
        KEYS.by_type_index(),
        KEYS.by_time_index(),
        KEYS.types_index(),
        KEYS.layout_key(),
    )
    for damaged in damaged_keys:
        saved = admin.dump(damaged)
        assert saved is not None
        admin.delete(damaged)
        if damaged == KEYS.layout_key():
            admin.rpush(damaged, "not a string")
        else:
            admin.set(damaged, "not a sorted set")
        before = snapshot(admin)
        for write in writes(repo, "h"):
            with pytest.raises(BackendError, match="WRONGTYPE"):
                write()
            assert snapshot(admin) == before, damaged
        admin.delete(damaged)
        admin.restore(damaged, 0, saved)
    # Undamaged again: every write works, and the expired entries go.
    for write in writes(repo, "h"):
        write()
    assert admin.zcard(KEYS.expiry_index()) == admin.zcard(KEYS.ids_index())


def test_a_user_denied_one_index_key_changes_nothing(
    own_redis: RedisServer, seeded: tuple[RedisDeviceMetadataRepository, redis.Redis]
) -> None:
    _, admin = seeded
    version = tuple(int(p) for p in admin.info("server")["redis_version"].split(".")[:2])
    fixed = ("ids", "expiry", "types", "by-type", "by-time", "layout")
    allowed = ["~device:*", *(f"~device?index:{name}" for name in fixed)]
    t_index, h_index = (datatype_time_index(admin, KEYS, dt) for dt in ("t", "h"))
    allowed.append("~" + t_index.replace(" ", "?"))
    users = {"denied": [*allowed]}  # nothing at all on the time index of "h"
    if version >= (7, 0):
        users["reader"] = [*allowed, "%R~" + h_index.replace(" ", "?")]  # may read it only
    for name, keys in users.items():
        admin.acl_setuser(name, enabled=True, passwords=["+pw"], keys=keys, commands=["+@all"])
        client = redis.Redis(port=own_redis.port, username=name, password="pw")
        repo = RedisDeviceMetadataRepository(client, ttl=3600)
        before = snapshot(admin)
        for write in writes(repo, "h"):
            with pytest.raises(AuthenticationError) as caught:
                write()
            assert "permission" in str(caught.value).lower()
            if version >= (7, 0):  # redis.acl_check_cmd: the script names the key
                assert h_index in str(caught.value)
            assert snapshot(admin) == before, name
        # What the user may do, it does (without a TTL, a put removes no expired entries,
        # which here would be in the denied index).
        repo.ttl = None
        assert repo.put(meta("fine", "t")) is True
        admin.delete(KEYS.device_key("fine"))
        for index in (KEYS.ids_index(), KEYS.by_type_index(), KEYS.by_time_index(), t_index):
            admin.zrem(index, "fine")
        repo.close()


def test_maxmemory_changes_nothing_and_deletes_still_free_memory(
    seeded: tuple[RedisDeviceMetadataRepository, redis.Redis],
) -> None:
    repo, admin = seeded
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(int(admin.info("memory")["used_memory"]) - 1024))
    try:
        before = snapshot(admin)
        for write in writes(repo, "h")[:3]:  # the puts: refused, before any change
            with pytest.raises(BackendError, match="maxmemory"):
                write()
            assert snapshot(admin) == before
        # Deletes are allowed over maxmemory (they free memory), and happen whole.
        assert repo.delete_many(["d0", "d1"]) == 2
        assert not admin.exists(KEYS.device_key("d0"), KEYS.device_key("d1"))
        time_indexes = (datatype_time_index(admin, KEYS, dt) for dt in ("t", "h"))
        for index in (KEYS.ids_index(), KEYS.by_type_index(), KEYS.by_time_index(), *time_indexes):
            assert admin.zscore(index, "d0") is None
            assert admin.zscore(index, "d1") is None
    finally:
        admin.config_set("maxmemory", "0")
    assert repo.put(meta("d0")) is True


def test_a_conditional_put_that_fails_changes_nothing_either(
    seeded: tuple[RedisDeviceMetadataRepository, redis.Redis],
) -> None:
    repo, admin = seeded
    h_index = datatype_time_index(admin, KEYS, "h")
    admin.delete(h_index)
    admin.set(h_index, "x")
    before = snapshot(admin)
    newer = DeviceMetadata(
        device_id="d1",
        datatype_id="h",
        datatype_name="h",
        persist=False,
        last_updated=NOW + timedelta(days=1),
    )
    with pytest.raises(BackendError, match="WRONGTYPE"):
        repo.put(newer, if_newer=True)
    with pytest.raises(BackendError, match="WRONGTYPE"):
        repo.put_many([newer, meta("z")], if_newer=True)
    assert snapshot(admin) == before
