"""The REST API's wire format, shared by the gateway and the HTTP repository.

Paths, JSON bodies (msgspec Structs; device metadata uses the library's own models), error codes
and the percent-encoding of device ids. This module imports neither Starlette nor httpx, so the
HTTP repository can use it with only the ``[http]`` extra installed.

A device id travels as one path segment, percent-encoded byte by byte (UTF-8): every character
but ``A-Z a-z 0-9 - _ . ~`` is escaped, so ids holding ``/ ? # % [ ] *`` or any Unicode stay one
segment, and an id made of dots only (``.``, ``..``) is escaped too, so no client or proxy takes
it for a dot segment.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal, NamedTuple
from urllib.parse import quote

import msgspec

from cache_service_client.exceptions import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    DataCorruptionError,
    DeviceNotFoundError,
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
    "ErrorBody",
    "ErrorCode",
    "ErrorResponse",
    "IdsResponse",
    "StoredResponse",
    "device_path",
    "error_response",
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

    """

    error: str
    message: str
    field: str | None = None
    device_id: str | None = None
    key: str | None = None


class ErrorResponse(NamedTuple):
    """The HTTP answer to one of the library's exceptions."""

    status: int
    body: ErrorBody
    headers: dict[str, str]


def _unavailable(code: str, exc: BaseException) -> ErrorResponse:
    return ErrorResponse(
        503, ErrorBody(error=code, message=str(exc)[:500]), headers={"Retry-After": "1"}
    )


def error_response(exc: BaseException) -> ErrorResponse | None:
    """Map one of the library's exceptions to its status code, error body and headers.

    The gateway answers with it, and the framework integrations
    (:mod:`cache_service_client.contrib`) install it as exception handlers: ``422
    validation_error`` (with the field), ``404 device_not_found`` (with the id), ``500
    data_corruption`` (with the key), ``503 backend_timeout`` / ``backend_unavailable`` (with
    ``Retry-After: 1``), ``502 backend_error`` (a refusal of the server's own credentials says
    only that). Any other exception: None.
    """
    if isinstance(exc, ValidationError):
        return ErrorResponse(
            422, ErrorBody(error="validation_error", message=str(exc), field=exc.field), {}
        )
    if isinstance(exc, DeviceNotFoundError):
        body = ErrorBody(error="device_not_found", message=str(exc), device_id=exc.device_id)
        return ErrorResponse(404, body, {})
    if isinstance(exc, DataCorruptionError):
        body = ErrorBody(error="data_corruption", message=exc.reason, key=exc.key)
        return ErrorResponse(500, body, {})
    if isinstance(exc, BackendTimeoutError):
        return _unavailable("backend_timeout", exc)
    if isinstance(exc, BackendConnectionError):
        return _unavailable("backend_unavailable", exc)
    if isinstance(exc, AuthenticationError):
        # The backend refused the server's own credentials: not the caller's fault, no 401.
        message = "the backend refused the server's credentials"
        return ErrorResponse(502, ErrorBody(error="backend_error", message=message), {})
    if isinstance(exc, BackendError):
        return ErrorResponse(502, ErrorBody(error="backend_error", message=str(exc)[:500]), {})
    return None


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
