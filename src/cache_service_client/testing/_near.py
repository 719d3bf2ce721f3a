"""Waiting until a near cache has heard every change made so far."""

from __future__ import annotations

import itertools
import time
import uuid

import redis
from redis.cluster import RedisCluster

from cache_service_client.keys import KeyStrategy
from cache_service_client.models import BatchGetResult
from cache_service_client.repository.near import NearCache

__all__ = ["wait_for_invalidations"]

#: Candidate marker ids tried at most to find one per bucket (or per primary).
_CANDIDATES = 1_000_000


def _markers(client: redis.Redis | RedisCluster, keys: KeyStrategy) -> list[str]:
    """Marker ids whose keys cover every server that can hold a device key.

    One server: one marker. A cluster: one per bucket (a bucket's keys share one hash slot, so
    its marker lands where the bucket's devices are); without buckets, one per primary.
    """
    base = f"barrier-{uuid.uuid4().hex}"
    if not isinstance(client, RedisCluster):
        return [base]
    wanted: set[object]
    if keys.buckets > 1:
        wanted = set(range(keys.buckets))

        def target(device_id: str) -> object:
            return keys.bucket_of(device_id)

    else:
        wanted = {node.name for node in client.get_primaries()}

        def target(device_id: str) -> object:
            node = client.get_node_from_key(keys.device_key(device_id))
            return node.name

    markers: list[str] = []
    for n in range(_CANDIDATES):
        if not wanted:
            break
        candidate = f"{base}-{n}"
        place = target(candidate)
        if place in wanted:
            wanted.discard(place)
            markers.append(candidate)
    return markers


def _await_reports(
    cache: NearCache,
    client: redis.Redis | RedisCluster,
    keys: KeyStrategy,
    markers: list[str],
    deadline: float,
    timeout: float,
) -> None:
    """Plant a cached "not found" per marker, write the markers' keys, wait for every report."""
    token = cache.begin(markers)
    nothing = BatchGetResult(found={}, missing=list(markers), corrupted={})
    cache.finish(token, markers, nothing, [-2] * len(markers), time.monotonic())
    if not all(marker in cache for marker in markers):
        raise TimeoutError("the near cache lost its connection while waiting")
    written: list[str] = []
    try:
        for marker in markers:
            key = keys.device_key(marker)
            written.append(key)
            client.set(key, b"marker", px=max(1, int(timeout * 1000)))
        pending = list(markers)
        while pending:
            pending = [marker for marker in pending if marker in cache]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no invalidation report within {timeout:g} s "
                    f"({len(pending)} of {len(markers)} markers unreported)"
                )
            time.sleep(0.001)
    finally:
        for key in written:
            client.delete(key)


def wait_for_invalidations(
    cache: NearCache,
    client: redis.Redis | RedisCluster,
    keys: KeyStrategy,
    timeout: float = 5.0,
) -> None:
    """Return once ``cache`` has heard every change made to Redis before the call.

    For tests that write through another client and then read through a near cache. Redis
    reports changes in order on each tracking connection, so once the report of a marker key
    written last on a server has arrived, so have all the server's reports before it. This
    plants a cached "not found" for marker ids, writes their keys with ``client`` and waits
    until every report has dropped its entry (then deletes the keys). On a single node or
    through Sentinel one marker does; on a cluster there is one per bucket of ``keys`` (a
    bucket's keys share a hash slot, so every primary that holds device keys gets a marker),
    or, without buckets, one per primary. The markers take entries of the cache while they
    wait: at most ``cache.size`` at a time (in rounds, if there are more), evicting the least
    recently used. Changes to a slot made on the primary it moved away from during the call
    are not waited for (the cache flushes when it sees the slot map change).

    Args:
        cache: The near cache.
        client: A sync client on the same server or cluster (it writes the markers).
        keys: The key strategy the cache tracks.
        timeout: Seconds to wait for tracking to connect, and then for all the reports.

    Raises:
        TimeoutError: If tracking is not connected, or not every report came, within
            ``timeout`` (or the cache lost a tracking connection while waiting).
    """
    if not cache.wait_connected(timeout):
        raise TimeoutError(f"the near cache did not connect within {timeout:g} s")
    markers = _markers(client, keys)
    deadline = time.monotonic() + timeout
    rounds = iter(markers)
    while chunk := list(itertools.islice(rounds, cache.size)):
        _await_reports(cache, client, keys, chunk, deadline, timeout)
