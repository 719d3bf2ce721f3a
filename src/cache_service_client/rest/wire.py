"""The REST API's wire format, shared by the gateway and the HTTP repository.

Paths, JSON bodies (msgspec Structs; device metadata uses the library's own models), the
percent-encoding of device ids, and the error table (:data:`ERRORS`): every error code with its
status and the library's exception, from which both the gateway's answers
(:func:`error_response`) and a client's exceptions (:func:`exception_for`) are made. This module
imports neither Starlette nor httpx, so the HTTP repository can use it with only the ``[http]``
extra installed; :mod:`cache_service_client.server.wire` re-exports it.

A device id travels as one path segment, percent-encoded byte by byte (UTF-8): every character
but ``A-Z a-z 0-9 - _ . ~`` is escaped, so ids holding ``/ ? # % [ ] *`` or any Unicode stay one
segment, and an id made of dots only (``.``, ``..``) is escaped too, so no client or proxy takes
it for a dot segment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal, NamedTuple
from urllib.parse import quote

import msgspec

from cache_service_client.exceptions import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    CacheServiceError,
    ConfigurationError,
    DataCorruptionError,
    DeviceNotFoundError,
    PartialWriteError,
    ValidationError,
)
from cache_service_client.models import AwareDatetime, DeviceMetadata, DeviceQuery

__all__ = [
    "API_VERSION",
    "BATCH_DELETE_PATH",
    "BATCH_GET_PATH",
    "BATCH_PUT_PATH",
    "COUNT_PATH",
    "DEFAULT_MAX_BODY_BYTES",
    "DEVICES_PATH",
    "DEVICE_PATH_PREFIX",
    "ERRORS",
    "EXISTS_HEADER",
    "HEALTH_PATH",
    "INFO_PATH",
    "MAX_QUERY_BODY_BYTES",
    "METRICS_PATH",
    "OPENAPI_PATH",
    "QUERY_PATH",
    "REPAIR_PATH",
    "BatchGetResponse",
    "BatchPutBody",
    "CorruptedEntry",
    "CountResponse",
    "DeleteResponse",
    "DeletedResponse",
    "DeviceIdsBody",
    "DeviceMetadataInput",
    "DeviceQueryBody",
    "ErrorAnswer",
    "ErrorBody",
    "ErrorCode",
    "ErrorKind",
    "ErrorResponse",
    "IdsResponse",
    "StoredResponse",
    "check_token",
    "device_path",
    "error_body",
    "error_response",
    "exception_for",
    "field_of",
    "query_from_body",
]

#: Version of the REST API (the ``/v1`` prefix and the OpenAPI ``info.version``).
API_VERSION: Final = "1.0.0"

#: Default limit of a request body: room for a batch of some 20 000 devices.
DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
#: Limit of a query body (``POST /v1/devices:query``), whatever ``max_body_bytes`` says: the
#: largest valid query is far smaller (a pattern is at most 2048 bytes, a cursor under 2 KiB).
MAX_QUERY_BODY_BYTES: Final = 64 * 1024

#: The device collection; ``GET`` lists the stored ids (``pattern``, ``limit``, ``offset``).
DEVICES_PATH: Final = "/v1/devices"
#: The prefix of one device's path; :func:`device_path` appends the encoded id.
DEVICE_PATH_PREFIX: Final = "/v1/devices/"
# Batch operations are custom methods on the collection (``:verb``), so they cannot collide with
# a device id: every ``/`` of an id is escaped, and ``/v1/devices:batchGet`` has no ``/`` there.
#: Reads a batch of devices (``POST`` :class:`DeviceIdsBody`, answers :class:`BatchGetResponse`).
BATCH_GET_PATH: Final = "/v1/devices:batchGet"
#: Stores a batch of devices atomically (``POST`` :class:`BatchPutBody`).
BATCH_PUT_PATH: Final = "/v1/devices:batchPut"
#: Deletes a batch of devices (``POST`` :class:`DeviceIdsBody`, answers :class:`DeleteResponse`).
BATCH_DELETE_PATH: Final = "/v1/devices:batchDelete"
#: Counts the stored devices (``GET``, answers :class:`CountResponse`).
COUNT_PATH: Final = "/v1/devices:count"
#: One page of a device query (``POST`` :data:`DeviceQueryBody`).
QUERY_PATH: Final = "/v1/devices:query"
#: Rebuilds the indexes from the stored values (``POST``).
REPAIR_PATH: Final = "/v1/devices:repair"
#: Figures about the cache (``GET``, the repositories' ``info``).
INFO_PATH: Final = "/v1/info"
#: The health check (``GET``); open without a token only with ``create_app(open_health=True)``.
HEALTH_PATH: Final = "/health"
#: The gateway's OpenAPI document (``GET``, never needs a token; as in ``docs/openapi.json``).
OPENAPI_PATH: Final = "/openapi.json"
#: The gateway's Prometheus metrics (text exposition format).
METRICS_PATH: Final = "/metrics"
#: The header of a ``HEAD`` answer for a device: ``true`` or ``false``, so that the gateway's
#: 404 is told from one of a wrong path (a HEAD answer has no body).
EXISTS_HEADER: Final = "X-Device-Exists"

#: The ``error`` of an :class:`ErrorBody`, a stable machine-readable code.
ErrorCode = Literal[
    "validation_error",
    "device_not_found",
    "data_corruption",
    "unauthorized",
    "payload_too_large",
    "unsupported_media_type",
    "backend_unavailable",
    "backend_timeout",
    "partial_write",
    "backend_error",
    "not_found",
    "method_not_allowed",
    "internal_error",
]


def device_path(device_id: str) -> str:
    """Return the path of one device: ``/v1/devices/`` and the percent-encoded id."""
    segment = quote(device_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return DEVICE_PATH_PREFIX + segment


# -- request bodies ----------------------------------------------------------------------------

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class DeviceMetadataInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Device metadata as a client sends it: the stored form, with some fields optional.

    ``device_id`` may be left out in ``PUT /v1/devices/{device_id}`` (the path names the
    device) and ``last_updated`` defaults to the gateway's current time. Unknown fields are
    refused (use ``additional_properties``).
    """

    v: Literal[1] = 1
    device_id: DeviceId | None = None
    datatype_id: NonEmpty
    datatype_name: str
    datatype_unit: str | None = None
    persist: bool
    last_updated: AwareDatetime | None = None
    additional_properties: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_metadata(self, device_id: str, now: datetime) -> DeviceMetadata:
        """Return the :class:`DeviceMetadata` this body describes (not validated yet)."""
        return DeviceMetadata(
            device_id=device_id,
            datatype_id=self.datatype_id,
            datatype_name=self.datatype_name,
            datatype_unit=self.datatype_unit,
            persist=self.persist,
            last_updated=self.last_updated if self.last_updated is not None else now,
            additional_properties=self.additional_properties,
        )


class DeviceIdsBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of the batch get and batch delete requests."""

    device_ids: list[DeviceId]


class BatchPutBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of the batch put request; every item must name its ``device_id``."""

    items: list[DeviceMetadataInput]


def _strict_twin(model: type[msgspec.Struct], name: str) -> type[msgspec.Struct]:
    """A Struct with ``model``'s fields that refuses unknown ones (a typo must not pass)."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for info in msgspec.structs.fields(model):
        if info.default is not msgspec.NODEFAULT:
            fields.append((info.name, info.type, info.default))
        elif info.default_factory is not msgspec.NODEFAULT:
            fields.append(
                (info.name, info.type, msgspec.field(default_factory=info.default_factory))
            )
        else:
            fields.append((info.name, info.type))
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True)


#: Body of ``POST /v1/devices:query``: a :class:`DeviceQuery`, unknown fields refused.
DeviceQueryBody = _strict_twin(DeviceQuery, "DeviceQuery")


def query_from_body(body: msgspec.Struct) -> DeviceQuery:
    """The :class:`DeviceQuery` a decoded :data:`DeviceQueryBody` describes."""
    return DeviceQuery(**msgspec.structs.asdict(body))


# -- response bodies ---------------------------------------------------------------------------


class CorruptedEntry(msgspec.Struct, kw_only=True, frozen=True):
    """A stored value that could not be decoded: its backend key and what is wrong with it."""

    key: str
    reason: str


class BatchGetResponse(msgspec.Struct, kw_only=True, frozen=True):
    """Found metadata by id, missing ids in request order, corrupted entries by id."""

    found: dict[str, DeviceMetadata]
    missing: list[str]
    corrupted: dict[str, CorruptedEntry]


class StoredResponse(msgspec.Struct, kw_only=True, frozen=True):
    """How many devices a put stored (duplicate ids count once; with ``if_newer``, only newer)."""

    stored: int


class DeleteResponse(msgspec.Struct, kw_only=True, frozen=True):
    """Whether the device was stored before the delete."""

    deleted: bool


class DeletedResponse(msgspec.Struct, kw_only=True, frozen=True):
    """How many of the given devices were stored before the batch delete."""

    deleted: int


class IdsResponse(msgspec.Struct, kw_only=True, frozen=True):
    """Device ids in ascending order (by UTF-8 bytes)."""

    ids: list[str]


class CountResponse(msgspec.Struct, kw_only=True, frozen=True):
    """How many devices are stored."""

    count: int


class ErrorBody(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The body of every error response.

    Attributes:
        error: A stable machine-readable code (see :data:`ErrorCode`).
        message: A short human-readable explanation; never holds a token.
        field: The offending field, for ``validation_error``.
        device_id: The device that was not found, for ``device_not_found``.
        key: The backend key holding the bad value, for ``data_corruption``.
        done: The ids carried out, for ``partial_write`` (see
            :class:`~cache_service_client.PartialWriteError`).
        failed: The other ids, for ``partial_write`` (not changed, or of unknown outcome).
        count: What the carried-out part counts (written, deleted), for ``partial_write``.
        retryable: Whether every failed part failed so that a retry may succeed, for
            ``partial_write``.

    """

    error: str
    message: str
    field: str | None = None
    device_id: str | None = None
    key: str | None = None
    done: list[str] | None = None
    failed: list[str] | None = None
    count: int | None = None
    retryable: bool | None = None


