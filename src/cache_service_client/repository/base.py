"""The repository interfaces, sync and async, and helpers every implementation shares."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, runtime_checkable

from cache_service_client._validation import validate_metadata_batch
from cache_service_client.exceptions import ValidationError
from cache_service_client.models import (
    BatchGetResult,
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    Page,
    RepairReport,
)

__all__ = [
    "AsyncDeviceMetadataRepository",
    "DeviceMetadataRepository",
    "InlineAsyncRepository",
    "validate_batch",
]

logger = logging.getLogger("cache_service_client")

T = TypeVar("T")
P = ParamSpec("P")


@runtime_checkable
class DeviceMetadataRepository(Protocol):
    """Synchronous access to cached device metadata.

    Every implementation behaves the same: the contract test suite runs unchanged against each.
    Invalid input raises :class:`~cache_service_client.ValidationError` before anything is
    written; backend failures raise a :class:`~cache_service_client.BackendError`.
    """

    def get(self, device_id: str) -> DeviceMetadata:
        """Return the metadata of ``device_id``.

        Raises:
            DeviceNotFoundError: If none is stored (a ``KeyError``).
            DataCorruptionError: If the stored value cannot be decoded.

        """
        ...

    def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """Return the metadata of every given device that has some, by id.

        Missing ids are absent from the result. Corrupted entries are left out too (and logged
        at WARNING with their key) instead of failing the batch; use :meth:`get_many_detailed`
        to see them.
        """
        ...

    def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """Like :meth:`get_many`, but report missing and corrupted ids as well."""
        ...

    def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """Store ``metadata`` (replacing any earlier value) with the repository's TTL.

        With ``if_newer``, only when no value is stored or the stored one's ``last_updated``
        is strictly older (compared in whole milliseconds; equal: not written, so a redelivered
        write changes nothing). The check and the write are one atomic step. Returns True if
        the device was written (always, without ``if_newer``).
        """
        ...

    def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """Store several devices; return how many were written.

        If any item is invalid, nothing is written. ``if_newer`` applies to each device as in
        :meth:`put`; a batch that names a device twice ends as the two writes in order would.
        A batch whose devices live in one bucket (always with the default
        :class:`~cache_service_client.KeyStrategy` of one bucket) is one script; one over
        several buckets (Redis Cluster) may raise
        :class:`~cache_service_client.PartialWriteError`, which says which devices were
        written (see docs/scaling.md).
        """
        ...

    def delete(self, device_id: str) -> bool:
        """Delete a device; return True if it was stored."""
        ...

    def delete_many(self, device_ids: Iterable[str]) -> int:
        """Delete several devices; return how many were stored (see :meth:`put_many`)."""
        ...

    def exists(self, device_id: str) -> bool:
        """Return True if metadata is stored for ``device_id``."""
        ...

    def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """Return stored device ids in ascending order (by UTF-8 bytes, as Redis sorts).

        Args:
            pattern: A Redis glob over ids (``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\\``
                escapes), with exactly Redis's ``SCAN MATCH`` semantics. None: every id.
            limit: At most this many ids (None: all).
            offset: Skip this many matching ids first (None: 0).

        """
        ...

    def count(self) -> int:
        """Return how many devices are stored."""
        ...

    def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """Return one page of devices matching ``query``, in its order.

        Pages are stable: a device that exists for the whole walk is returned exactly once, even
        while others are written, deleted or expire. ``total`` is set on the first page of a
        query without filters.

        Raises:
            ValidationError: For an invalid query or a cursor of another query.
        """
        ...

    def repair(self) -> RepairReport:
        """Rebuild the indexes from the stored values and report what was fixed."""
        ...

    def info(self) -> CacheInfo:
        """Return figures about the cache."""
        ...

    def health(self) -> HealthStatus:
        """Check the backend; never raises."""
        ...

    def close(self) -> None:
        """Release the repository's resources; it must not be used afterwards."""
        ...


