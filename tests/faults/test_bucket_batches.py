"""Batches over several buckets: a bucket that refuses writes nothing anywhere.

A batch whose devices live in several buckets runs one script per bucket (on a Redis Cluster,
on several masters). Each script is all or nothing; across buckets, a check pass in every bucket
comes first, so that a refusal (an index key of the wrong type, an ACL denial, maxmemory) in one
bucket raises its error with every key of every bucket exactly as before. A failure that
begins only between the check and the writes fails its own buckets: the error
(:class:`PartialWriteError`) says which devices were carried out and which were not, and they
are exactly so on the servers.

Tested on one node with four buckets, and on a three-master cluster with one master refusing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from cache_service_client import (
    AuthenticationError,
    BackendError,
    DeviceMetadata,
    KeyStrategy,
    PartialWriteError,
    RedisDeviceMetadataRepository,
)
from cache_service_client.repository.redis import flows
from cache_service_client.repository.redis.driver import SyncRedisDriver
from cache_service_client.testing import RedisClusterServers
from tests import backends
from tests.backends import PLAIN
from tests.redis_server import RedisServer, server_binary

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
KEYS = KeyStrategy(buckets=4)
FIXED = ("ids", "expiry", "types", "by-type", "by-time", "layout")


def meta(device_id: str, datatype_id: str = "t") -> DeviceMetadata:
    plain = {**PLAIN, "datatype_id": datatype_id, "datatype_name": datatype_id}
    return backends.meta(device_id, **plain, last_updated=NOW)


def ids_of(bucket: int, count: int, stem: str = "d") -> list[str]:
    found: list[str] = []
    n = 0
    while len(found) < count:
        if KEYS.bucket_of(f"{stem}{n}") == bucket:
            found.append(f"{stem}{n}")
        n += 1
    return found


#: Two stored devices and one new one in each bucket.
STORED = {bucket: ids_of(bucket, 2) for bucket in range(4)}
NEW = {bucket: ids_of(bucket, 1, "new-") for bucket in range(4)}
EVERY_BUCKET = [i for b in range(4) for i in (*STORED[b], *NEW[b])]


def snapshot(admins: list[redis.Redis]) -> list[dict[bytes | str, tuple[bytes | None, bool]]]:
    """Every key's serialized value, and whether it has an expiry, on each server."""
    return [{k: (a.dump(k), a.pttl(k) > 0) for k in a.keys("*")} for a in admins]


def batch_writes(repo: RedisDeviceMetadataRepository) -> list[Callable[[], object]]:
    """put_many (plain, conditional, new datatype) and delete_many over every bucket."""
    newer = [meta(i, "h") for i in EVERY_BUCKET]
    return [
        lambda: repo.put_many([meta(i) for i in EVERY_BUCKET]),
        lambda: repo.put_many(newer, if_newer=True),
        lambda: repo.delete_many(EVERY_BUCKET),
    ]


def seed(repo: RedisDeviceMetadataRepository) -> None:
    repo.put_many([meta(i, ("t", "h")[n % 2]) for b in range(4) for n, i in enumerate(STORED[b])])


# -- one node, four buckets ----------------------------------------------------------------


@pytest.fixture
def node(own_redis: RedisServer) -> Iterator[tuple[RedisDeviceMetadataRepository, redis.Redis]]:
    admin = redis.Redis(port=own_redis.port)
    repo = RedisDeviceMetadataRepository(
        redis.Redis(port=own_redis.port), key_strategy=KEYS, ttl=3600, close_client=True
    )
    seed(repo)
    try:
        yield repo, admin
    finally:
        repo.close()
        admin.close()