_JSON = "application/json"
_ERROR = msgspec.json.Decoder(ErrorBody)


class ErrorResponse(NamedTuple):
    """The HTTP answer to one of the library's exceptions."""

    status: int
    body: ErrorBody
    headers: dict[str, str]


@dataclass(frozen=True)
class ErrorAnswer:
    """An error answer as a client received it, with what its request was about.

    Attributes:
        status: The status code.
        body: The gateway's :class:`ErrorBody`; None for an answer without one (e.g. of a proxy).
        where: The request, as messages name it (``GET https://gateway/v1/...``).
        device_id: The device the request was about, if one.
        argument: The argument of the operation that the request body carries.

    """

    status: int
    body: ErrorBody | None
    where: str
    device_id: str | None = None
    argument: str = "metadata"

    @property
    def said(self) -> str:
        """``": <the gateway's message>"``, or nothing for an answer without a body."""
        return f": {self.body.message}" if self.body is not None else ""


# -- the error table: one row per code, both directions ------------------------------------------


def _backend_message(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AuthenticationError):
        # The backend refused the server's own credentials: not the caller's fault, no 401.
        return {"message": "the backend refused the server's credentials"}
    return {"message": str(exc)[:500]}


def _generic(answer: ErrorAnswer) -> CacheServiceError:
    code = answer.body.error if answer.body is not None else "no error body"
    return BackendError(
        f"{answer.where}: the gateway answered {answer.status} ({code}){answer.said}"
    )


def _invalid(answer: ErrorAnswer) -> CacheServiceError:
    assert answer.body is not None  # chosen by its code
    name = answer.body.field or "request"
    return ValidationError(name, answer.body.message.removeprefix(f"{name}: "))


def _not_found(answer: ErrorAnswer) -> CacheServiceError:
    if answer.device_id is None:
        return _generic(answer)
    return DeviceNotFoundError(answer.device_id)


def _corrupted(answer: ErrorAnswer) -> CacheServiceError:
    assert answer.body is not None  # chosen by its code
    return DataCorruptionError(answer.body.key or answer.where, answer.body.message)


def _partial_body(exc: PartialWriteError) -> dict[str, Any]:
    return {
        "message": str(exc)[:500],
        "done": exc.done,
        "failed": exc.failed,
        "count": exc.count,
        "retryable": exc.retryable,
    }


