"""A fake clock, and wrappers that inject faults into any repository."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from cache_service_client.exceptions import BackendConnectionError, BackendError
from cache_service_client.models import (
    BatchGetResult,
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    Page,
    RepairReport,
)
from cache_service_client.repository.base import (
    AsyncDeviceMetadataRepository,
    DeviceMetadataRepository,
    unhealthy,
)

__all__ = ["OPERATIONS", "AsyncFaultyRepository", "FakeClock", "Faults", "FaultyRepository"]

#: The repository operations a fault can be aimed at.
OPERATIONS = frozenset(
    {"get", "get_many", "get_many_detailed", "put", "put_many", "delete", "delete_many",
     "exists", "list_ids", "count", "query", "repair", "info", "health"}
)  # fmt: skip


class FakeClock:
    """A clock that moves only when told: ``clock()`` returns its time in seconds.

    Give it to the in-memory repository (``InMemoryDeviceMetadataRepository(clock=clock)``)
    to test expiry without sleeping: ``clock.advance(86400)`` and the TTL has passed.

    Args:
        start: The time it shows first, in seconds since the epoch (default: now).
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current fake time, in seconds since the epoch."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("a clock does not go back; use set() to jump")
        with self._lock:
            self._now += seconds

    def set(self, when: float | datetime) -> None:
        """Jump to ``when``: seconds since the epoch, or an aware datetime."""
        self._now = when.timestamp() if isinstance(when, datetime) else float(when)

    def now(self) -> datetime:
        """The current fake time as an aware UTC datetime."""
        return datetime.fromtimestamp(self._now, timezone.utc)


class Faults:
    """What a :class:`FaultyRepository` (or its async twin) does to the calls it passes on.

    Every setting holds until changed or :meth:`clear`-ed; the context managers undo theirs at
    the end of the block. Thread-safe; :attr:`calls` records every operation attempted.

    Attributes:
        calls: The operations called so far, in order (``["put", "get", ...]``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down = False
        self._latency: dict[str, float] = {}
        self._errors: dict[str, tuple[BackendError, int | None]] = {}
        self.calls: list[str] = []

    def clear(self) -> None:
        """End every fault: no outage, no latency, no errors (the call log stays)."""
        with self._lock:
            self._down = False
            self._latency.clear()
            self._errors.clear()

    def start_outage(self) -> None:
        """Take the backend down: every call raises a connection error, health is unhealthy.

        The error is :class:`~cache_service_client.BackendConnectionError`, as when the backend
        is unreachable.
        """
        self._down = True

    def end_outage(self) -> None:
        """The backend is back."""
        self._down = False

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The backend is down inside the block."""
        self.start_outage()
        try:
            yield
        finally:
            self.end_outage()

    def add_latency(self, seconds: float, operations: Iterable[str] | None = None) -> None:
        """Delay the given operations (all by default) by ``seconds`` each."""
        for name in self._names(operations):
            self._latency[name] = float(seconds)

    @contextmanager
    def latency(self, seconds: float, operations: Iterable[str] | None = None) -> Iterator[None]:
        """Delay calls inside the block (see :meth:`add_latency`)."""
        names = self._names(operations)
        self.add_latency(seconds, names)
        try:
            yield
        finally:
            for name in names:
                self._latency.pop(name, None)

    def fail(
        self,
        operations: Iterable[str] | str,
        error: BackendError | None = None,
        *,
        times: int | None = None,
    ) -> None:
        """Make the given operations raise ``error`` (``times`` times, or until cleared).

        Args:
            operations: An operation name (``"put"``) or several.
            error: What to raise; default a
                :class:`~cache_service_client.BackendConnectionError`. Any
                :class:`~cache_service_client.BackendError` fits (timeouts, authentication).
            times: Fail this many calls, then pass again; None: every call.
        """
        names = self._names([operations] if isinstance(operations, str) else operations)
        chosen = error if error is not None else BackendConnectionError("injected failure")
        with self._lock:
            for name in names:
                self._errors[name] = (chosen, times)

    def _names(self, operations: Iterable[str] | None) -> list[str]:
        names = sorted(OPERATIONS) if operations is None else list(operations)
        unknown = [name for name in names if name not in OPERATIONS]
        if unknown:
            raise ValueError(f"unknown operations {unknown}; choose from {sorted(OPERATIONS)}")
        return names

    def before(self, operation: str) -> float:
        """Record a call; raise its fault, if any; return the delay to apply first."""
        with self._lock:
            self.calls.append(operation)
            delay = self._latency.get(operation, 0.0)
            if self._down:
                raise BackendConnectionError(f"injected outage ({operation})")
            planned = self._errors.get(operation)
            if planned is not None:
                error, left = planned
                if left is not None:
                    if left <= 1:
                        del self._errors[operation]
                    else:
                        self._errors[operation] = (error, left - 1)
                raise copy.copy(error)  # a fresh one each time: no traceback piles up
        return delay


class FaultyRepository:
    """A :class:`.DeviceMetadataRepository` that injects faults into another one.

    Every call goes on to ``repository`` after the faults of ``faults``: an outage, latency,
    or errors on chosen operations.

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


class AsyncFaultyRepository:
    """The async twin of :class:`FaultyRepository`, for an async repository.

    It wraps an :class:`.AsyncDeviceMetadataRepository`; latency is an ``asyncio.sleep``.

    Args:
        repository: The async repository to wrap.
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
