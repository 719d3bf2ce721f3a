"""Every operation of the HTTP repositories, written once as a generator "flow".

A flow validates its input (exactly as the other repositories do, so bad input is a
:class:`~cache_service_client.ValidationError` before any request), yields the
:class:`~cache_service_client.repository.http.ops.Call` of its endpoint and reads the
:class:`~cache_service_client.repository.http.ops.Reply`; the sync and the async driver run the
same flows. A batch with nothing in it returns before any request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

import msgspec

from cache_service_client import models
from cache_service_client._planner import plan_query
from cache_service_client._validation import (
    check_flag,
    check_text,
    validate_device_id,
    validate_device_ids,
    validate_metadata,
    validate_paging,
)
from cache_service_client.exceptions import DataCorruptionError, ValidationError
from cache_service_client.repository.base import unhealthy, validate_batch
from cache_service_client.repository.http.ops import Call, Flow, Reply
from cache_service_client.rest import endpoints as rest
from cache_service_client.rest import wire

__all__ = ["SERVER", "HttpContext", "ServerTTL"]

T = TypeVar("T")

#: The ``ttl`` of a repository that lets the gateway apply its own TTL (the default).
ServerTTL = Literal["server"]
SERVER: Final = "server"

_ENCODER = msgspec.json.Encoder()


@dataclass
class HttpContext:
    """What the flows need besides their arguments.

    Attributes:
        gateway: The gateway's URL, credentials masked (health details name it).
        ttl: The TTL sent with writes: ``"server"``, seconds, or None for no expiry.

    """

    gateway: str
    ttl: float | ServerTTL | None = SERVER

    def write_params(self, if_newer: bool) -> dict[str, str] | None:
        """The query parameters of a write."""
        ttl = self.ttl
        params = {} if isinstance(ttl, str) else {"ttl": _seconds(ttl)}
        if check_flag(if_newer, "if_newer"):
            params["if_newer"] = "true"
        return params or None


def _seconds(ttl: float | None) -> str:
    if ttl is None:
        return "0"
    return format(ttl, ".6f").rstrip("0").rstrip(".")


def _decode(endpoint: rest.Endpoint[T], reply: Reply) -> T:
    """The endpoint's answer in ``reply``; DataCorruptionError if it cannot be decoded."""
    try:
        return endpoint.decode(reply.content)
    except (msgspec.DecodeError, RecursionError, UnicodeError, ValueError) as exc:
        raise DataCorruptionError(
            reply.where, f"the gateway's answer cannot be decoded: {exc}"
        ) from exc


def _ask(call: Call[T]) -> Flow[T]:
    """Send ``call`` and return its decoded answer."""
    reply = yield call
    return _decode(call.endpoint, reply)


def _other_device(reply: Reply, device_id: str) -> DataCorruptionError:
    return DataCorruptionError(reply.where, f"the gateway answered with device {device_id!r}")


# -- single devices and batches ---------------------------------------------------------------


def get(ctx: HttpContext, device_id: str) -> Flow[models.DeviceMetadata]:
    """``GET /v1/devices/{id}``: the device's metadata, which must name the device asked for."""
    device_id = validate_device_id(device_id)
    reply = yield Call(rest.GET, device_id)
    metadata = _decode(rest.GET, reply)
    if metadata.device_id != device_id:
        raise _other_device(reply, metadata.device_id)
    return metadata


def get_many(ctx: HttpContext, device_ids: Iterable[str]) -> Flow[models.BatchGetResult]:
    """``POST /v1/devices:batchGet``: found, missing and corrupted entries of the ids asked for."""
    ids = validate_device_ids(device_ids)
    if not ids:
        return models.BatchGetResult(found={}, missing=[], corrupted={})
    body = _ENCODER.encode(wire.DeviceIdsBody(device_ids=ids))
    reply = yield Call(rest.GET_MANY, body=body)
    answer = _decode(rest.GET_MANY, reply)
    wanted = set(ids)
    for device_id, metadata in answer.found.items():
        if device_id not in wanted or metadata.device_id != device_id:
            raise _other_device(reply, device_id)
    corrupted = {
        device_id: DataCorruptionError(entry.key, entry.reason)
        for device_id, entry in answer.corrupted.items()
    }
    return models.BatchGetResult(found=answer.found, missing=answer.missing, corrupted=corrupted)


def put(ctx: HttpContext, metadata: models.DeviceMetadata, if_newer: bool) -> Flow[bool]:
    """``PUT /v1/devices/{id}``: True if written (with ``if_newer``, as the gateway says)."""
    checked = validate_metadata(metadata)
    params = ctx.write_params(if_newer)
    call = Call(rest.PUT, checked.device_id, params, _ENCODER.encode(checked))
    if not if_newer:
        yield call  # 204, no body
        return True
    answer = yield from _ask(call)
    return answer.stored == 1