def _partial(answer: ErrorAnswer) -> CacheServiceError:
    body = answer.body
    assert body is not None  # chosen by its code
    said = f"{answer.where}: the gateway answered {answer.status} (partial_write){answer.said}"
    cause = BackendConnectionError(said) if body.retryable else BackendError(said)
    # Only the batch writes answer it: their bodies carry ``items`` or ``device_ids``.
    operation: Literal["put_many", "delete_many"] = (
        "delete_many" if answer.argument == "device_ids" else "put_many"
    )
    return PartialWriteError(
        operation,
        done=list(body.done or ()),
        failed=list(body.failed or ()),
        count=body.count or 0,
        errors=[cause],
    )


def _timed_out(answer: ErrorAnswer) -> CacheServiceError:
    return BackendTimeoutError(
        f"{answer.where}: the backend did not answer in time ({answer.status})"
    )


def _unavailable(answer: ErrorAnswer) -> CacheServiceError:
    return BackendConnectionError(
        f"{answer.where}: the gateway is unavailable ({answer.status}){answer.said}"
    )


def _refused(answer: ErrorAnswer) -> CacheServiceError:
    return AuthenticationError(
        f"{answer.where}: the gateway refused the request ({answer.status}){answer.said}"
    )


def _too_large(answer: ErrorAnswer) -> CacheServiceError:
    return ValidationError(
        answer.argument, "the request is larger than the gateway accepts (413); send less"
    )


def _gateway_timeout(answer: ErrorAnswer) -> CacheServiceError:
    return BackendTimeoutError(f"{answer.where}: the gateway timed out (504){answer.said}")


@dataclass(frozen=True, eq=False)
class ErrorKind:
    """One error code: its status, the library's exception it stands for, what it means.

    Attributes:
        code: The ``error`` of the :class:`ErrorBody`.
        status: The status the gateway answers with it.
        description: What the answer means (the OpenAPI document's words for it).
        exception: The library's exception the code stands for.
        body: The fields of the gateway's :class:`ErrorBody` for such an exception; None for
            a code the gateway answers only on its own (a wrong token, a body too large, ...).
        raised: The exception a client raises for the answer.
        headers: Headers of the gateway's answer.

    """

    code: ErrorCode
    status: int
    description: str
    exception: type[CacheServiceError]
    body: Callable[[Any], dict[str, Any]] | None = None
    raised: Callable[[ErrorAnswer], CacheServiceError] = _generic
    headers: Mapping[str, str] = field(default_factory=dict)


_RETRY_AFTER: Final = {"Retry-After": "1"}
_UNAVAILABLE_TEXT = (
    "The backend cannot be reached or did not answer in time; retry after `Retry-After`."
)

#: Every error code, in the order the gateway tries them on an exception (the first whose
#: ``exception`` it is) and the OpenAPI document lists them.
ERRORS: Final[Mapping[str, ErrorKind]] = {
    kind.code: kind
    for kind in (
        ErrorKind(
            "device_not_found",
            404,
            "No metadata is stored for the device.",
            DeviceNotFoundError,
            lambda exc: {"message": str(exc), "device_id": exc.device_id},
            _not_found,
        ),
        ErrorKind(
            "unauthorized",
            401,
            "Missing or wrong bearer token.",
            AuthenticationError,
            None,
            _refused,
        ),
        ErrorKind(
            "validation_error",
            422,
            "Invalid input; `field` names it.",
            ValidationError,
            lambda exc: {"message": str(exc), "field": exc.field},
            _invalid,
        ),
        ErrorKind(
            "payload_too_large",
            413,
            "The request body exceeds the gateway's limit.",
            ValidationError,
            None,
            _too_large,
        ),
        ErrorKind(
            "unsupported_media_type",
            415,
            "The request body is not `application/json`.",
            BackendError,
        ),
        ErrorKind(
            "data_corruption",
            500,
            "A stored value cannot be decoded (`error`: `data_corruption`, `key`).",
            DataCorruptionError,
            lambda exc: {"message": exc.reason, "key": exc.key},
            _corrupted,
        ),
        ErrorKind(
            "backend_timeout",
            503,
            _UNAVAILABLE_TEXT,
            BackendTimeoutError,
            _backend_message,
            _timed_out,
            _RETRY_AFTER,
        ),
        ErrorKind(
            "backend_unavailable",
            503,
            _UNAVAILABLE_TEXT,
            BackendConnectionError,
            _backend_message,
            _unavailable,
            _RETRY_AFTER,
        ),
        ErrorKind(
            "partial_write",
            502,
            "A batch over several buckets was carried out in part (`done`, `count`) and failed "
            "in the rest (`failed`: not changed, or of unknown outcome: see the message); "
            "`retryable`: whether the rest may succeed if sent again.",
            PartialWriteError,
            _partial_body,
            _partial,
        ),
        ErrorKind(
            "backend_error",
            502,
            "The backend failed (e.g. it refused the gateway's credentials).",
            BackendError,
            _backend_message,
        ),
        ErrorKind("not_found", 404, "No such resource.", BackendError),
        ErrorKind("method_not_allowed", 405, "The path does not take the method.", BackendError),
        ErrorKind("internal_error", 500, "An unexpected error of the gateway.", BackendError),
    )
}