@runtime_checkable
class AsyncDeviceMetadataRepository(Protocol):
    """Asynchronous access to cached device metadata; see :class:`DeviceMetadataRepository`.

    Every method is safe under cancellation: a cancelled call never leaves a reply on a
    connection for the next caller.
    """

    async def get(self, device_id: str) -> DeviceMetadata:
        """Return the metadata of ``device_id``; see :meth:`DeviceMetadataRepository.get`."""
        ...

    async def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """Return the metadata of the given devices that have some, by id."""
        ...

    async def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """Like :meth:`get_many`, but report missing and corrupted ids as well."""
        ...

    async def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """Store ``metadata``; see :meth:`DeviceMetadataRepository.put` (``if_newer`` too)."""
        ...

    async def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """Store several devices; return how many were written (see the sync protocol)."""
        ...

    async def delete(self, device_id: str) -> bool:
        """Delete a device; return True if it was stored."""
        ...

    async def delete_many(self, device_ids: Iterable[str]) -> int:
        """Delete several devices; return how many were stored (see the sync protocol)."""
        ...

    async def exists(self, device_id: str) -> bool:
        """Return True if metadata is stored for ``device_id``."""
        ...

    async def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """Return stored device ids in ascending order; see the sync protocol."""
        ...

    async def count(self) -> int:
        """Return how many devices are stored."""
        ...

    async def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """Return one page of devices matching ``query``; see the sync protocol."""
        ...

    async def repair(self) -> RepairReport:
        """Rebuild the indexes from the stored values and report what was fixed."""
        ...

    async def info(self) -> CacheInfo:
        """Return figures about the cache."""
        ...

    async def health(self) -> HealthStatus:
        """Check the backend; never raises."""
        ...

    async def close(self) -> None:
        """Release the repository's resources."""
        ...


