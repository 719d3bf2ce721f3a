# Generated from _near_async.py by scripts/unasync.py: edit that file, not this one.
"""The near-cached repository (generated from _near_async.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cache_service_client._validation import validate_device_id, validate_device_ids
from cache_service_client.exceptions import DeviceNotFoundError
from cache_service_client.models import BatchGetResult, DeviceMetadata, HealthStatus
from cache_service_client.repository.base import _Forwarding, log_corrupted
from cache_service_client.repository.near import (
    ABSENT,
    NearCache,
    _combine,
    _NearCached,
    _nothing,
    _one,
    _Read,
    _Write,
)

if TYPE_CHECKING:
    from cache_service_client.repository.redis import RedisDeviceMetadataRepository

__all__ = ["NearCachedDeviceMetadataRepository"]


class NearCachedDeviceMetadataRepository(_NearCached["RedisDeviceMetadataRepository"], _Forwarding):
    """A Redis repository whose reads of single devices are served from a :class:`NearCache`.

    ``get``, ``get_many``, ``get_many_detailed`` and ``exists`` answer from the cache where
    they can and read only the rest from Redis (with the keys' PTTL, in one round trip); every
    other method is the wrapped repository's (never cached). Writes through this repository
    drop their ids' entries at once (reads that follow see the write without waiting for
    Redis's report). ``health`` adds the near cache's state to ``details["near_cache"]``.

    Args:
        repository: The Redis repository (single node, Sentinel or cluster).
        cache: The near cache (thread-safe); shared with other repositories of the same data
            if you like, the sync and async ones of a client included. The repository does not
            close it: the owner (the container) does; ``close`` closes the wrapped repository
            only.
    """

    def __init__(self, repository: RedisDeviceMetadataRepository, cache: NearCache) -> None:
        self._inner = repository
        self._cache = cache

    @property
    def wrapped(self) -> RedisDeviceMetadataRepository:
        """The Redis repository behind the cache."""
        return self._inner

    def _read(self, device_ids: list[str]) -> BatchGetResult:
        with _Read(self._cache, device_ids) as read:
            return read.done(self._inner.get_many_expiring(device_ids))

    def get(self, device_id: str) -> DeviceMetadata:
        """Return the metadata of ``device_id``: from the cache, else from Redis."""
        value = self._cache.lookup(device_id)
        if value is None:
            validate_device_id(device_id)
            return _one(device_id, self._read([device_id]))
        if value is ABSENT:
            raise DeviceNotFoundError(device_id)
        return value  # type: ignore[no-any-return]

    def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """Read a batch: the cached part from the process, the rest in one round trip."""
        ids = validate_device_ids(device_ids)
        cached, rest = self._cache.split(ids)
        return _combine(ids, cached, self._read(rest) if rest else _nothing())

    def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """Read a batch; missing and corrupted ids are left out."""
        return log_corrupted(self.get_many_detailed(device_ids))

    def exists(self, device_id: str) -> bool:
        """Whether ``device_id`` has metadata (a cached answer when there is one)."""
        value = self._cache.lookup(device_id)
        if value is None:
            return self._inner.exists(device_id)
        return value is not ABSENT

    def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """Write one device; its cached entry is dropped."""
        with _Write(self._cache, [metadata]):
            return self._inner.put(metadata, if_newer=if_newer)

    def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """Write a batch; the cached entries of its devices are dropped."""
        with _Write(self._cache, items) as batch:
            return self._inner.put_many(batch, if_newer=if_newer)

    def delete(self, device_id: str) -> bool:
        """Delete one device; its cached entry is dropped."""
        with _Write(self._cache, [device_id]):
            return self._inner.delete(device_id)

    def delete_many(self, device_ids: Iterable[str]) -> int:
        """Delete a batch; the cached entries of its devices are dropped."""
        with _Write(self._cache, device_ids) as batch:
            return self._inner.delete_many(batch)

    def health(self) -> HealthStatus:
        """The wrapped repository's ``health``, with the near cache's state in ``details``."""
        return self._health(self._inner.health())
