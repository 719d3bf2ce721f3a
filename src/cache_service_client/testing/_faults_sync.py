# Generated from _faults_async.py by scripts/unasync.py: edit that file, not this one.
"""A wrapper that injects the faults of a :class:`Faults` into any repository."""

from __future__ import annotations

import time
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
from cache_service_client.repository.base import DeviceMetadataRepository, unhealthy
from cache_service_client.testing._faults import Faults

__all__ = ["FaultyRepository"]


class FaultyRepository:
    """A :class:`.DeviceMetadataRepository` that injects faults into another one.

    Every call goes on to ``repository`` after the faults of ``faults``: an outage, latency
    (an ``time.sleep``), or errors on chosen operations.

    Use it to test how a service copes when the cache fails::

        faulty = FaultyRepository(InMemoryDeviceMetadataRepository())
        service = MyService(repository=faulty)
        with faulty.faults.outage():
            assert service.lookup("dev-1") is None   # the service degrades gracefully

    As with the real backends, :meth:`health` never raises: a fault makes it ``unhealthy``.

    Args:
        repository: The repository to wrap.
        faults: A :class:`Faults` to share with other wrappers (default: a new one).

    Attributes:
        repository: The wrapped repository.
        faults: The faults applied to every call.
    """

    def __init__(self, repository: DeviceMetadataRepository, faults: Faults | None = None) -> None:
        self.repository = repository
        self.faults = faults if faults is not None else Faults()

    def _before(self, operation: str) -> None:
        delay = self.faults.before(operation)
        if delay:
            time.sleep(delay)

    def get(self, device_id: str) -> DeviceMetadata:
        """See :meth:`.DeviceMetadataRepository.get`."""
        self._before("get")
        return self.repository.get(device_id)

    def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """See :meth:`.DeviceMetadataRepository.get_many`."""
        self._before("get_many")
        return self.repository.get_many(device_ids)

    def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """See :meth:`.DeviceMetadataRepository.get_many_detailed`."""
        self._before("get_many_detailed")
        return self.repository.get_many_detailed(device_ids)

    def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """See :meth:`.DeviceMetadataRepository.put`."""
        self._before("put")
        return self.repository.put(metadata, if_newer=if_newer)

    def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """See :meth:`.DeviceMetadataRepository.put_many`."""
        self._before("put_many")
        return self.repository.put_many(items, if_newer=if_newer)

    def delete(self, device_id: str) -> bool:
        """See :meth:`.DeviceMetadataRepository.delete`."""
        self._before("delete")
        return self.repository.delete(device_id)

    def delete_many(self, device_ids: Iterable[str]) -> int:
        """See :meth:`.DeviceMetadataRepository.delete_many`."""
        self._before("delete_many")
        return self.repository.delete_many(device_ids)

    def exists(self, device_id: str) -> bool:
        """See :meth:`.DeviceMetadataRepository.exists`."""
        self._before("exists")
        return self.repository.exists(device_id)

    def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """See :meth:`.DeviceMetadataRepository.list_ids`."""
        self._before("list_ids")
        return self.repository.list_ids(pattern=pattern, limit=limit, offset=offset)

    def count(self) -> int:
        """See :meth:`.DeviceMetadataRepository.count`."""
        self._before("count")
        return self.repository.count()

    def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """See :meth:`.DeviceMetadataRepository.query`."""
        self._before("query")
        return self.repository.query(query)

    def repair(self) -> RepairReport:
        """See :meth:`.DeviceMetadataRepository.repair`."""
        self._before("repair")
        return self.repository.repair()

    def info(self) -> CacheInfo:
        """See :meth:`.DeviceMetadataRepository.info`."""
        self._before("info")
        return self.repository.info()

    def health(self) -> HealthStatus:
        """See :meth:`.DeviceMetadataRepository.health`; a fault makes it unhealthy."""
        try:
            self._before("health")
        except BackendError as exc:
            return unhealthy(f"unreachable: {exc}", type(exc).__name__)
        return self.repository.health()

    def close(self) -> None:
        """Close the wrapped repository."""
        self.repository.close()
