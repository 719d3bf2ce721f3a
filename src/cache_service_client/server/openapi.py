"""The gateway's OpenAPI 3.1 document, built from the wire types' msgspec JSON schemas.

The document is served at ``/openapi.json`` and kept in ``docs/openapi.json``; a test checks
that the two are identical. Regenerate the file after changing the API or the models::

    python -m cache_service_client.server --print-openapi > docs/openapi.json

Component schemas come from msgspec (what the decoders accept is what the document says); their
descriptions are written here rather than taken from docstrings, so that editing a docstring
does not change the API document.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from cache_service_client.models import (
    CacheInfo,
    DeviceMetadata,
    HealthStatus,
    Page,
    RepairReport,
)
from cache_service_client.server import wire

__all__ = ["build_openapi", "openapi_json"]

_MODELS: dict[Any, str] = {
    DeviceMetadata: "Metadata of one device, as stored. `v` is the schema version.",
    wire.DeviceMetadataInput: (
        "Metadata of one device, as written. `device_id` may be left out when the path names "
        "the device; `last_updated` (RFC 3339 with a time zone) defaults to the gateway's "
        "current time. Unknown fields are refused: put them into `additional_properties`."
    ),
    wire.DeviceIdsBody: "Device ids of a batch read or delete (duplicates count once).",
    wire.BatchPutBody: "Devices to store atomically; each item names its `device_id`.",
    wire.BatchGetResponse: (
        "Found metadata by id, missing ids in request order, and entries whose stored value "
        "cannot be decoded, by id."
    ),
    wire.CorruptedEntry: "A stored value that cannot be decoded: its backend key and why.",
    wire.StoredResponse: "How many devices were stored (the last of duplicate ids wins).",
    wire.DeleteResponse: "Whether the device was stored.",
    wire.DeletedResponse: "How many of the given devices were stored.",
    wire.IdsResponse: "Device ids in ascending order of their UTF-8 bytes.",
    wire.CountResponse: "How many devices are stored.",
    wire.DeviceQueryBody: (
        "A filtered, sorted, paged query: filters combine (AND); `cursor` is the `next_cursor` "
        "of the previous page of the same query; `limit` is 1 to 1000."
    ),
    Page[DeviceMetadata]: (
        "One page of a query. `next_cursor` is null on the last page; `total` is set on the "
        "first page of a query without filters."
    ),
    RepairReport: "What a repair found and fixed.",
    CacheInfo: "Figures about the cache, computed without scanning the keyspace.",
    HealthStatus: "The backend's health: `healthy`, `degraded` or `unhealthy`.",
    wire.ErrorBody: (
        "Every error response. `error` is a stable code; `field` names the offending field of "
        "a `validation_error`, `device_id` the device of a `device_not_found`, `key` the "
        "backend key of a `data_corruption`."
    ),
}

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(name)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("ErrorBody", description)


_DEVICE_ID = {
    "name": "device_id",
    "in": "path",
    "required": True,
    "description": (
        "The device id, percent-encoded as one path segment (UTF-8; every character but "
        "`A-Z a-z 0-9 - _ . ~` escaped, and `.` too when the id is only dots)."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}
_TTL = {
    "name": "ttl",
    "in": "query",
    "required": False,
    "description": (
        "Seconds until the stored devices expire (0: never), instead of the gateway's TTL. "
        "Only gateways started with `allow_client_ttl` accept it; others answer 422."
    ),
    "schema": {"type": "number", "minimum": 0},
}
_IF_NEWER = {
    "name": "if_newer",
    "in": "query",
    "required": False,
    "description": (
        "`true`: store a device only if nothing is stored for it or the stored `last_updated` "
        "is strictly older (whole milliseconds; equal: not stored, so a redelivery changes "
        "nothing), checked and written in one atomic step. A single put then answers 200 "
        "with how many were stored (0 or 1) instead of 204."
    ),
    "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
}
_PAGING = [
    {
        "name": "pattern",
        "in": "query",
        "required": False,
        "description": "A Redis glob over device ids, with exactly `SCAN MATCH` semantics.",
        "schema": {"type": "string"},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "At most this many ids (default: all).",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    },
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "description": "Skip this many matching ids first (default: 0).",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    },
]

_UNAUTHORIZED = _error("Missing or wrong bearer token.")
_INVALID = _error("Invalid input; `field` names it.")
_TOO_LARGE = _error("The request body exceeds the gateway's limit.")
_MEDIA_TYPE = _error("The request body is not `application/json`.")
_CORRUPT = _error("A stored value cannot be decoded (`error`: `data_corruption`, `key`).")
_BAD_GATEWAY = _error("The backend failed (e.g. it refused the gateway's credentials).")
_UNAVAILABLE = _error(
    "The backend cannot be reached or did not answer in time; retry after `Retry-After`."
)


def _common(*, body: bool = False, reads: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {"401": _UNAUTHORIZED, "422": _INVALID}
    if body:
        responses["413"] = _TOO_LARGE
        responses["415"] = _MEDIA_TYPE
    if reads:
        responses["500"] = _CORRUPT
    responses["502"] = _BAD_GATEWAY
    responses["503"] = _UNAVAILABLE
    return responses


def _body(name: str, description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {_JSON: {"schema": _ref(name)}},
    }


def _paths() -> dict[str, Any]:
    etag = {"ETag": {"description": "Strong validator of the body.", "schema": {"type": "string"}}}
    exists = {
        "X-Device-Exists": {
            "description": "`true` or `false`; tells this 404 from one for a wrong path.",
            "schema": {"type": "string", "enum": ["true", "false"]},
        }
    }
    return {
        wire.DEVICE_PATH_PREFIX + "{device_id}": {
            "parameters": [_DEVICE_ID],
            "get": {
                "operationId": "getDevice",
                "summary": "Read one device",
                "description": "Send `If-None-Match` with an earlier `ETag` to get a 304.",
                "parameters": [
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {**_json("DeviceMetadata", "The device's metadata."), "headers": etag},
                    "304": {"description": "Not modified.", "headers": etag},
                    "404": _error("No metadata is stored for the device."),
                    **_common(reads=True),
                },
            },
            "head": {
                "operationId": "deviceExists",
                "summary": "Whether a value is stored for the device",
                "description": "200 if a value is stored (even one that cannot be decoded).",
                "responses": {
                    "200": {"description": "A value is stored.", "headers": exists},
                    "404": {"description": "No value is stored.", "headers": exists},
                    **_common(),
                },
            },
            "put": {
                "operationId": "putDevice",
                "summary": "Store one device, replacing any earlier value",
                "parameters": [_TTL, _IF_NEWER],
                "requestBody": _body("DeviceMetadataInput", "The metadata."),
                "responses": {
                    "200": _json("StoredResponse", "With `if_newer=true`: 1 if stored, else 0."),
                    "204": {"description": "Stored."},
                    **_common(body=True),
                },
            },
            "delete": {
                "operationId": "deleteDevice",
                "summary": "Delete one device",
                "responses": {
                    "200": _json("DeleteResponse", "Whether it was stored."),
                    **_common(),
                },
            },
        },
        wire.DEVICES_PATH: {
            "get": {
                "operationId": "listDeviceIds",
                "summary": "List device ids, filtered by a Redis glob and paged",
                "parameters": _PAGING,
                "responses": {"200": _json("IdsResponse", "The ids."), **_common()},
            }
        },
        wire.BATCH_GET_PATH: {
            "post": {
                "operationId": "batchGetDevices",
                "summary": "Read several devices (safe and idempotent)",
                "requestBody": _body("DeviceIdsBody", "The ids to read."),
                "responses": {
                    "200": _json("BatchGetResponse", "Found, missing and corrupted entries."),
                    **_common(body=True),
                },
            }
        },
        wire.BATCH_PUT_PATH: {
            "post": {
                "operationId": "batchPutDevices",
                "summary": "Store several devices atomically (idempotent)",
                "description": "If any item is invalid, nothing is stored.",
                "parameters": [_TTL, _IF_NEWER],
                "requestBody": _body("BatchPutBody", "The devices to store."),
                "responses": {
                    "200": _json("StoredResponse", "How many were stored."),
                    **_common(body=True),
                },
            }
        },
        wire.BATCH_DELETE_PATH: {
            "post": {
                "operationId": "batchDeleteDevices",
                "summary": "Delete several devices atomically (idempotent)",
                "requestBody": _body("DeviceIdsBody", "The ids to delete."),
                "responses": {
                    "200": _json("DeletedResponse", "How many were stored."),
                    **_common(body=True),
                },
            }
        },
        wire.QUERY_PATH: {
            "post": {
                "operationId": "queryDevices",
                "summary": "One page of devices matching a query (safe and idempotent)",
                "description": (
                    "Pages are stable: a device that exists for the whole walk is returned "
                    "exactly once, even while others are written, deleted or expire."
                ),
                "requestBody": _body("DeviceQuery", "The query."),
                "responses": {
                    "200": _json(_name(Page[DeviceMetadata]), "The page."),
                    **_common(body=True, reads=True),
                },
            }
        },
        wire.REPAIR_PATH: {
            "post": {
                "operationId": "repairIndexes",
                "summary": "Rebuild the indexes from the stored values",
                "description": "Reads the whole keyspace: slow on large caches; not retried.",
                "responses": {"200": _json("RepairReport", "What was fixed."), **_common()},
            }
        },
        wire.COUNT_PATH: {
            "get": {
                "operationId": "countDevices",
                "summary": "Count stored devices",
                "responses": {"200": _json("CountResponse", "The count."), **_common()},
            }
        },
        wire.INFO_PATH: {
            "get": {
                "operationId": "cacheInfo",
                "summary": "Figures about the cache",
                "responses": {"200": _json("CacheInfo", "The figures."), **_common()},
            }
        },
        wire.HEALTH_PATH: {
            "get": {
                "operationId": "health",
                "summary": "The backend's health",
                "description": (
                    "Open without a token when the gateway runs with `open_health`; "
                    "`details` are then only shown to callers that send the token."
                ),
                "security": [{"bearerAuth": []}, {}],
                "responses": {
                    "200": _json("HealthStatus", "Healthy or degraded."),
                    "401": _UNAUTHORIZED,
                    "422": _INVALID,
                    "503": _json("HealthStatus", "Unhealthy."),
                },
            }
        },
        wire.METRICS_PATH: {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of the gateway",
                "description": (
                    "The text exposition format (version 0.0.4): "
                    "`cache_service_gateway_requests_total` (by `method`, `route`, `status`), "
                    "`cache_service_gateway_request_duration_seconds` (a histogram, by "
                    "`method` and `route`) and `cache_service_gateway_backend_errors_total` "
                    "(by `error_type`). Open without a token when the gateway runs with "
                    "`open_metrics`."
                ),
                "security": [{"bearerAuth": []}, {}],
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _UNAUTHORIZED,
                    "422": _INVALID,
                },
            }
        },
        wire.OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {_JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def _name(model: Any) -> str:
    # msgspec names a generic Struct after its arguments: Page[DeviceMetadata] is
    # "Page_DeviceMetadata_".
    args = getattr(model, "__args__", ())
    origin = getattr(model, "__origin__", model)
    return "_".join([origin.__name__, *(arg.__name__ for arg in args)]) + ("_" if args else "")


def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        list(_MODELS), ref_template="#/components/schemas/{name}"
    )
    described = {_name(model): description for model, description in _MODELS.items()}
    for name, schema in components.items():
        schema.pop("title", None)
        schema.pop("description", None)  # a docstring: editing it must not change the API
        if name in described:
            schema["description"] = described[name]
    return dict(sorted(components.items()))


def build_openapi() -> dict[str, Any]:
    """Return the OpenAPI document of the gateway, as a JSON-compatible dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cache-service gateway",
            "version": wire.API_VERSION,
            "description": (
                "Device metadata over HTTP: the REST gateway of cache-service-client. "
                "Errors have a small JSON body (`ErrorBody`); bad input is never a 500."
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_json() -> str:
    """Return the document as the gateway serves it (and ``docs/openapi.json`` holds it)."""
    return json.dumps(build_openapi(), indent=2, ensure_ascii=False) + "\n"