def put_many(ctx: HttpContext, items: Iterable[models.DeviceMetadata], if_newer: bool) -> Flow[int]:
    """``POST /v1/devices:batchPut``: how many were written; nothing is sent for no items."""
    params = ctx.write_params(if_newer)
    checked = validate_batch(items, newest=if_newer)
    if not checked:
        return 0
    # DeviceMetadata encodes with its "v" tag, which the gateway's input accepts.
    body = b'{"items":' + _ENCODER.encode(checked) + b"}"
    answer = yield from _ask(Call(rest.PUT_MANY, params=params, body=body))
    return answer.stored


def delete(ctx: HttpContext, device_id: str) -> Flow[bool]:
    """``DELETE /v1/devices/{id}``: whether it was stored."""
    device_id = validate_device_id(device_id)
    answer = yield from _ask(Call(rest.DELETE, device_id))
    return answer.deleted


def delete_many(ctx: HttpContext, device_ids: Iterable[str]) -> Flow[int]:
    """``POST /v1/devices:batchDelete``: how many were stored; nothing is sent for no ids."""
    ids = validate_device_ids(device_ids)
    if not ids:
        return 0
    body = _ENCODER.encode(wire.DeviceIdsBody(device_ids=ids))
    answer = yield from _ask(Call(rest.DELETE_MANY, body=body))
    return answer.deleted


def exists(ctx: HttpContext, device_id: str) -> Flow[bool]:
    """``HEAD /v1/devices/{id}``: the gateway's header says, in a 200 or a 404."""
    device_id = validate_device_id(device_id)
    reply = yield Call(rest.EXISTS, device_id)
    # A HEAD answer has no body: the gateway's header tells its 404 from any other 404 (a
    # wrong base URL, a proxy), which must not pass for "does not exist".
    marker = reply.headers.get(wire.EXISTS_HEADER)
    if reply.status in (200, 404) and marker in ("true", "false"):
        return marker == "true"
    raise reply.error()


def list_ids(
    ctx: HttpContext, pattern: str | None, limit: int | None, offset: int | None
) -> Flow[list[str]]:
    """``GET /v1/devices``: stored ids in order, filtered and paged."""
    limit, skip, pattern = validate_paging(limit, offset, pattern)
    params: dict[str, str] = {}
    if pattern is not None:
        params["pattern"] = pattern
    if limit is not None:
        params["limit"] = str(limit)
    if skip:
        params["offset"] = str(skip)
    answer = yield from _ask(Call(rest.LIST_IDS, params=params))
    return answer.ids


def count(ctx: HttpContext) -> Flow[int]:
    """``GET /v1/devices:count``."""
    answer = yield from _ask(Call(rest.COUNT))
    return answer.count


def query(ctx: HttpContext, query: models.DeviceQuery) -> Flow[models.Page[models.DeviceMetadata]]:
    """``POST /v1/devices:query``: one page."""
    if isinstance(query, models.DeviceQuery):
        # Everything but the cursor is checked here; the cursor is the gateway's to judge,
        # once it is text that can be sent at all.
        plan_query(msgspec.structs.replace(query, cursor=None))
        if query.cursor is not None:
            if type(query.cursor) is not str:
                raise ValidationError("cursor", "must be a str or None")
            check_text(query.cursor, "cursor")
    else:
        plan_query(query)  # raises, naming "query"
    return (yield from _ask(Call(rest.QUERY, body=_ENCODER.encode(query))))


def repair(ctx: HttpContext) -> Flow[models.RepairReport]:
    """``POST /v1/devices:repair`` (its endpoint is never retried)."""
    return (yield from _ask(Call(rest.REPAIR)))


def info(ctx: HttpContext) -> Flow[models.CacheInfo]:
    """``GET /v1/info``."""
    return (yield from _ask(Call(rest.INFO)))


def health(ctx: HttpContext) -> Flow[models.HealthStatus]:
    """``GET /health``, with the round trip as latency; never raises.

    An unreachable gateway, a refused token or an answer that cannot be decoded is "unhealthy".
    """
    started = time.perf_counter()
    try:
        reply = yield Call(rest.HEALTH)
    except Exception as exc:  # a closed client is unhealthy too
        return unhealthy(str(exc), type(exc).__name__)
    latency = (time.perf_counter() - started) * 1000
    try:
        status = _decode(rest.HEALTH, reply)
    except DataCorruptionError:
        return unhealthy("the gateway's health answer cannot be decoded", "decode")
    details = {**status.details, "gateway": ctx.gateway, "backend_latency_ms": status.latency_ms}
    return msgspec.structs.replace(status, latency_ms=latency, details=details)
