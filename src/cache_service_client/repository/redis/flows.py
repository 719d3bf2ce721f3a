"""Every Redis operation of the repository, written once as a generator "flow".

A flow yields :mod:`~cache_service_client.repository.redis.ops` values and receives the replies;
the sync and the async driver run the same flows. Flows validate their input before their first
``yield``, so invalid input never reaches the server.

Indexes live in buckets (one on a single node, several in a cluster, see
:class:`~cache_service_client.KeyStrategy`). Writes go to each device's bucket in one script;
reads that walk indexes merge the buckets' ordered streams here, in the client.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, Literal

from cache_service_client._glob import compile_glob, literal_prefix
from cache_service_client._planner import Position, QueryPlan, plan_query
from cache_service_client._validation import (
    check_flag,
    datetime_from_ms,
    datetime_to_ms,
    validate_device_id,
    validate_device_ids,
    validate_metadata,
    validate_paging,
)
from cache_service_client.codec import MetadataCodec
from cache_service_client.config import DEFAULTS
from cache_service_client.exceptions import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    DataCorruptionError,
    DeviceNotFoundError,
    PartialWriteError,
    outcome_unknown,
)
from cache_service_client.keys import KeyStrategy, score_of
from cache_service_client.models import (
    BatchGetResult,
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    Page,
    RepairReport,
)
from cache_service_client.repository.base import (
    unhealthy,
    validate_batch,
    warn_corrupted,
)
from cache_service_client.repository.redis import lua
from cache_service_client.repository.redis.ops import (
    Command,
    Flow,
    Op,
    Pipeline,
    ScanBatch,
    ScriptCall,
    retry_aware,
)

__all__ = ["FlowContext"]

#: Index entries examined per RANGE or TIME_RANGE call, at most.
RANGE_CHUNK = 512
#: A time range sorted by id with at most this many entries is fetched whole and sorted (see
#: :func:`_time_range_by_id`; it is more when sqrt(page x devices) is).
SMALL_RANGE = 200
#: The ``small`` of a TIME_SET call that must read its range whole (a later chunk of one).
READ_WHOLE = 2**31
#: Entries INFO examines from each end of the time index to find a live one.
INFO_BUDGET = 10_000
#: Keys read per SCAN step of a repair.
SCAN_COUNT = 1000


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
    slow_ms: float = DEFAULTS.health_slow_ms
    memory_ratio: float = DEFAULTS.health_memory_ratio
    _frames: dict[int, tuple[tuple[str, ...], tuple[str, str]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _framed: KeyStrategy | None = field(default=None, init=False, repr=False, compare=False)

    def frame(self, bucket: int) -> tuple[tuple[str, ...], tuple[str, str]]:
        """How every script call in ``bucket`` starts (built once per bucket).

        Returns:
            The bucket's fixed index keys, and its device key prefix and per-datatype time
            index prefix.
        """
        if self._framed is not self.keys:
            self._frames, self._framed = {}, self.keys
        frame = self._frames.get(bucket)
        if frame is None:
            k = self.keys
            prefixes = (k.bucket_device_prefix(bucket), k.datatype_time_prefix(bucket))
            frame = (tuple(k.index_keys(bucket)), prefixes)
            self._frames[bucket] = frame
        return frame


def _script(
    ctx: FlowContext, script: Any, bucket: int, keys: Iterable[str], args: Iterable[Any]
) -> ScriptCall:
    """A call of ``script`` in ``bucket``.

    Its keys are the bucket's index keys, then ``keys``; its arguments the bucket's prefixes,
    then ``args``.
    """
    fixed, prefixes = ctx.frame(bucket)
    return ScriptCall(script, (*fixed, *keys), (*prefixes, *args))


def _each(ops: list[Op]) -> Flow[list[Any]]:
    """Run ``ops`` in one round trip (a bare op when there is one) and return their replies.

    A failed op's error is raised.
    """
    if not ops:
        return []
    if len(ops) == 1:
        return [(yield ops[0])]
    replies = yield Pipeline(tuple(ops))  # type: ignore[arg-type]
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return list(replies)


def _in_buckets(
    ctx: FlowContext,
    operation: Literal["put_many", "delete_many"],
    ids: list[str],
    groups: dict[int, list[int]],
    call: Callable[[int, list[int]], ScriptCall],
    check: Callable[[int, list[int]], ScriptCall],
) -> Flow[int]:
    """Run a batch write over several buckets: ``call`` per bucket, after ``check`` in each.

    Each bucket's script is all or nothing, but the buckets are separate calls (on separate
    Redis Cluster nodes, perhaps): first every bucket runs the script's check pass (its reads,
    which fail as the write would: WRONGTYPE, an ACL denial, maxmemory, the layout), in one
    round trip, so that such a refusal writes nothing anywhere. Then the writes, in one round
    trip; a bucket that fails only then (a lost node, a refusal that began in between) raises
    :class:`~cache_service_client.PartialWriteError` with what happened to each device, or its
    own error when every bucket refused. A bucket that failed with a connection error or a
    timeout (or a pipeline that failed as a whole) may have been written: its ids count as
    failed, outcome unknown. Returns the sum of the buckets' counts.
    """
    buckets = list(groups.items())
    yield from _each([check(bucket, positions) for bucket, positions in buckets])
    try:
        replies = yield Pipeline(tuple(call(bucket, positions) for bucket, positions in buckets))
    except (BackendConnectionError, BackendTimeoutError) as exc:  # no reply: some may be written
        raise PartialWriteError(operation, done=[], failed=ids, count=0, errors=[exc]) from exc
    errors = [reply for reply in replies if isinstance(reply, Exception)]
    if not errors:
        return sum(int(n) for n in replies)
    if len(errors) == len(replies) and not any(outcome_unknown(e) for e in errors):
        raise errors[0]
    done: list[str] = []
    failed: list[str] = []
    for (_, positions), reply in zip(buckets, replies, strict=True):
        (failed if isinstance(reply, Exception) else done).extend(ids[p] for p in positions)
    count = sum(int(n) for n in replies if not isinstance(n, Exception))
    backend_errors = [e if isinstance(e, BackendError) else BackendError(str(e)) for e in errors]
    error = PartialWriteError(
        operation, done=done, failed=failed, count=count, errors=backend_errors
    )
    raise error from errors[0]


# -- single devices and batches -------------------------------------------------------------


def get(ctx: FlowContext, device_id: str) -> Flow[DeviceMetadata]:
    """GET one device and decode it."""
    validate_device_id(device_id)
    key = ctx.keys.device_key(device_id)
    raw = yield Command(("GET", key), key=key)
    if raw is None:
        raise DeviceNotFoundError(device_id)
    return ctx.codec.decode(key, raw, device_id)


def _mget(ctx: FlowContext, keys: list[str]) -> Flow[list[Any]]:
    """MGET ``keys`` (one MGET per bucket, so that each stays in one slot); replies in order."""
    if ctx.keys.buckets == 1:
        return list((yield Command(("MGET", *keys))))
    ids = [ctx.keys.device_id(key) for key in keys]
    groups = list(ctx.keys.group_by_bucket(ids).values())
    replies = yield from _each([Command(("MGET", *(keys[i] for i in group))) for group in groups])
    values: list[Any] = [None] * len(keys)
    for group, reply in zip(groups, replies, strict=True):
        for position, value in zip(group, reply, strict=True):
            values[position] = value
    return values


def get_many(ctx: FlowContext, device_ids: Iterable[str]) -> Flow[BatchGetResult]:
    """MGET a batch; keys that read as nil are checked with TYPE to tell missing from corrupt."""
    ids = validate_device_ids(device_ids)
    missing: list[str] = []
    if not ids:
        return BatchGetResult(found={}, missing=missing, corrupted={})
    keys = ctx.keys.device_keys(ids)
    raws = yield from _mget(ctx, keys)
    return (yield from _decoded(ctx, keys, raws, ids))


def _decoded(
    ctx: FlowContext, keys: list[str], raws: list[Any], ids: list[str]
) -> Flow[BatchGetResult]:
    """Decode MGET replies; keys that read as nil are checked with TYPE (missing or corrupt)."""
    missing: list[str] = []
    found, nil, corrupted = ctx.codec.decode_many(keys, raws, ids)
    if nil:
        # MGET answers nil for keys of another type too; only TYPE tells them apart.
        nil_keys = ctx.keys.device_keys(nil)
        types = yield from _each([Command(("TYPE", key)) for key in nil_keys])
        for device_id, key, kind in zip(nil, nil_keys, types, strict=True):
            kind_text = lua.text(kind)
            if kind_text in ("none", "string"):  # "string": written after the MGET
                missing.append(device_id)
            else:
                corrupted[device_id] = DataCorruptionError(
                    key, f"holds a Redis {kind_text}, not a string (WRONGTYPE)"
                )
    return BatchGetResult(found=found, missing=missing, corrupted=corrupted)


def get_many_expiring(
    ctx: FlowContext, device_ids: Iterable[str]
) -> Flow[tuple[BatchGetResult, list[int]]]:
    """MGET a batch and PTTL each key in the same round trip (for the near cache).

    Returns the batch and each id's PTTL reply in order: milliseconds left, -1 for no expiry,
    -2 for no key (a value read before it expired, or a key written after the MGET).
    """
    ids = validate_device_ids(device_ids)
    if not ids:
        return BatchGetResult(found={}, missing=[], corrupted={}), []
    keys = ctx.keys.device_keys(ids)
    groups = list(ctx.keys.group_by_bucket(ids).values()) if ctx.keys.buckets > 1 else [None]
    mgets: list[Op] = [
        Command(("MGET", *(keys if group is None else [keys[i] for i in group])))
        for group in groups
    ]
    replies = yield from _each([*mgets, *(Command(("PTTL", key), key=key) for key in keys)])
    values: list[Any] = [None] * len(keys)
    for group, reply in zip(groups, replies, strict=False):
        for position, value in zip(
            range(len(keys)) if group is None else group, reply, strict=True
        ):
            values[position] = value
    pttls = replies[len(groups) :]
    result = yield from _decoded(ctx, keys, values, ids)
    return result, [int(n) for n in pttls]


def _put_row(m: DeviceMetadata, value: bytes) -> tuple[str, bytes, str, int]:
    """A device's arguments to a put script: id, stored value, datatype and index score."""
    return (m.device_id, value, m.datatype_id, score_of(datetime_to_ms(m.last_updated), m.persist))


