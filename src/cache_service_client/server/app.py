"""The REST gateway: a Starlette application serving any ``AsyncDeviceMetadataRepository``.

Bodies are encoded and decoded with msgspec, using the library's models; the path of a device is
read from the raw request path, so percent-encoded ids (``/``, ``?``, ``#``, ``%``, non-UTF-8
bytes) mean exactly one thing. Every handler maps the library's exceptions to a status code and a
small JSON :class:`~cache_service_client.server.wire.ErrorBody`; bad input is never a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cache_service_client._glob import compile_glob
from cache_service_client._validation import validate_paging, validate_ttl
from cache_service_client.exceptions import (
    BackendError,
    ConfigurationError,
    DataCorruptionError,
)
from cache_service_client.models import HealthStatus
from cache_service_client.repository.base import AsyncDeviceMetadataRepository
from cache_service_client.server import wire
from cache_service_client.server.metrics import CONTENT_TYPE, GatewayMetrics, _MetricsMiddleware
from cache_service_client.server.openapi import openapi_json


class _DeviceIdConvertor(Convertor[str]):
    """Matches the rest of the path, newlines included (Starlette's ``path`` stops at one).

    So that an id holding a control character reaches validation (422) instead of making the
    route miss (404).
    """

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("csc_device_id", _DeviceIdConvertor())

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

DEFAULT_MAX_BODY_BYTES: Final = wire.DEFAULT_MAX_BODY_BYTES
# Glob patterns up to this many characters are compiled on the event loop (microseconds).
_INLINE_PATTERN: Final = 64

logger = logging.getLogger("cache_service_client.server")

T = TypeVar("T")

_JSON = "application/json"
# Set by the auth middleware on every HTTP scope: did the request carry the right token?
_AUTHENTICATED = "cache_service_client.authenticated"
_MAX_INT = 2**63 - 1
_INTEGER = re.compile(r"[0-9]{1,19}")
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_UNSET: Any = object()

_ENCODER = msgspec.json.Encoder()
_INPUT = msgspec.json.Decoder(wire.DeviceMetadataInput)
_IDS = msgspec.json.Decoder(wire.DeviceIdsBody)
_BATCH = msgspec.json.Decoder(wire.BatchPutBody)
_QUERY: msgspec.json.Decoder[Any] = msgspec.json.Decoder(wire.DeviceQueryBody)


class _Problem(Exception):
    """An error response, raised anywhere below a handler."""

    def __init__(
        self,
        status: int,
        body: wire.ErrorBody,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(body.message)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _invalid(field: str, message: str) -> _Problem:
    return _Problem(
        422,
        wire.ErrorBody(error="validation_error", message=f"{field}: {message}", field=field),
    )


def _json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(_ENCODER.encode(value), status, dict(headers or {}), media_type=_JSON)


def _problem_response(problem: _Problem) -> Response:
    return _json_response(problem.body, problem.status, problem.headers)


def _problem_for(exc: Exception) -> _Problem:
    """Map an exception from a handler (or the repository) to its error response."""
    if isinstance(exc, _Problem):
        return exc
    answer = wire.error_response(exc)
    if answer is not None:
        return _Problem(answer.status, answer.body, answer.headers)
    if isinstance(exc, ClientDisconnect):
        return _Problem(400, wire.ErrorBody(error="validation_error", message="client went away"))
    logger.error("unexpected error in the gateway", exc_info=exc)
    return _Problem(500, wire.ErrorBody(error="internal_error", message="internal error"))


# -- bearer-token authentication ---------------------------------------------------------------


def _token_digest(token: str) -> bytes:
    if not isinstance(token, str) or not token:
        raise ConfigurationError("argument auth_token: must be a non-empty str or None")
    if not all("\x21" <= ch <= "\x7e" for ch in token):
        raise ConfigurationError(
            "argument auth_token: must be printable ASCII without spaces (a bearer token)"
        )
    return hashlib.sha256(token.encode("ascii")).digest()


class _BearerAuth:
    """Pure ASGI middleware: ``Authorization: Bearer <token>``, compared in constant time.

    The presented credentials are hashed and the digests compared with
    :func:`hmac.compare_digest`, on bytes: neither the token's length nor its content leaks
    through timing, and a header holding non-ASCII bytes is just a wrong token (401).
    """

    def __init__(self, app: ASGIApp, *, digest: bytes | None, open_paths: frozenset[str]) -> None:
        self.app = app
        self.digest = digest
        self.open_paths = open_paths

    def _authenticated(self, scope: Scope) -> bool:
        if self.digest is None:
            return True
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].strip().partition(b" ")
        presented = hashlib.sha256(credentials.strip(b" \t")).digest()
        # Compare even when the scheme is wrong, so that the answer takes the same time.
        matches = hmac.compare_digest(presented, self.digest)
        return matches and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authenticated = self._authenticated(scope)
        scope[_AUTHENTICATED] = authenticated
        if authenticated or _route_path(scope) in self.open_paths:
            await self.app(scope, receive, send)
            return
        has_header = any(name == b"authorization" for name, _ in scope["headers"])
        challenge = 'Bearer realm="cache-service"'
        if has_header:
            challenge += ', error="invalid_token"'
        message = "wrong bearer token" if has_header else "a bearer token is required"
        problem = _Problem(
            401,
            wire.ErrorBody(error="unauthorized", message=message),
            headers={"WWW-Authenticate": challenge},
        )
        await _problem_response(problem)(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


# -- the handlers ------------------------------------------------------------------------------


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison of ``If-None-Match`` against our (strong) ETag, RFC 9110 13.1.2."""
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        candidate = candidate.removeprefix("W/")
        if candidate == etag:
            return True
    return False


class _Gateway:
    """The handlers, bound to one repository and the gateway's options."""

    def __init__(
        self,
        repository: AsyncDeviceMetadataRepository,
        *,
        max_body_bytes: int,
        allow_client_ttl: bool,
    ) -> None:
        self.repository = repository
        self.max_body_bytes = max_body_bytes
        self.allow_client_ttl = allow_client_ttl
        self.write_lock = asyncio.Lock()
        self.openapi = openapi_json().encode()
        self.metrics = GatewayMetrics()

    # -- request parsing --

    def device_id(self, request: Request) -> str:
        """The device id of the path, percent-decoded from the raw path as UTF-8."""
        raw = request.scope.get("raw_path")
        if isinstance(raw, bytes):
            _, found, tail = raw.partition(wire.DEVICE_PATH_PREFIX.encode())
            if found:
                try:
                    return unquote_to_bytes(tail).decode("utf-8")
                except UnicodeDecodeError:
                    raise _invalid("device_id", "is not UTF-8 once percent-decoded") from None
        device_id: str = request.path_params["device_id"]
        return device_id

    def query(self, request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
        """The query parameters, strictly: each at most once, none unknown, UTF-8."""
        raw: bytes = request.scope.get("query_string", b"")
        try:
            pairs = parse_qsl(
                raw.decode("ascii"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=len(allowed) + 1,
            )
        except (UnicodeError, ValueError) as exc:
            raise _invalid("query", f"cannot be parsed ({exc})") from None
        params: dict[str, str] = {}
        for name, value in pairs:
            if name not in allowed:
                raise _invalid(name, "unknown query parameter")
            if name in params:
                raise _invalid(name, "given more than once")
            params[name] = value
        return params

    @staticmethod
    def integer(params: Mapping[str, str], name: str) -> int | None:
        value = params.get(name)
        if value is None:
            return None
        if not _INTEGER.fullmatch(value) or int(value) > _MAX_INT:
            raise _invalid(name, f"must be an integer from 0 to {_MAX_INT}, not {value!r}")
        return int(value)

    def write_options(self, request: Request) -> tuple[Any, bool]:
        """A write's query parameters: ``ttl`` (see :meth:`ttl`) and ``if_newer``."""
        params = self.query(request, ("ttl", "if_newer"))
        flag = params.get("if_newer", "false")
        if flag not in ("true", "false"):
            raise _invalid("if_newer", f"must be true or false, not {flag!r}")
        return self.ttl(params.get("ttl")), flag == "true"

    def ttl(self, value: str | None) -> Any:
        """The ``ttl`` query parameter: seconds, None (0: no expiry) or ``_UNSET``."""
        if value is None:
            return _UNSET
        if not self.allow_client_ttl:
            raise _invalid("ttl", "this gateway applies its own TTL and accepts none per request")
        if not _SECONDS.fullmatch(value):
            raise _invalid("ttl", f"must be a number of seconds >= 0, not {value!r}")
        return validate_ttl(float(value), "ttl")

    async def body(
        self, request: Request, decoder: msgspec.json.Decoder[T], limit: int | None = None
    ) -> T:
        """Read and decode a JSON body, within the gateway's size limit (or a smaller one)."""
        limit = self.max_body_bytes if limit is None else min(limit, self.max_body_bytes)
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != _JSON:
            raise _Problem(
                415,
                wire.ErrorBody(
                    error="unsupported_media_type", message="send the body as application/json"
                ),
            )
        too_large = _Problem(
            413,
            wire.ErrorBody(
                error="payload_too_large",
                message=f"the body exceeds the gateway's limit of {limit} bytes",
            ),
            # The rest of the body is not read: the connection cannot be reused.
            headers={"Connection": "close"},
        )
        length = request.headers.get("content-length", "")
        if _INTEGER.fullmatch(length) and int(length) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        try:
            return decoder.decode(b"".join(chunks))
        except msgspec.ValidationError as exc:
            field = wire.field_of(exc)
            raise _invalid(field, str(exc).partition(" - at `")[0]) from None
        except msgspec.DecodeError as exc:
            raise _invalid("body", f"not valid JSON ({exc})") from None
        except RecursionError:
            raise _invalid("body", "nested too deeply") from None

    async def write(self, action: Callable[[], Awaitable[T]], ttl: Any) -> T:
        """Run a write, with the caller's TTL when one was given.

        The protocol has no per-call TTL, so the repository's ``ttl`` is set around the write;
        all writes then take a lock, so no other write runs with a TTL not meant for it.
        """
        if not self.allow_client_ttl:
            return await action()
        async with self.write_lock:
            if ttl is _UNSET:
                return await action()
            repository: Any = self.repository
            previous = repository.ttl
            repository.ttl = ttl
            try:
                return await action()
            finally:
                repository.ttl = previous

    # -- endpoints --

    async def device(self, request: Request) -> Response:
        device_id = self.device_id(request)
        method = request.method
        if method == "HEAD":
            self.query(request, ())
            exists = await self.repository.exists(device_id)
            # No body in a HEAD answer: the header tells this 404 from "no such route".
            headers = {"X-Device-Exists": "true" if exists else "false"}
            return Response(status_code=200 if exists else 404, headers=headers)
        if method == "GET":
            self.query(request, ())
            metadata = await self.repository.get(device_id)
            body = _ENCODER.encode(metadata)
            etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
            headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
            if_none_match = ",".join(request.headers.getlist("if-none-match"))
            if if_none_match and _etag_matches(if_none_match, etag):
                return Response(status_code=304, headers=headers)
            return Response(body, 200, headers, media_type=_JSON)
        if method == "PUT":
            ttl, if_newer = self.write_options(request)
            given = await self.body(request, _INPUT)
            if given.device_id is not None and given.device_id != device_id:
                raise _invalid(
                    "device_id", f"{given.device_id!r} in the body differs from the path"
                )
            metadata = given.to_metadata(device_id, datetime.now(timezone.utc))
            written = await self.write(
                lambda: self.repository.put(metadata, if_newer=if_newer), ttl
            )
            if if_newer:
                return _json_response(wire.StoredResponse(stored=int(written)))
            return Response(status_code=204)
        self.query(request, ())
        deleted = await self.repository.delete(device_id)
        return _json_response(wire.DeleteResponse(deleted=deleted))

    async def compile_pattern(self, pattern: object) -> None:
        """Check a glob pattern and compile its matcher in a worker thread, not on the loop.

        The repository then finds the matcher in :func:`compile_glob`'s cache. A short pattern
        costs microseconds to compile; the longest allowed ones cost tens of milliseconds,
        which would stall every other request of the gateway if it ran on the event loop.
        """
        if isinstance(pattern, str) and len(pattern) > _INLINE_PATTERN:
            validate_paging(None, None, pattern)
            await asyncio.to_thread(compile_glob, pattern)

    async def list_ids(self, request: Request) -> Response:
        params = self.query(request, ("pattern", "limit", "offset"))
        await self.compile_pattern(params.get("pattern"))
        ids = await self.repository.list_ids(
            pattern=params.get("pattern"),
            limit=self.integer(params, "limit"),
            offset=self.integer(params, "offset"),
        )
        return _json_response(wire.IdsResponse(ids=ids))

    async def batch_get(self, request: Request) -> Response:
        self.query(request, ())
        given = await self.body(request, _IDS)
        result = await self.repository.get_many_detailed(given.device_ids)
        corrupted = {
            device_id: wire.CorruptedEntry(key=error.key, reason=error.reason)
            for device_id, error in result.corrupted.items()
        }
        return _json_response(
            wire.BatchGetResponse(found=result.found, missing=result.missing, corrupted=corrupted)
        )

    async def batch_put(self, request: Request) -> Response:
        ttl, if_newer = self.write_options(request)
        given = await self.body(request, _BATCH)
        now = datetime.now(timezone.utc)
        items = []
        for index, item in enumerate(given.items):
            if item.device_id is None:
                raise _invalid(f"items[{index}].device_id", "is required")
            items.append(item.to_metadata(item.device_id, now))
        stored = await self.write(lambda: self.repository.put_many(items, if_newer=if_newer), ttl)
        return _json_response(wire.StoredResponse(stored=stored))

    async def batch_delete(self, request: Request) -> Response:
        self.query(request, ())
        given = await self.body(request, _IDS)
        deleted = await self.repository.delete_many(given.device_ids)
        return _json_response(wire.DeletedResponse(deleted=deleted))

    async def query_devices(self, request: Request) -> Response:
        self.query(request, ())
        given = await self.body(request, _QUERY, wire.MAX_QUERY_BODY_BYTES)
        query = wire.query_from_body(given)
        await self.compile_pattern(query.pattern)
        page = await self.repository.query(query)
        return _json_response(page)

    async def repair(self, request: Request) -> Response:
        self.query(request, ())
        return _json_response(await self.repository.repair())

    async def count(self, request: Request) -> Response:
        self.query(request, ())
        return _json_response(wire.CountResponse(count=await self.repository.count()))

    async def info(self, request: Request) -> Response:
        self.query(request, ())
        return _json_response(await self.repository.info())

    async def health(self, request: Request) -> Response:
        self.query(request, ())
        try:
            status = await self.repository.health()
        except Exception as exc:  # the protocol says never; a broken backend may anyway
            logger.warning("health check raised %s", type(exc).__name__)
            status = HealthStatus(
                status="unhealthy",
                message=f"health check failed: {type(exc).__name__}",
                timestamp=datetime.now(timezone.utc),
                details={"error": type(exc).__name__},
            )
        if not request.scope.get(_AUTHENTICATED, False):
            # An open /health tells strangers the state, not the backend's version or memory.
            status = msgspec.structs.replace(status, details={})
        code = 503 if status.status == "unhealthy" else 200
        return _json_response(status, code, {"Cache-Control": "no-store"})

    async def openapi_document(self, request: Request) -> Response:
        return Response(self.openapi, media_type=_JSON)

    async def metrics_document(self, request: Request) -> Response:
        self.query(request, ())
        headers = {"Cache-Control": "no-store"}
        return Response(self.metrics.render(), headers=headers, media_type=CONTENT_TYPE)


def _guarded(
    handler: Callable[[Request], Awaitable[Response]], metrics: GatewayMetrics
) -> Callable[..., Any]:
    """Wrap a handler so that every exception becomes its JSON error response.

    Failures of the backend are counted on ``metrics`` as well.
    """

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            if isinstance(exc, (BackendError, DataCorruptionError)):
                metrics.backend_error(type(exc).__name__)
            return _problem_response(_problem_for(exc))

    endpoint.__name__ = handler.__name__
    return endpoint


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Routing errors (no such path, method not allowed) as JSON error bodies."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        body = wire.ErrorBody(error="method_not_allowed", message="method not allowed")
    elif exc.status_code == 404:
        body = wire.ErrorBody(error="not_found", message="no such resource")
    else:  # pragma: no cover - Starlette raises no other HTTPException for us
        body = wire.ErrorBody(error="validation_error", message=str(exc.detail))
    return _json_response(body, exc.status_code, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return _problem_response(_problem_for(exc))


def create_app(
    repository: AsyncDeviceMetadataRepository,
    *,
    auth_token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    open_health: bool = False,
    open_metrics: bool = False,
    allow_client_ttl: bool = False,
    close_repository: bool = False,
) -> Starlette:
    """Build the gateway's ASGI application around ``repository``.

    Args:
        repository: Any async repository (in-memory, Redis, ...); it is used from the event loop
            the application runs in.
        auth_token: Require ``Authorization: Bearer <auth_token>`` on every request (printable
            ASCII). None: no authentication (for loopback or a trusted network only).
        max_body_bytes: Larger request bodies are refused with 413.
        open_health: Serve ``/health`` without a token (its ``details`` then only to callers
            that send the token), e.g. for a load balancer's probe.
        open_metrics: Serve ``/metrics`` (Prometheus: requests by route and status, their
            latency, backend errors) without a token, for a scraper on a trusted network;
            otherwise it needs the token like every other route.
        allow_client_ttl: Accept a ``ttl`` query parameter on writes. The repository's ``ttl``
            is set around such a write, and all writes are then serialised.
        close_repository: Close ``repository`` when the application shuts down.

    Returns:
        A Starlette application; serve it with uvicorn (``python -m
        cache_service_client.server`` does).

    Raises:
        ConfigurationError: An argument is invalid (a sync repository, a bad token, ...).

    """
    if not isinstance(repository, AsyncDeviceMetadataRepository) or not (
        inspect.iscoroutinefunction(repository.get)
    ):
        raise ConfigurationError(
            "argument repository: must be an AsyncDeviceMetadataRepository (async methods)"
        )
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
        raise ConfigurationError("argument max_body_bytes: must be an int")
    if max_body_bytes < 1024:
        raise ConfigurationError("argument max_body_bytes: must be at least 1024")
    if allow_client_ttl and not hasattr(repository, "ttl"):
        raise ConfigurationError(
            "argument allow_client_ttl: the repository has no settable ttl attribute"
        )
    digest = None if auth_token is None else _token_digest(auth_token)
    gateway = _Gateway(repository, max_body_bytes=max_body_bytes, allow_client_ttl=allow_client_ttl)
    open_paths = {wire.OPENAPI_PATH}
    if open_health:
        open_paths.add(wire.HEALTH_PATH)
    if open_metrics:
        open_paths.add(wire.METRICS_PATH)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_repository:
                await repository.close()

    routes = [
        Route(wire.DEVICES_PATH, _guarded(gateway.list_ids, gateway.metrics), methods=["GET"]),
        Route(
            wire.DEVICE_PATH_PREFIX + "{device_id:csc_device_id}",
            _guarded(gateway.device, gateway.metrics),
            methods=["GET", "HEAD", "PUT", "DELETE"],
        ),
        Route(wire.BATCH_GET_PATH, _guarded(gateway.batch_get, gateway.metrics), methods=["POST"]),
        Route(wire.BATCH_PUT_PATH, _guarded(gateway.batch_put, gateway.metrics), methods=["POST"]),
        Route(
            wire.BATCH_DELETE_PATH,
            _guarded(gateway.batch_delete, gateway.metrics),
            methods=["POST"],
        ),
        Route(wire.QUERY_PATH, _guarded(gateway.query_devices, gateway.metrics), methods=["POST"]),
        Route(wire.REPAIR_PATH, _guarded(gateway.repair, gateway.metrics), methods=["POST"]),
        Route(wire.COUNT_PATH, _guarded(gateway.count, gateway.metrics), methods=["GET"]),
        Route(wire.INFO_PATH, _guarded(gateway.info, gateway.metrics), methods=["GET"]),
        Route(wire.HEALTH_PATH, _guarded(gateway.health, gateway.metrics), methods=["GET"]),
        Route(
            wire.OPENAPI_PATH, _guarded(gateway.openapi_document, gateway.metrics), methods=["GET"]
        ),
        Route(
            wire.METRICS_PATH, _guarded(gateway.metrics_document, gateway.metrics), methods=["GET"]
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            # Outermost: requests refused for their token are counted too.
            Middleware(_MetricsMiddleware, metrics=gateway.metrics, routes=routes),
            Middleware(_BearerAuth, digest=digest, open_paths=frozenset(open_paths)),
        ],
        exception_handlers={HTTPException: _http_exception, Exception: _server_error},
        lifespan=lifespan,
    )
    # /v1/info/ is no resource: answer 404 instead of redirecting to /v1/info.
    app.router.redirect_slashes = False
    return app
