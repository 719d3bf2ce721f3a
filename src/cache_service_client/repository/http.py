"""HTTP repositories: the device metadata repository protocols over the REST gateway (httpx).

Needs the ``[http]`` extra. Both repositories build the same requests and read the same answers;
only sending differs (``httpx.Client`` or ``httpx.AsyncClient``), so each method is a one-line
shell around an operation built once (the HTTP counterpart of the Redis flows).

- Input is validated here first, exactly as the other repositories do, so a bad id or field is
  a :class:`~cache_service_client.ValidationError` before any request.
- Answers map to the same exceptions as the Redis backend: 404 ``device_not_found`` is
  :class:`~cache_service_client.DeviceNotFoundError`, 422
  :class:`~cache_service_client.ValidationError` naming the field, 401/403
  :class:`~cache_service_client.AuthenticationError`, 503 and connection failures
  :class:`~cache_service_client.BackendConnectionError` (timeouts
  :class:`~cache_service_client.BackendTimeoutError`), a stored value the gateway cannot decode
  or an answer this client cannot decode :class:`~cache_service_client.DataCorruptionError`.
- Every operation is idempotent (GET, HEAD, PUT, DELETE, and batch POSTs that read, or replace
  and delete whole values), so each is retried through the
  :class:`~cache_service_client.RetryPolicy` on connection failures, timeouts and 503; health
  checks are never retried.
- Connections are pooled and kept alive. Redirects are never followed, so the bearer token only
  ever goes to the configured origin; the token never appears in a repr, a log line or an error.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"{exc}: the HTTP repositories need the [http] extra "
        "(pip install 'cache-service-client[http]')"
    ) from exc

from cache_service_client._query import plan_query
from cache_service_client._validation import (
    check_flag,
    check_text,
    validate_device_id,
    validate_device_ids,
    validate_metadata,
    validate_paging,
    validate_ttl,
)
from cache_service_client.config import check_http_url, mask_url
from cache_service_client.exceptions import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    CacheServiceError,
    ConfigurationError,
    DataCorruptionError,
    DeviceNotFoundError,
    ValidationError,
)
from cache_service_client.models import (
    BatchGetResult,
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    Page,
    RepairReport,
)
from cache_service_client.repository.base import log_corrupted, unhealthy, validate_batch
from cache_service_client.retry import RetryPolicy
from cache_service_client.server import wire

__all__ = ["AsyncHttpDeviceMetadataRepository", "HttpDeviceMetadataRepository", "ServerTTL"]

T = TypeVar("T")

#: The ``ttl`` of a repository that lets the gateway apply its own TTL (the default).
ServerTTL = Literal["server"]
_SERVER: Final = "server"

_JSON = "application/json"
_ENCODER = msgspec.json.Encoder()
_METADATA = msgspec.json.Decoder(DeviceMetadata)
_BATCH = msgspec.json.Decoder(wire.BatchGetResponse)
_STORED = msgspec.json.Decoder(wire.StoredResponse)
_DELETE = msgspec.json.Decoder(wire.DeleteResponse)
_DELETED = msgspec.json.Decoder(wire.DeletedResponse)
_IDS = msgspec.json.Decoder(wire.IdsResponse)
_COUNT = msgspec.json.Decoder(wire.CountResponse)
_INFO = msgspec.json.Decoder(CacheInfo)
_HEALTH = msgspec.json.Decoder(HealthStatus)
_PAGE = msgspec.json.Decoder(Page[DeviceMetadata])
_REPAIR = msgspec.json.Decoder(RepairReport)
_ERROR = msgspec.json.Decoder(wire.ErrorBody)
_EXISTS_HEADER = "x-device-exists"


@dataclass(frozen=True)
class _Op(Generic[T]):
    """One request and how to read its answer: built once, sent by a sync or async client."""

    name: str
    method: str
    path: str
    read: Callable[[httpx.Response, str], T]
    params: dict[str, str] | None = None
    body: bytes | None = None
    device_id: str | None = None  # the device a 404 is about
    batch_field: str = "metadata"  # the field a 413 is about
    every_status: bool = False  # read() takes error answers too (HEAD: no body to tell them)
    retried: bool = True  # False: one attempt only (a slow repair must not run twice)


def _decode(decoder: msgspec.json.Decoder[T], response: httpx.Response, where: str) -> T:
    try:
        return decoder.decode(response.content)
    except (msgspec.DecodeError, RecursionError, UnicodeError, ValueError) as exc:
        raise DataCorruptionError(where, f"the gateway's answer cannot be decoded: {exc}") from exc


def _error_body(response: httpx.Response) -> wire.ErrorBody | None:
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith(_JSON):
        return None
    try:
        return _ERROR.decode(response.content)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None


def _error_for(
    response: httpx.Response,
    where: str,
    device_id: str | None = None,
    batch_field: str = "metadata",
) -> CacheServiceError:
    """Map an error answer to the library's exception (the same as the Redis backend's)."""
    status = response.status_code
    body = _error_body(response)
    code = body.error if body is not None else None
    said = f": {body.message}" if body is not None else ""
    if 300 <= status < 400:
        target = mask_url(response.headers.get("location", "?"))
        return BackendError(
            f"{where}: the gateway answered {status} with a redirect to {target!r}; "
            "redirects are not followed (set http_url to the final address)"
        )
    if status in (401, 403):
        return AuthenticationError(f"{where}: the gateway refused the request ({status}){said}")
    if status == 404 and code == "device_not_found" and device_id is not None:
        return DeviceNotFoundError(device_id)
    if status == 413:
        return ValidationError(
            batch_field, "the request is larger than the gateway accepts (413); send less"
        )
    if status == 422 and body is not None:
        name = body.field or "request"
        message = body.message.removeprefix(f"{name}: ")
        return ValidationError(name, message)
    if status == 500 and code == "data_corruption" and body is not None:
        return DataCorruptionError(body.key or where, body.message)
    if status == 503 or status == 429 or (status == 502 and code is None):
        # 502 without our body: a proxy in front of a gateway that is down or restarting.
        if code == "backend_timeout":
            return BackendTimeoutError(f"{where}: the backend did not answer in time ({status})")
        return BackendConnectionError(f"{where}: the gateway is unavailable ({status}){said}")
    if status == 504:
        return BackendTimeoutError(f"{where}: the gateway timed out (504){said}")
    return BackendError(f"{where}: the gateway answered {status} ({code or 'no error body'}){said}")


def _check(op: _Op[T], response: httpx.Response, where: str) -> T:
    if op.every_status or 200 <= response.status_code < 300:
        return op.read(response, where)
    raise _error_for(response, where, op.device_id, op.batch_field)


def _transport_error(exc: httpx.HTTPError, where: str, timeout: float) -> CacheServiceError:
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeoutError(
            f"{where}: no answer from the gateway within {timeout:g} s ({type(exc).__name__})"
        )
    return BackendConnectionError(f"{where}: {type(exc).__name__}: {exc}")


# -- reading answers ---------------------------------------------------------------------------


def _read_metadata(device_id: str) -> Callable[[httpx.Response, str], DeviceMetadata]:
    def read(response: httpx.Response, where: str) -> DeviceMetadata:
        metadata = _decode(_METADATA, response, where)
        if metadata.device_id != device_id:
            raise DataCorruptionError(
                where, f"the gateway answered with device {metadata.device_id!r}"
            )
        return metadata

    return read


def _read_batch(ids: list[str]) -> Callable[[httpx.Response, str], BatchGetResult]:
    def read(response: httpx.Response, where: str) -> BatchGetResult:
        answer = _decode(_BATCH, response, where)
        wanted = set(ids)
        for device_id, metadata in answer.found.items():
            if device_id not in wanted or metadata.device_id != device_id:
                raise DataCorruptionError(where, f"the gateway answered with device {device_id!r}")
        corrupted = {
            device_id: DataCorruptionError(entry.key, entry.reason)
            for device_id, entry in answer.corrupted.items()
        }
        return BatchGetResult(found=answer.found, missing=answer.missing, corrupted=corrupted)

    return read


def _read_exists(response: httpx.Response, where: str) -> bool:
    # A HEAD answer has no body: the gateway's header tells its 404 from any other 404 (a
    # wrong base URL, a proxy), which must not pass for "does not exist".
    marker: str | None = response.headers.get(_EXISTS_HEADER)
    if response.status_code in (200, 404) and marker in ("true", "false"):
        return marker == "true"
    raise _error_for(response, where)


def _read_true(response: httpx.Response, where: str) -> bool:
    return True


def _read_written(response: httpx.Response, where: str) -> bool:
    stored: int = _read_stored(response, where)
    return stored == 1


def _reader(
    decoder: msgspec.json.Decoder[Any], attribute: str
) -> Callable[[httpx.Response, str], Any]:
    def read(response: httpx.Response, where: str) -> Any:
        return getattr(_decode(decoder, response, where), attribute)

    return read


_read_stored = _reader(_STORED, "stored")


def _read_whole(decoder: msgspec.json.Decoder[T]) -> Callable[[httpx.Response, str], T]:
    def read(response: httpx.Response, where: str) -> T:
        return _decode(decoder, response, where)

    return read


def _seconds(ttl: float | None) -> str:
    if ttl is None:
        return "0"
    return format(ttl, ".6f").rstrip("0").rstrip(".")


# -- the shared part ---------------------------------------------------------------------------


def _check_base_url(base_url: object) -> str:
    return check_http_url(base_url, "argument base_url")


def _check_token(token: object) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str) or not token:
        raise ConfigurationError("argument auth_token: must be a non-empty str or None")
    if not all("\x21" <= ch <= "\x7e" for ch in token):
        raise ConfigurationError(
            "argument auth_token: must be printable ASCII without spaces (a bearer token)"
        )
    return token


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"argument {name}: must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"argument {name}: must be a finite number > 0, not {value!r}")
    return float(value)


class _HttpCommon:
    """Configuration and request building shared by the sync and async repositories."""

    def __init__(
        self,
        base_url: str,
        *,
        auth_token: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        ttl: float | ServerTTL | None,
    ) -> None:
        self._base_url = _check_base_url(base_url)
        self._shown_url = mask_url(self._base_url)
        token = _check_token(auth_token)
        self._timeout = _check_positive("timeout", timeout)
        self._retry = retry if retry is not None else RetryPolicy()
        self._headers = {"Accept": _JSON}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._has_token = token is not None
        self._ttl: float | ServerTTL | None = _SERVER
        self.ttl = ttl

    # -- state --

    @property
    def base_url(self) -> str:
        """The gateway's base URL (credentials in it are masked in every message)."""
        return self._base_url

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call but health checks (read-only)."""
        return self._retry

    @property
    def timeout(self) -> float:
        """Seconds per request (connect, each read or write, waiting for a pooled connection)."""
        return self._timeout

    @property
    def ttl(self) -> float | ServerTTL | None:
        """The TTL sent with writes; settable.

        ``"server"`` (the default): send none, the gateway applies its own. A number of
        seconds, or None / 0 for no expiry: sent with every write, which the gateway accepts
        only when started with ``allow_client_ttl`` (else a ValidationError naming ``ttl``).
        """
        return self._ttl

    @ttl.setter
    def ttl(self, value: float | ServerTTL | None) -> None:
        self._ttl = _SERVER if value == _SERVER else validate_ttl(value)

    def __repr__(self) -> str:
        token = "***" if self._has_token else None
        return (
            f"{type(self).__name__}({self._shown_url!r}, auth_token={token}, "
            f"timeout={self._timeout!r}, ttl={self._ttl!r}, retry={self._retry!r})"
        )

    # -- requests --

    def _where(self, op: _Op[Any]) -> str:
        return f"{op.method} {self._shown_url}{op.path}"

    def _build(self, client: httpx.Client | httpx.AsyncClient, op: _Op[Any]) -> httpx.Request:
        headers = self._headers
        if op.body is not None:
            headers = {**headers, "Content-Type": _JSON}
        return client.build_request(
            op.method,
            self._base_url + op.path,
            params=op.params,
            content=op.body,
            headers=headers,
            timeout=self._timeout,
        )

    def _tls(self, verify: bool | ssl.SSLContext) -> bool | ssl.SSLContext:
        # Loading the CA bundle takes some 30 ms; a plain http:// gateway never needs it (no
        # redirect is followed, so no request can go to an https:// address either).
        return verify if self._base_url.lower().startswith("https:") else False

    def _write_params(self, if_newer: bool) -> dict[str, str] | None:
        ttl = self._ttl
        params = {} if isinstance(ttl, str) else {"ttl": _seconds(ttl)}
        if check_flag(if_newer, "if_newer"):
            params["if_newer"] = "true"
        return params or None

    # -- operations (validated here, before anything is sent) --

    def _get(self, device_id: str) -> _Op[DeviceMetadata]:
        device_id = validate_device_id(device_id)
        return _Op(
            "get",
            "GET",
            wire.device_path(device_id),
            _read_metadata(device_id),
            device_id=device_id,
        )

    def _get_many(self, device_ids: Iterable[str]) -> _Op[BatchGetResult] | None:
        ids = validate_device_ids(device_ids)
        if not ids:
            return None
        body = _ENCODER.encode(wire.DeviceIdsBody(device_ids=ids))
        return _Op(
            "get_many",
            "POST",
            wire.BATCH_GET_PATH,
            _read_batch(ids),
            body=body,
            batch_field="device_ids",
        )

    def _put(self, metadata: DeviceMetadata, if_newer: bool) -> _Op[bool]:
        checked = validate_metadata(metadata)
        params = self._write_params(if_newer)
        return _Op(
            "put",
            "PUT",
            wire.device_path(checked.device_id),
            _read_written if if_newer else _read_true,
            params=params,
            body=_ENCODER.encode(checked),
        )

    def _put_many(self, items: Iterable[DeviceMetadata], if_newer: bool) -> _Op[int] | None:
        params = self._write_params(if_newer)
        checked = validate_batch(items, newest=if_newer)
        if not checked:
            return None
        # DeviceMetadata encodes with its "v" tag, which the gateway's input accepts.
        body = b'{"items":' + _ENCODER.encode(checked) + b"}"
        return _Op(
            "put_many",
            "POST",
            wire.BATCH_PUT_PATH,
            _read_stored,
            params=params,
            body=body,
            batch_field="items",
        )

    def _delete(self, device_id: str) -> _Op[bool]:
        device_id = validate_device_id(device_id)
        return _Op("delete", "DELETE", wire.device_path(device_id), _reader(_DELETE, "deleted"))

    def _delete_many(self, device_ids: Iterable[str]) -> _Op[int] | None:
        ids = validate_device_ids(device_ids)
        if not ids:
            return None
        body = _ENCODER.encode(wire.DeviceIdsBody(device_ids=ids))
        return _Op(
            "delete_many",
            "POST",
            wire.BATCH_DELETE_PATH,
            _reader(_DELETED, "deleted"),
            body=body,
            batch_field="device_ids",
        )

    def _exists(self, device_id: str) -> _Op[bool]:
        device_id = validate_device_id(device_id)
        return _Op("exists", "HEAD", wire.device_path(device_id), _read_exists, every_status=True)

    def _list_ids(self, pattern: str | None, limit: int | None, offset: int | None) -> _Op[Any]:
        limit, skip, pattern = validate_paging(limit, offset, pattern)
        params: dict[str, str] = {}
        if pattern is not None:
            params["pattern"] = pattern
        if limit is not None:
            params["limit"] = str(limit)
        if skip:
            params["offset"] = str(skip)
        return _Op("list_ids", "GET", wire.DEVICES_PATH, _reader(_IDS, "ids"), params=params)

    def _query(self, query: DeviceQuery) -> _Op[Page[DeviceMetadata]]:
        if isinstance(query, DeviceQuery):
            # Everything but the cursor is checked here; the cursor is the gateway's to judge,
            # once it is text that can be sent at all.
            plan_query(msgspec.structs.replace(query, cursor=None))
            if query.cursor is not None:
                if type(query.cursor) is not str:
                    raise ValidationError("cursor", "must be a str or None")
                check_text(query.cursor, "cursor")
        else:
            plan_query(query)  # raises, naming "query"
        body = _ENCODER.encode(query)
        return _Op(
            "query", "POST", wire.QUERY_PATH, _read_whole(_PAGE), body=body, batch_field="query"
        )

    def _repair(self) -> _Op[RepairReport]:
        return _Op("repair", "POST", wire.REPAIR_PATH, _read_whole(_REPAIR), retried=False)

    def _count(self) -> _Op[Any]:
        return _Op("count", "GET", wire.COUNT_PATH, _reader(_COUNT, "count"))

    def _info(self) -> _Op[CacheInfo]:
        return _Op("info", "GET", wire.INFO_PATH, _read_whole(_INFO))

    def _health(self) -> _Op[HealthStatus]:
        return _Op("health", "GET", wire.HEALTH_PATH, _read_whole(_HEALTH))

    def _answer(self, op: _Op[T], response: httpx.Response) -> T:
        return _check(op, response, self._where(op))

    def _health_answer(self, response: httpx.Response, started: float) -> HealthStatus:
        latency = (time.perf_counter() - started) * 1000
        where = f"GET {self._shown_url}{wire.HEALTH_PATH}"
        if response.status_code in (200, 503):
            try:
                status = _decode(_HEALTH, response, where)
            except DataCorruptionError:
                return unhealthy("the gateway's health answer cannot be decoded", "decode")
            details = {
                **status.details,
                "gateway": self._shown_url,
                "backend_latency_ms": status.latency_ms,
            }
            return msgspec.structs.replace(status, latency_ms=latency, details=details)
        error = _error_for(response, where)
        return unhealthy(str(error), type(error).__name__)


def _limits(max_connections: int) -> httpx.Limits:
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise ConfigurationError("argument max_connections: must be an int")
    if max_connections < 1:
        raise ConfigurationError("argument max_connections: must be at least 1")
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


class HttpDeviceMetadataRepository(_HttpCommon):
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

    def __init__(
        self,
        base_url: str,
        *,
        auth_token: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        ttl: float | ServerTTL | None = _SERVER,
        client: httpx.Client | None = None,
        max_connections: int = 10,
        verify: bool | ssl.SSLContext = True,
        trust_env: bool = True,
    ) -> None:
        super().__init__(base_url, auth_token=auth_token, timeout=timeout, retry=retry, ttl=ttl)
        limits = _limits(max_connections)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.Client(
                timeout=self._timeout, limits=limits, verify=self._tls(verify), trust_env=trust_env
            )
        )

    @property
    def client(self) -> httpx.Client:
        """The httpx client in use."""
        return self._client

    def _send(self, op: _Op[Any]) -> httpx.Response:
        request = self._build(self._client, op)
        if not self._slots.acquire(timeout=self._timeout):
            raise BackendTimeoutError(
                f"{self._where(op)}: no free connection within {self._timeout:g} s"
            )
        try:
            return self._client.send(request, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self._where(op), self._timeout) from exc
        finally:
            self._slots.release()

    def _run(self, op: _Op[T]) -> T:
        if not op.retried:
            return self._answer(op, self._send(op))
        return self._retry.call(lambda: self._answer(op, self._send(op)), operation=op.name)

    def get(self, device_id: str) -> DeviceMetadata:
        """Return the metadata of ``device_id`` (``GET /v1/devices/{id}``)."""
        return self._run(self._get(device_id))

    def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """Read a batch in one request; report found, missing and corrupted entries."""
        op = self._get_many(device_ids)
        return BatchGetResult(found={}, missing=[], corrupted={}) if op is None else self._run(op)

    def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """Read a batch in one request; missing and corrupted ids are left out."""
        return log_corrupted(self.get_many_detailed(device_ids))

    def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """Store one device (``PUT /v1/devices/{id}``); True if it was written."""
        return self._run(self._put(metadata, if_newer))

    def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """Store a batch atomically in one request; return how many were written.

        Nothing is stored if any item is invalid.
        """
        op = self._put_many(items, if_newer)
        return 0 if op is None else self._run(op)

    def delete(self, device_id: str) -> bool:
        """Delete one device; True if it was stored."""
        return self._run(self._delete(device_id))

    def delete_many(self, device_ids: Iterable[str]) -> int:
        """Delete a batch atomically; return how many were stored."""
        op = self._delete_many(device_ids)
        return 0 if op is None else self._run(op)

    def exists(self, device_id: str) -> bool:
        """True if a value is stored for ``device_id`` (``HEAD /v1/devices/{id}``)."""
        return self._run(self._exists(device_id))

    def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """Return stored ids in order, filtered by a Redis glob and paged."""
        ids: list[str] = self._run(self._list_ids(pattern, limit, offset))
        return ids

    def count(self) -> int:
        """Return how many devices are stored."""
        count: int = self._run(self._count())
        return count

    def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """Return one page of devices matching ``query`` (``POST /v1/devices:query``)."""
        return self._run(self._query(query))

    def repair(self) -> RepairReport:
        """Rebuild the backend's indexes through the gateway (one attempt, never retried)."""
        return self._run(self._repair())

    def info(self) -> CacheInfo:
        """Return figures about the cache (the backend's, through the gateway)."""
        return self._run(self._info())

    def health(self) -> HealthStatus:
        """The backend's health through the gateway, with the round trip as latency.

        Never raises: an unreachable gateway, a refused token or a bad answer is "unhealthy".
        """
        op = self._health()
        started = time.perf_counter()
        try:
            response = self._send(op)
        except Exception as exc:  # never raises: a closed client is unhealthy too
            return unhealthy(str(exc), type(exc).__name__)
        return self._health_answer(response, started)

    def close(self) -> None:
        """Close the pooled connections (not those of a client passed in)."""
        if self._owns_client:
            self._client.close()


