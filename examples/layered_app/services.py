"""The service layer: plain classes that get a repository injected and never import a container."""

from __future__ import annotations

from dataclasses import dataclass

from cache_service_client import AsyncDeviceMetadataRepository, DeviceMetadata


@dataclass(frozen=True)
class Reading:
    """A raw value from a device, before it is labelled."""

    device_id: str
    value: float


@dataclass(frozen=True)
class LabelledReading:
    """A value with its unit and datatype, ready to show or store."""

    device_id: str
    value: float
    unit: str | None
    datatype: str
    persist: bool


class ReadingLabeller:
    """Labels raw readings with the cached metadata of their devices."""

    def __init__(self, repository: AsyncDeviceMetadataRepository) -> None:
        self._repository = repository

    async def label(self, readings: list[Reading]) -> list[LabelledReading]:
        """Label every reading whose device is known; readings of unknown devices are dropped."""
        metadata = await self._repository.get_many({r.device_id for r in readings})
        return [
            _labelled(reading, metadata[reading.device_id])
            for reading in readings
            if reading.device_id in metadata
        ]

    async def devices_to_persist(self, pattern: str = "*") -> list[str]:
        """Ids of the devices (matching a Redis glob) whose values must be persisted."""
        ids = await self._repository.list_ids(pattern=pattern)
        found = await self._repository.get_many(ids)
        return [
            device_id
            for device_id in ids
            if found.get(device_id, None) and found[device_id].persist
        ]


def _labelled(reading: Reading, metadata: DeviceMetadata) -> LabelledReading:
    return LabelledReading(
        device_id=reading.device_id,
        value=reading.value,
        unit=metadata.datatype_unit,
        datatype=metadata.datatype_name,
        persist=metadata.persist,
    )
