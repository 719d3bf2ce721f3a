"""The web service with FastAPI: ``uvicorn examples.web_service.fastapi_app:app``.

The client comes from the ``CACHE_SERVICE_*`` settings (``CACHE_SERVICE_URL=memory://demo`` for
a try without Redis), is built when the app starts and closed when it stops.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, FastAPI
from pydantic import BaseModel

from cache_service_client import DeviceMetadata
from cache_service_client.contrib.fastapi import (
    ClientDep,
    RepositoryDep,
    add_exception_handlers,
    lifespan,
)


class Reading(BaseModel):
    """A value a device reported."""

    device_id: str
    value: float


class Enriched(BaseModel):
    """The value with what the cache knows about its device."""

    device_id: str
    value: float
    datatype: str
    unit: str | None
    persist: bool


app = FastAPI(title="readings", lifespan=lifespan())
add_exception_handlers(app)  # DeviceNotFoundError -> 404, ValidationError -> 422, ...


@app.get("/devices/{device_id}")
async def device(device_id: str, client: ClientDep) -> DeviceMetadata:
    """The device's metadata (404 when the cache has none)."""
    return await client.get_device_metadata(device_id)


@app.put("/devices/{device_id}", status_code=204, response_model=None)
async def store(
    device_id: str, metadata: Annotated[DeviceMetadata, Body()], client: ClientDep
) -> None:
    """Store a device's metadata (validated like every write)."""
    await client.store_device_metadata_async(device_id, metadata)


@app.post("/readings")
async def enrich(readings: list[Reading], repository: RepositoryDep) -> list[Enriched]:
    """Attach each reading's datatype and unit; readings of unknown devices are dropped."""
    found = await repository.get_many(reading.device_id for reading in readings)
    return [
        Enriched(
            device_id=reading.device_id,
            value=reading.value,
            datatype=meta.datatype_name,
            unit=meta.datatype_unit,
            persist=meta.persist,
        )
        for reading in readings
        if (meta := found.get(reading.device_id)) is not None
    ]