class AsyncHttpDeviceMetadataRepository(_HttpCommon):
    """An :class:`.AsyncDeviceMetadataRepository` over the REST gateway (``httpx.AsyncClient``).

    Takes the same arguments as :class:`HttpDeviceMetadataRepository` (``client`` is an
    ``httpx.AsyncClient``). A cancelled call closes its connection, so no answer is ever left
    for the next caller.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth_token: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        ttl: float | ServerTTL | None = _SERVER,
        client: httpx.AsyncClient | None = None,
        max_connections: int = 10,
        verify: bool | ssl.SSLContext = True,
        trust_env: bool = True,
    ) -> None:
        super().__init__(base_url, auth_token=auth_token, timeout=timeout, retry=retry, ttl=ttl)
        limits = _limits(max_connections)
        # Bound to the event loop of its first use, like the client itself.
        self._slots = asyncio.Semaphore(max_connections)
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(
                timeout=self._timeout, limits=limits, verify=self._tls(verify), trust_env=trust_env
            )
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The httpx client in use."""
        return self._client

    async def _send(self, op: _Op[Any]) -> httpx.Response:
        request = self._build(self._client, op)
        # No timeout on the queue in front of the pool: every call ahead is bounded by the
        # timeout (or cancelled), so the wait is too.
        async with self._slots:
            try:
                return await self._client.send(request, follow_redirects=False)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, self._where(op), self._timeout) from exc

    async def _run(self, op: _Op[T]) -> T:
        async def attempt() -> T:
            return self._answer(op, await self._send(op))

        if not op.retried:
            return await attempt()
        return await self._retry.call_async(attempt, operation=op.name)

    async def get(self, device_id: str) -> DeviceMetadata:
        """See :meth:`HttpDeviceMetadataRepository.get`."""
        return await self._run(self._get(device_id))

    async def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """See :meth:`HttpDeviceMetadataRepository.get_many_detailed`."""
        op = self._get_many(device_ids)
        return (
            BatchGetResult(found={}, missing=[], corrupted={})
            if op is None
            else await self._run(op)
        )

    async def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """See :meth:`HttpDeviceMetadataRepository.get_many`."""
        return log_corrupted(await self.get_many_detailed(device_ids))

    async def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """See :meth:`HttpDeviceMetadataRepository.put`."""
        return await self._run(self._put(metadata, if_newer))

    async def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """See :meth:`HttpDeviceMetadataRepository.put_many`."""
        op = self._put_many(items, if_newer)
        return 0 if op is None else await self._run(op)

    async def delete(self, device_id: str) -> bool:
        """See :meth:`HttpDeviceMetadataRepository.delete`."""
        return await self._run(self._delete(device_id))

    async def delete_many(self, device_ids: Iterable[str]) -> int:
        """See :meth:`HttpDeviceMetadataRepository.delete_many`."""
        op = self._delete_many(device_ids)
        return 0 if op is None else await self._run(op)

    async def exists(self, device_id: str) -> bool:
        """See :meth:`HttpDeviceMetadataRepository.exists`."""
        return await self._run(self._exists(device_id))

    async def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """See :meth:`HttpDeviceMetadataRepository.list_ids`."""
        ids: list[str] = await self._run(self._list_ids(pattern, limit, offset))
        return ids

    async def count(self) -> int:
        """See :meth:`HttpDeviceMetadataRepository.count`."""
        count: int = await self._run(self._count())
        return count

    async def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """See :meth:`HttpDeviceMetadataRepository.query`."""
        return await self._run(self._query(query))

    async def repair(self) -> RepairReport:
        """See :meth:`HttpDeviceMetadataRepository.repair`."""
        return await self._run(self._repair())

    async def info(self) -> CacheInfo:
        """See :meth:`HttpDeviceMetadataRepository.info`."""
        return await self._run(self._info())

    async def health(self) -> HealthStatus:
        """See :meth:`HttpDeviceMetadataRepository.health`; never raises."""
        op = self._health()
        started = time.perf_counter()
        try:
            response = await self._send(op)
        except Exception as exc:  # never raises: a closed client is unhealthy too
            return unhealthy(str(exc), type(exc).__name__)
        return self._health_answer(response, started)

    async def close(self) -> None:
        """Close the pooled connections (not those of a client passed in)."""
        if self._owns_client:
            await self._client.aclose()
