"""Redis repositories: thin shells that build a flow and hand it to their driver."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from cache_service_client._validation import validate_ttl
from cache_service_client.codec import MetadataCodec
from cache_service_client.config import DEFAULTS
from cache_service_client.exceptions import ConfigurationError
from cache_service_client.keys import KeyStrategy
from cache_service_client.models import (
    BatchGetResult,
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    Page,
    RepairReport,
)
from cache_service_client.repository.base import log_corrupted, replayable
from cache_service_client.repository.redis import flows
from cache_service_client.repository.redis.driver import AsyncRedisDriver, SyncRedisDriver
from cache_service_client.retry import RetryPolicy

__all__ = ["AsyncRedisDeviceMetadataRepository", "RedisDeviceMetadataRepository"]


def _context(
    client: Any,
    key_strategy: KeyStrategy | None,
    codec: MetadataCodec | None,
    ttl: float | None,
    health_slow_ms: float,
    health_memory_ratio: float,
) -> flows.FlowContext:
    codec = codec if codec is not None else MetadataCodec()
    if codec.format == "msgpack" and client.get_encoder().decode_responses:
        raise ConfigurationError(
            "codec: msgpack values are binary; use a client with decode_responses=False"
        )
    keys = key_strategy if key_strategy is not None else KeyStrategy()
    if isinstance(client, (RedisCluster, AsyncRedisCluster)) and keys.buckets == 1:
        raise ConfigurationError(
            "key_strategy: Redis Cluster needs a KeyStrategy with buckets > 1 "
            "(e.g. KeyStrategy(buckets=16)), so that each write stays in one slot"
        )
    return flows.FlowContext(
        keys=keys,
        codec=codec,
        ttl_ms=_ttl_ms(validate_ttl(ttl)),
        slow_ms=health_slow_ms,
        memory_ratio=health_memory_ratio,
    )


def _ttl_ms(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, round(ttl * 1000))


_Client = TypeVar(
    "_Client", "redis.Redis | RedisCluster", "redis.asyncio.Redis | AsyncRedisCluster"
)


class _Common(Generic[_Client]):
    """What both Redis repositories share: their construction and attributes."""

    _driver: SyncRedisDriver | AsyncRedisDriver

    def __init__(
        self,
        client: _Client,
        *,
        key_strategy: KeyStrategy | None = None,
        codec: MetadataCodec | None = None,
        ttl: float | None = DEFAULTS.metadata_ttl,
        close_client: bool = False,
        health_slow_ms: float = DEFAULTS.health_slow_ms,
        health_memory_ratio: float = DEFAULTS.health_memory_ratio,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._ctx = _context(client, key_strategy, codec, ttl, health_slow_ms, health_memory_ratio)
        self._driver = self._new_driver(client, retry if retry is not None else RetryPolicy())
        self._owns_client = close_client

    def _new_driver(
        self, client: _Client, retry: RetryPolicy
    ) -> SyncRedisDriver | AsyncRedisDriver:
        raise NotImplementedError

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call (read-only)."""
        return self._driver.retry

    @property
    def key_strategy(self) -> KeyStrategy:
        """The key strategy naming this repository's keys."""
        return self._ctx.keys

    @property
    def codec(self) -> MetadataCodec:
        """The codec of stored values."""
        return self._ctx.codec

    @property
    def ttl(self) -> float | None:
        """Seconds until a newly stored device expires (None: never); settable."""
        return None if self._ctx.ttl_ms is None else self._ctx.ttl_ms / 1000

    @ttl.setter
    def ttl(self, value: float | None) -> None:
        self._ctx.ttl_ms = _ttl_ms(validate_ttl(value))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key_strategy={self._ctx.keys!r}, ttl={self.ttl!r}, "
            f"codec={self._ctx.codec!r}, retry={self._driver.retry!r})"
        )


