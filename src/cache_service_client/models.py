"""Typed models: the device metadata itself and what the repositories report.

All models are :class:`msgspec.Struct` types (``kw_only``, ``frozen``), so they encode and decode
fast and compare by value. A stored :class:`DeviceMetadata` carries its schema version in the
``"v"`` field of the wire format (a msgspec tag), so values written by older versions stay
readable after the model grows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from cache_service_client.exceptions import DataCorruptionError

__all__ = [
    "SCHEMA_VERSION",
    "BatchGetResult",
    "CacheInfo",
    "DeviceMetadata",
    "HealthState",
    "HealthStatus",
    "Page",
]

#: Schema version written into every stored value (the ``"v"`` field).
SCHEMA_VERSION = 1

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timezone-aware datetime; decoding a naive one fails."""

T = TypeVar("T")


class DeviceMetadata(msgspec.Struct, kw_only=True, frozen=True, tag_field="v", tag=SCHEMA_VERSION):
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


class CacheInfo(msgspec.Struct, kw_only=True, frozen=True):
    """Figures about the cache, computed without scanning the keyspace.

    Attributes:
        total_devices: Devices currently stored (expired ones are never counted).
        memory_usage_bytes: For Redis, the server's ``used_memory`` (INFO memory): all memory
            the server uses, this cache's values and indexes included. For the in-memory
            backend, the bytes of the stored keys and encoded values.
        oldest_entry: The smallest ``last_updated`` among stored devices, or None when empty.
        newest_entry: The largest ``last_updated`` among stored devices, or None when empty.
        backend: Which backend answered (``"redis"``, ``"memory"``).

    """

    total_devices: int
    memory_usage_bytes: int
    oldest_entry: datetime | None = None
    newest_entry: datetime | None = None
    backend: str


HealthState = Literal["healthy", "degraded", "unhealthy"]


class HealthStatus(msgspec.Struct, kw_only=True, frozen=True):
    """The result of a health check. Health checks never raise; failures show up here.

    Attributes:
        status: ``"healthy"``, ``"degraded"`` (reachable but slow, near maxmemory or read-only)
            or ``"unhealthy"`` (unreachable, authentication refused).
        message: A short human-readable explanation.
        timestamp: When the check ran (UTC).
        latency_ms: Round-trip time of the check in milliseconds, None when it failed.
        details: Backend-specific facts (server version, role, memory figures, error type).

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


class Page(msgspec.Struct, Generic[T], kw_only=True, frozen=True):
    """One page of results.

    Attributes:
        items: The items on this page, in order.
        next_cursor: Opaque cursor for the next page, None on the last page.
        total: Number of matching items in all pages, when it is cheap to know.

    """

    items: list[T]
    next_cursor: str | None = None
    total: int | None = None


@dataclass(frozen=True)
class BatchGetResult:
    """Everything a batch read found, kept apart by outcome.

    Attributes:
        found: Decoded metadata by device id.
        missing: Ids with no stored metadata, in request order.
        corrupted: Ids whose stored value could not be decoded, with the error naming the key.

    """

    found: dict[str, DeviceMetadata]
    missing: list[str]
    corrupted: dict[str, DataCorruptionError]