def _put_checked(
    ctx: FlowContext, checked: list[DeviceMetadata], if_newer: bool, retried: bool
) -> Flow[int]:
    """Write validated devices: one PUT script call per bucket, in one round trip.

    A single device (and a bucket of one) goes to PUT_ONE. Returns how many were written (with
    ``if_newer``, the others were not newer). With ``if_newer``, a device whose stored value is
    identical to the update is not written again; on a ``retried`` attempt it counts as written
    (the attempt before, whose reply was lost, wrote it), on a first attempt it does not (the
    update was stored already: a duplicate, as one not newer).
    """
    if not checked:
        return 0
    ttl_ms = ctx.ttl_ms or 0
    if len(checked) == 1:  # PUT_ONE, with no grouping
        m = checked[0]
        row = _put_row(m, ctx.codec.encode(m))
        args = lua.put_args(ttl_ms=ttl_ms, if_newer=if_newer, devices=(row,), retried=retried)
        key = ctx.keys.device_key(m.device_id)
        return int((yield _script(ctx, lua.PUT_ONE, ctx.keys.bucket_of(m.device_id), (key,), args)))
    values = ctx.codec.encode_many(checked)

    def call(bucket: int, positions: Iterable[int], check: bool = False) -> ScriptCall:
        # A check pass runs the batch script, a bucket of one too (PUT_ONE has no check mode).
        chosen = [(checked[p], values[p]) for p in positions]
        devices = (_put_row(m, value) for m, value in chosen)
        args = lua.put_args(
            ttl_ms=ttl_ms, if_newer=if_newer, devices=devices, retried=retried, check=check
        )
        keys = ctx.keys.device_keys([m.device_id for m, _ in chosen])
        one = len(keys) == 1 and not check
        return _script(ctx, lua.PUT_ONE if one else lua.PUT, bucket, keys, args)

    if ctx.keys.buckets == 1:  # one script call, no grouping
        return int((yield call(0, range(len(checked)))))
    ids = [m.device_id for m in checked]
    groups = ctx.keys.group_by_bucket(ids)
    if len(groups) == 1:
        return int((yield call(*next(iter(groups.items())))))

    check = functools.partial(call, check=True)
    return (yield from _in_buckets(ctx, "put_many", ids, groups, call, check))


