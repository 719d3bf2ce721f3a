"""FastAPI integration: the client in the app's lifespan, dependencies, msgspec responses.

Install with ``pip install cache-service-client[fastapi]``. ::

    from fastapi import FastAPI
    from cache_service_client import DeviceMetadata
    from cache_service_client.contrib.fastapi import ClientDep, add_exception_handlers, lifespan

    app = FastAPI(lifespan=lifespan())  # a client from the CACHE_SERVICE_* settings
    add_exception_handlers(app)  # DeviceNotFoundError -> 404, BackendError -> 503, ...

    @app.get("/devices/{device_id}")
    async def device(device_id: str, client: ClientDep) -> DeviceMetadata:
        return await client.get_device_metadata(device_id)

The lifespan builds the client when the app starts (or takes the one, or the factory, it is
given) and closes it when the app stops; :data:`ClientDep` and :data:`RepositoryDep` hand it,
or its async repository, to the routes. Layered applications that wire their services with
dependency-injector pass their :class:`~cache_service_client.container.Container` instead
(``lifespan(container=container)``): the lifespan then closes the container's resources, and
routes take ``Depends(Provide[Container.async_repository])`` under ``@inject``,
:data:`RepositoryDep`, or :data:`ClientDep` (a client over the container's repositories).

The models are pydantic-compatible, so a route can return a
:class:`~cache_service_client.DeviceMetadata`, a ``Page[DeviceMetadata]`` or a
:class:`~cache_service_client.CacheInfo` and take one as a body (``Annotated[DeviceMetadata,
Body()]``); the OpenAPI document shows their schemas. :class:`MsgspecJSONResponse` renders with
msgspec: returned directly, it skips FastAPI's validation and conversion of the response.

In tests, override the client: ``app.dependency_overrides[get_client] = lambda: client``, with
``client = CacheServiceClient(repository=memory_repository,
async_repository=async_memory_repository)`` (the pytest plugin's in-memory fixtures); every
dependency of this module follows, since :func:`get_repository` takes the client's async
repository.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import msgspec

from cache_service_client.client import CacheServiceClient
from cache_service_client.container import Container
from cache_service_client.contrib import _common
from cache_service_client.contrib._common import CLIENT_STATE, CONTAINER_STATE, ClientSource
from cache_service_client.exceptions import CacheServiceError
from cache_service_client.repository.base import AsyncDeviceMetadataRepository

with _common.framework_imports("fastapi", "FastAPI"):
    from fastapi import Depends
    from starlette.applications import Starlette
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import JSONResponse, Response

__all__ = [
    "CLIENT_STATE",
    "CONTAINER_STATE",
    "ClientDep",
    "ClientSource",
    "MsgspecJSONResponse",
    "RepositoryDep",
    "add_exception_handlers",
    "get_client",
    "get_repository",
    "lifespan",
]

_ENCODER = msgspec.json.Encoder()
_HOW = "create it with FastAPI(lifespan=cache_service_client.contrib.fastapi.lifespan(...))"


def lifespan(
    client: ClientSource = None,
    *,
    container: Container | None = None,
    close: bool = True,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A FastAPI (or Starlette) lifespan that owns the cache client of the app.

    Pass it as ``FastAPI(lifespan=lifespan(...))``, or enter it in the app's own lifespan
    (``async with lifespan(...)(app): yield``). At start-up it builds the client (or takes the
    one given), builds its async repository on the app's event loop, and stores the client as
    ``app.state.cache_service_client``; at shutdown it closes it.

    Args:
        client: The client, a function that returns one (called at start-up), or None: a
            client from the ``CACHE_SERVICE_*`` environment variables.
        container: Instead of a client, the dependency-injector container the application
            wires its services with: its async repository is built at start-up and its
            resources are shut down at the end. Stored as ``app.state.cache_service_container``.
        close: Close the client (or shut the container's resources down) when the app stops;
            False for one the caller closes itself.

    Raises:
        ConfigurationError: For a client and a container at once (here), or for invalid
            settings (at start-up, from the client).
    """
    _common.check_sources("lifespan()", client, container)

    def run(app: Starlette) -> AbstractAsyncContextManager[None]:
        return _common.serve("lifespan()", app.state, client, container, close)

    return run


async def get_client(connection: HTTPConnection) -> CacheServiceClient:
    """The app's client (a FastAPI dependency; :data:`ClientDep` is the annotated form).

    In container mode (``lifespan(container=...)``), a client over the container's
    repositories. Override this one in tests (``app.dependency_overrides[get_client]``):
    :func:`get_repository` follows.

    Raises:
        ConfigurationError: When the app runs without :func:`lifespan`.
    """
    return _common.state_client(connection.app.state, _HOW)


async def get_repository(
    client: Annotated[CacheServiceClient, Depends(get_client)],
) -> AsyncDeviceMetadataRepository:
    """The async repository of the app's client (a FastAPI dependency; :data:`RepositoryDep`).

    It depends on :func:`get_client`, so an override of that one reaches it too: in tests,
    ``app.dependency_overrides[get_client] = lambda: client`` swaps both. In container mode
    it is the container's async repository.

    Raises:
        ConfigurationError: When the app runs without :func:`lifespan`.
    """
    return await client.get_async_repository()


ClientDep = Annotated[CacheServiceClient, Depends(get_client)]
"""A route parameter annotated with it receives the app's :class:`CacheServiceClient`."""

RepositoryDep = Annotated[AsyncDeviceMetadataRepository, Depends(get_repository)]
"""A route parameter annotated with it receives the app's async repository."""


class MsgspecJSONResponse(JSONResponse):
    """A JSON response rendered by msgspec: Structs, datetimes and builtins, as the gateway does.

    Return ``MsgspecJSONResponse(metadata)`` from a route to skip FastAPI's response validation
    and conversion, or make it the ``response_class`` (or the app's
    ``default_response_class``) to render every response with msgspec.
    """

    def render(self, content: Any) -> bytes:
        """Encode ``content`` as JSON with msgspec."""
        return _ENCODER.encode(content)


async def _library_error(request: Request, exc: Exception) -> Response:
    answer = _common.error_answer(exc, request.method, request.url.path)
    return MsgspecJSONResponse(answer.body, answer.status, answer.headers)


def add_exception_handlers(app: Starlette) -> None:
    """Answer the library's exceptions raised in routes as the REST gateway does.

    :class:`~cache_service_client.ValidationError` -> 422, ``DeviceNotFoundError`` -> 404,
    ``DataCorruptionError`` -> 500, ``BackendTimeoutError`` / ``BackendConnectionError`` -> 503
    with ``Retry-After``, other ``BackendError`` -> 502; any other library error -> 500 (and
    logged). The body is the gateway's :class:`~cache_service_client.server.wire.ErrorBody`:
    ``{"error": code, "message": ..., "field" | "device_id" | "key": ...}``.
    """
    app.add_exception_handler(CacheServiceError, _library_error)
