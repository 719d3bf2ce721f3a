"""The REST API's wire format, as the gateway's package names it.

Every name of :mod:`cache_service_client.rest.wire`, which defines them: paths, JSON bodies,
error codes and :func:`~cache_service_client.rest.wire.error_response`.
"""

from cache_service_client.rest import wire as _wire
from cache_service_client.rest.wire import *  # noqa: F403

__all__ = _wire.__all__
