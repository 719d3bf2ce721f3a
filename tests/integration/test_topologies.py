"""Redis Cluster and Sentinel beyond the contract suite: redirections and failover."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from cache_service_client import CacheServiceClient, DeviceQuery, KeyStrategy
from cache_service_client.testing import RedisClusterServers, RedisSentinelServers
from tests.redis_server import command, server_binary

PLAN = {"datatype_id": "t", "datatype_name": "temperature", "persist": True}


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterServers]:
    """A cluster of this test's own: slots get migrated."""
    cluster = RedisClusterServers(binary=server_binary())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def migrate_slot(cluster: RedisClusterServers, slot: int, pause: float) -> int:
    """Move ``slot`` from its owner to another master, key by key, slowly: ASK, then MOVED."""
    clients = [redis.Redis(port=port) for port in cluster.ports]
    try:
        ids = {
            port: command(c, "CLUSTER", "MYID").decode()
            for port, c in zip(cluster.ports, clients, strict=True)
        }
        owner_port = next(
            port
            for port, c in zip(cluster.ports, clients, strict=True)
            if command(c, "CLUSTER", "COUNTKEYSINSLOT", slot) > 0
            or any(
                s[0] <= slot <= s[1] for s in command(c, "CLUSTER", "SLOTS") if int(s[2][1]) == port
            )
        )
        target_port = next(port for port in cluster.ports if port != owner_port)
        source = clients[cluster.ports.index(owner_port)]
        target = clients[cluster.ports.index(target_port)]
        command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner_port])
        command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target_port])
        moved = 0
        while True:
            keys = command(source, "CLUSTER", "GETKEYSINSLOT", slot, 5)
            if not keys:
                break
            command(source, "MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(pause)
        for c in clients:
            command(c, "CLUSTER", "SETSLOT", slot, "NODE", ids[target_port])
        return moved
    finally:
        for c in clients:
            c.close()


def test_moved_and_ask_redirections_during_a_slot_migration_are_absorbed(
    own_cluster: RedisClusterServers,
) -> None:
    client = CacheServiceClient.from_url(
        own_cluster.url,
        key_prefix="mig",
        cluster_buckets=4,
        retry_deadline=20.0,
        retry_attempts=100,
        retry_backoff_max=0.2,
    )
    keys: KeyStrategy = client.container.key_strategy()
    ids = [f"dev-{i:04d}" for i in range(400)]
    client.store_many_device_metadata_sync({i: PLAN for i in ids})
    slot = key_slot(keys.ids_index(0).encode())
    errors: list[BaseException] = []
    done = threading.Event()
    rounds = [0]

    def traffic() -> None:
        try:
            while not done.is_set():
                n = rounds[0]
                client.store_many_device_metadata_sync({ids[n % 400]: {**PLAN, "n": n}})
                assert client.get_device_metadata_sync(ids[(n * 7) % 400]).device_id
                assert len(client.get_many_device_metadata_sync(ids[:50])) == 50
                assert client.count_devices_sync() == 400
                page = client.repository.query(DeviceQuery(limit=20))
                assert len(page.items) == 20
                rounds[0] += 1
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        moved = migrate_slot(own_cluster, slot, pause=0.02)
    finally:
        time.sleep(0.2)
        done.set()
        worker.join()
    assert moved > 0
    assert errors == []
    assert rounds[0] > 5
    assert client.count_devices_sync() == 400
    assert client.list_devices_sync() == ids
    client.close()
    # redis-py's cluster client drops node connections it replaced during the reshard without
    # closing them; collect them here, quietly, rather than in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_sentinel_failover_is_absorbed() -> None:
    setup = RedisSentinelServers(binary=server_binary())
    setup.start()
    try:
        client = CacheServiceClient.from_url(setup.url, retry_deadline=20.0, socket_timeout=1.0)
        client.store_many_device_metadata_sync({f"d{i}": PLAN for i in range(20)})
        assert client.check_health_sync().status == "healthy"
        time.sleep(0.5)  # let the replica catch up
        new_master = setup.failover()
        assert setup.replica is not None
        assert new_master == setup.replica.port
        # Writes go on: the first ones meet READONLY or a dropped connection and are retried.
        for i in range(20, 40):
            client.store_device_metadata(f"d{i}", PLAN)
        assert client.count_devices_sync() == 40
        assert client.get_device_metadata_sync("d0").device_id == "d0"
        with redis.Redis(port=new_master) as promoted:
            assert promoted.dbsize() > 0
        client.close()
    finally:
        setup.stop()
