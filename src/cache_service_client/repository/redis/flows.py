"""Every Redis operation of the repository, written once as a generator "flow".

A flow yields :mod:`~cache_service_client.repository.redis.ops` values and receives the replies;
the sync and the async driver run the same flows. Flows validate their input before their first
``yield``, so invalid input never reaches the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cache_service_client._glob import compile_glob, literal_prefix
from cache_service_client._validation import (
    validate_device_id,
    validate_device_ids,
    validate_metadata,
    validate_paging,
)
from cache_service_client.codec import MetadataCodec
from cache_service_client.exceptions import (
    AuthenticationError,
    BackendError,
    DataCorruptionError,
    DeviceNotFoundError,
)
from cache_service_client.keys import KeyStrategy
from cache_service_client.models import BatchGetResult, CacheInfo, DeviceMetadata, HealthStatus
from cache_service_client.repository.base import datetime_from_ms, datetime_to_ms, validate_batch
from cache_service_client.repository.redis import lua
from cache_service_client.repository.redis.ops import Command, Flow, Pipeline, ScriptCall

__all__ = ["FlowContext"]

#: Index entries examined per RANGE call while listing.
RANGE_CHUNK = 512
#: Expired index entries removed per read, at most (keeps every script short).
PRUNE_BATCH = 256
#: Entries INFO examines from each end of the updated index to find a live one.
INFO_BUDGET = 10_000


@dataclass
class FlowContext:
    """What every flow needs: key naming, the codec, the TTL and health thresholds.

    Attributes:
        keys: Names the keys.
        codec: Encodes and decodes values.
        ttl_ms: TTL of new values in milliseconds; None: no expiry.
        slow_ms: A PING slower than this makes the health check "degraded".
        memory_ratio: used_memory / maxmemory above this makes it "degraded".

    """

    keys: KeyStrategy
    codec: MetadataCodec
    ttl_ms: int | None
    slow_ms: float = 100.0
    memory_ratio: float = 0.9


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def get(ctx: FlowContext, device_id: str) -> Flow[DeviceMetadata]:
    """GET one device and decode it."""
    validate_device_id(device_id)
    key = ctx.keys.device_key(device_id)
    raw = yield Command(("GET", key), key=key)
    if raw is None:
        raise DeviceNotFoundError(device_id)
    return ctx.codec.decode(key, raw, device_id)


def get_many(ctx: FlowContext, device_ids: Iterable[str]) -> Flow[BatchGetResult]:
    """MGET a batch; keys that read as nil are checked with TYPE to tell missing from corrupt."""
    ids = validate_device_ids(device_ids)
    found: dict[str, DeviceMetadata] = {}
    missing: list[str] = []
    corrupted: dict[str, DataCorruptionError] = {}
    if not ids:
        return BatchGetResult(found=found, missing=missing, corrupted=corrupted)
    keys = ctx.keys.device_keys(ids)
    raws = yield Command(("MGET", *keys))
    nil: list[int] = []
    decode = ctx.codec.decode
    for index, raw in enumerate(raws):
        if raw is None:
            nil.append(index)
            continue
        try:
            found[ids[index]] = decode(keys[index], raw, ids[index])
        except DataCorruptionError as exc:
            corrupted[ids[index]] = exc
    if nil:
        # MGET answers nil for keys of another type too; only TYPE tells them apart.
        types = yield Pipeline(tuple(Command(("TYPE", keys[index])) for index in nil))
        for index, kind in zip(nil, types, strict=True):
            if isinstance(kind, Exception):
                raise kind
            kind_text = _text(kind)
            if kind_text in ("none", "string"):  # "string": written after the MGET
                missing.append(ids[index])
            else:
                corrupted[ids[index]] = DataCorruptionError(
                    keys[index], f"holds a Redis {kind_text}, not a string (WRONGTYPE)"
                )
    return BatchGetResult(found=found, missing=missing, corrupted=corrupted)


def put_many(ctx: FlowContext, items: Iterable[DeviceMetadata]) -> Flow[int]:
    """Write values and index entries of a batch atomically, in one script call."""
    checked = validate_batch(items)
    if not checked:
        return 0
    encode = ctx.codec.encode
    args: list[str | bytes | int] = [ctx.ttl_ms or 0]
    for metadata in checked:
        args += (metadata.device_id, encode(metadata), datetime_to_ms(metadata.last_updated))
    keys = (*ctx.keys.index_keys(), *ctx.keys.device_keys([m.device_id for m in checked]))
    written = yield ScriptCall(lua.PUT, keys, tuple(args))
    return int(written)


def put(ctx: FlowContext, metadata: DeviceMetadata) -> Flow[None]:
    """Write one device (value and index entries) atomically."""
    yield from put_many(ctx, [validate_metadata(metadata)])


def delete_many(ctx: FlowContext, device_ids: Iterable[str]) -> Flow[int]:
    """Delete values and index entries of a batch atomically; return how many existed."""
    ids = validate_device_ids(device_ids)
    if not ids:
        return 0
    keys = (*ctx.keys.index_keys(), *ctx.keys.device_keys(ids))
    deleted = yield ScriptCall(lua.DELETE, keys, tuple(ids))
    return int(deleted)


def delete(ctx: FlowContext, device_id: str) -> Flow[bool]:
    """Delete one device; return True if it existed."""
    validate_device_id(device_id)
    return (yield from delete_many(ctx, [device_id])) == 1


def exists(ctx: FlowContext, device_id: str) -> Flow[bool]:
    """EXISTS on the device's key."""
    validate_device_id(device_id)
    found = yield Command(("EXISTS", ctx.keys.device_key(device_id)))
    return bool(found)


