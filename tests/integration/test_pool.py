"""The bounded async pool of the facade, against a real redis-server: backpressure, timeouts,
cancellation; never "Too many connections", never more connections than allowed."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from cache_service_client import CacheServiceClient
from cache_service_client._pool import BoundedAsyncConnectionPool
from tests.delay_proxy import DelayProxy

PLAN = {"datatype_id": "t", "datatype_name": "n", "persist": True}


def _connections_named(redis_url: str, name: str) -> int:
    with redis.Redis.from_url(redis_url) as admin:
        return sum(1 for c in admin.client_list() if c.get("name") == name)


def _pool(
    redis_url: str, name: str, size: int, timeout: float | None
) -> BoundedAsyncConnectionPool:
    return BoundedAsyncConnectionPool.from_url(
        redis_url, max_connections=size, timeout=timeout, client_name=name
    )


async def test_callers_wait_for_a_connection_and_never_exceed_the_bound(redis_url: str) -> None:
    name = f"bounded-{uuid.uuid4().hex[:8]}"
    pool = _pool(redis_url, name, 3, timeout=5)
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        replies = await asyncio.gather(*[client.echo(f"m{i}") for i in range(200)])
        assert replies == [f"m{i}".encode() for i in range(200)]
        assert _connections_named(redis_url, name) == 3
        assert (pool._free_slots, len(pool._slot_waiters)) == (3, 0)
    finally:
        await client.aclose()


async def test_a_caller_that_waits_too_long_gets_no_connection_available(redis_url: str) -> None:
    pool = _pool(redis_url, f"bounded-{uuid.uuid4().hex[:8]}", 1, timeout=0.2)
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        holder = asyncio.ensure_future(client.blpop([f"empty-{uuid.uuid4().hex}"], timeout=1))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        assert 0.15 < time.monotonic() - started < 0.9
        assert await holder is None  # BLPOP timed out on the server, as asked
        assert await client.ping() is True  # the slot came back
        assert (pool._free_slots, len(pool._slot_waiters)) == (1, 0)
    finally:
        await client.aclose()


async def test_cancelled_waiters_never_keep_a_slot(redis_url: str) -> None:
    pool = _pool(redis_url, f"bounded-{uuid.uuid4().hex[:8]}", 2, timeout=5)
    client = redis.asyncio.Redis.from_pool(pool)
    rng = random.Random(7)
    try:
        for _ in range(5):
            calls = [asyncio.ensure_future(client.echo(str(i))) for i in range(100)]
            await asyncio.sleep(0)
            cancelled = set(rng.sample(range(100), 30))
            for i in cancelled:
                calls[i].cancel()
            results = await asyncio.gather(*calls, return_exceptions=True)
            for i, result in enumerate(results):
                if i in cancelled and isinstance(result, asyncio.CancelledError):
                    continue
                assert result == str(i).encode(), (i, result)
        assert (pool._free_slots, len(pool._slot_waiters)) == (2, 0)
        assert await asyncio.gather(*[client.ping() for _ in range(10)]) == [True] * 10
    finally:
        await client.aclose()


async def test_a_call_cancelled_while_its_connection_is_set_up_frees_one_slot(
    redis_url: str,
) -> None:
    # redis-py releases a connection whose set-up was interrupted, through the pool's release();
    # its slot must come back once, not twice (which let more calls in than the pool allows,
    # and redis-py then refused them: "Too many connections").
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    with DelayProxy(int(port), delay=0.05, upstream_host=host) as proxy:
        pool = BoundedAsyncConnectionPool(
            max_connections=2, timeout=5, host="127.0.0.1", port=proxy.port
        )
        client = redis.asyncio.Redis.from_pool(pool)
        try:
            for _ in range(3):
                starting = [asyncio.ensure_future(client.ping()) for _ in range(2)]
                await asyncio.sleep(0.02)  # connecting: the handshake takes 0.1 s
                for call in starting:
                    call.cancel()
                await asyncio.gather(*starting, return_exceptions=True)
                assert (pool._free_slots, len(pool._slot_waiters)) == (2, 0)
            assert await asyncio.gather(*[client.ping() for _ in range(8)]) == [True] * 8
            assert (pool._free_slots, len(pool._slot_waiters)) == (2, 0)
        finally:
            await client.aclose()


async def test_the_facade_waits_instead_of_refusing(redis_url: str) -> None:
    client = CacheServiceClient.from_url(redis_url, max_connections=2, key_prefix="bounded")
    try:
        await client.store_device_metadata_async("d", PLAN)
        found = await asyncio.gather(*[client.device_exists("d") for _ in range(100)])
        assert found == [True] * 100
        pool = (await client.container.async_redis_client()).connection_pool
        assert isinstance(pool, BoundedAsyncConnectionPool)
        assert pool.timeout == client.settings.socket_timeout
        assert await client.delete_device_metadata("d")
    finally:
        await client.aclose()
