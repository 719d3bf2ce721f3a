"""The web service with Litestar: ``litestar --app examples.web_service.litestar_app:app run``.

Litestar speaks msgspec, so the library's models and the app's own Structs go in and out as
they are. The plugin builds the client from the ``CACHE_SERVICE_*`` settings when the app
starts, closes it when it stops, and provides ``cache_client`` and ``device_repository``.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, get, post, put
from litestar.params import FromPath, JSONBody

from cache_service_client import DeviceMetadata
from cache_service_client.contrib.litestar import CacheClient, CacheServicePlugin, DeviceRepository


class Reading(msgspec.Struct, frozen=True):
    """A value a device reported."""

    device_id: str
    value: float


class Enriched(msgspec.Struct, frozen=True):
    """The value with what the cache knows about its device."""

    device_id: str
    value: float
    datatype: str
    unit: str | None
    persist: bool


@get("/devices/{device_id:str}")
async def device(device_id: FromPath[str], cache_client: CacheClient) -> DeviceMetadata:
    """The device's metadata (404 when the cache has none)."""
    return await cache_client.get_device_metadata(device_id)


@put("/devices/{device_id:str}", status_code=204)
async def store(
    device_id: FromPath[str], data: JSONBody[DeviceMetadata], cache_client: CacheClient
) -> None:
    """Store a device's metadata (validated like every write)."""
    await cache_client.store_device_metadata_async(device_id, data)


@post("/readings", status_code=200)
async def enrich(
    data: JSONBody[list[Reading]], device_repository: DeviceRepository
) -> list[Enriched]:
    """Attach each reading's datatype and unit; readings of unknown devices are dropped."""
    found = await device_repository.get_many(reading.device_id for reading in data)
    return [
        Enriched(
            reading.device_id, reading.value, meta.datatype_name, meta.datatype_unit, meta.persist
        )
        for reading in data
        if (meta := found.get(reading.device_id)) is not None
    ]


app = Litestar([device, store, enrich], plugins=[CacheServicePlugin()])