class RedisDeviceMetadataRepository(_Common["redis.Redis | RedisCluster"]):
    """A :class:`.DeviceMetadataRepository` on a single Redis node (sync).

    Args:
        client: A ``redis.Redis`` client (replies as bytes is best; ``decode_responses=True``
            works with the JSON codec).
        key_strategy: Names keys (default ``KeyStrategy()``).
        codec: Encodes values (default JSON).
        ttl: Seconds until a stored device expires; 0 or None: never.
        close_client: Close ``client`` in :meth:`close` (default: the caller owns it).
        retry: Retries transient failures (connection lost, timeout, ``LOADING``, ``BUSY``,
            failover, ...) of each call; None: ``RetryPolicy()``, the default policy. Use
            ``RetryPolicy.disabled()`` for none.
        health_slow_ms: A PING slower than this makes :meth:`health` "degraded".
        health_memory_ratio: used_memory / maxmemory above this makes it "degraded".

    This policy is the only retry layer: switch off redis-py's own retry on a client you pass
    in, e.g. ``redis.Redis(..., retry=Retry(NoBackoff(), 0))`` (``redis.retry.Retry``,
    ``redis.backoff.NoBackoff``; ``redis.asyncio.retry.Retry`` for async clients), so that
    attempts never multiply. The library's container does that for the clients it builds.
    Health checks are never retried: they report failures instead of raising. Writes are
    idempotent, so retrying one whose reply was lost is safe; only the count a retried delete
    returns may then miss what the lost attempt already deleted.
    """

    _driver: SyncRedisDriver

    def _new_driver(
        self, client: redis.Redis | RedisCluster, retry: RetryPolicy
    ) -> SyncRedisDriver:
        return SyncRedisDriver(client, retry)

    @property
    def client(self) -> redis.Redis | RedisCluster:
        """The redis-py client in use."""
        return self._driver.client

    def get(self, device_id: str) -> DeviceMetadata:
        """Return the metadata of ``device_id`` (one GET)."""
        return self._driver.run(flows.get, self._ctx, device_id)

    def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """Read a batch with one MGET; report found, missing and corrupted entries."""
        return self._driver.run(flows.get_many, self._ctx, replayable(device_ids))

    def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """Read a batch with one MGET; missing and corrupted ids are left out."""
        return log_corrupted(self.get_many_detailed(device_ids))

    def get_many_expiring(self, device_ids: Iterable[str]) -> tuple[BatchGetResult, list[int]]:
        """Read a batch and each key's PTTL in one round trip (what a near cache needs).

        Returns the batch and, per id in order, the PTTL reply: milliseconds left, -1 for no
        expiry, -2 for no key.
        """
        return self._driver.run(flows.get_many_expiring, self._ctx, replayable(device_ids))

    def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """Store one device and its index entries atomically; True if it was written."""
        return self._driver.run(flows.put, self._ctx, metadata, if_newer)

    def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """Store a batch: one script per bucket; return how many were written.

        Raises:
            PartialWriteError: The batch spans buckets and some of them failed while writing.
        """
        return self._driver.run(flows.put_many, self._ctx, replayable(items), if_newer)

    def delete(self, device_id: str) -> bool:
        """Delete one device; True if it was stored."""
        return self._driver.run(flows.delete, self._ctx, device_id)

    def delete_many(self, device_ids: Iterable[str]) -> int:
        """Delete a batch: one script per bucket; return how many were stored.

        Raises:
            PartialWriteError: The batch spans buckets and some of them failed while writing.
        """
        return self._driver.run(flows.delete_many, self._ctx, replayable(device_ids))

    def exists(self, device_id: str) -> bool:
        """True if a value is stored for ``device_id``."""
        return self._driver.run(flows.exists, self._ctx, device_id)

    def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """Return stored ids in order, filtered by a Redis glob; reads the ids index only."""
        return self._driver.run(
            flows.list_ids, self._ctx, pattern=pattern, limit=limit, offset=offset
        )

    def count(self) -> int:
        """Count stored devices from the indexes."""
        return self._driver.run(flows.count, self._ctx)

    def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """Return one page of devices matching ``query`` (index walk, then one MGET)."""
        return self._driver.run(flows.query, self._ctx, query)

    def repair(self) -> RepairReport:
        """Rebuild the indexes from the stored values.

        See :meth:`.DeviceMetadataRepository.repair`.
        """
        return self._driver.run(flows.repair, self._ctx)

    def info(self) -> CacheInfo:
        """Return cache figures from the indexes and INFO memory."""
        return self._driver.run(flows.info, self._ctx)

    def health(self) -> HealthStatus:
        """PING, INFO and a read-only permission probe, pipelined; never raises."""
        return self._driver.run(flows.health, self._ctx)

    def close(self) -> None:
        """Close the client if this repository owns it."""
        if self._owns_client:
            # redis-py 5.0 leaves RedisCluster.close untyped (later releases annotate it)
            self._driver.client.close()  # type: ignore[no-untyped-call, unused-ignore]