def test_an_index_of_the_wrong_type_in_one_bucket_changes_no_bucket(
    node: tuple[RedisDeviceMetadataRepository, redis.Redis],
) -> None:
    repo, admin = node
    for damaged in (KEYS.ids_index(2), KEYS.by_type_index(2), KEYS.layout_key(2)):
        saved = admin.dump(damaged)
        assert saved is not None
        admin.delete(damaged)
        if damaged == KEYS.layout_key(2):
            admin.rpush(damaged, "not a string")
        else:
            admin.set(damaged, "not a sorted set")
        before = snapshot([admin])
        for write in batch_writes(repo):
            with pytest.raises(BackendError, match="WRONGTYPE"):
                write()
            assert snapshot([admin]) == before, damaged
        admin.delete(damaged)
        admin.restore(damaged, 0, saved)
    assert repo.put_many([meta(i) for i in EVERY_BUCKET]) == len(EVERY_BUCKET)


def time_index(admin: redis.Redis, bucket: int, datatype: str) -> str:
    """The time index of ``datatype`` in ``bucket`` (the datatype numbers are the bucket's)."""
    number = admin.hget(KEYS.types_index(bucket), datatype)
    assert number is not None
    return KEYS.datatype_time_index(int(number), bucket)


def escape(key: str) -> str:
    """``key`` as an ACL key pattern that matches it (a space, which the ACL syntax does not
    take, matches as ``?``)."""
    return "".join("?" if c == " " else f"\\{c}" if c in "*?[]\\" else c for c in key)


def deny(admin: redis.Redis, user: str, denied: str) -> None:
    """Let ``user`` (password ``pw``) run everything on every key but ``denied``: every key the
    server holds, every device key and every time index a write may create (datatype numbers
    up to 5)."""
    keys = {k.decode() if isinstance(k, bytes) else k for k in admin.keys("*")}
    keys |= {KEYS.datatype_time_index(n, b) for b in range(4) for n in range(1, 6)}
    patterns = ["~" + escape(k) for k in sorted(keys - {denied})]
    patterns += ["~" + escape(KEYS.bucket_device_prefix(b)) + "*" for b in range(4)]
    admin.acl_setuser(
        user, enabled=True, reset_keys=True, passwords=["+pw"], keys=patterns, commands=["+@all"]
    )


def test_a_user_denied_one_buckets_time_index_changes_no_bucket(
    own_redis: RedisServer, node: tuple[RedisDeviceMetadataRepository, redis.Redis]
) -> None:
    _, admin = node
    # A stored device of bucket 2 is of "h": put_many (to "t") and delete_many change its
    # entry in the time index of "h", which the user may not touch.
    deny(admin, "app", time_index(admin, 2, "h"))
    client = redis.Redis(port=own_redis.port, username="app", password="pw")
    repo = RedisDeviceMetadataRepository(client, key_strategy=KEYS, ttl=3600, close_client=True)
    try:
        before = snapshot([admin])
        for write in (batch_writes(repo)[0], batch_writes(repo)[2]):
            with pytest.raises(AuthenticationError, match="permission"):
                write()
            assert snapshot([admin]) == before
    finally:
        repo.close()


def test_maxmemory_refuses_a_batch_whole_and_deletes_still_free_memory(
    node: tuple[RedisDeviceMetadataRepository, redis.Redis],
) -> None:
    repo, admin = node
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # over it, whatever the server holds
    try:
        before = snapshot([admin])
        for write in batch_writes(repo)[:2]:
            with pytest.raises(BackendError, match="maxmemory"):
                write()
            assert snapshot([admin]) == before
        # A conditional batch that would write nothing (every update stored already) is no
        # write: it passes over maxmemory, as within one bucket.
        stored = [meta(i, ("t", "h")[n % 2]) for b in range(4) for n, i in enumerate(STORED[b])]
        assert repo.put_many(stored, if_newer=True) == 0
        assert snapshot([admin]) == before
        assert repo.delete_many(EVERY_BUCKET) == 8
    finally:
        admin.config_set("maxmemory", "0")
    assert admin.dbsize() == 0  # a bucket without devices has no indexes either