@retry_aware
def put_many(
    ctx: FlowContext,
    items: Iterable[DeviceMetadata],
    if_newer: bool = False,
    *,
    retried: bool = False,
) -> Flow[int]:
    """Write values and index entries atomically: one script call per bucket, one round trip.

    Returns how many devices were written (``retried``: see :func:`_put_checked`).
    """
    check_flag(if_newer, "if_newer")
    checked = validate_batch(items, newest=if_newer)
    return (yield from _put_checked(ctx, checked, if_newer, retried))


@retry_aware
def put(
    ctx: FlowContext, metadata: DeviceMetadata, if_newer: bool = False, *, retried: bool = False
) -> Flow[bool]:
    """Write one device (value and index entries) atomically; True if it was written.

    ``retried``: see :func:`_put_checked`.
    """
    checked = [validate_metadata(metadata)]
    if_newer = check_flag(if_newer, "if_newer")
    return (yield from _put_checked(ctx, checked, if_newer, retried)) == 1


def delete_many(ctx: FlowContext, device_ids: Iterable[str]) -> Flow[int]:
    """Delete values and index entries atomically per bucket; return how many existed."""
    ids = validate_device_ids(device_ids)
    groups = ctx.keys.group_by_bucket(ids)

    def call(bucket: int, positions: Iterable[int], check: bool = False) -> ScriptCall:
        chosen = [ids[p] for p in positions]
        keys = ctx.keys.device_keys(chosen)
        return _script(ctx, lua.DELETE, bucket, keys, lua.delete_args(chosen, check=check))

    if not groups:
        return 0
    if len(groups) == 1:
        return int((yield call(*next(iter(groups.items())))))
    check = functools.partial(call, check=True)
    return (yield from _in_buckets(ctx, "delete_many", ids, groups, call, check))


def delete(ctx: FlowContext, device_id: str) -> Flow[bool]:
    """Delete one device; return True if it existed."""
    validate_device_id(device_id)
    keys = (ctx.keys.device_key(device_id),)
    bucket = ctx.keys.bucket_of(device_id)
    return int((yield _script(ctx, lua.DELETE, bucket, keys, lua.delete_args((device_id,))))) == 1


def exists(ctx: FlowContext, device_id: str) -> Flow[bool]:
    """EXISTS on the device's key."""
    validate_device_id(device_id)
    found = yield Command(("EXISTS", ctx.keys.device_key(device_id)))
    return bool(found)


# -- ordered walks over the indexes ------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """One live device met on an index walk."""

    key: Position
    device_id: str
    score: int | None = None
    value: Any = None  # the stored value, when the walk was asked for values


