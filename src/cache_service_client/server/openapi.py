"""The gateway's OpenAPI 3.1 document, built from the endpoint table and msgspec JSON schemas.

Paths, operations, parameters and bodies come from
:data:`cache_service_client.rest.endpoints.ENDPOINTS`, the error answers from
:data:`cache_service_client.rest.wire.ERRORS`.

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
from cache_service_client.rest import wire
from cache_service_client.rest.endpoints import ENDPOINTS, HEADERS, PARAMETERS, Answer, Endpoint

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
        "backend key of a `data_corruption`; `done`, `failed`, `count` and `retryable` say "
        "what a `partial_write` carried out."
    ),
}

_JSON = "application/json"
_SECURITY: dict[str, list[Any]] = {"optional": [{"bearerAuth": []}, {}], "none": []}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schema(model: Any) -> dict[str, str]:
    if model is str:
        return {"type": "string"}
    if model is dict:
        return {"type": "object"}
    return _ref(_name(model))


def _content(media_type: str, model: Any) -> dict[str, Any]:
    return {media_type: {"schema": _schema(model)}}


def _answer(endpoint: Endpoint[Any], answer: Answer) -> dict[str, Any]:
    document: dict[str, Any] = {"description": answer.description}
    if answer.body:
        document["content"] = _content(endpoint.media_type, endpoint.answer)
    if answer.headers:
        document["headers"] = {name: HEADERS[name] for name in answer.headers}
    return document


def _error(code: str) -> tuple[str, dict[str, Any]]:
    kind = wire.ERRORS[code]
    return str(kind.status), {
        "description": kind.description,
        "content": _content(_JSON, wire.ErrorBody),
    }


def _operation(endpoint: Endpoint[Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
    }
    if endpoint.description is not None:
        operation["description"] = endpoint.description
    if endpoint.params:
        operation["parameters"] = [PARAMETERS[name] for name in endpoint.params]
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "description": endpoint.body_description,
            "content": _content(_JSON, endpoint.body),
        }
    if endpoint.auth in _SECURITY:
        operation["security"] = _SECURITY[endpoint.auth]
    responses = {answer.status: _answer(endpoint, answer) for answer in endpoint.answers}
    responses.update(_error(code) for code in endpoint.error_codes)
    operation["responses"] = responses
    return operation


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        if endpoint.path not in paths:
            per_device = [PARAMETERS["device_id"]] if endpoint.per_device else []
            paths[endpoint.path] = {"parameters": per_device} if per_device else {}
        paths[endpoint.path][endpoint.method.lower()] = _operation(endpoint)
    return paths


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