def test_a_user_denied_a_command_changes_no_bucket(
    own_redis: RedisServer, node: tuple[RedisDeviceMetadataRepository, redis.Redis]
) -> None:
    # A command, not a key: HSET (a new datatype gets its number with it). Redis 7 and Valkey
    # tell it before anything is written (redis.acl_check_cmd); Redis 6.2 cannot.
    _, admin = node
    if not hasattr_acl_check_cmd(admin):
        pytest.skip("the server has no redis.acl_check_cmd (Redis 6.2)")
    admin.acl_setuser(
        "app", enabled=True, passwords=["+pw"], keys=["~*"], commands=["+@all", "-hset"]
    )
    client = redis.Redis(port=own_redis.port, username="app", password="pw")
    repo = RedisDeviceMetadataRepository(client, key_strategy=KEYS, ttl=3600, close_client=True)
    try:
        before = snapshot([admin])
        with pytest.raises(AuthenticationError, match="HSET"):
            repo.put_many([meta(i, "brand-new") for i in EVERY_BUCKET])
        assert snapshot([admin]) == before
        assert repo.put_many([meta(i) for i in EVERY_BUCKET]) == 12  # no new datatype: fine
    finally:
        repo.close()


def test_a_user_denied_zrem_changes_no_bucket_of_a_put_without_ttl(
    own_redis: RedisServer, node: tuple[RedisDeviceMetadataRepository, redis.Redis]
) -> None:
    # Without a TTL, each written device's entry in the expiry index is removed (ZREM).
    _, admin = node
    if not hasattr_acl_check_cmd(admin):
        pytest.skip("the server has no redis.acl_check_cmd (Redis 6.2)")
    admin.acl_setuser(
        "app", enabled=True, passwords=["+pw"], keys=["~*"], commands=["+@all", "-zrem"]
    )
    client = redis.Redis(port=own_redis.port, username="app", password="pw")
    repo = RedisDeviceMetadataRepository(client, key_strategy=KEYS, ttl=None, close_client=True)
    try:
        before = snapshot([admin])
        with pytest.raises(AuthenticationError, match="ZREM"):
            repo.put_many([meta(i) for i in EVERY_BUCKET])
        assert snapshot([admin]) == before
    finally:
        repo.close()


def hasattr_acl_check_cmd(admin: redis.Redis) -> bool:
    return bool(admin.eval("if redis.acl_check_cmd then return 1 else return 0 end", 0))


# -- a cluster of three masters, one of them refusing ------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers(binary=server_binary()) as servers:
        yield servers


