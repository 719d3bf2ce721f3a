"""The application layer: the container that wires the library's container into the services.

Run it against the in-memory backend (``python -m examples.layered_app.application``) or point
``CACHE_SERVICE_URL`` at a Redis.
"""

from __future__ import annotations

import asyncio
import os

from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject

from cache_service_client import DeviceMetadata, settings_from_env
from cache_service_client.container import Container as CacheContainer
from cache_service_client.container import resolve_async_repository, shutdown_resources
from examples.layered_app.services import Reading, ReadingLabeller


class Application(containers.DeclarativeContainer):
    """Wires the services; the cache part comes from the library's container."""

    wiring_config = containers.WiringConfiguration(modules=[__name__])

    cache = providers.Container(CacheContainer)
    labeller = providers.Factory(ReadingLabeller, repository=cache.async_repository)


@inject
async def handle(
    readings: list[Reading], labeller: ReadingLabeller = Provide[Application.labeller]
) -> list[str]:
    """An entry point (a request handler, a stream consumer...) that gets its service injected."""
    return [
        f"{r.device_id}: {r.value}{' ' + r.unit if r.unit else ''} ({r.datatype})"
        for r in await labeller.label(readings)
    ]


async def main() -> None:
    """Seed a few devices and label some readings."""
    application = Application()
    environ = dict(os.environ)
    environ.setdefault("CACHE_SERVICE_URL", "memory://")
    application.cache.settings.override(providers.Object(settings_from_env(environ=environ)))
    repository = await resolve_async_repository(application.cache)
    await repository.put(
        DeviceMetadata.from_dict(
            {
                "datatype_id": "t",
                "datatype_name": "temperature",
                "datatype_unit": "C",
                "persist": True,
            },
            device_id="sensor-1",
        )
    )
    for line in await handle([Reading("sensor-1", 21.5), Reading("unknown", 1.0)]):
        print(line)
    await shutdown_resources(application.cache)


if __name__ == "__main__":
    asyncio.run(main())
