"""HTTP repositories: the device metadata repository protocols over the REST gateway (httpx).

Needs the ``[http]`` extra. Built like the Redis repositories: every operation is a flow
(``repository/http/flows.py``) that yields the call of its endpoint (from
:data:`cache_service_client.rest.endpoints.ENDPOINTS`) and reads the reply; a sync and an async
driver (``repository/http/driver.py``) send the calls with
``httpx.Client`` or ``httpx.AsyncClient``; each repository method is a one-line shell.

- Input is validated first, exactly as the other repositories do, so a bad id or field is a
  :class:`~cache_service_client.ValidationError` before any request; an empty batch sends none.
- Answers map to the same exceptions as the Redis backend, through the error table
  (:data:`cache_service_client.rest.wire.ERRORS`): 404 ``device_not_found`` is
  :class:`~cache_service_client.DeviceNotFoundError`, 422
  :class:`~cache_service_client.ValidationError` naming the field, 401/403
  :class:`~cache_service_client.AuthenticationError`, 503 and connection failures
  :class:`~cache_service_client.BackendConnectionError` (timeouts
  :class:`~cache_service_client.BackendTimeoutError`), a stored value the gateway cannot decode
  or an answer this client cannot decode :class:`~cache_service_client.DataCorruptionError`.
- Every operation is idempotent (GET, HEAD, PUT, DELETE, and batch POSTs that read, or replace
  and delete whole values), so each is retried through the
  :class:`~cache_service_client.RetryPolicy` on connection failures, timeouts and 503; health
  checks and repairs are never retried.
- Connections are pooled and kept alive. Redirects are never followed, so the bearer token only
  ever goes to the configured origin; the token never appears in a repr, a log line or an error.
"""

try:
    import httpx  # noqa: F401 - the [http] extra
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"{exc}: the HTTP repositories need the [http] extra "
        "(pip install 'cache-service-client[http]')"
    ) from exc

from cache_service_client.repository.http.flows import ServerTTL
from cache_service_client.repository.http.repository import (
    AsyncHttpDeviceMetadataRepository,
    HttpDeviceMetadataRepository,
)

__all__ = ["AsyncHttpDeviceMetadataRepository", "HttpDeviceMetadataRepository", "ServerTTL"]
