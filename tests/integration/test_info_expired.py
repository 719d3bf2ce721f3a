"""``info()`` with more expired entries at an end of the time index than one call examines.

The search goes on across calls, each bounded, and the answer is the twin's.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import redis

from cache_service_client import (
    DeviceMetadata,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    RedisDeviceMetadataRepository,
)
from cache_service_client.repository.redis import flows
from tests.backends import PLAIN, meta

WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
EXPIRED = flows.INFO_BUDGET + 100  # at each end
TTL = 6.0  # seconds: long enough to write them all before the first one expires


def device(device_id: str, ms: int) -> DeviceMetadata:
    return meta(device_id, **PLAIN, last_updated=WHEN + timedelta(milliseconds=ms))


def test_info_finds_the_oldest_and_newest_live_entry_past_its_budget(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    old = [device(f"old{i:05d}", i) for i in range(EXPIRED)]
    new = [device(f"new{i:05d}", 10_000_000 + i) for i in range(EXPIRED)]
    live = [device("live-a", 5_000_000), device("live-b", 6_000_000)]
    now = [time.time()]
    twin = InMemoryDeviceMetadataRepository(ttl=TTL, clock=lambda: now[0])
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy, ttl=TTL)
    started = time.monotonic()  # the Redis writes first: their TTL runs from here
    for target in (repo, twin):
        target.put_many(old + new)
        target.ttl = None  # a put without a TTL removes no expired entry
        target.put_many(live)
        if target is repo:
            written = time.monotonic() - started
            assert written < TTL, "too slow to test: entries expired while written"
    deadline = time.monotonic() + TTL + 10
    while redis_client.exists(*(key_strategy.device_key(m.device_id) for m in (old[0], new[-1]))):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    now[0] += TTL + 1
    assert redis_client.zcard(key_strategy.by_time_index()) == 2 * EXPIRED + 2
    got, expected = repo.info(), twin.info()
    assert got.total_devices == expected.total_devices == 2
    assert got.oldest_entry_timestamp == expected.oldest_entry_timestamp == live[0].last_updated
    assert got.newest_entry_timestamp == expected.newest_entry_timestamp == live[1].last_updated
