"""Integrations with web frameworks, each behind its optional extra.

- :mod:`cache_service_client.contrib.fastapi` (``pip install cache-service-client[fastapi]``):
  the client in the app's lifespan, ``Depends`` dependencies for the client and the async
  repository, msgspec JSON responses and the library's exceptions as HTTP errors.
- :mod:`cache_service_client.contrib.litestar` (``[litestar]``): a plugin that does the same the
  Litestar way (msgspec models are native there).

The library's models are also pydantic-compatible: any pydantic model, FastAPI route or
``TypeAdapter`` can use :class:`~cache_service_client.DeviceMetadata` and the other models as
field, body or response types (pydantic is imported only when it asks).
"""
