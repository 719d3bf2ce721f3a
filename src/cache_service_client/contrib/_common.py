"""What the framework integrations share: the lifespan's work, the state, the error answers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

from cache_service_client.client import CacheServiceClient
from cache_service_client.container import (
    Container,
    resolve_async_repository,
    shutdown_resources,
)
from cache_service_client.exceptions import ConfigurationError
from cache_service_client.repository.base import (
    AsyncDeviceMetadataRepository,
    DeviceMetadataRepository,
)
from cache_service_client.server import wire

__all__ = [
    "CLIENT_STATE",
    "CONTAINER_STATE",
    "ClientSource",
    "check_sources",
    "error_answer",
    "framework_imports",
    "serve",
    "state_client",
]

#: The app-state attribute that holds the client an integration's lifespan owns.
CLIENT_STATE: Final = "cache_service_client"
#: The app-state attribute that holds the container an integration's lifespan owns.
CONTAINER_STATE: Final = "cache_service_container"

logger = logging.getLogger("cache_service_client.contrib")

ClientSource = CacheServiceClient | Callable[[], CacheServiceClient] | None
"""A client, a function that builds one, or None (:meth:`CacheServiceClient.from_env`)."""


@contextmanager
def framework_imports(module: str, framework: str) -> Iterator[None]:
    """Around the imports of the integration ``module``: their ImportError names its extra.

    The integration's extra has the module's name.
    """
    try:
        yield
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"cache_service_client.contrib.{module} needs {framework}: "
            f"pip install 'cache-service-client[{module}]'"
        ) from exc


class _ContainerClient(CacheServiceClient):
    """The client of an app in container mode: a facade over the container's repositories.

    Both repositories are the container's, looked up at each call (an override of the
    container's providers shows at once); the container's owner closes them.
    """

    def __init__(self, container: Container) -> None:
        super().__init__(settings=container.settings())
        self._app_container = container

    @property
    def repository(self) -> DeviceMetadataRepository:
        """The container's sync repository (built on first use)."""
        repository: DeviceMetadataRepository = self._app_container.repository()
        return repository

    async def get_async_repository(self) -> AsyncDeviceMetadataRepository:
        """The container's async repository."""
        return await resolve_async_repository(self._app_container)


def check_sources(where: str, client: ClientSource, container: Container | None) -> None:
    """Refuse a client and a container at once."""
    if client is not None and container is not None:
        raise ConfigurationError(f"{where}: give a client or a container, not both")


def _client_from(where: str, source: ClientSource) -> CacheServiceClient:
    if source is None:
        return CacheServiceClient.from_env()
    if isinstance(source, CacheServiceClient):
        return source
    made = source()
    if not isinstance(made, CacheServiceClient):
        raise ConfigurationError(
            f"{where}: the client factory returned {type(made).__name__}, not a CacheServiceClient"
        )
    return made


@asynccontextmanager
async def serve(
    where: str, state: Any, client: ClientSource, container: Container | None, close: bool
) -> AsyncIterator[None]:
    """Own the client (or the container) for the life of an app, kept on its ``state``.

    The async repository is built on entry, on the app's event loop, so a bad setting or a
    missing extra fails at start-up, not at the first request.
    """
    if container is not None:
        await resolve_async_repository(container)
        setattr(state, CONTAINER_STATE, container)
        setattr(state, CLIENT_STATE, _ContainerClient(container))
        try:
            yield
        finally:
            delattr(state, CLIENT_STATE)
            delattr(state, CONTAINER_STATE)
            if close:
                await shutdown_resources(container)
        return
    made = _client_from(where, client)
    try:
        await made.get_async_repository()
        setattr(state, CLIENT_STATE, made)
        try:
            yield
        finally:
            delattr(state, CLIENT_STATE)
    finally:
        if close:
            await made.aclose()


def state_client(state: Any, how: str) -> CacheServiceClient:
    """The client on an app's ``state``; ``how`` says how to put one there."""
    client = getattr(state, CLIENT_STATE, None)
    if not isinstance(client, CacheServiceClient):
        raise ConfigurationError(f"this app has no CacheServiceClient: {how}")
    return client


def error_answer(exc: Exception, method: str, path: str) -> wire.ErrorResponse:
    """The gateway's answer to a library exception; a 500 (logged) for one it has none for."""
    answer = wire.error_response(exc)
    if answer is not None:
        return answer
    logger.error("unexpected library error in %s %s", method, path, exc_info=exc)
    return wire.ErrorResponse(
        500, wire.ErrorBody(error="internal_error", message="internal error"), {}
    )
