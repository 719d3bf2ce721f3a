"""The REST gateway: a Starlette application serving any ``AsyncDeviceMetadataRepository``.

Its routes are made from :data:`cache_service_client.rest.endpoints.ENDPOINTS`: one handler per
endpoint, named after the repository operation it serves, which receives the device id, the
query parameters (checked against the endpoint's) and reads the endpoint's body type. Bodies are
encoded and decoded with msgspec, using the library's models; the path of a device is read from
the raw request path, so percent-encoded ids (``/``, ``?``, ``#``, ``%``, non-UTF-8 bytes) mean
exactly one thing. Every exception becomes the status code and the small JSON
:class:`~cache_service_client.rest.wire.ErrorBody` of its row in
:data:`~cache_service_client.rest.wire.ERRORS`; bad input is never a 500.
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
from dataclasses import dataclass
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

from cache_service_client._attempt import RETRY_ATTEMPT_HEADER, retried_request
from cache_service_client._glob import compile_glob
from cache_service_client._validation import validate_paging, validate_ttl
from cache_service_client.exceptions import (
    BackendError,
    ConfigurationError,
    DataCorruptionError,
)
from cache_service_client.models import HealthStatus
from cache_service_client.repository.base import AsyncDeviceMetadataRepository
from cache_service_client.rest import wire
from cache_service_client.rest.endpoints import ENDPOINTS, HEALTH, METRICS, Endpoint
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


def _problem(
    code: wire.ErrorCode,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    field: str | None = None,
) -> _Problem:
    """An answer of the gateway's own, with the status of ``code``'s row in the error table."""
    body = wire.ErrorBody(error=code, message=message, field=field)
    return _Problem(wire.ERRORS[code].status, body, headers)


def _invalid(field: str, message: str) -> _Problem:
    return _problem("validation_error", f"{field}: {message}", field=field)


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
    return _problem("internal_error", "internal error")


# -- bearer-token authentication ---------------------------------------------------------------


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(wire.check_token(token).encode("ascii")).digest()


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
        problem = _problem("unauthorized", message, {"WWW-Authenticate": challenge})
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


@dataclass(frozen=True)
class _Call:
    """A request to one endpoint: its device id and query parameters, checked."""

    request: Request
    endpoint: Endpoint[Any]
    device_id: str
    params: Mapping[str, str]


class _Gateway:
    """The handlers, bound to one repository and the gateway's options.

    Each endpoint's handler is the method of its name (see :meth:`route`).
    """

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
        self.document = openapi_json().encode()
        self.counters = GatewayMetrics()

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

    def params(self, request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
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

    def write_options(self, params: Mapping[str, str]) -> tuple[Any, bool]:
        """A write's query parameters: ``ttl`` (see :meth:`ttl`) and ``if_newer``."""
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

    async def body(self, call: _Call) -> Any:
        """Read and decode the endpoint's JSON body, within its size limit and the gateway's."""
        request, endpoint = call.request, call.endpoint
        limit = self.max_body_bytes
        if endpoint.body_limit is not None:
            limit = min(endpoint.body_limit, limit)
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != _JSON:
            raise _problem("unsupported_media_type", "send the body as application/json")
        too_large = _problem(
            "payload_too_large",
            f"the body exceeds the gateway's limit of {limit} bytes",
            # The rest of the body is not read: the connection cannot be reused.
            {"Connection": "close"},
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
            return endpoint.decode_body(b"".join(chunks))
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

    async def compile_pattern(self, pattern: object) -> None:
        """Check a glob pattern and compile its matcher in a worker thread, not on the loop.

        The repository then finds the matcher in :func:`compile_glob`'s cache. A short pattern
        costs microseconds to compile; the longest allowed ones cost tens of milliseconds,
        which would stall every other request of the gateway if it ran on the event loop.
        """
        if isinstance(pattern, str) and len(pattern) > _INLINE_PATTERN:
            validate_paging(None, None, pattern)
            await asyncio.to_thread(compile_glob, pattern)

    def route(self, path: str, endpoints: list[Endpoint[Any]]) -> Route:
        """The route of ``path``: each request goes to the handler of its method's endpoint.

        The device id (of a device's path) and the query parameters are checked first, in that
        order; a ``HEAD`` request to a path without a ``HEAD`` endpoint is its ``GET``'s.
        """
        handlers: dict[str, Callable[[Request], Awaitable[Response]]] = {}
        for endpoint in endpoints:
            handlers[endpoint.method] = self.handler(endpoint)

        async def dispatch(request: Request) -> Response:
            handler = handlers.get(request.method) or handlers["GET"]
            return await handler(request)

        dispatch.__name__ = endpoints[0].name
        methods = list(handlers)
        path = path.replace("{device_id}", "{device_id:csc_device_id}")
        return Route(path, _guarded(dispatch, self.counters), methods=methods)

    def handler(self, endpoint: Endpoint[Any]) -> Callable[[Request], Awaitable[Response]]:
        """The handler of ``endpoint``: the method of its name, given the checked request."""
        serve: Callable[[_Call], Awaitable[Response]] = getattr(self, endpoint.name)
        allowed = endpoint.query_params

        async def handle(request: Request) -> Response:
            device_id = self.device_id(request) if endpoint.per_device else ""
            params = self.params(request, allowed) if endpoint.checks_query else {}
            return await serve(_Call(request, endpoint, device_id, params))

        return handle

    # -- endpoints, by the names of the repository operations they serve --

    async def exists(self, call: _Call) -> Response:
        exists = await self.repository.exists(call.device_id)
        # No body in a HEAD answer: the header tells this 404 from "no such route".
        headers = {wire.EXISTS_HEADER: "true" if exists else "false"}
        return Response(status_code=200 if exists else 404, headers=headers)

    async def get(self, call: _Call) -> Response:
        metadata = await self.repository.get(call.device_id)
        body = _ENCODER.encode(metadata)
        etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if_none_match = ",".join(call.request.headers.getlist("if-none-match"))
        if if_none_match and _etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, 200, headers, media_type=_JSON)

    async def put(self, call: _Call) -> Response:
        ttl, if_newer = self.write_options(call.params)
        given: wire.DeviceMetadataInput = await self.body(call)
        device_id = call.device_id
        if given.device_id is not None and given.device_id != device_id:
            raise _invalid("device_id", f"{given.device_id!r} in the body differs from the path")
        metadata = given.to_metadata(device_id, datetime.now(timezone.utc))
        written = await self.write(lambda: self.repository.put(metadata, if_newer=if_newer), ttl)
        if if_newer:
            return _json_response(wire.StoredResponse(stored=int(written)))
        return Response(status_code=204)

    async def delete(self, call: _Call) -> Response:
        deleted = await self.repository.delete(call.device_id)
        return _json_response(wire.DeleteResponse(deleted=deleted))

    async def list_ids(self, call: _Call) -> Response:
        params = call.params
        await self.compile_pattern(params.get("pattern"))
        ids = await self.repository.list_ids(
            pattern=params.get("pattern"),
            limit=self.integer(params, "limit"),
            offset=self.integer(params, "offset"),
        )
        return _json_response(wire.IdsResponse(ids=ids))

    async def get_many(self, call: _Call) -> Response:
        given: wire.DeviceIdsBody = await self.body(call)
        result = await self.repository.get_many_detailed(given.device_ids)
        corrupted = {
            device_id: wire.CorruptedEntry(key=error.key, reason=error.reason)
            for device_id, error in result.corrupted.items()
        }
        return _json_response(
            wire.BatchGetResponse(found=result.found, missing=result.missing, corrupted=corrupted)
        )

    async def put_many(self, call: _Call) -> Response:
        ttl, if_newer = self.write_options(call.params)
        given: wire.BatchPutBody = await self.body(call)
        now = datetime.now(timezone.utc)
        items = []
        for index, item in enumerate(given.items):
            if item.device_id is None:
                raise _invalid(f"items[{index}].device_id", "is required")
            items.append(item.to_metadata(item.device_id, now))
        stored = await self.write(lambda: self.repository.put_many(items, if_newer=if_newer), ttl)
        return _json_response(wire.StoredResponse(stored=stored))

    async def delete_many(self, call: _Call) -> Response:
        given: wire.DeviceIdsBody = await self.body(call)
        deleted = await self.repository.delete_many(given.device_ids)
        return _json_response(wire.DeletedResponse(deleted=deleted))

    async def query(self, call: _Call) -> Response:
        query = wire.query_from_body(await self.body(call))
        await self.compile_pattern(query.pattern)
        return _json_response(await self.repository.query(query))

    async def repair(self, call: _Call) -> Response:
        return _json_response(await self.repository.repair())

    async def count(self, call: _Call) -> Response:
        return _json_response(wire.CountResponse(count=await self.repository.count()))

    async def info(self, call: _Call) -> Response:
        return _json_response(await self.repository.info())

    async def health(self, call: _Call) -> Response:
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
        if not call.request.scope.get(_AUTHENTICATED, False):
            # An open /health tells strangers the state, not the backend's version or memory.
            status = msgspec.structs.replace(status, details={})
        code = 503 if status.status == "unhealthy" else 200
        return _json_response(status, code, {"Cache-Control": "no-store"})

    async def openapi(self, call: _Call) -> Response:
        return Response(self.document, media_type=_JSON)

    async def metrics(self, call: _Call) -> Response:
        headers = {"Cache-Control": "no-store"}
        return Response(self.counters.render(), headers=headers, media_type=CONTENT_TYPE)


