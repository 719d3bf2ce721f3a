"""Every endpoint of the REST API, declared once.

Each :class:`Endpoint` says its method and path, its request and answer bodies, its query
parameters, the repository operation it serves, and how the OpenAPI document describes it. The
gateway's routes (:func:`cache_service_client.server.create_app`), the HTTP repository's
requests and the OpenAPI document (:mod:`cache_service_client.server.openapi`) are all made from
:data:`ENDPOINTS`; the error answers each endpoint documents come from
:data:`cache_service_client.rest.wire.ERRORS`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

from cache_service_client._attempt import RETRY_ATTEMPT_HEADER
from cache_service_client.models import CacheInfo, DeviceMetadata, HealthStatus, Page, RepairReport
from cache_service_client.rest import wire

__all__ = [
    "COUNT",
    "DELETE",
    "DELETE_MANY",
    "ENDPOINTS",
    "EXISTS",
    "GET",
    "GET_MANY",
    "HEADERS",
    "HEALTH",
    "INFO",
    "LIST_IDS",
    "METRICS",
    "OPENAPI",
    "PARAMETERS",
    "PUT",
    "PUT_MANY",
    "QUERY",
    "REPAIR",
    "Answer",
    "Auth",
    "Endpoint",
]

T = TypeVar("T")

#: Who may call an endpoint: ``"required"``, the bearer token; ``"optional"``, anyone when the
#: gateway is started so (``open_health``, ``open_metrics``); ``"none"``, anyone, whatever the
#: query (the OpenAPI document).
Auth = Literal["required", "optional", "none"]

_MAX_INT = 2**63 - 1
_DEVICE = "{device_id}"

#: The parameters endpoints take, by name, as the OpenAPI document describes them; ``in`` says
#: where: the path, the query or a header.
PARAMETERS: Final[Mapping[str, Mapping[str, Any]]] = {
    "device_id": {
        "name": "device_id",
        "in": "path",
        "required": True,
        "description": (
            "The device id, percent-encoded as one path segment (UTF-8; every character but "
            "`A-Z a-z 0-9 - _ . ~` escaped, and `.` too when the id is only dots)."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
    },
    "If-None-Match": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
    },
    RETRY_ATTEMPT_HEADER: {
        "name": RETRY_ATTEMPT_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "On a request that repeats one whose answer was lost: the attempt (2, 3, ...). A "
            "conditional put (`if_newer=true`) then counts an identical update stored already "
            "(the lost attempt's) as stored. Anything but 1-9 digits counts as absent."
        ),
        "schema": {"type": "string"},
    },
    "ttl": {
        "name": "ttl",
        "in": "query",
        "required": False,
        "description": (
            "Seconds until the stored devices expire (0: never), instead of the gateway's TTL. "
            "Only gateways started with `allow_client_ttl` accept it; others answer 422."
        ),
        "schema": {"type": "number", "minimum": 0},
    },
    "if_newer": {
        "name": "if_newer",
        "in": "query",
        "required": False,
        "description": (
            "`true`: store a device only if nothing is stored for it or the stored "
            "`last_updated` is strictly older (whole milliseconds; equal: not stored, so a "
            "redelivery changes nothing), checked and written in one atomic step. A single put "
            "then answers 200 with how many were stored (0 or 1) instead of 204."
        ),
        "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
    },
    "pattern": {
        "name": "pattern",
        "in": "query",
        "required": False,
        "description": "A Redis glob over device ids, with exactly `SCAN MATCH` semantics.",
        "schema": {"type": "string"},
    },
    "limit": {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "At most this many ids (default: all).",
        "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_INT},
    },
    "offset": {
        "name": "offset",
        "in": "query",
        "required": False,
        "description": "Skip this many matching ids first (default: 0).",
        "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_INT},
    },
}

#: The headers answers carry, by name, as the OpenAPI document describes them.
HEADERS: Final[Mapping[str, Mapping[str, Any]]] = {
    "ETag": {"description": "Strong validator of the body.", "schema": {"type": "string"}},
    wire.EXISTS_HEADER: {
        "description": "`true` or `false`; tells this 404 from one for a wrong path.",
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
}


@dataclass(frozen=True)
class Answer:
    """One answer an endpoint documents besides its error answers.

    Attributes:
        status: The status code, as the OpenAPI document keys it (``"200"``).
        description: What the answer means.
        body: Whether it carries the endpoint's answer body.
        headers: The :data:`HEADERS` it carries.

    """

    status: str
    description: str
    body: bool = True
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Endpoint(Generic[T]):
    """One endpoint: a method on a path, the operation it serves, what it takes and answers.

    Attributes:
        name: The operation it serves: the repository method of that name (``"get"``,
            ``"put_many"``, ...; ``"metrics"`` and ``"openapi"`` are the gateway's own), the
            gateway's handler of that name, and the operation a client's retries log.
        method: The HTTP method.
        path: The path; ``{device_id}`` stands for the percent-encoded id.
        operation_id: The OpenAPI ``operationId``.
        summary: The OpenAPI summary.
        answers: The answers it documents besides its errors.
        answer: The type of its answer body (JSON unless ``media_type`` says otherwise).
        body: The type of its request body (JSON); None: it takes none.
        body_description: What its request body holds.
        description: The OpenAPI description.
        params: The :data:`PARAMETERS` it takes besides the path's (the gateway refuses any
            other query parameter).
        errors: Error codes it documents before the ones every endpoint of its kind answers
            (see :attr:`error_codes`).
        auth: Who may call it (see :data:`Auth`).
        backend: Whether it answers 502 and 503 when the backend fails.
        reads: Whether it answers 500 ``data_corruption`` for a stored value it cannot decode.
        argument: The operation's argument its request body carries (a 413 names it).
        body_limit: Bytes its request body may hold at most (and the gateway's own limit).
        read_statuses: Statuses besides 2xx whose answers the operation reads itself (the
            404 of ``HEAD``, the 503 of an unhealthy backend).
        retried: Whether a client retries it (through its
            :class:`~cache_service_client.RetryPolicy`) on connection failures, timeouts and 503.
        media_type: The media type of its answer body.

    """

    name: str
    method: str
    path: str
    operation_id: str
    summary: str
    answers: tuple[Answer, ...]
    answer: type[T] | None = None
    body: Any = None
    body_description: str = ""
    description: str | None = None
    params: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    auth: Auth = "required"
    backend: bool = True
    reads: bool = False
    argument: str = "metadata"
    body_limit: int | None = None
    read_statuses: frozenset[int] = frozenset()
    retried: bool = True
    media_type: str = "application/json"

    @property
    def per_device(self) -> bool:
        """Whether its path names a device."""
        return _DEVICE in self.path

    def path_of(self, device_id: str | None = None) -> str:
        """The path of a request; ``device_id`` (percent-encoded here) if the path names one."""
        if device_id is None:
            return self.path
        return wire.device_path(device_id)

    @property
    def query_params(self) -> tuple[str, ...]:
        """The names of the query parameters it takes."""
        return tuple(name for name in self.params if PARAMETERS[name]["in"] == "query")

    @property
    def checks_query(self) -> bool:
        """Whether the gateway refuses unknown query parameters (all but the document's)."""
        return self.auth != "none"

    @property
    def error_codes(self) -> tuple[str, ...]:
        """The error codes it answers with, as the OpenAPI document lists them.

        Its own :attr:`errors`; then ``unauthorized`` and ``validation_error`` unless anyone may
        call it; ``payload_too_large`` and ``unsupported_media_type`` if it takes a body;
        ``data_corruption`` if it reads stored values; ``backend_error`` and
        ``backend_unavailable`` (which stands for ``backend_timeout`` too) if the backend
        serves it.
        """
        codes = list(self.errors)
        if self.auth != "none":
            codes += ["unauthorized", "validation_error"]
        if self.body is not None:
            codes += ["payload_too_large", "unsupported_media_type"]
        if self.reads:
            codes.append("data_corruption")
        if self.backend:
            codes += ["backend_error", "backend_unavailable"]
        return tuple(codes)

    def decode(self, content: bytes) -> T:
        """Decode an answer body (msgspec's errors propagate)."""
        return self._decoders[0].decode(content)

    def decode_body(self, content: bytes) -> Any:
        """Decode a request body (msgspec's errors propagate)."""
        return self._decoders[1].decode(content)

    @functools.cached_property
    def _decoders(self) -> tuple[msgspec.json.Decoder[T], msgspec.json.Decoder[Any]]:
        answer: Any = self.answer
        return msgspec.json.Decoder(answer), msgspec.json.Decoder(self.body)


_DEVICE_PATH: Final = wire.DEVICE_PATH_PREFIX + _DEVICE

#: Reads one device (with an ETag).
GET: Final[Endpoint[DeviceMetadata]] = Endpoint(
    "get",
    "GET",
    _DEVICE_PATH,
    "getDevice",
    "Read one device",
    (
        Answer("200", "The device's metadata.", headers=("ETag",)),
        Answer("304", "Not modified.", body=False, headers=("ETag",)),
    ),
    DeviceMetadata,
    description="Send `If-None-Match` with an earlier `ETag` to get a 304.",
    params=("If-None-Match",),
    errors=("device_not_found",),
    reads=True,
)
#: Tells whether a value is stored for a device (in the header ``X-Device-Exists``).
EXISTS: Final[Endpoint[None]] = Endpoint(
    "exists",
    "HEAD",
    _DEVICE_PATH,
    "deviceExists",
    "Whether a value is stored for the device",
    (
        Answer("200", "A value is stored.", body=False, headers=(wire.EXISTS_HEADER,)),
        Answer("404", "No value is stored.", body=False, headers=(wire.EXISTS_HEADER,)),
    ),
    description="200 if a value is stored (even one that cannot be decoded).",
    read_statuses=frozenset({404}),
)
#: Stores one device.
PUT: Final[Endpoint[wire.StoredResponse]] = Endpoint(
    "put",
    "PUT",
    _DEVICE_PATH,
    "putDevice",
    "Store one device, replacing any earlier value",
    (
        Answer("200", "With `if_newer=true`: 1 if stored, else 0."),
        Answer("204", "Stored.", body=False),
    ),
    wire.StoredResponse,
    body=wire.DeviceMetadataInput,
    body_description="The metadata.",
    params=("ttl", "if_newer", RETRY_ATTEMPT_HEADER),
)
#: Deletes one device.
DELETE: Final[Endpoint[wire.DeleteResponse]] = Endpoint(
    "delete",
    "DELETE",
    _DEVICE_PATH,
    "deleteDevice",
    "Delete one device",
    (Answer("200", "Whether it was stored."),),
    wire.DeleteResponse,
)
#: Lists stored ids, filtered and paged.
LIST_IDS: Final[Endpoint[wire.IdsResponse]] = Endpoint(
    "list_ids",
    "GET",
    wire.DEVICES_PATH,
    "listDeviceIds",
    "List device ids, filtered by a Redis glob and paged",
    (Answer("200", "The ids."),),
    wire.IdsResponse,
    params=("pattern", "limit", "offset"),
)
#: Reads a batch of devices.
GET_MANY: Final[Endpoint[wire.BatchGetResponse]] = Endpoint(
    "get_many",
    "POST",
    wire.BATCH_GET_PATH,
    "batchGetDevices",
    "Read several devices (safe and idempotent)",
    (Answer("200", "Found, missing and corrupted entries."),),
    wire.BatchGetResponse,
    body=wire.DeviceIdsBody,
    body_description="The ids to read.",
    argument="device_ids",
)
#: Stores a batch of devices.
PUT_MANY: Final[Endpoint[wire.StoredResponse]] = Endpoint(
    "put_many",
    "POST",
    wire.BATCH_PUT_PATH,
    "batchPutDevices",
    "Store several devices (idempotent; a cluster may answer partial_write)",
    (Answer("200", "How many were stored."),),
    wire.StoredResponse,
    body=wire.BatchPutBody,
    body_description="The devices to store.",
    description="If any item is invalid, nothing is stored.",
    params=("ttl", "if_newer", RETRY_ATTEMPT_HEADER),
    argument="items",
)
#: Deletes a batch of devices.
DELETE_MANY: Final[Endpoint[wire.DeletedResponse]] = Endpoint(
    "delete_many",
    "POST",
    wire.BATCH_DELETE_PATH,
    "batchDeleteDevices",
    "Delete several devices (idempotent; a cluster may answer partial_write)",
    (Answer("200", "How many were stored."),),
    wire.DeletedResponse,
    body=wire.DeviceIdsBody,
    body_description="The ids to delete.",
    argument="device_ids",
)
#: One page of a device query.
QUERY: Final[Endpoint[Page[DeviceMetadata]]] = Endpoint(
    "query",
    "POST",
    wire.QUERY_PATH,
    "queryDevices",
    "One page of devices matching a query (safe and idempotent)",
    (Answer("200", "The page."),),
    Page[DeviceMetadata],
    body=wire.DeviceQueryBody,
    body_description="The query.",
    description=(
        "Pages are stable: a device that exists for the whole walk is returned "
        "exactly once, even while others are written, deleted or expire."
    ),
    reads=True,
    argument="query",
    body_limit=wire.MAX_QUERY_BODY_BYTES,
)
#: Rebuilds the indexes from the stored values (never retried).
REPAIR: Final[Endpoint[RepairReport]] = Endpoint(
    "repair",
    "POST",
    wire.REPAIR_PATH,
    "repairIndexes",
    "Rebuild the indexes from the stored values",
    (Answer("200", "What was fixed."),),
    RepairReport,
    description="Reads the whole keyspace: slow on large caches; not retried.",
    retried=False,
)
#: Counts the stored devices.
COUNT: Final[Endpoint[wire.CountResponse]] = Endpoint(
    "count",
    "GET",
    wire.COUNT_PATH,
    "countDevices",
    "Count stored devices",
    (Answer("200", "The count."),),
    wire.CountResponse,
)
#: Figures about the cache.
INFO: Final[Endpoint[CacheInfo]] = Endpoint(
    "info",
    "GET",
    wire.INFO_PATH,
    "cacheInfo",
    "Figures about the cache",
    (Answer("200", "The figures."),),
    CacheInfo,
)
#: The backend's health (never retried; its 503 is an answer, not an error).
HEALTH: Final[Endpoint[HealthStatus]] = Endpoint(
    "health",
    "GET",
    wire.HEALTH_PATH,
    "health",
    "The backend's health",
    (Answer("200", "Healthy or degraded."), Answer("503", "Unhealthy.")),
    HealthStatus,
    description=(
        "Open without a token when the gateway runs with `open_health`; "
        "`details` are then only shown to callers that send the token."
    ),
    auth="optional",
    backend=False,
    read_statuses=frozenset({503}),
    retried=False,
)
#: The gateway's Prometheus metrics.
METRICS: Final[Endpoint[str]] = Endpoint(
    "metrics",
    "GET",
    wire.METRICS_PATH,
    "metrics",
    "Prometheus metrics of the gateway",
    (Answer("200", "The metrics."),),
    str,
    description=(
        "The text exposition format (version 0.0.4): "
        "`cache_service_gateway_requests_total` (by `method`, `route`, `status`), "
        "`cache_service_gateway_request_duration_seconds` (a histogram, by "
        "`method` and `route`) and `cache_service_gateway_backend_errors_total` "
        "(by `error_type`). Open without a token when the gateway runs with "
        "`open_metrics`."
    ),
    auth="optional",
    backend=False,
    media_type="text/plain",
)
#: The OpenAPI document (open to anyone).
OPENAPI: Final[Endpoint[dict[str, Any]]] = Endpoint(
    "openapi",
    "GET",
    wire.OPENAPI_PATH,
    "openapi",
    "This document",
    (Answer("200", "The OpenAPI document."),),
    dict,
    auth="none",
    backend=False,
)

#: Every endpoint, in the order of the OpenAPI document.
ENDPOINTS: Final[tuple[Endpoint[Any], ...]] = (
    GET,
    EXISTS,
    PUT,
    DELETE,
    LIST_IDS,
    GET_MANY,
    PUT_MANY,
    DELETE_MANY,
    QUERY,
    REPAIR,
    COUNT,
    INFO,
    HEALTH,
    METRICS,
    OPENAPI,
)