class _Forwarding:
    """Every method of :class:`DeviceMetadataRepository`, each handing its call to ``_forward``.

    The base of wrappers: a subclass says in ``_forward`` where (and how) a call goes, and
    overrides the methods it changes.
    """

    __slots__ = ()

    def _forward(
        self, method: Callable[Concatenate[Any, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Make the call of ``method`` (a protocol method) with these arguments."""
        raise NotImplementedError

    def get(self, device_id: str) -> DeviceMetadata:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.get`."""
        return self._forward(DeviceMetadataRepository.get, device_id)

    def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.get_many`."""
        return self._forward(DeviceMetadataRepository.get_many, device_ids)

    def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.get_many_detailed`."""
        return self._forward(DeviceMetadataRepository.get_many_detailed, device_ids)

    def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.put`."""
        return self._forward(DeviceMetadataRepository.put, metadata, if_newer=if_newer)

    def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.put_many`."""
        return self._forward(DeviceMetadataRepository.put_many, items, if_newer=if_newer)

    def delete(self, device_id: str) -> bool:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.delete`."""
        return self._forward(DeviceMetadataRepository.delete, device_id)

    def delete_many(self, device_ids: Iterable[str]) -> int:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.delete_many`."""
        return self._forward(DeviceMetadataRepository.delete_many, device_ids)

    def exists(self, device_id: str) -> bool:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.exists`."""
        return self._forward(DeviceMetadataRepository.exists, device_id)

    def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.list_ids`."""
        return self._forward(
            DeviceMetadataRepository.list_ids, pattern=pattern, limit=limit, offset=offset
        )

    def count(self) -> int:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.count`."""
        return self._forward(DeviceMetadataRepository.count)

    def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.query`."""
        return self._forward(DeviceMetadataRepository.query, query)

    def repair(self) -> RepairReport:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.repair`."""
        return self._forward(DeviceMetadataRepository.repair)

    def info(self) -> CacheInfo:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.info`."""
        return self._forward(DeviceMetadataRepository.info)

    def health(self) -> HealthStatus:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.health`."""
        return self._forward(DeviceMetadataRepository.health)

    def close(self) -> None:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.close`."""
        self._forward(DeviceMetadataRepository.close)


class _AsyncForwarding:
    """Every method of :class:`AsyncDeviceMetadataRepository`, each awaiting ``_forward``.

    The async counterpart of ``_Forwarding``: ``_forward`` returns what to await (the
    wrapped repository's coroutine, or a coroutine of the subclass's own).
    """

    __slots__ = ()

    def _forward(
        self,
        method: Callable[Concatenate[Any, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Awaitable[T]:
        """What to await for the call of ``method`` (a protocol method) with these arguments."""
        raise NotImplementedError

    async def get(self, device_id: str) -> DeviceMetadata:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.get`."""
        return await self._forward(AsyncDeviceMetadataRepository.get, device_id)

    async def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.get_many`."""
        return await self._forward(AsyncDeviceMetadataRepository.get_many, device_ids)

    async def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.get_many_detailed`."""
        return await self._forward(AsyncDeviceMetadataRepository.get_many_detailed, device_ids)

    async def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.put`."""
        return await self._forward(AsyncDeviceMetadataRepository.put, metadata, if_newer=if_newer)

    async def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.put_many`."""
        return await self._forward(AsyncDeviceMetadataRepository.put_many, items, if_newer=if_newer)

    async def delete(self, device_id: str) -> bool:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.delete`."""
        return await self._forward(AsyncDeviceMetadataRepository.delete, device_id)

    async def delete_many(self, device_ids: Iterable[str]) -> int:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.delete_many`."""
        return await self._forward(AsyncDeviceMetadataRepository.delete_many, device_ids)

    async def exists(self, device_id: str) -> bool:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.exists`."""
        return await self._forward(AsyncDeviceMetadataRepository.exists, device_id)

    async def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.list_ids`."""
        return await self._forward(
            AsyncDeviceMetadataRepository.list_ids, pattern=pattern, limit=limit, offset=offset
        )

    async def count(self) -> int:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.count`."""
        return await self._forward(AsyncDeviceMetadataRepository.count)

    async def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.query`."""
        return await self._forward(AsyncDeviceMetadataRepository.query, query)

    async def repair(self) -> RepairReport:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.repair`."""
        return await self._forward(AsyncDeviceMetadataRepository.repair)

    async def info(self) -> CacheInfo:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.info`."""
        return await self._forward(AsyncDeviceMetadataRepository.info)

    async def health(self) -> HealthStatus:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.health`."""
        return await self._forward(AsyncDeviceMetadataRepository.health)

    async def close(self) -> None:
        """See :meth:`~cache_service_client.DeviceMetadataRepository.close`."""
        await self._forward(AsyncDeviceMetadataRepository.close)


class InlineAsyncRepository(_AsyncForwarding):
    """Exposes a sync repository through :class:`AsyncDeviceMetadataRepository`, calls inline.

    For repositories that never wait on I/O (the in-memory one), and for running async code
    against a sync repository in tests. Each call runs to completion without yielding to the
    event loop, so it is trivially cancellation-safe; do not wrap a repository that blocks.
    Every method is the sync repository's of the same name.

    Args:
        sync: The repository to expose.

    Attributes:
        sync: The sync repository that every call runs on.
    """

    def __init__(self, sync: DeviceMetadataRepository) -> None:
        self.sync = sync

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync!r})"

    async def _forward(
        self,
        method: Callable[Concatenate[Any, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        result: T = getattr(self.sync, method.__name__)(*args, **kwargs)
        return result


def replayable(items: Iterable[T]) -> Iterable[T]:
    """Copy a one-shot iterator, which a retried (or wrapped) call could not iterate again.

    Anything else is passed on as is, so that the flow's validation still sees (and rejects) a
    single str or model given in place of a batch.
    """
    return list(items) if isinstance(items, Iterator) else items


def validate_batch(
    items: Iterable[DeviceMetadata], *, newest: bool = False
) -> list[DeviceMetadata]:
    """Validate every item of a batch, naming ``[i].field`` on error.

    Of a duplicate id, the one sequential writes would leave stored wins: the last one, or
    with ``newest`` (conditional writes) the one with the latest ``last_updated`` in whole
    milliseconds (the first of equal ones).
    """
    if isinstance(items, (DeviceMetadata, str, bytes, dict)):
        raise ValidationError("items", "must be an iterable of DeviceMetadata")
    return validate_metadata_batch(items, newest=newest)


def unhealthy(
    message: str, error: str | None = None, *, at: datetime | None = None
) -> HealthStatus:
    """An ``"unhealthy"`` :class:`~cache_service_client.HealthStatus`, stamped ``at`` (now).

    ``error`` names what failed (an exception's class name) in ``details["error"]``.
    """
    return HealthStatus(
        status="unhealthy",
        message=message,
        timestamp=at if at is not None else datetime.now(timezone.utc),
        details={} if error is None else {"error": error},
    )


def warn_corrupted(read: str, key: str, reason: str) -> None:
    """Log at WARNING that ``read`` (``"batch read"``, ``"query"``) skipped the entry at ``key``.

    The record carries ``corrupted_key`` and ``corrupted_reason`` as ``extra=`` fields.
    """
    logger.warning(
        "%s skipped a corrupted entry at key %r: %s",
        read,
        key,
        reason,
        extra={"corrupted_key": key, "corrupted_reason": reason},
    )


def log_corrupted(result: BatchGetResult) -> dict[str, DeviceMetadata]:
    """Log every corrupted entry of a batch read at WARNING and return the found ones."""
    for error in result.corrupted.values():
        warn_corrupted("batch read", error.key, error.reason)
    return result.found
