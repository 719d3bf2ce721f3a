"""A server that stops answering (``CLIENT PAUSE``): every call gives up in time with a documented
error, health reports it without raising, and everything works again when the pause ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from cache_service_client import BackendError, CacheServiceClient
from tests.redis_server import RedisServer

DEADLINE = 1.0
SOCKET_TIMEOUT = 0.25
PLAN = {"datatype_id": "t", "datatype_name": "n", "persist": True}


async def test_calls_end_by_their_deadline_during_a_pause(own_redis: RedisServer) -> None:
    client = CacheServiceClient.from_url(
        own_redis.url,
        socket_timeout=SOCKET_TIMEOUT,
        retry_deadline=DEADLINE,
        retry_attempts=50,
        retry_backoff_base=0.05,
    )
    client.store_device_metadata("dev-1", PLAN)
    assert await client.device_exists("dev-1")  # both pools hold a ready connection
    admin = redis.Redis(port=own_redis.port)
    sync_calls: dict[str, Callable[[], Any]] = {
        "get": lambda: client.get_device_metadata_sync("dev-1"),
        "put": lambda: client.store_device_metadata("dev-2", PLAN),
        "count": client.count_devices_sync,
    }
    async_calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get": lambda: client.get_device_metadata("dev-1"),
        "put": lambda: client.store_device_metadata_async("dev-2", PLAN),
        "count": client.count_devices,
    }
    took: dict[str, float] = {}
    admin.client_pause(int((3 * len(sync_calls) + 2) * DEADLINE * 1000), all=True)
    try:
        for name, call in sync_calls.items():
            started = time.monotonic()
            try:
                call()
            except BackendError:
                took[f"sync {name}"] = time.monotonic() - started
        for name, acall in async_calls.items():
            started = time.monotonic()
            try:
                await acall()
            except BackendError:
                took[f"async {name}"] = time.monotonic() - started
        started = time.monotonic()
        health = client.check_health_sync()  # never raises
        took["sync health"] = time.monotonic() - started
        started = time.monotonic()
        async_health = await client.check_health()
        took["async health"] = time.monotonic() - started
    finally:
        admin.client_unpause()
    assert len(took) == 2 * len(sync_calls) + 2, f"a call did not fail: {took}"
    assert (health.status, async_health.status) == ("unhealthy", "unhealthy")
    for name, seconds in took.items():
        if name.startswith("async") and "health" not in name:
            # Async attempts are cut off at the deadline.
            assert seconds <= DEADLINE * 1.1, (name, seconds)
        elif "health" in name:
            assert seconds <= SOCKET_TIMEOUT * 1.5, (name, seconds)
        else:
            # A sync attempt cannot be cut off, so no retry starts that would end after the
            # deadline (were it to take as long as the one before it).
            assert seconds <= DEADLINE * 1.1, (name, seconds)
    # The pause is over: the same client works again, without any action.
    client.store_device_metadata("dev-3", PLAN)
    assert len(await client.get_many_device_metadata(["dev-1", "dev-3"])) == 2
    assert set(await client.list_devices()) >= {"dev-1", "dev-3"}
    await client.aclose()
    admin.close()
    shown = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in took.items())
    print(
        f"\nCLIENT PAUSE (deadline {DEADLINE} s, socket_timeout {SOCKET_TIMEOUT} s): "
        f"every call failed with a BackendError in time: {shown}"
    )


def test_health_never_raises_while_paused(own_redis: RedisServer) -> None:
    client = CacheServiceClient.from_url(own_redis.url, socket_timeout=SOCKET_TIMEOUT)
    admin = redis.Redis(port=own_redis.port)
    admin.client_pause(1500, all=True)
    try:
        statuses = {client.check_health_sync().status for _ in range(3)}
        statuses.add(asyncio.run(client.check_health()).status)
    finally:
        admin.client_unpause()
        admin.close()
    assert statuses == {"unhealthy"}
    assert client.check_health_sync().status == "healthy"
    client.close()
