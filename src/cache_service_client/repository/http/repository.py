"""HTTP repositories: thin shells that build a flow and hand it to their driver."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any, ClassVar, Generic, TypeVar

import httpx

from cache_service_client import models
from cache_service_client._validation import validate_ttl
from cache_service_client.config import DEFAULTS
from cache_service_client.repository.base import log_corrupted
from cache_service_client.repository.http import flows
from cache_service_client.repository.http.driver import AsyncHttpDriver, SyncHttpDriver, _Driver
from cache_service_client.repository.http.flows import SERVER, ServerTTL
from cache_service_client.retry import RetryPolicy

__all__ = ["AsyncHttpDeviceMetadataRepository", "HttpDeviceMetadataRepository"]

C = TypeVar("C", httpx.Client, httpx.AsyncClient)


class _HttpCommon(Generic[C]):
    """The constructor and the state both HTTP repositories share."""

    _DRIVER: ClassVar[type[_Driver[Any]]]
    _driver: _Driver[C]

    def __init__(
        self,
        base_url: str,
        *,
        auth_token: str | None = None,
        timeout: float = DEFAULTS.http_timeout,
        retry: RetryPolicy | None = None,
        ttl: float | ServerTTL | None = SERVER,
        client: C | None = None,
        max_connections: int = 10,
        verify: bool | ssl.SSLContext = True,
        trust_env: bool = True,
    ) -> None:
        self._driver = self._DRIVER(
            base_url,
            auth_token=auth_token,
            timeout=timeout,
            retry=retry,
            client=client,
            max_connections=max_connections,
            verify=verify,
            trust_env=trust_env,
        )
        self._ctx = flows.HttpContext(self._driver.shown_url)
        self.ttl = ttl

    @property
    def client(self) -> C:
        """The httpx client in use."""
        return self._driver.client

    @property
    def base_url(self) -> str:
        """The gateway's base URL (credentials in it are masked in every message)."""
        return self._driver.base_url

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call but health checks and repairs (read-only)."""
        return self._driver.retry

    @property
    def timeout(self) -> float:
        """Seconds per request (connect, each read or write, waiting for a pooled connection)."""
        return self._driver.timeout

    @property
    def ttl(self) -> float | ServerTTL | None:
        """The TTL sent with writes; settable.

        ``"server"`` (the default): send none, the gateway applies its own. A number of
        seconds, or None / 0 for no expiry: sent with every write, which the gateway accepts
        only when started with ``allow_client_ttl`` (else a ValidationError naming ``ttl``).
        """
        return self._ctx.ttl

    @ttl.setter
    def ttl(self, value: float | ServerTTL | None) -> None:
        self._ctx.ttl = SERVER if value == SERVER else validate_ttl(value)

    def __repr__(self) -> str:
        driver = self._driver
        token = "***" if driver.has_token else None
        return (
            f"{type(self).__name__}({driver.shown_url!r}, auth_token={token}, "
            f"timeout={driver.timeout!r}, ttl={self._ctx.ttl!r}, retry={driver.retry!r})"
        )


class HttpDeviceMetadataRepository(_HttpCommon[httpx.Client]):
    """A :class:`.DeviceMetadataRepository` over the REST gateway (sync, ``httpx.Client``).

    Args:
        base_url: The gateway's URL (``http://`` or ``https://``, optionally with a path prefix).
        auth_token: Bearer token for the gateway (printable ASCII; never shown anywhere).
        timeout: Seconds per request: to connect, for each read or write, and to wait for a
            free connection.
        retry: Retries connection failures, timeouts and 503 answers of each call; None:
            ``RetryPolicy()``. Use ``RetryPolicy.disabled()`` for none.
        ttl: ``"server"`` (default): the gateway's TTL; or seconds (0/None: never expire), sent
            with each write (see :attr:`ttl`).
        client: An ``httpx.Client`` to use instead of building one; the caller keeps it (it is
            not closed by :meth:`close`). Redirects are not followed even if the client would.
        max_connections: Size of the connection pool (kept alive between calls). Calls beyond
            it wait their turn in front of the pool: httpcore's pool does work in proportion to
            connections times waiting requests on every change, so a small pool and a queue in
            front of it serve many concurrent calls faster than a large pool.
        verify: TLS verification: True (system CAs), False, or an ``ssl.SSLContext``.
        trust_env: Use proxy settings and CA bundles from the environment, as httpx does.

    Raises:
        ConfigurationError: An argument is invalid (the URL, the token, the timeout, ...).

    """

    _DRIVER = SyncHttpDriver
    _driver: SyncHttpDriver

    def get(self, device_id: str) -> models.DeviceMetadata:
        """Return the metadata of ``device_id`` (``GET /v1/devices/{id}``)."""
        return self._driver.run(flows.get(self._ctx, device_id))

    def get_many_detailed(self, device_ids: Iterable[str]) -> models.BatchGetResult:
        """Read a batch in one request; report found, missing and corrupted entries."""
        return self._driver.run(flows.get_many(self._ctx, device_ids))

    def get_many(self, device_ids: Iterable[str]) -> dict[str, models.DeviceMetadata]:
        """Read a batch in one request; missing and corrupted ids are left out."""
        return log_corrupted(self.get_many_detailed(device_ids))

    def put(self, metadata: models.DeviceMetadata, *, if_newer: bool = False) -> bool:
        """Store one device (``PUT /v1/devices/{id}``); True if it was written."""
        return self._driver.run(flows.put(self._ctx, metadata, if_newer))

    def put_many(self, items: Iterable[models.DeviceMetadata], *, if_newer: bool = False) -> int:
        """Store a batch atomically in one request; return how many were written.

        Nothing is stored if any item is invalid.
        """
        return self._driver.run(flows.put_many(self._ctx, items, if_newer))

    def delete(self, device_id: str) -> bool:
        """Delete one device; True if it was stored."""
        return self._driver.run(flows.delete(self._ctx, device_id))

    def delete_many(self, device_ids: Iterable[str]) -> int:
        """Delete a batch atomically; return how many were stored."""
        return self._driver.run(flows.delete_many(self._ctx, device_ids))

    def exists(self, device_id: str) -> bool:
        """True if a value is stored for ``device_id`` (``HEAD /v1/devices/{id}``)."""
        return self._driver.run(flows.exists(self._ctx, device_id))

    def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """Return stored ids in order, filtered by a Redis glob and paged."""
        return self._driver.run(flows.list_ids(self._ctx, pattern, limit, offset))

    def count(self) -> int:
        """Return how many devices are stored."""
        return self._driver.run(flows.count(self._ctx))

    def query(self, query: models.DeviceQuery) -> models.Page[models.DeviceMetadata]:
        """Return one page of devices matching ``query`` (``POST /v1/devices:query``)."""
        return self._driver.run(flows.query(self._ctx, query))

    def repair(self) -> models.RepairReport:
        """Rebuild the backend's indexes through the gateway (one attempt, never retried)."""
        return self._driver.run(flows.repair(self._ctx))

    def info(self) -> models.CacheInfo:
        """Return figures about the cache (the backend's, through the gateway)."""
        return self._driver.run(flows.info(self._ctx))

    def health(self) -> models.HealthStatus:
        """The backend's health through the gateway, with the round trip as latency.

        Never raises: an unreachable gateway, a refused token or a bad answer is "unhealthy".
        """
        return self._driver.run(flows.health(self._ctx))

    def close(self) -> None:
        """Close the pooled connections (not those of a client passed in)."""
        self._driver.close()