class AsyncRedisDeviceMetadataRepository(_Common["redis.asyncio.Redis | AsyncRedisCluster"]):
    """An :class:`.AsyncDeviceMetadataRepository` on a single Redis node.

    Takes the arguments of :class:`RedisDeviceMetadataRepository`, with a
    ``redis.asyncio.Redis`` client; switch off its own retry in the same way
    (``retry=redis.asyncio.retry.Retry(NoBackoff(), 0)``). A retry attempt of an async call is
    also cancelled when the policy's deadline passes.
    """

    _driver: AsyncRedisDriver

    def _new_driver(
        self, client: redis.asyncio.Redis | AsyncRedisCluster, retry: RetryPolicy
    ) -> AsyncRedisDriver:
        return AsyncRedisDriver(client, retry)

    @property
    def client(self) -> redis.asyncio.Redis | AsyncRedisCluster:
        """The redis-py client in use."""
        return self._driver.client

    async def get(self, device_id: str) -> DeviceMetadata:
        """Return the metadata of ``device_id`` (one GET)."""
        return await self._driver.run(flows.get, self._ctx, device_id)

    async def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """Read a batch with one MGET; report found, missing and corrupted entries."""
        return await self._driver.run(flows.get_many, self._ctx, replayable(device_ids))

    async def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """Read a batch with one MGET; missing and corrupted ids are left out."""
        return log_corrupted(await self.get_many_detailed(device_ids))

    async def get_many_expiring(
        self, device_ids: Iterable[str]
    ) -> tuple[BatchGetResult, list[int]]:
        """Read a batch and each key's PTTL in one round trip (what a near cache needs).

        Returns the batch and, per id in order, the PTTL reply: milliseconds left, -1 for no
        expiry, -2 for no key.
        """
        return await self._driver.run(flows.get_many_expiring, self._ctx, replayable(device_ids))

    async def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """Store one device and its index entries atomically; True if it was written."""
        return await self._driver.run(flows.put, self._ctx, metadata, if_newer)

    async def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """Store a batch: one script per bucket; return how many were written.

        Raises:
            PartialWriteError: The batch spans buckets and some of them failed while writing.
        """
        return await self._driver.run(flows.put_many, self._ctx, replayable(items), if_newer)

    async def delete(self, device_id: str) -> bool:
        """Delete one device; True if it was stored."""
        return await self._driver.run(flows.delete, self._ctx, device_id)

    async def delete_many(self, device_ids: Iterable[str]) -> int:
        """Delete a batch: one script per bucket; return how many were stored.

        Raises:
            PartialWriteError: The batch spans buckets and some of them failed while writing.
        """
        return await self._driver.run(flows.delete_many, self._ctx, replayable(device_ids))

    async def exists(self, device_id: str) -> bool:
        """True if a value is stored for ``device_id``."""
        return await self._driver.run(flows.exists, self._ctx, device_id)

    async def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """Return stored ids in order, filtered by a Redis glob; reads the ids index only."""
        return await self._driver.run(
            flows.list_ids, self._ctx, pattern=pattern, limit=limit, offset=offset
        )

    async def count(self) -> int:
        """Count stored devices from the indexes."""
        return await self._driver.run(flows.count, self._ctx)

    async def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """Return one page of devices matching ``query`` (index walk, then one MGET)."""
        return await self._driver.run(flows.query, self._ctx, query)

    async def repair(self) -> RepairReport:
        """Rebuild the indexes from the stored values.

        See :meth:`.DeviceMetadataRepository.repair`.
        """
        return await self._driver.run(flows.repair, self._ctx)

    async def info(self) -> CacheInfo:
        """Return cache figures from the indexes and INFO memory."""
        return await self._driver.run(flows.info, self._ctx)

    async def health(self) -> HealthStatus:
        """PING, INFO and a read-only permission probe, pipelined; never raises."""
        return await self._driver.run(flows.health, self._ctx)

    async def close(self) -> None:
        """Close the client if this repository owns it (``aclose()``)."""
        if self._owns_client:
            await self._driver.client.aclose()