@dataclass
class _Stream:
    """An ordered stream of live devices from one index of one bucket, fetched in chunks."""

    request: Callable[[Any, int], Op]  # the op fetching `count` entries after a continuation
    # chunk reply -> items, continuation, the bucket's count (None: not in this reply)
    parse: Callable[[Any], tuple[list[_Item], Any, int | None]]
    continuation: Any
    chunk: int = RANGE_CHUNK  # entries to examine in the next fetch; grows up to RANGE_CHUNK
    buffer: deque[_Item] = field(default_factory=deque)
    done: bool = False
    total: int | None = None  # the bucket's device count, when the first fetch asked for it


def _walk(
    streams: list[_Stream], descending: bool, accept: Callable[[_Item], bool], first: int
) -> Flow[None]:
    """Merge ``streams`` in order and hand each item to ``accept`` until it returns True.

    Chunks of all streams that ran dry are fetched together, in one round trip. The first chunk
    of each stream examines ``first`` entries (what a page needs when everything matches); later
    ones grow fourfold up to :data:`RANGE_CHUNK`, so a selective filter still walks quickly.
    """
    for stream in streams:
        stream.chunk = max(1, min(first, RANGE_CHUNK))
    while True:
        empty = [s for s in streams if not s.buffer and not s.done]
        if empty:
            replies = yield from _each([s.request(s.continuation, s.chunk) for s in empty])
            for stream, reply in zip(empty, replies, strict=True):
                items, stream.continuation, total = stream.parse(reply)
                if total is not None and stream.total is None:
                    stream.total = total
                stream.buffer.extend(items)
                stream.done = stream.continuation is None
                stream.chunk = min(stream.chunk * 4, RANGE_CHUNK)
            continue
        if len(streams) == 1:
            # One stream (a single node): hand its whole chunk over without merging.
            buffer = streams[0].buffer
            while buffer:
                if accept(buffer.popleft()):
                    return
            if streams[0].done:
                return
            continue
        live = [s for s in streams if s.buffer]
        if not live:
            return
        if len(live) == 1:
            stream = live[0]
        elif descending:
            stream = max(live, key=lambda s: s.buffer[0].key)
        else:
            stream = min(live, key=lambda s: s.buffer[0].key)
        if accept(stream.buffer.popleft()):
            return


def _lex_bounds(prefix: str) -> tuple[str | bytes, str | bytes]:
    """The lowest and highest id (as ZRANGEBYLEX takes them) of the ids that start ``prefix``."""
    if not prefix:
        return "-", "+"
    # UTF-8 never contains the byte 0xFF, so every id with this prefix sorts below prefix+0xFF.
    return "[" + prefix, b"(" + prefix.encode() + b"\xff"


def _exclusive(last: bytes | str) -> bytes | str:
    """The lex bound right after (or before, walking backwards) the id ``last``."""
    return b"(" + last if isinstance(last, bytes) else "(" + last


def _id_streams(
    ctx: FlowContext,
    buckets: Iterable[int],
    *,
    datatype_id: str | None,
    persist: bool | None,
    prefix: str,
    descending: bool,
    after: str | None,
    lo: int | None = None,
    hi: int | None = None,
    with_values: bool = False,
    with_total: bool = False,
) -> list[_Stream]:
    """One stream per bucket over id-ordered blocks: of the ids index, or of the by-type index.

    A block holds one persist flag (of one datatype, in the by-type index); ``persist=None``
    walks both blocks, merged by id in the RANGE script. The script skips devices whose key is
    gone and (with ``lo``/``hi``) those whose time score is outside them. ``with_values`` makes
    each chunk carry the values (one round trip for a page nothing filters out); ``with_total``
    makes the first chunk carry the bucket's device count.
    """
    low, high = _lex_bounds(prefix)
    if after is not None:
        if descending:
            high = "(" + after
        else:
            low = "(" + after

    def stream(bucket: int) -> _Stream:
        first = high if descending else low

        def request(continuation: Any, count: int) -> Op:
            start, stop = (low, continuation) if descending else (continuation, high)
            args = lua.range_args(
                datatype_id=datatype_id,
                persist=persist,
                low=start,
                high=stop,
                want=count,
                descending=descending,
                lo=lo,
                hi=hi,
                with_values=with_values,
                with_total=with_total and continuation is first,
            )
            return _script(ctx, lua.RANGE, bucket, (), args)

        def parse(reply: Any) -> tuple[list[_Item], Any, int | None]:
            got = lua.parse_range(reply)
            values = got.values if with_values else [None] * len(got.ids)
            items = [
                _Item((device_id,), device_id, value=value)
                for device_id, value in zip(got.ids, values, strict=True)
            ]
            return items, (None if got.last is None else _exclusive(got.last)), got.total

        return _Stream(request, parse, first)

    return [stream(bucket) for bucket in buckets]


