"""Errors the server itself raises: out of memory, a read-only replica, flushed scripts, killed
connections, missing permissions, a wrong password. Each is a documented error or recovered
from; a write that fails leaves the data as it was."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from cache_service_client import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    CacheServiceClient,
)
from tests.redis_server import RedisServer, server_binary

PLAN = {"datatype_id": "t", "datatype_name": "n", "persist": True}
QUICK: dict[str, Any] = {"socket_timeout": 0.5, "retry_deadline": 1.0, "retry_backoff_base": 0.02}


def _fleet(n: int) -> dict[str, dict[str, object]]:
    return {f"dev-{i:03d}": {**PLAN, "n": i} for i in range(n)}


def test_out_of_memory_is_a_backend_error_and_writes_nothing(own_redis: RedisServer) -> None:
    client = CacheServiceClient.from_url(own_redis.url, **QUICK)
    client.store_many_device_metadata_sync(_fleet(20))
    admin = redis.Redis(port=own_redis.port)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(int(admin.info("memory")["used_memory"]) - 1024))
    try:
        before = admin.dbsize()
        writes: list[Callable[[], object]] = [
            lambda: client.store_device_metadata("new", PLAN),
            lambda: client.store_many_device_metadata_sync(_fleet(30)),
        ]
        for write in writes:
            with pytest.raises(BackendError, match="maxmemory"):
                write()
            assert admin.dbsize() == before
        # Reads go on, and health says what is wrong.
        assert client.get_device_metadata_sync("dev-000").device_id == "dev-000"
        health = client.check_health_sync()
        assert health.status == "degraded"
        assert "maxmemory" in health.message
    finally:
        admin.config_set("maxmemory", "0")
    client.store_device_metadata("new", PLAN)  # and writes work again once there is room
    assert client.count_devices_sync() == 21
    client.close()
    admin.close()


def test_a_read_only_replica_refuses_writes_with_a_connection_error(
    own_redis: RedisServer,
) -> None:
    primary = CacheServiceClient.from_url(own_redis.url, **QUICK)
    primary.store_many_device_metadata_sync(_fleet(5))
    with redis.Redis(port=own_redis.port) as raw_primary:
        raw_primary.config_set("repl-diskless-sync-delay", "0")  # the first sync: now, not in 5 s
    replica = RedisServer(
        server_binary(), extra_args=("--replicaof", "127.0.0.1", str(own_redis.port))
    )
    replica.start()
    try:
        with redis.Redis(port=replica.port) as raw:
            for _ in range(500):  # until the first sync is done
                if raw.info("replication").get("master_link_status") == "up":
                    break
                time.sleep(0.01)
            before = raw.dbsize()
            client = CacheServiceClient(host="127.0.0.1", port=replica.port, **QUICK)
            # READONLY is what a replica answers during a failover: retried, then raised as a
            # connection error once the deadline is over.
            with pytest.raises(BackendConnectionError, match="read only replica"):
                client.store_device_metadata("new", PLAN)
            assert raw.dbsize() == before
            assert client.get_device_metadata_sync("dev-001").device_id == "dev-001"
            assert client.check_health_sync().status == "degraded"
            client.close()
    finally:
        replica.stop()
        primary.close()


def test_every_read_works_on_a_read_only_replica(own_redis: RedisServer) -> None:
    # Expired devices whose index entries nobody removed yet: a read that tried to remove them
    # would fail on the replica (READONLY).
    primary = CacheServiceClient.from_url(own_redis.url, metadata_ttl=0.3, **QUICK)
    primary.store_many_device_metadata_sync(
        {f"gone-{i}": {**PLAN, "datatype_id": ("t", "h")[i % 2]} for i in range(30)}
    )
    primary.configure(metadata_ttl=None)
    primary.store_many_device_metadata_sync(
        {f"dev-{i}": {**PLAN, "persist": i % 2 == 0, "datatype_id": ("t", "h")[i % 2]}
         for i in range(6)}
    )  # fmt: skip
    with redis.Redis(port=own_redis.port) as raw_primary:
        raw_primary.config_set("repl-diskless-sync-delay", "0")
    time.sleep(0.5)  # the 30 expire
    replica = RedisServer(
        server_binary(), extra_args=("--replicaof", "127.0.0.1", str(own_redis.port))
    )
    replica.start()
    try:
        with redis.Redis(port=replica.port) as raw:
            for _ in range(500):
                if raw.info("replication").get("master_link_status") == "up":
                    break
                time.sleep(0.01)
            assert raw.zcard("device index:ids") == 36  # the expired entries are there
            client = CacheServiceClient(host="127.0.0.1", port=replica.port, **QUICK)
            live = [f"dev-{i}" for i in range(6)]
            assert client.count_devices_sync() == 6
            assert client.list_devices_sync() == live
            assert client.list_devices_sync(pattern="gone-*") == []
            assert sorted(client.get_many_device_metadata_sync([*live, "gone-1"])) == live
            assert client.device_exists_sync("dev-1")
            assert not client.device_exists_sync("gone-1")
            queries: list[dict[str, Any]] = [
                {},
                {"sort": "last_updated"},
                {"sort": "last_updated", "descending": True, "datatype_id": "h"},
                {"datatype_id": "t", "persist": True},
                {"limit": 2},
            ]
            for query in queries:
                on_replica = client.query_devices_sync(**query)
                assert on_replica == primary.query_devices_sync(**query), query
            assert [m.device_id for m in client.query_devices_sync(limit=100).items] == live
            info = client.get_cache_info_sync()
            assert info.total_devices == 6
            assert info.oldest_entry_timestamp is not None
            assert asyncio.run(_async_reads(replica.port)) == (6, live)
            assert raw.zcard("device index:ids") == 36  # and nothing was written
            client.close()
    finally:
        replica.stop()
        primary.close()


async def _async_reads(port: int) -> tuple[int, list[str]]:
    async with CacheServiceClient(host="127.0.0.1", port=port, **QUICK) as client:
        page = await client.query_devices(sort="last_updated", limit=100)
        assert len(page.items) == 6
        return await client.count_devices(), await client.list_devices()


def test_flushed_scripts_and_killed_connections_are_recovered(own_redis: RedisServer) -> None:
    client = CacheServiceClient.from_url(own_redis.url, **QUICK)
    admin = redis.Redis(port=own_redis.port)
    try:
        client.store_device_metadata("a", PLAN)
        admin.script_flush()  # the next EVALSHA answers NOSCRIPT: the script is sent again
        client.store_device_metadata("b", PLAN)
        assert asyncio.run(_async_round(own_redis)) == 3
        # Every connection of the clients is killed; the next calls connect again.
        killed = admin.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        assert client.count_devices_sync() == 3
        client.store_device_metadata("d", PLAN)
        assert client.list_devices_sync() == ["a", "b", "c", "d"]
    finally:
        client.close()
        admin.close()


async def _async_round(server: RedisServer) -> int:
    client = CacheServiceClient.from_url(server.url, **QUICK)
    try:
        await client.store_device_metadata_async("c", PLAN)
        redis.Redis(port=server.port).script_flush()
        return await client.count_devices()
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "acl",
    [
        {"categories": ["+@all", "-@scripting"], "keys": ["*"]},  # may not run scripts
        {"categories": ["+@all"], "keys": ["other:*"]},  # may not touch the cache's keys
    ],
    ids=["no-scripts", "no-keys"],
)
def test_missing_permissions_are_authentication_errors(
    own_redis: RedisServer, acl: dict[str, Any]
) -> None:
    admin = redis.Redis(port=own_redis.port)
    admin.acl_setuser("limited", enabled=True, passwords=["+pw"], **acl)
    client = CacheServiceClient(
        host="127.0.0.1", port=own_redis.port, username="limited", password="pw", **QUICK
    )
    try:
        before = admin.dbsize()
        calls: list[Callable[[], object]] = [
            lambda: client.store_device_metadata("x", PLAN),
            lambda: client.store_many_device_metadata_sync(_fleet(3)),
            lambda: client.delete_device_metadata_sync("x"),
        ]
        for call in calls:
            with pytest.raises(AuthenticationError, match=r"NOPERM|permission"):
                call()
        assert admin.dbsize() == before
        assert client.check_health_sync().status in ("degraded", "unhealthy")
    finally:
        client.close()
        admin.close()


def test_a_wrong_password_is_an_authentication_error() -> None:
    server = RedisServer(server_binary(), extra_args=("--requirepass", "right"))
    server.start()
    try:
        client = CacheServiceClient(host="127.0.0.1", port=server.port, password="wrong", **QUICK)
        with pytest.raises(AuthenticationError):
            client.get_device_metadata_sync("x")
        with pytest.raises(AuthenticationError):
            asyncio.run(client.get_device_metadata("x"))
        health = client.check_health_sync()
        assert health.status == "unhealthy"
        assert health.message.startswith("authentication failed")
        client.close()
    finally:
        server.stop()