def list_ids(
    ctx: FlowContext,
    *,
    pattern: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> Flow[list[str]]:
    """Walk the ids index in order from the pattern's literal prefix, matching as Redis does.

    Only the lexicographic range that the pattern's literal prefix allows is read, in chunks;
    index entries whose key is gone are pruned as they are met.
    """
    limit, skip, pattern = validate_paging(limit, offset, pattern)
    result: list[str] = []
    if limit == 0:
        return result
    prefix = literal_prefix(pattern) if pattern is not None else ""
    matches = compile_glob(pattern) if pattern is not None and pattern != prefix + "*" else None
    start: str | bytes = "[" + prefix if prefix else "-"
    # UTF-8 never contains the byte 0xFF, so every id with this prefix sorts below prefix+0xFF.
    stop: str | bytes = b"[" + prefix.encode() + b"\xff" if prefix else "+"
    index_keys = tuple(ctx.keys.index_keys())
    key_prefix = ctx.keys.device_key_prefix
    while True:
        chunk, last = yield ScriptCall(
            lua.RANGE, index_keys, (key_prefix, start, stop, RANGE_CHUNK)
        )
        for raw in chunk:
            device_id = _text(raw)
            if matches is not None and not matches(device_id):
                continue
            if skip:
                skip -= 1
                continue
            result.append(device_id)
            if limit is not None and len(result) >= limit:
                return result
        if last is None:
            return result
        start = b"(" + last if isinstance(last, bytes) else "(" + str(last)


def count(ctx: FlowContext) -> Flow[int]:
    """Count live devices from the indexes (O(log N)), pruning a batch of expired entries."""
    total = yield ScriptCall(
        lua.COUNT, tuple(ctx.keys.index_keys()), (ctx.keys.device_key_prefix, PRUNE_BATCH)
    )
    return int(total)


def _info_number(info: dict[str, Any], name: str) -> int:
    try:
        return int(info.get(name, 0))
    except (TypeError, ValueError):
        return 0


def info(ctx: FlowContext) -> Flow[CacheInfo]:
    """Count, oldest and newest entry from the indexes; memory from INFO memory."""
    total, oldest, newest = yield ScriptCall(
        lua.INFO,
        tuple(ctx.keys.index_keys()),
        (ctx.keys.device_key_prefix, PRUNE_BATCH, INFO_BUDGET),
    )
    memory = yield Command(("INFO", "memory"))
    return CacheInfo(
        total_devices=int(total),
        memory_usage_bytes=_info_number(memory, "used_memory"),
        oldest_entry=None if oldest is None else datetime_from_ms(float(oldest)),
        newest_entry=None if newest is None else datetime_from_ms(float(newest)),
        backend="redis",
    )


def health(ctx: FlowContext) -> Flow[HealthStatus]:
    """PING, then INFO: healthy, degraded (slow, near maxmemory, read-only) or unhealthy."""
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    try:
        yield Command(("PING",))
    except AuthenticationError as exc:
        return HealthStatus(
            status="unhealthy",
            message=f"authentication failed: {exc}",
            timestamp=now,
            details={"error": type(exc).__name__},
        )
    except BackendError as exc:
        return HealthStatus(
            status="unhealthy",
            message=f"unreachable: {exc}",
            timestamp=now,
            details={"error": type(exc).__name__},
        )
    latency_ms = (time.perf_counter() - started) * 1000
    details: dict[str, Any] = {}
    problems: list[str] = []
    if latency_ms > ctx.slow_ms:
        problems.append(f"slow: PING took {latency_ms:.1f} ms (threshold {ctx.slow_ms:g} ms)")
    try:
        server = yield Command(("INFO",))
    except BackendError as exc:  # INFO may be disabled on managed services
        details["info_error"] = str(exc)
        server = {}
    details["redis_version"] = server.get("redis_version")
    details["role"] = server.get("role")
    used, maximum = _info_number(server, "used_memory"), _info_number(server, "maxmemory")
    details["used_memory"] = used
    details["maxmemory"] = maximum
    if maximum and used / maximum > ctx.memory_ratio:
        problems.append(f"near maxmemory: {used} of {maximum} bytes used")
    if server.get("role") == "slave" and str(server.get("slave_read_only", "1")) == "1":
        problems.append("read-only: connected to a replica")
    if problems:
        return HealthStatus(
            status="degraded",
            message="; ".join(problems),
            timestamp=now,
            latency_ms=latency_ms,
            details=details,
        )
    return HealthStatus(
        status="healthy",
        message="PING ok",
        timestamp=now,
        latency_ms=latency_ms,
        details=details,
    )
