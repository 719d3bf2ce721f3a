"""Waiting until a near cache has heard every change made so far."""

from __future__ import annotations

import time
import uuid

import redis
from redis.cluster import RedisCluster

from cache_service_client.keys import KeyStrategy
from cache_service_client.models import BatchGetResult
from cache_service_client.repository.near import NearCache

__all__ = ["wait_for_invalidations"]


def wait_for_invalidations(
    cache: NearCache,
    client: redis.Redis | RedisCluster,
    keys: KeyStrategy,
    timeout: float = 5.0,
) -> None:
    """Return once ``cache`` has heard every change made to Redis before the call.

    For tests that write through another client and then read through a near cache. Redis
    reports changes in order on a tracking connection, so once the report of a marker key
    written last has arrived, so have all before it: this plants a cached "not found" for a
    marker id, writes the marker's key with ``client`` and waits until its report drops the
    entry (then deletes the key).

    Args:
        cache: The near cache.
        client: A sync client on the same server or cluster (it writes the marker).
        keys: The key strategy the cache tracks.
        timeout: Seconds to wait for tracking to connect, and then for the report.

    Raises:
        TimeoutError: If tracking is not connected, or no report came, within ``timeout``.
    """
    if not cache.wait_connected(timeout):
        raise TimeoutError(f"the near cache did not connect within {timeout:g} s")
    marker = f"barrier-{uuid.uuid4().hex}"
    token = cache.begin([marker])
    nothing = BatchGetResult(found={}, missing=[marker], corrupted={})
    cache.finish(token, [marker], nothing, [-2], time.monotonic())
    if marker not in cache:
        raise TimeoutError("the near cache lost its connection while waiting")
    key = keys.device_key(marker)
    client.set(key, b"marker", px=max(1, int(timeout * 1000)))
    deadline = time.monotonic() + timeout
    try:
        while marker in cache:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no invalidation report within {timeout:g} s")
            time.sleep(0.001)
    finally:
        client.delete(key)
