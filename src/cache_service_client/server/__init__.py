"""The REST gateway: device metadata over HTTP, in front of any async repository.

Needs the ``[server]`` extra (Starlette and uvicorn)::

    from cache_service_client.server import create_app

    app = create_app(AsyncRedisDeviceMetadataRepository(redis.asyncio.Redis()), auth_token="...")

or from the command line: ``python -m cache_service_client.server --url redis://... --port 8080``.

The routes are made from the REST contract, :mod:`cache_service_client.rest` (the endpoint table
and the wire format, which the HTTP repository shares and :mod:`cache_service_client.server.wire`
re-exports). :mod:`cache_service_client.server.openapi` imports no web framework;
:func:`create_app` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cache_service_client.server.app import DEFAULT_MAX_BODY_BYTES, create_app

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]


def __getattr__(name: str) -> Any:
    # Starlette is imported only when the application is wanted, not with the wire types.
    if name in __all__:
        try:
            from cache_service_client.server import app
        except ImportError as exc:
            raise ImportError(
                f"{exc}: the gateway needs the [server] extra "
                "(pip install 'cache-service-client[server]')"
            ) from exc
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
