"""The benchmark's data: realistic device metadata and its twins for the other libraries.

One ``DeviceMetadata`` encodes to about 300 bytes of JSON: the fixed fields plus a few additional
properties (a nested dict, a list, numbers, a bool), as the stream processor writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cache_service_client import DeviceMetadata

BATCH = 1000
BASE_TIME = datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=timezone.utc)


def device_id(i: int) -> str:
    """The id of the ``i``-th benchmark device."""
    return f"sensor-{i:06d}"


def make_metadata(i: int) -> DeviceMetadata:
    """The ``i``-th benchmark device's metadata (about 300 bytes encoded)."""
    return DeviceMetadata(
        device_id=device_id(i),
        datatype_id="temp-c",
        datatype_name="Temperature",
        datatype_unit="degC",
        persist=i % 3 != 0,
        last_updated=BASE_TIME + timedelta(seconds=i),
        additional_properties={
            "firmware": f"2.{i % 7}.{i % 11}",
            "location": {"site": "plant-7", "floor": i % 4},
            "calibrated": True,
            "sampling_hz": 10.0,
            "tags": ["hvac", "north-wing"],
        },
    )


def make_batch(n: int = BATCH, start: int = 0) -> list[DeviceMetadata]:
    """``n`` devices' metadata."""
    return [make_metadata(i) for i in range(start, start + n)]


def as_builtins(metadata: DeviceMetadata) -> dict[str, Any]:
    """The fields as a plain dict (the datetime kept as is)."""
    return metadata.to_dict()


# -- stdlib json + dataclass -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataclassDevice:
    """What one would write with the standard library alone (no validation on decode)."""

    device_id: str
    datatype_id: str
    datatype_name: str
    datatype_unit: str | None
    persist: bool
    last_updated: datetime
    additional_properties: dict[str, Any] = field(default_factory=dict)


def to_dataclass(metadata: DeviceMetadata) -> DataclassDevice:
    """The same device as a dataclass."""
    return DataclassDevice(**as_builtins(metadata))


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads
_fromisoformat = datetime.fromisoformat


def dataclass_encode(device: DataclassDevice) -> bytes:
    """Encode with ``json`` (the datetime as ISO 8601, as the others write it)."""
    return _dumps(
        {
            "v": 1,
            "device_id": device.device_id,
            "datatype_id": device.datatype_id,
            "datatype_name": device.datatype_name,
            "datatype_unit": device.datatype_unit,
            "persist": device.persist,
            "last_updated": device.last_updated.isoformat(),
            "additional_properties": device.additional_properties,
        }
    ).encode()


def dataclass_decode(raw: bytes) -> DataclassDevice:
    """Decode with ``json`` into the dataclass (types are not checked)."""
    obj = _loads(raw)
    return DataclassDevice(
        device_id=obj["device_id"],
        datatype_id=obj["datatype_id"],
        datatype_name=obj["datatype_name"],
        datatype_unit=obj.get("datatype_unit"),
        persist=obj["persist"],
        last_updated=_fromisoformat(obj["last_updated"]),
        additional_properties=obj.get("additional_properties", {}),
    )
