"""Litestar integration: a plugin that owns the client and provides it to handlers.

Install with ``pip install cache-service-client[litestar]``. Litestar speaks msgspec natively,
so handlers return :class:`~cache_service_client.DeviceMetadata` (or ``Page[DeviceMetadata]``,
:class:`~cache_service_client.CacheInfo`, ...) and take them as ``data`` as they are. ::

    from litestar import Litestar, get
    from cache_service_client import DeviceMetadata
    from cache_service_client.contrib.litestar import CacheClient, CacheServicePlugin

    @get("/devices/{device_id:str}")
    async def device(device_id: str, cache_client: CacheClient) -> DeviceMetadata:
        return await cache_client.get_device_metadata(device_id)

    app = Litestar([device], plugins=[CacheServicePlugin()])  # CACHE_SERVICE_* settings

The plugin adds a lifespan that builds the client when the app starts (or takes the one, or the
factory, it is given) and closes it when the app stops; the dependencies ``cache_client``
(the :class:`~cache_service_client.CacheServiceClient`, annotate it :data:`CacheClient`) and
``device_repository`` (its :class:`~cache_service_client.AsyncDeviceMetadataRepository`,
annotate it :data:`DeviceRepository`); and exception handlers that
answer the library's errors as the REST gateway does (404, 422, 503, ...). Layered applications
pass their dependency-injector :class:`~cache_service_client.container.Container` instead
(``CacheServicePlugin(container=container)``): ``device_repository`` is then the container's,
and ``cache_client`` a client over the container's repositories.
``device_repository`` is the async repository of ``cache_client``, so in tests one override of
``cache_client`` (on the app, a router or a route) reaches both:
``Provide(lambda: client, sync_to_thread=False)`` with ``client =
CacheServiceClient(repository=memory_repository, async_repository=async_memory_repository)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

from cache_service_client.client import CacheServiceClient
from cache_service_client.container import Container
from cache_service_client.contrib import _common
from cache_service_client.contrib._common import CLIENT_STATE, CONTAINER_STATE, ClientSource
from cache_service_client.exceptions import CacheServiceError
from cache_service_client.models import CacheInfo, DeviceMetadata, HealthStatus, Page
from cache_service_client.repository.base import AsyncDeviceMetadataRepository

with _common.framework_imports("litestar", "Litestar"):
    from litestar import Litestar, Request, Response
    from litestar.config.app import AppConfig
    from litestar.datastructures import State
    from litestar.di import NamedDependency, Provide
    from litestar.plugins import InitPluginProtocol

__all__ = [
    "CLIENT_STATE",
    "CONTAINER_STATE",
    "CacheClient",
    "CacheServicePlugin",
    "ClientSource",
    "DeviceRepository",
]

CacheClient: TypeAlias = NamedDependency[CacheServiceClient]
"""A handler parameter ``cache_client: CacheClient`` receives the plugin's client."""

DeviceRepository: TypeAlias = NamedDependency[AsyncDeviceMetadataRepository]
"""A handler parameter ``device_repository: DeviceRepository`` receives the async repository."""

_HOW = "add cache_service_client.contrib.litestar.CacheServicePlugin(...) to the app's plugins"


class CacheServicePlugin(InitPluginProtocol):
    """Owns the app's cache client and provides it, and its repository, to handlers.

    Args:
        client: The client, a function that returns one (called at start-up), or None: a
            client from the ``CACHE_SERVICE_*`` environment variables.
        container: Instead of a client, the dependency-injector container the application
            wires its services with: ``device_repository`` is its async repository, and its
            resources are shut down when the app stops.
        close: Close the client (or shut the container's resources down) when the app stops;
            False for one the caller closes itself.
        client_key: The dependency name of the client (in ``container`` mode, a client over
            the container's repositories).
        repository_key: The dependency name of the async repository: that of the client, so
            an override of the client dependency reaches it too.
        exception_handlers: Answer the library's exceptions as the REST gateway does (422
            ``validation_error``, 404 ``device_not_found``, 503 ``backend_unavailable`` with
            ``Retry-After``, ...; the body is :class:`~cache_service_client.server.wire.ErrorBody`).
            Handlers the app declares for these exceptions itself are kept.

    Raises:
        ConfigurationError: For a client and a container at once (here), or for invalid
            settings (at start-up, from the client).
    """

    def __init__(
        self,
        client: ClientSource = None,
        *,
        container: Container | None = None,
        close: bool = True,
        client_key: str = "cache_client",
        repository_key: str = "device_repository",
        exception_handlers: bool = True,
    ) -> None:
        _common.check_sources("CacheServicePlugin()", client, container)
        self._client = client
        self._container = container
        self._close = close
        self._client_key = client_key
        self._repository_key = repository_key
        self._exception_handlers = exception_handlers

    def _lifespan(self, app: Litestar) -> AbstractAsyncContextManager[None]:
        return _common.serve(
            "CacheServicePlugin()", app.state, self._client, self._container, self._close
        )

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the lifespan, the dependencies, the models' names and the exception handlers."""
        app_config.lifespan = [*app_config.lifespan, self._lifespan]
        app_config.dependencies.setdefault(
            self._client_key, Provide(_provide_client, sync_to_thread=False)
        )
        app_config.dependencies.setdefault(
            self._repository_key, Provide(_repository_of(self._client_key))
        )
        app_config.signature_namespace.update(_NAMES)
        if self._exception_handlers:
            app_config.exception_handlers.setdefault(CacheServiceError, _library_error)
        return app_config


def _provide_client(state: State) -> CacheServiceClient:
    return _common.state_client(state, _HOW)


def _repository_of(client_key: str) -> Callable[..., Awaitable[AsyncDeviceMetadataRepository]]:
    """A provider of the async repository of the client dependency named ``client_key``.

    Litestar hands a provider the dependencies its parameters name; the parameter takes the
    plugin's (configurable) client key as its name.
    """

    async def provide(**client: CacheServiceClient) -> AsyncDeviceMetadataRepository:
        return await client[client_key].get_async_repository()

    parameter = inspect.Parameter(
        client_key, inspect.Parameter.KEYWORD_ONLY, annotation=CacheClient
    )
    provide.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [parameter], return_annotation=AsyncDeviceMetadataRepository
    )
    provide.__annotations__ = {
        client_key: CacheClient,
        "return": AsyncDeviceMetadataRepository,
    }
    return provide


def _library_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    answer = _common.error_answer(exc, request.method, request.url.path)
    return Response(answer.body, status_code=answer.status, headers=answer.headers)


# Handlers may name these types in annotations under ``from __future__ import annotations``.
_NAMES: dict[str, Any] = {
    "AsyncDeviceMetadataRepository": AsyncDeviceMetadataRepository,
    "CacheClient": CacheClient,
    "CacheInfo": CacheInfo,
    "CacheServiceClient": CacheServiceClient,
    "DeviceRepository": DeviceRepository,
    "DeviceMetadata": DeviceMetadata,
    "HealthStatus": HealthStatus,
    "Page": Page,
}