def master_of(key: str, masters: int = 3) -> int:
    """The index in ``RedisClusterServers.nodes`` of the master of ``key``'s slot (the slots
    are assigned evenly, in node order)."""
    share = 16384 // masters
    return min(int(key_slot(key.encode())) // share, masters - 1)


@pytest.fixture
def on_cluster(
    cluster: RedisClusterServers,
) -> Iterator[tuple[RedisDeviceMetadataRepository, list[redis.Redis], int]]:
    """A repository over the cluster, seeded; the masters' admin clients; the refusing master
    (the one of bucket 2), which owns no other bucket of the four."""
    admins = [redis.Redis(port=port) for port in cluster.ports]
    for admin in admins:
        admin.flushall()
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    repo = RedisDeviceMetadataRepository(client, key_strategy=KEYS, ttl=3600, close_client=True)
    seed(repo)
    refusing = master_of(KEYS.ids_index(2))
    others = {master_of(KEYS.ids_index(b)) for b in (0, 1, 3)}
    assert others - {refusing}, "the buckets must span more than the refusing master"
    try:
        yield repo, admins, refusing
    finally:
        repo.close()
        for admin in admins:
            admin.config_set("maxmemory", "0")
            admin.close()


def test_on_a_cluster_a_master_with_a_damaged_index_changes_no_master(
    on_cluster: tuple[RedisDeviceMetadataRepository, list[redis.Redis], int],
) -> None:
    repo, admins, refusing = on_cluster
    damaged = KEYS.by_time_index(2)
    saved = admins[refusing].dump(damaged)
    assert saved is not None
    admins[refusing].delete(damaged)
    admins[refusing].set(damaged, "not a sorted set")
    before = snapshot(admins)
    for write in batch_writes(repo):
        with pytest.raises(BackendError, match="WRONGTYPE"):
            write()
        assert snapshot(admins) == before
    admins[refusing].delete(damaged)
    admins[refusing].restore(damaged, 0, saved)
    assert repo.delete_many(EVERY_BUCKET) == 8


def test_on_a_cluster_a_master_over_maxmemory_changes_no_master(
    on_cluster: tuple[RedisDeviceMetadataRepository, list[redis.Redis], int],
) -> None:
    repo, admins, refusing = on_cluster
    admin = admins[refusing]
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # over it, whatever the server holds
    before = snapshot(admins)
    for write in batch_writes(repo)[:2]:
        with pytest.raises(BackendError, match="maxmemory"):
            write()
        assert snapshot(admins) == before
    assert repo.delete_many(EVERY_BUCKET) == 8  # deletes free memory: allowed, whole


def test_on_a_cluster_a_master_refusing_every_write_refuses_a_delete_batch_too(
    on_cluster: tuple[RedisDeviceMetadataRepository, list[redis.Redis], int],
) -> None:
    # Too few replicas: every write command is refused, deletes too (unlike maxmemory).
    repo, admins, refusing = on_cluster
    admins[refusing].config_set("min-replicas-to-write", "1")
    try:
        before = snapshot(admins)
        for write in batch_writes(repo):
            with pytest.raises(BackendError, match="NOREPLICAS"):
                write()
            assert snapshot(admins) == before
    finally:
        admins[refusing].config_set("min-replicas-to-write", "0")
    assert repo.delete_many(EVERY_BUCKET) == 8


def test_on_a_cluster_a_master_denying_the_user_changes_no_master(
    cluster: RedisClusterServers,
    on_cluster: tuple[RedisDeviceMetadataRepository, list[redis.Redis], int],
) -> None:
    _, admins, refusing = on_cluster
    for n, admin in enumerate(admins):
        if n == refusing:  # this master denies one index of bucket 2
            deny(admin, "app", KEYS.by_type_index(2))
        else:
            admin.acl_setuser(
                "app", enabled=True, passwords=["+pw"], keys=["~*"], commands=["+@all"]
            )
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], username="app", password="pw")
    repo = RedisDeviceMetadataRepository(client, key_strategy=KEYS, ttl=3600, close_client=True)
    try:
        before = snapshot(admins)
        for write in batch_writes(repo):
            with pytest.raises(AuthenticationError, match="permission"):
                write()
            assert snapshot(admins) == before
    finally:
        repo.close()
        for admin in admins:
            admin.acl_deluser("app")


def test_on_a_cluster_a_refusal_that_begins_after_the_check_says_what_was_written(
    on_cluster: tuple[RedisDeviceMetadataRepository, list[redis.Redis], int],
) -> None:
    # The flow is stepped here, its commands run on the cluster for real: after the check
    # pass, the refusing master reaches maxmemory; then the writes.
    repo, admins, refusing = on_cluster
    driver = SyncRedisDriver(repo.client)
    context = flows.FlowContext(keys=KEYS, codec=repo.codec, ttl_ms=None)
    items = [meta(i, "fresh") for i in EVERY_BUCKET]
    flow = flows.put_many(context, items)
    check = next(flow)
    replies = driver._execute(check)
    assert replies == [0] * len(replies)
    admin = admins[refusing]
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # over it, whatever the server holds
    writes = flow.send(replies)
    with pytest.raises(PartialWriteError) as caught:
        flow.send(driver._execute(writes))
    error = caught.value
    on_refusing = [i for i in EVERY_BUCKET if master_of(KEYS.device_key(i)) == refusing]
    assert sorted(error.failed) == sorted(on_refusing)
    assert sorted(error.done) == sorted(set(EVERY_BUCKET) - set(on_refusing))
    assert error.count == len(error.done)
    assert not error.retryable
    assert "maxmemory" in str(error.errors[0])
    admin.config_set("maxmemory", "0")
    # What the error says is what the servers hold.
    got = repo.get_many(EVERY_BUCKET)
    assert {i for i, m in got.items() if m.datatype_id == "fresh"} == set(error.done)
