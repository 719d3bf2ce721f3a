"""A jittery link (0-3 ms per chunk, each way) and a storm of cancelled async calls: no reply may
ever reach the wrong caller, and the facade's pool must be whole afterwards."""

from __future__ import annotations

import asyncio
import random

from cache_service_client import CacheServiceClient
from cache_service_client._pool import BoundedAsyncConnectionPool
from tests.delay_proxy import DelayProxy
from tests.redis_server import RedisServer

DEVICES = 300
OPERATIONS = 20_000
CONCURRENCY = 200
CANCEL_SHARE = 0.1
POOL = 32


async def test_cancelled_calls_never_cross_replies(own_redis: RedisServer) -> None:
    rng = random.Random(13)
    with DelayProxy(own_redis.port, delay=0.0, jitter=0.003, seed=13) as proxy:
        client = CacheServiceClient(
            host="127.0.0.1", port=proxy.port, max_connections=POOL, socket_timeout=5
        )
        ids = [f"dev-{i:03d}" for i in range(DEVICES)]
        await client.store_many_device_metadata(
            {d: {"datatype_id": d, "datatype_name": "n", "persist": True} for d in ids}
        )
        crossed = cancelled = completed = 0

        async def read(device_id: str) -> None:
            nonlocal crossed, completed
            if rng.random() < 0.5:
                got = await client.get_device_metadata(device_id)
                ok = got.device_id == device_id and got.datatype_id == device_id
            else:
                many = await client.get_many_device_metadata([device_id, "missing"])
                ok = list(many) == [device_id] and many[device_id].datatype_id == device_id
            crossed += not ok
            completed += 1

        for start in range(0, OPERATIONS, CONCURRENCY):
            tasks = [
                asyncio.ensure_future(read(rng.choice(ids)))
                for _ in range(min(CONCURRENCY, OPERATIONS - start))
            ]
            doomed = rng.sample(tasks, int(len(tasks) * CANCEL_SHARE))
            await asyncio.sleep(rng.uniform(0, 0.004))
            for task in doomed:
                task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                assert outcome is None or isinstance(outcome, asyncio.CancelledError), outcome
                cancelled += outcome is not None
        assert crossed == 0
        # The pool is whole: every slot free, nobody waiting; the next calls all work.
        pool = (await client.container.async_redis_client()).connection_pool
        assert isinstance(pool, BoundedAsyncConnectionPool)
        assert (pool._free_slots, len(pool._slot_waiters)) == (POOL, 0)
        assert await asyncio.gather(*[client.device_exists(d) for d in ids]) == [True] * DEVICES
        assert await client.count_devices() == DEVICES
        await client.aclose()
    print(
        f"\ncancellation storm: {OPERATIONS} async reads ({cancelled} cancelled in flight, "
        f"{completed} completed) over a 0-3 ms jitter link: {crossed} crossed replies; "
        f"pool of {POOL} whole afterwards"
    )