def list_ids(
    ctx: FlowContext,
    *,
    pattern: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> Flow[list[str]]:
    """Walk the ids index in order from the pattern's literal prefix, matching as Redis does.

    Only the lexicographic range that the pattern's literal prefix allows is read, in chunks;
    index entries whose key is gone are skipped (writes and ``repair`` remove them).
    """
    limit, skip, pattern = validate_paging(limit, offset, pattern)
    result: list[str] = []
    if limit == 0:
        return result
    prefix = literal_prefix(pattern) if pattern is not None else ""
    matches = compile_glob(pattern) if pattern is not None and pattern != prefix + "*" else None
    remaining = [skip]

    def accept(item: _Item) -> bool:
        if matches is not None and not matches(item.device_id):
            return False
        if remaining[0]:
            remaining[0] -= 1
            return False
        result.append(item.device_id)
        return limit is not None and len(result) >= limit

    first = RANGE_CHUNK if limit is None else skip + limit + 1
    streams = _id_streams(
        ctx,
        range(ctx.keys.buckets),
        datatype_id=None,
        persist=None,
        prefix=prefix,
        descending=False,
        after=None,
    )
    yield from _walk(streams, False, accept, first)
    return result


def _time_streams(
    ctx: FlowContext, plan: QueryPlan, *, with_values: bool = False, with_total: bool = False
) -> list[_Stream]:
    """One stream per bucket over its time index (of the datatype, when the query names one).

    The time and persist filters are applied on the server too (the persist flag is the
    score's lowest bit); the id pattern is not. ``with_values`` / ``with_total`` as for
    :func:`_id_streams`.
    """

    def stream(bucket: int) -> _Stream:
        def request(continuation: Any, count: int) -> Op:
            args = lua.time_range_args(
                datatype_id=plan.datatype_id,
                lo=plan.lo,
                hi=plan.hi,
                after=continuation,
                want=count,
                descending=plan.descending,
                persist=plan.persist,
                with_values=with_values,
                with_total=with_total and continuation is plan.after,
            )
            return _script(ctx, lua.TIME_RANGE, bucket, (), args)

        def parse(reply: Any) -> tuple[list[_Item], Any, int | None]:
            got = lua.parse_time_range(reply)
            values = got.values if with_values else [None] * len(got.entries)
            items = [
                _Item((score, device_id), device_id, score, value)
                for (device_id, score), value in zip(got.entries, values, strict=True)
            ]
            return items, got.last, got.total

        return _Stream(request, parse, plan.after)

    return [stream(bucket) for bucket in range(ctx.keys.buckets)]


def _time_range_by_id(ctx: FlowContext, plan: QueryPlan, with_values: bool) -> Flow[list[_Stream]]:
    """Streams for a time range sorted by id, which no index orders.

    Each bucket counts the range in its time index (O(log N), the TIME_SET script). A range of
    at most max(:data:`SMALL_RANGE`, sqrt(page x devices walked by id x
    :data:`~.lua.FETCH_COST_RATIO`)) entries is read whole, sorted by id on the server, and
    served from the cursor on (the same call answers the first chunk); a larger one is walked
    by id with each device's time score checked on the server, passing over about page /
    share-in-range entries, which is then below sqrt(page x devices / FETCH_COST_RATIO). So a
    page costs O(sqrt(page x N)) entries at worst, and O(log N + page) for a range that is
    very small or very large.
    """
    first = plan.limit + 1
    after = None if plan.after is None else str(plan.after[0])

    def fetch(bucket: int, resume: str | None, count: int, small: int = SMALL_RANGE) -> ScriptCall:
        args = lua.time_set_args(
            datatype_id=plan.datatype_id,
            lo=plan.lo,
            hi=plan.hi,
            persist=plan.persist,
            page=first,
            small=small,
            prefix=plan.prefix,
            after=resume,
            descending=plan.descending,
            want=count,
            with_values=with_values,
        )
        return _script(ctx, lua.TIME_SET, bucket, (), args)

    def more(bucket: int, resume: str | None, count: int) -> ScriptCall:
        return fetch(bucket, resume, count, READ_WHOLE)

    def parse(reply: Any) -> tuple[list[_Item], Any, int | None]:
        got = lua.parse_time_set(reply)
        values = got.values if with_values else [None] * len(got.ids)
        items = [_Item((i,), i, value=v) for i, v in zip(got.ids, values, strict=True)]
        return items, (None if got.last is None else lua.text(got.last)), None

    buckets = range(ctx.keys.buckets)
    replies = yield from _each([fetch(b, after, first) for b in buckets])
    streams: list[_Stream] = []
    walked: list[int] = []
    for bucket, reply in zip(buckets, replies, strict=True):
        if not lua.parse_time_set(reply).whole:
            walked.append(bucket)
            continue
        items, resume, _ = parse(reply)
        # Later chunks read the range whole whatever its size by then: the walk keeps its plan.
        request = functools.partial(more, bucket)
        stream = _Stream(request, parse, resume, buffer=deque(items), done=resume is None)
        streams.append(stream)
    if walked:
        streams += _id_streams(
            ctx,
            walked,
            datatype_id=plan.datatype_id,
            persist=plan.persist,
            prefix=plan.prefix,
            descending=plan.descending,
            after=after,
            lo=plan.lo,
            hi=plan.hi,
            with_values=with_values,
        )
    return streams


def query(ctx: FlowContext, query: DeviceQuery) -> Flow[Page[DeviceMetadata]]:
    """Walk the index range the query's order and filters give, and read one page of values.

    Sorted by id, the walk is over the id-ordered blocks of the ids or the by-type index (one
    persist flag or both, merged by the script) from the pattern's literal prefix; sorted by
    ``last_updated``, over the time index (of the datatype) from the time bounds; a time range
    sorted by id is planned by :func:`_time_range_by_id`. The server applies the datatype,
    persist and time filters; the id pattern is matched here. Reads ``limit + 1`` matches to
    know whether another page follows.
    """
    plan = plan_query(query)
    chosen: list[_Item] = []
    # A walk by id from the pattern's literal prefix answers "<prefix>*" by itself.
    matcher = None if plan.prefix_only and not plan.by_time else plan.matcher
    wanted = plan.limit

    def accept(item: _Item) -> bool:
        if matcher is not None and not matcher(item.device_id):
            return False
        chosen.append(item)
        return len(chosen) > wanted

    # When the server returns only entries the page takes (no filter left to the client) from
    # one stream, the walk carries the values too, and the count on a first page: one round
    # trip in all.
    with_total = plan.after is None and not query.has_filters
    time_range = plan.lo is not None or plan.hi is not None
    if plan.by_time:
        with_values = plan.matcher is None and ctx.keys.buckets == 1
        streams = _time_streams(ctx, plan, with_values=with_values, with_total=with_total)
    elif time_range:
        with_values = matcher is None and ctx.keys.buckets == 1
        streams = yield from _time_range_by_id(ctx, plan, with_values)
    else:
        with_values = matcher is None and ctx.keys.buckets == 1
        streams = _id_streams(
            ctx,
            range(ctx.keys.buckets),
            datatype_id=plan.datatype_id,
            persist=plan.persist,
            prefix=plan.prefix,
            descending=plan.descending,
            after=None if plan.after is None else str(plan.after[0]),
            with_values=with_values,
            with_total=with_total,
        )
    yield from _walk(streams, plan.descending, accept, plan.limit + 1)
    page_items = chosen[: plan.limit]
    total = sum(s.total or 0 for s in streams) if with_total else None
    items: list[DeviceMetadata] = []
    if page_items:
        ids = [item.device_id for item in page_items]
        keys = ctx.keys.device_keys(ids)
        if with_values:
            raws = [item.value for item in page_items]
        else:
            raws = yield from _mget(ctx, keys)
        found, nil, corrupted = ctx.codec.decode_many(keys, raws, ids)
        items = list(found.values())  # in page order
        if with_values:  # nil: a key of another type (the script saw it exists)
            for device_id in nil:
                key = ctx.keys.device_key(device_id)
                warn_corrupted("query", key, "not a string value")
        # (Without values, nil means deleted since the index was read: nothing to report.)
        for exc in corrupted.values():
            warn_corrupted("query", exc.key, exc.reason)
    next_cursor = plan.cursor(page_items[-1].key) if len(chosen) > plan.limit else None
    return Page(items=items, next_cursor=next_cursor, total=total)


# -- whole-cache figures -----------------------------------------------------------------------


def count(ctx: FlowContext) -> Flow[int]:
    """Count live devices from the indexes (O(log N)); a read only (it works on a replica)."""
    totals = yield from _each([_script(ctx, lua.COUNT, b, (), ()) for b in range(ctx.keys.buckets)])
    return sum(int(n) for n in totals)


def _info_number(info: dict[str, Any], name: str) -> int:
    try:
        return int(info.get(name, 0))
    except (TypeError, ValueError):
        return 0


def info(ctx: FlowContext) -> Flow[CacheInfo]:
    """Count, oldest and newest entry from the indexes; memory from INFO memory.

    Each INFO call examines at most :data:`INFO_BUDGET` entries from each end of a bucket's
    time index; a bucket whose oldest (or newest) entries are all expired past that budget is
    asked again from where its call stopped, until a live entry or the end of the index.
    """
    total = 0
    lowest: int | None = None
    highest: int | None = None
    # Per bucket still searching: where to go on from at each end (None: the end is done).
    pending: dict[int, tuple[tuple[Any, Any] | None, tuple[Any, Any] | None]] = {}
    first = True
    while first or pending:
        buckets = list(range(ctx.keys.buckets)) if first else sorted(pending)
        calls: list[Op] = []
        for b in buckets:
            if first:
                args = lua.info_args(budget=INFO_BUDGET)
            else:
                low, high = pending[b]
                args = lua.info_args(
                    budget=INFO_BUDGET,
                    low=low,
                    high=high,
                    search_low=low is not None,
                    search_high=high is not None,
                )
            calls.append(_script(ctx, lua.INFO, b, (), args))
        replies = yield from _each(calls)
        pending = {}
        for b, reply in zip(buckets, replies, strict=True):
            got = lua.parse_info(reply)
            if first:  # later calls count again; the first count is the one reported
                total += got.devices
            if got.lowest is not None:
                lowest = got.lowest if lowest is None else min(lowest, got.lowest)
            if got.highest is not None:
                highest = got.highest if highest is None else max(highest, got.highest)
            if got.low_next is not None or got.high_next is not None:
                pending[b] = (got.low_next, got.high_next)
        first = False
    memory = yield Command(("INFO", "memory"), broadcast=True)
    return CacheInfo(
        total_devices=total,
        memory_usage_bytes=_used_memory(memory),
        oldest_entry_timestamp=None if lowest is None else datetime_from_ms(lowest // 2),
        newest_entry_timestamp=None if highest is None else datetime_from_ms(highest // 2),
        backend="redis",
    )


def _used_memory(reply: Any) -> int:
    """``used_memory`` of an INFO reply; a cluster answers per node, and those are summed."""
    if isinstance(reply, dict) and "used_memory" not in reply and reply:
        return sum(
            _info_number(node, "used_memory") for node in reply.values() if isinstance(node, dict)
        )
    return _info_number(reply, "used_memory") if isinstance(reply, dict) else 0


# -- repair ------------------------------------------------------------------------------------


def _legacy_layout(ctx: FlowContext, bucket: int) -> Flow[int]:
    """Drop a bucket's layout-1 indexes (the ids and expiry indexes are kept and rebuilt).

    Returns how many keys went. Marks the bucket as layout :data:`~.lua.LAYOUT_VERSION` first
    (unless it is marked already), so that writes and reads go on in the new layout while a
    repair rebuilds it.
    """
    keys = ctx.keys
    yield Command(("SET", keys.layout_key(bucket), lua.LAYOUT_VERSION, "NX"))
    legacy = keys.legacy_datatypes_index(bucket)
    names = yield Command(("SMEMBERS", legacy), key=legacy)
    if not names:
        return 0
    old = [keys.legacy_updated_index(lua.text(name), bucket) for name in sorted(names)]
    return int((yield Command(("DEL", legacy, *old))))


def repair(ctx: FlowContext) -> Flow[RepairReport]:
    """Rebuild the indexes from the values: index every stored device, then sweep orphans.

    A cache indexed in layout 1 is moved to the current layout first: each bucket is marked
    with the new version and its layout-1-only indexes are dropped; then the rebuild below
    makes the new ones. Scans the keyspace for device keys (``SCAN MATCH``, every primary of a
    cluster), reads them in batches and makes their index entries agree (REINDEX); then sweeps
    every index of every bucket and removes entries whose device is gone (SWEEP). Safe to run
    while the cache is in use (queries may miss devices not yet reindexed while it runs): REINDEX
    gets the SHA-1 of each value read and leaves alone a device whose value changed since the
    read (the write that changed it indexed it), so that a stale read never goes into the
    indexes.
    """
    keys = ctx.keys
    scanned = indexed = orphans = 0
    corrupted: list[str] = []
    for bucket in range(keys.buckets):
        yield from _legacy_layout(ctx, bucket)
    position: Any = None
    while True:
        position, batch = yield ScanBatch(keys.device_pattern(), position, SCAN_COUNT)
        ids: list[str] = []
        for raw_key in batch:
            key = lua.text(raw_key)
            if not keys.is_device_key(key):
                continue
            device_id = keys.device_id(key)
            try:
                ids.append(validate_device_id(device_id))
            except ValueError:
                corrupted.append(key)  # written by another tool under an invalid id
        if ids:
            read_keys = keys.device_keys(ids)
            raws = yield from _mget(ctx, read_keys)
            result = yield from _decoded(ctx, read_keys, raws, ids)
            # REINDEX gets the digest of each value read, and leaves alone a device whose
            # value changed since (a write between the read and the script indexed it).
            digests = {
                device_id: lua.value_digest(raw)
                for device_id, raw in zip(ids, raws, strict=True)
                if raw is not None
            }
            scanned += len(ids)
            corrupted += [error.key for error in result.corrupted.values()]
            found = list(result.found.values())
            calls: list[Op] = []
            for bucket, positions in keys.group_by_bucket([m.device_id for m in found]).items():
                chosen = [found[p] for p in positions]
                args = lua.reindex_args(
                    (
                        m.device_id,
                        m.datatype_id,
                        score_of(datetime_to_ms(m.last_updated), m.persist),
                        digests[m.device_id],
                    )
                    for m in chosen
                )
                device_keys = keys.device_keys([m.device_id for m in chosen])
                calls.append(_script(ctx, lua.REINDEX, bucket, device_keys, args))
            changed = yield from _each(calls)
            indexed += sum(int(n) for n in changed)
        if position is None:
            break
    for bucket in range(keys.buckets):
        types = yield Command(("HLEN", keys.types_index(bucket)))
        indexes = [
            keys.ids_index(bucket),
            keys.expiry_index(bucket),
            keys.by_type_index(bucket),
            keys.by_time_index(bucket),
            *(keys.datatype_time_index(n, bucket) for n in range(1, int(types) + 1)),
        ]
        for index_key in indexes:
            cursor = "0"
            while True:
                swept = lua.parse_sweep(
                    (yield _script(ctx, lua.SWEEP, bucket, (index_key,), (cursor,)))
                )
                orphans += swept.removed
                cursor = swept.cursor
                if cursor == "0":
                    break
    return RepairReport(
        scanned=scanned, indexed=indexed, orphans_removed=orphans, corrupted=corrupted
    )


def _info_or_error() -> Flow[Any]:
    """INFO on every primary; its error as the reply instead of raised (it may be disabled)."""
    try:
        return (yield Command(("INFO",), broadcast=True))
    except BackendConnectionError:
        raise
    except BackendError as exc:  # NOPERM for INFO alone is no reason to fail health either
        return exc


def _is_noscript(error: BackendError) -> bool:
    # redis-py drops the NOSCRIPT code from the message of the error it raises.
    return "NOSCRIPT" in str(error) or "No matching script" in str(error)


def _per_node(reply: Any) -> dict[str, dict[str, Any]]:
    """An INFO reply per node: a cluster answers ``{node: info}``, a single node ``info``."""
    if isinstance(reply, dict) and reply and all(isinstance(v, dict) for v in reply.values()):
        return {str(node): info for node, info in reply.items()}
    return {"": reply if isinstance(reply, dict) else {}}


# EVALSHA of a script that cannot exist: Redis checks the command's and the key's permissions
# first, so the answer is NOSCRIPT for a user who may run the write scripts, NOPERM otherwise.
_PROBE_SHA: Final = "0" * 40


def health(ctx: FlowContext) -> Flow[HealthStatus]:
    """PING, INFO (every primary of a cluster) and a permission probe: healthy, degraded or not.

    One round trip on a single node (a pipeline); on a cluster the broadcasts (a first PING
    that may discover the nodes, a timed one, INFO) and the probe go one after the other. The
    probe reads the ids index (``EXISTS``) and asks for a script that cannot exist on it
    (``EVALSHA``), so it writes nothing. Degraded: reachable but slow, near maxmemory,
    read-only (a replica), or a user allowed to read the cache's keys but not to run its write
    scripts. Unhealthy: unreachable, authentication refused, or a user who may not read the
    cache's keys. Never raises.
    """
    now = datetime.now(timezone.utc)
    key = ctx.keys.ids_index(0)
    probe = (
        Command(("EXISTS", key), key=key),
        Command(("EVALSHA", _PROBE_SHA, 1, key), key=key),
    )
    try:
        if ctx.keys.buckets > 1:
            # A cluster pipeline cannot broadcast. The first PING may discover the nodes and
            # connect to each; the second measures the latency of ready connections.
            yield Command(("PING",), broadcast=True)
            started = time.perf_counter()
            yield Command(("PING",), broadcast=True)
            latency_ms = (time.perf_counter() - started) * 1000
            info_reply = yield from _info_or_error()
            read, write = yield Pipeline(probe)
        else:
            started = time.perf_counter()
            _, info_reply, read, write = yield Pipeline(
                (Command(("PING",)), Command(("INFO",)), *probe)
            )
            latency_ms = (time.perf_counter() - started) * 1000
    except AuthenticationError as exc:
        return unhealthy(f"authentication failed: {exc}", type(exc).__name__, at=now)
    except BackendError as exc:
        return unhealthy(f"unreachable: {exc}", type(exc).__name__, at=now)
    if isinstance(read, AuthenticationError):
        message = f"permission denied: cannot read the cache's keys ({read})"
        return unhealthy(message, type(read).__name__, at=now)
    details: dict[str, Any] = {}
    problems: list[str] = []
    if isinstance(read, BackendError):
        problems.append(f"cannot read the cache's keys: {read}")
    if isinstance(write, AuthenticationError):
        problems.append(f"read-only access: the write scripts are refused ({write})")
    elif isinstance(write, BackendError) and not _is_noscript(write):
        problems.append(f"scripts unavailable, writes will fail: {write}")
    if latency_ms > ctx.slow_ms:
        problems.append(
            f"slow: a round trip took {latency_ms:.1f} ms (threshold {ctx.slow_ms:g} ms)"
        )
    reply = info_reply
    if isinstance(reply, BackendError):  # INFO may be disabled on managed services
        details["info_error"] = str(reply)
        reply = {}
    nodes = _per_node(reply)
    if len(nodes) > 1:
        details["nodes"] = len(nodes)
    used_total = max_total = 0
    for node, server in nodes.items():
        where = f" ({node})" if node else ""
        details.setdefault("redis_version", server.get("redis_version"))
        if "valkey_version" in server:  # Valkey: its own version, besides its Redis API's
            details.setdefault("valkey_version", server["valkey_version"])
        details.setdefault("role", server.get("role"))
        used, maximum = _info_number(server, "used_memory"), _info_number(server, "maxmemory")
        used_total += used
        max_total += maximum
        if maximum and used / maximum > ctx.memory_ratio:
            problems.append(f"near maxmemory{where}: {used} of {maximum} bytes used")
        if server.get("role") == "slave" and str(server.get("slave_read_only", "1")) == "1":
            problems.append(f"read-only{where}: connected to a replica")
    details["used_memory"] = used_total
    details["maxmemory"] = max_total
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