_FALLBACKS: Final[Mapping[int, Callable[[ErrorAnswer], CacheServiceError]]] = {
    # Answers without the gateway's body: of a proxy in front of it, or of a gateway that is
    # down or restarting behind one.
    401: _refused,
    403: _refused,
    413: _too_large,
    429: _unavailable,
    502: _unavailable,
    503: _unavailable,
    504: _gateway_timeout,
}


def error_response(exc: BaseException) -> ErrorResponse | None:
    """Map one of the library's exceptions to its status code, error body and headers.

    The gateway answers with it, and the framework integrations
    (:mod:`cache_service_client.contrib`) install it as exception handlers: ``422
    validation_error`` (with the field), ``404 device_not_found`` (with the id), ``500
    data_corruption`` (with the key), ``503 backend_timeout`` / ``backend_unavailable`` (with
    ``Retry-After: 1``), ``502 backend_error`` (a refusal of the server's own credentials says
    only that). Any other exception: None. The rows of :data:`ERRORS` say it.
    """
    for kind in ERRORS.values():
        if kind.body is not None and isinstance(exc, kind.exception):
            body = ErrorBody(error=kind.code, **kind.body(exc))
            return ErrorResponse(kind.status, body, dict(kind.headers))
    return None


def error_body(content_type: str, content: bytes) -> ErrorBody | None:
    """The :class:`ErrorBody` of an answer; None for an answer without one (not ours)."""
    if not content_type.startswith(_JSON):
        return None
    try:
        return _ERROR.decode(content)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None


def exception_for(answer: ErrorAnswer) -> CacheServiceError:
    """The exception a client raises for an error answer: the inverse of :func:`error_response`.

    The row of :data:`ERRORS` for the body's code, if the status is that row's; else what the
    status says (``401``/``403``: :class:`~cache_service_client.AuthenticationError`, ``413``:
    :class:`~cache_service_client.ValidationError` naming the argument, ``429``/``502``/``503``:
    :class:`~cache_service_client.BackendConnectionError`, ``504``:
    :class:`~cache_service_client.BackendTimeoutError`); anything else is a
    :class:`~cache_service_client.BackendError`.
    """
    kind = ERRORS.get(answer.body.error) if answer.body is not None else None
    if kind is not None and kind.status == answer.status:
        return kind.raised(answer)
    return _FALLBACKS.get(answer.status, _generic)(answer)


# -- the bearer token ----------------------------------------------------------------------------


def check_token(token: object) -> str:
    """Return ``token`` if it is a bearer token: a non-empty str of printable ASCII, no spaces.

    Raises:
        ConfigurationError: It is not (the message names the argument ``auth_token``).

    """
    if not isinstance(token, str) or not token:
        raise ConfigurationError("argument auth_token: must be a non-empty str or None")
    if not all("\x21" <= ch <= "\x7e" for ch in token):
        raise ConfigurationError(
            "argument auth_token: must be printable ASCII without spaces (a bearer token)"
        )
    return token


# -- msgspec errors to field names -------------------------------------------------------------

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]*)`")


def field_of(error: msgspec.ValidationError, default: str = "body") -> str:
    """Name the field a msgspec validation error is about, in the library's notation.

    ``Expected `bool`, got `int` - at `$.items[3].persist``` becomes ``items[3].persist``;
    a missing or unknown field is appended to the path of the object that lacks or holds it.
    """
    message = str(error)
    at = _AT.search(message)
    path = at.group("path") if at else ""
    named = _NAMED.match(message)
    if named:
        path += "." + named.group("name")
    path = path.removeprefix(".")
    return path or default
