"""A wrapper that injects the faults of a :class:`Faults` into any async repository."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from cache_service_client.exceptions import BackendError
from cache_service_client.models import (
    BatchGetResult,
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    Page,
    RepairReport,
)
from cache_service_client.repository.base import AsyncDeviceMetadataRepository, unhealthy
from cache_service_client.testing._faults import Faults

__all__ = ["AsyncFaultyRepository"]


class AsyncFaultyRepository:
    """A :class:`.AsyncDeviceMetadataRepository` that injects faults into another one.

    Every call goes on to ``repository`` after the faults of ``faults``: an outage, latency
    (an ``asyncio.sleep``), or errors on chosen operations.

    Use it to test how a service copes when the cache fails::

        faulty = AsyncFaultyRepository(AsyncInMemoryDeviceMetadataRepository())
        service = MyService(repository=faulty)
        with faulty.faults.outage():
            assert await service.lookup("dev-1") is None   # the service degrades gracefully

    As with the real backends, :meth:`health` never raises: a fault makes it ``unhealthy``.

    Args:
        repository: The repository to wrap.
        faults: A :class:`Faults` to share with other wrappers (default: a new one).

    Attributes:
        repository: The wrapped repository.
        faults: The faults applied to every call.
    """

    def __init__(
        self, repository: AsyncDeviceMetadataRepository, faults: Faults | None = None
    ) -> None:
        self.repository = repository
        self.faults = faults if faults is not None else Faults()

    async def _before(self, operation: str) -> None:
        delay = self.faults.before(operation)
        if delay:
            await asyncio.sleep(delay)

    async def get(self, device_id: str) -> DeviceMetadata:
        """See :meth:`.AsyncDeviceMetadataRepository.get`."""
        await self._before("get")
        return await self.repository.get(device_id)

    async def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """See :meth:`.AsyncDeviceMetadataRepository.get_many`."""
        await self._before("get_many")
        return await self.repository.get_many(device_ids)

    async def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """See :meth:`.AsyncDeviceMetadataRepository.get_many_detailed`."""
        await self._before("get_many_detailed")
        return await self.repository.get_many_detailed(device_ids)

    async def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """See :meth:`.AsyncDeviceMetadataRepository.put`."""
        await self._before("put")
        return await self.repository.put(metadata, if_newer=if_newer)

    async def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """See :meth:`.AsyncDeviceMetadataRepository.put_many`."""
        await self._before("put_many")
        return await self.repository.put_many(items, if_newer=if_newer)

    async def delete(self, device_id: str) -> bool:
        """See :meth:`.AsyncDeviceMetadataRepository.delete`."""
        await self._before("delete")
        return await self.repository.delete(device_id)

    async def delete_many(self, device_ids: Iterable[str]) -> int:
        """See :meth:`.AsyncDeviceMetadataRepository.delete_many`."""
        await self._before("delete_many")
        return await self.repository.delete_many(device_ids)

    async def exists(self, device_id: str) -> bool:
        """See :meth:`.AsyncDeviceMetadataRepository.exists`."""
        await self._before("exists")
        return await self.repository.exists(device_id)

    async def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """See :meth:`.AsyncDeviceMetadataRepository.list_ids`."""
        await self._before("list_ids")
        return await self.repository.list_ids(pattern=pattern, limit=limit, offset=offset)

    async def count(self) -> int:
        """See :meth:`.AsyncDeviceMetadataRepository.count`."""
        await self._before("count")
        return await self.repository.count()

    async def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """See :meth:`.AsyncDeviceMetadataRepository.query`."""
        await self._before("query")
        return await self.repository.query(query)

    async def repair(self) -> RepairReport:
        """See :meth:`.AsyncDeviceMetadataRepository.repair`."""
        await self._before("repair")
        return await self.repository.repair()

    async def info(self) -> CacheInfo:
        """See :meth:`.AsyncDeviceMetadataRepository.info`."""
        await self._before("info")
        return await self.repository.info()

    async def health(self) -> HealthStatus:
        """See :meth:`.AsyncDeviceMetadataRepository.health`; a fault makes it unhealthy."""
        try:
            await self._before("health")
        except BackendError as exc:
            return unhealthy(f"unreachable: {exc}", type(exc).__name__)
        return await self.repository.health()

    async def close(self) -> None:
        """Close the wrapped repository."""
        await self.repository.close()