class AsyncHttpDeviceMetadataRepository(_HttpCommon[httpx.AsyncClient]):
    """An :class:`.AsyncDeviceMetadataRepository` over the REST gateway (``httpx.AsyncClient``).

    Takes the same arguments as :class:`HttpDeviceMetadataRepository` (``client`` is an
    ``httpx.AsyncClient``). A cancelled call closes its connection, so no answer is ever left
    for the next caller.
    """

    _DRIVER = AsyncHttpDriver
    _driver: AsyncHttpDriver

    async def get(self, device_id: str) -> models.DeviceMetadata:
        """See :meth:`HttpDeviceMetadataRepository.get`."""
        return await self._driver.run(flows.get(self._ctx, device_id))

    async def get_many_detailed(self, device_ids: Iterable[str]) -> models.BatchGetResult:
        """See :meth:`HttpDeviceMetadataRepository.get_many_detailed`."""
        return await self._driver.run(flows.get_many(self._ctx, device_ids))

    async def get_many(self, device_ids: Iterable[str]) -> dict[str, models.DeviceMetadata]:
        """See :meth:`HttpDeviceMetadataRepository.get_many`."""
        return log_corrupted(await self.get_many_detailed(device_ids))

    async def put(self, metadata: models.DeviceMetadata, *, if_newer: bool = False) -> bool:
        """See :meth:`HttpDeviceMetadataRepository.put`."""
        return await self._driver.run(flows.put(self._ctx, metadata, if_newer))

    async def put_many(
        self, items: Iterable[models.DeviceMetadata], *, if_newer: bool = False
    ) -> int:
        """See :meth:`HttpDeviceMetadataRepository.put_many`."""
        return await self._driver.run(flows.put_many(self._ctx, items, if_newer))

    async def delete(self, device_id: str) -> bool:
        """See :meth:`HttpDeviceMetadataRepository.delete`."""
        return await self._driver.run(flows.delete(self._ctx, device_id))

    async def delete_many(self, device_ids: Iterable[str]) -> int:
        """See :meth:`HttpDeviceMetadataRepository.delete_many`."""
        return await self._driver.run(flows.delete_many(self._ctx, device_ids))

    async def exists(self, device_id: str) -> bool:
        """See :meth:`HttpDeviceMetadataRepository.exists`."""
        return await self._driver.run(flows.exists(self._ctx, device_id))

    async def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """See :meth:`HttpDeviceMetadataRepository.list_ids`."""
        return await self._driver.run(flows.list_ids(self._ctx, pattern, limit, offset))

    async def count(self) -> int:
        """See :meth:`HttpDeviceMetadataRepository.count`."""
        return await self._driver.run(flows.count(self._ctx))

    async def query(self, query: models.DeviceQuery) -> models.Page[models.DeviceMetadata]:
        """See :meth:`HttpDeviceMetadataRepository.query`."""
        return await self._driver.run(flows.query(self._ctx, query))

    async def repair(self) -> models.RepairReport:
        """See :meth:`HttpDeviceMetadataRepository.repair`."""
        return await self._driver.run(flows.repair(self._ctx))

    async def info(self) -> models.CacheInfo:
        """See :meth:`HttpDeviceMetadataRepository.info`."""
        return await self._driver.run(flows.info(self._ctx))

    async def health(self) -> models.HealthStatus:
        """See :meth:`HttpDeviceMetadataRepository.health`; never raises."""
        return await self._driver.run(flows.health(self._ctx))

    async def close(self) -> None:
        """Close the pooled connections (not those of a client passed in)."""
        await self._driver.close()