_ATTEMPT = re.compile(r"[0-9]{1,9}")


def _retried(request: Request) -> bool:
    """Whether ``request`` repeats one whose answer the client lost (a retried attempt)."""
    attempt = request.headers.get(RETRY_ATTEMPT_HEADER)
    # Anything but a plain number of 1-9 ASCII digits is taken as no header (never an error).
    return attempt is not None and _ATTEMPT.fullmatch(attempt) is not None and int(attempt) > 1


def _guarded(
    handler: Callable[[Request], Awaitable[Response]], metrics: GatewayMetrics
) -> Callable[..., Any]:
    """Wrap a handler so that every exception becomes its JSON error response.

    Failures of the backend are counted on ``metrics`` as well.
    """

    async def endpoint(request: Request) -> Response:
        try:
            if _retried(request):
                with retried_request():
                    return await handler(request)
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
    open_paths = {endpoint.path for endpoint in ENDPOINTS if endpoint.auth == "none"}
    if open_health:
        open_paths.add(HEALTH.path)
    if open_metrics:
        open_paths.add(METRICS.path)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_repository:
                await repository.close()

    by_path: dict[str, list[Endpoint[Any]]] = {}
    for endpoint in ENDPOINTS:
        by_path.setdefault(endpoint.path, []).append(endpoint)
    routes = [gateway.route(path, endpoints) for path, endpoints in by_path.items()]
    app = Starlette(
        routes=routes,
        middleware=[
            # Outermost: requests refused for their token are counted too.
            Middleware(_MetricsMiddleware, metrics=gateway.counters, routes=routes),
            Middleware(_BearerAuth, digest=digest, open_paths=frozenset(open_paths)),
        ],
        exception_handlers={HTTPException: _http_exception, Exception: _server_error},
        lifespan=lifespan,
    )
    # /v1/info/ is no resource: answer 404 instead of redirecting to /v1/info.
    app.router.redirect_slashes = False
    return app
