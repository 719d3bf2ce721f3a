"""Typed models: the device metadata itself and what the repositories report.

All models are :class:`msgspec.Struct` types (``kw_only``, ``frozen``), so they encode and decode
fast and compare by value. A stored :class:`DeviceMetadata` carries its schema version in the
``"v"`` field of the wire format (a msgspec tag), so values written by older versions stay
readable after the model grows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypedDict, TypeVar

import msgspec

from cache_service_client._pydantic import PydanticSupport
from cache_service_client.exceptions import DataCorruptionError

__all__ = [
    "SCHEMA_VERSION",
    "BatchGetResult",
    "CacheInfo",
    "DeviceMetadata",
    "DeviceQuery",
    "HealthState",
    "HealthStatus",
    "NearCacheStats",
    "Page",
    "QueryFields",
    "QuerySort",
    "RepairReport",
]

#: Schema version written into every stored value (the ``"v"`` field).
SCHEMA_VERSION = 1

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timezone-aware datetime; decoding a naive one fails."""

T = TypeVar("T")


class DeviceMetadata(
    msgspec.Struct,
    PydanticSupport,
    kw_only=True,
    frozen=True,
    gc=False,
    tag_field="v",
    tag=SCHEMA_VERSION,
):
    """Metadata of one IoT device, as cached.

    Attributes:
        device_id: The device's id: 1-256 printable characters, no whitespace.
        datatype_id: Id of the datatype the device reports.
        datatype_name: Human-readable name of that datatype.
        datatype_unit: Unit of the values, or None when they have none.
        persist: Whether the device's values are persisted downstream.
        last_updated: When the metadata last changed; timezone-aware, stored as UTC.
        additional_properties: Free-form JSON-compatible properties (str keys; str, int, float,
            bool, None, lists and dicts of those).

    Instances are not tracked by the garbage collector (``gc=False``: faster to create and
    decode); they only ever hold JSON values, which cannot form reference cycles. Do not put an
    object that refers back to the instance into ``additional_properties``.
    """

    device_id: str
    datatype_id: str
    datatype_name: str
    datatype_unit: str | None = None
    persist: bool
    last_updated: AwareDatetime
    additional_properties: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], device_id: str | None = None) -> DeviceMetadata:
        """Build validated metadata from a plain mapping.

        Known fields are taken by name and every unknown key is kept in
        ``additional_properties``; ``last_updated`` (a timezone-aware datetime or an RFC 3339
        string) defaults to now, UTC. ``device_id`` may come from the argument or the mapping.

        Raises:
            ValidationError: Naming the missing or offending field.

        """
        from cache_service_client._validation import metadata_from_dict

        return metadata_from_dict(data, device_id)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (JSON-compatible but for ``last_updated``)."""
        return {field: getattr(self, field) for field in self.__struct_fields__}


class CacheInfo(msgspec.Struct, PydanticSupport, kw_only=True, frozen=True):
    """Figures about the cache, computed without scanning the keyspace.

    Attributes:
        total_devices: Devices currently stored (expired ones are never counted).
        memory_usage_bytes: For Redis, the server's ``used_memory`` (INFO memory): all memory
            the server uses, this cache's values and indexes included. For the in-memory
            backend, the bytes of the stored keys and encoded values.
        oldest_entry_timestamp: The smallest ``last_updated`` among stored devices, or None
            when empty.
        newest_entry_timestamp: The largest ``last_updated`` among stored devices, or None
            when empty.
        backend: Which backend answered (``"redis"``, ``"memory"``).

    """

    total_devices: int
    memory_usage_bytes: int
    oldest_entry_timestamp: datetime | None = None
    newest_entry_timestamp: datetime | None = None
    backend: str


#: The overall state a health check reports (:attr:`HealthStatus.status`).
HealthState = Literal["healthy", "degraded", "unhealthy"]


class HealthStatus(msgspec.Struct, PydanticSupport, kw_only=True, frozen=True):
    """The result of a health check. Health checks never raise; failures show up here.

    Attributes:
        status: ``"healthy"``, ``"degraded"`` (reachable but slow, near maxmemory or read-only)
            or ``"unhealthy"`` (unreachable, authentication refused).
        message: A short human-readable explanation.
        timestamp: When the check ran (UTC).
        latency_ms: Round-trip time of the check in milliseconds, None when it failed.
        details: Backend-specific facts (server version, role, memory figures, error type;
            ``valkey_version`` besides ``redis_version`` on Valkey).

    """

    status: HealthState
    message: str
    timestamp: datetime
    latency_ms: float | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def is_healthy(self) -> bool:
        """True when the status is ``"healthy"``."""
        return self.status == "healthy"


class Page(msgspec.Struct, PydanticSupport, Generic[T], kw_only=True, frozen=True):
    """One page of results.

    Attributes:
        items: The items on this page, in order.
        next_cursor: Opaque cursor for the next page, None on the last page.
        total: Number of matching items in all pages, when it is cheap to know.

    """

    items: list[T]
    next_cursor: str | None = None
    total: int | None = None


class BatchGetResult(msgspec.Struct, kw_only=True, frozen=True):
    """Everything a batch read found, kept apart by outcome.

    Attributes:
        found: Decoded metadata by device id.
        missing: Ids with no stored metadata, in request order.
        corrupted: Ids whose stored value could not be decoded, with the error naming the key.

    """

    found: dict[str, DeviceMetadata]
    missing: list[str]
    corrupted: dict[str, DataCorruptionError]


#: The field a :class:`DeviceQuery` sorts by (:attr:`DeviceQuery.sort`).
QuerySort = Literal["device_id", "last_updated"]


class QueryFields(TypedDict, total=False):
    """The fields of :class:`DeviceQuery` as keywords: ``query_devices(datatype_id="t")``.

    Typed, so that a type checker catches a misspelt filter (``datatype=`` for
    ``datatype_id=``); at run time an unknown keyword is a
    :class:`~cache_service_client.ValidationError` naming it.
    """

    datatype_id: str | None
    persist: bool | None
    updated_after: datetime | None
    updated_before: datetime | None
    pattern: str | None
    sort: QuerySort
    descending: bool
    limit: int
    cursor: str | None


class DeviceQuery(msgspec.Struct, PydanticSupport, kw_only=True, frozen=True):
    """A filtered, sorted, paged query over stored devices.

    All filters combine (AND). Times compare at millisecond precision, as the indexes keep them.

    Attributes:
        datatype_id: Only devices of this datatype.
        persist: Only devices whose ``persist`` flag is this.
        updated_after: Only devices with ``last_updated`` strictly after this (aware datetime).
        updated_before: Only devices with ``last_updated`` strictly before this.
        pattern: Only devices whose id matches this Redis glob.
        sort: ``"device_id"`` (default) or ``"last_updated"`` (ties broken by id).
        descending: Sort the other way round.
        limit: Page size, 1 to 1000 (default 100).
        cursor: ``next_cursor`` of the previous page of the same query; None for the first.
    """

    datatype_id: str | None = None
    persist: bool | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    pattern: str | None = None
    sort: QuerySort = "device_id"
    descending: bool = False
    limit: int = 100
    cursor: str | None = None

    @property
    def has_filters(self) -> bool:
        """True when any filter is set (a pattern counts, ``"*"`` too)."""
        return (
            self.datatype_id is not None
            or self.persist is not None
            or self.updated_after is not None
            or self.updated_before is not None
            or self.pattern is not None
        )


class RepairReport(msgspec.Struct, PydanticSupport, kw_only=True, frozen=True):
    """What :meth:`~cache_service_client.DeviceMetadataRepository.repair` found and fixed.

    Attributes:
        scanned: Device keys read from the keyspace.
        indexed: Devices whose index entries were added or corrected.
        orphans_removed: Index entries removed because their device is gone.
        corrupted: Keys whose value could not be decoded (left in place, not indexed).
    """

    scanned: int = 0
    indexed: int = 0
    orphans_removed: int = 0
    corrupted: list[str] = msgspec.field(default_factory=list)


class NearCacheStats(msgspec.Struct, PydanticSupport, kw_only=True, frozen=True):
    """Counters of a near cache (see :class:`~cache_service_client.NearCache`).

    Counted since the cache was made; reading them does no I/O.

    Attributes:
        size: How many entries the cache holds at most (0: the near cache is off).
        entries: Entries held now (devices, and ids cached as "not found").
        hits: Reads served from the process, per device id.
        misses: Reads that went to Redis, per device id.
        invalidations: Keys Redis reported changed (written, deleted or expired), cached or not.
        evictions: Entries dropped to stay within ``size``.
        flushes: Times the whole cache was dropped: a tracking connection lost, a failover or
            cluster topology change, ``FLUSHDB``/``FLUSHALL``.
        connected: Whether every tracking connection is up; while one is not, reads go to
            Redis and nothing is cached.
    """

    size: int = 0
    entries: int = 0
    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    evictions: int = 0
    flushes: int = 0
    connected: bool = False
