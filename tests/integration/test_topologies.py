"""Redis Cluster and Sentinel beyond the contract suite: redirections and failover."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from cache_service_client import (
    CacheServiceClient,
    DeviceMetadata,
    DeviceQuery,
    KeyStrategy,
    NearCache,
    RedisDeviceMetadataRepository,
)
from cache_service_client.testing import (
    RedisClusterServers,
    RedisSentinelServers,
    wait_for_invalidations,
)
from cache_service_client.testing._topologies import free_cluster_port
from tests.redis_server import RedisServer, command, server_binary

PLAN = {"datatype_id": "t", "datatype_name": "temperature", "persist": True}


def migrate_slot(
    cluster: RedisClusterServers, slot: int, pause: float, target_port: int | None = None
) -> int:
    """Move ``slot`` from its owner to another master, key by key, slowly: ASK, then MOVED.

    ``target_port``: the master to move it to (one that joined the cluster later, say);
    default: another of ``cluster``'s.
    """
    ports = [*cluster.ports]
    if target_port is not None and target_port not in ports:
        ports.append(target_port)
    clients = [redis.Redis(port=port) for port in ports]
    try:
        ids = {
            port: command(c, "CLUSTER", "MYID").decode()
            for port, c in zip(ports, clients, strict=True)
        }
        owner_port = next(
            port
            for port, c in zip(cluster.ports, clients, strict=True)
            if command(c, "CLUSTER", "COUNTKEYSINSLOT", slot) > 0
            or any(
                s[0] <= slot <= s[1] for s in command(c, "CLUSTER", "SLOTS") if int(s[2][1]) == port
            )
        )
        if target_port is None:
            target_port = next(port for port in cluster.ports if port != owner_port)
        source = clients[ports.index(owner_port)]
        target = clients[ports.index(target_port)]
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


def test_a_reshard_onto_a_new_empty_primary_is_absorbed(
    own_cluster: RedisClusterServers,
) -> None:
    """reads of keys moved to a primary that owned no slot raised AttributeError.

    redis-py (its issue #4015) follows the ASK redirect to a node missing from its map and
    fails on None; the driver makes that a retryable BackendConnectionError, and the near
    cache tracks the new primary from the moment it joins.
    """
    new = RedisServer(
        server_binary(),
        port=free_cluster_port(),
        extra_args=(
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "2000"),
        ),
    )
    new.start()
    client = CacheServiceClient.from_url(
        own_cluster.url,
        key_prefix="grow",
        cluster_buckets=4,
        near_cache_size=1000,
        retry_deadline=20.0,
        retry_attempts=100,
        retry_backoff_max=0.1,
    )
    nodes = [redis.Redis(port=port) for port in [*own_cluster.ports, new.port]]
    writer = RedisCluster(host="127.0.0.1", port=own_cluster.ports[0])
    try:
        keys: KeyStrategy = client.container.key_strategy()
        slot = key_slot(keys.ids_index(0).encode())
        ids = [f"dev-{i:04d}" for i in range(200)]
        client.store_many_device_metadata_sync({i: PLAN for i in ids})
        moving = [i for i in ids if key_slot(keys.device_key(i).encode()) == slot]
        assert len(moving) > 10
        cache = client.container.near_cache()
        assert isinstance(cache, NearCache)
        assert cache.wait_connected(5.0)
        command(nodes[-1], "CLUSTER", "MEET", "127.0.0.1", own_cluster.ports[0])

        def settled() -> bool:
            infos = [command(n, "CLUSTER", "INFO") for n in nodes]
            return all(b"known_nodes:4" in i and b"state:ok" in i for i in infos)

        _eventually(settled, "every node knows the new one")
        target = ("127.0.0.1", new.port)
        # The near cache tracks the new primary before it owns a slot.
        _eventually(lambda: target in cache.tracked_endpoints(), "the new node is tracked")
        assert cache.wait_connected(5.0)
        _eventually(settled, "the cluster is ok")
        errors: list[BaseException] = []
        done = threading.Event()
        reads = [0]

        def traffic() -> None:
            try:
                while not done.is_set():
                    n = reads[0]
                    assert client.get_device_metadata_sync(moving[n % len(moving)]).device_id
                    assert len(client.get_many_device_metadata_sync(moving)) == len(moving)
                    reads[0] += 1
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            moved = migrate_slot(own_cluster, slot, pause=0.05, target_port=new.port)
        finally:
            time.sleep(0.3)
            done.set()
            worker.join()
        assert moved > 0
        assert errors == []
        assert reads[0] > 3
        # A change made on the new primary by another client reaches the near cache.
        client.get_device_metadata_sync(moving[0])
        RedisDeviceMetadataRepository(writer, key_strategy=keys).put(
            DeviceMetadata(
                device_id=moving[0],
                datatype_id="t",
                datatype_name="changed",
                datatype_unit=None,
                persist=True,
                last_updated=datetime.now(timezone.utc),
            )
        )
        wait_for_invalidations(cache, writer, keys)
        assert client.get_device_metadata_sync(moving[0]).datatype_name == "changed"
        assert client.count_devices_sync() == 200
    finally:
        client.close()
        writer.close()
        for node in nodes:
            node.close()
        new.stop()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def _eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


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


def test_cluster_discovery_without_the_cluster_nodes_permission(
    cluster_client: RedisCluster,
) -> None:
    """An ACL user denied CLUSTER NODES: the near cache still tracks the slot owners."""
    from cache_service_client._factories import _cluster_discovery
    from cache_service_client.config import Settings

    primaries = cluster_client.get_primaries()
    nodes = [redis.Redis(host=n.host, port=n.port) for n in primaries]
    user = ("slots-only", "pw")
    try:
        for node in nodes:
            command(node, "ACL", "SETUSER", user[0], "on", ">" + user[1], "~*", "+@all")
            command(node, "ACL", "SETUSER", user[0], "-cluster", "+cluster|slots")
        first = primaries[0]
        limited = redis.Redis(host=first.host, port=first.port, username=user[0], password=user[1])
        with pytest.raises(redis.ResponseError):
            command(limited, "CLUSTER", "NODES")
        limited.close()

        def connect(endpoint: tuple[str, int] | str) -> redis.Connection:
            assert isinstance(endpoint, tuple)
            host, port = endpoint
            return redis.Connection(host=host, port=port, username=user[0], password=user[1])

        found, _ = _cluster_discovery(Settings(host=first.host, port=first.port), connect)()
        assert set(found) == {(n.host, n.port) for n in primaries}
    finally:
        for node in nodes:
            command(node, "ACL", "DELUSER", user[0])
            node.close()
