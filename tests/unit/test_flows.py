"""Tests of the Redis flows, driven by hand with scripted replies (no server)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import msgspec
import pytest
from redis.crc import key_slot

from cache_service_client import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    DataCorruptionError,
    DeviceMetadata,
    DeviceNotFoundError,
    DeviceQuery,
    KeyStrategy,
    MetadataCodec,
    PartialWriteError,
    RepairReport,
    RetryPolicy,
    ValidationError,
)
from cache_service_client._validation import datetime_to_ms
from cache_service_client.repository.redis import flows, lua
from cache_service_client.repository.redis.driver import _attempts
from cache_service_client.repository.redis.ops import (
    Command,
    Flow,
    LuaScript,
    Op,
    Pipeline,
    ScanBatch,
    ScriptCall,
    knows_retries,
    retry_aware,
)

T = TypeVar("T")

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
LATER = WHEN + timedelta(milliseconds=1)
# KEYS[1..6] and ARGV[1..2] of every script call on a single node (layout version 2).
INDEX_KEYS = (
    "device index:ids",
    "device index:expiry",
    "device index:types",
    "device index:by-type",
    "device index:by-time",
    "device index:layout",
)
PREFIXES = ("device:", "device index:by-time:")
CODEC = MetadataCodec()
# Health asks every primary of a cluster.
PING = Command(("PING",), broadcast=True)
INFO = Command(("INFO",), broadcast=True)


def run_flow(flow: Flow[T], replies: Sequence[object]) -> tuple[T, list[Op]]:
    """Run ``flow`` against scripted replies; return its result and the ops it yielded.

    A reply that is an exception is thrown into the flow at that ``yield``, as the drivers do.
    Every scripted reply must be used.
    """
    ops: list[Op] = []
    pending = list(replies)
    reply: object = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration as stop:
            assert not pending, f"replies left unused: {pending!r}"
            result: T = stop.value
            return result, ops
        ops.append(op)
        assert pending, f"the flow asked for more than the scripted replies: {op!r}"
        nxt = pending.pop(0)
        reply, error = (None, nxt) if isinstance(nxt, BaseException) else (nxt, None)


def ctx(ttl_ms: int | None = None, **kwargs: Any) -> flows.FlowContext:
    return flows.FlowContext(keys=KeyStrategy(), codec=CODEC, ttl_ms=ttl_ms, **kwargs)


def make(device_id: str = "a", **changes: Any) -> DeviceMetadata:
    fields: dict[str, Any] = {
        "device_id": device_id,
        "datatype_id": "temp",
        "datatype_name": "Temperature",
        "persist": True,
        "last_updated": WHEN,
    }
    fields.update(changes)
    return DeviceMetadata(**fields)


def encoded(device_id: str = "a", **changes: Any) -> bytes:
    return CODEC.encode(make(device_id, **changes))


def score(when: datetime = WHEN, persist: bool = True) -> int:
    """The updated-index score of a device: last_updated in ms, times two, plus persist."""
    return datetime_to_ms(when) * 2 + int(persist)


def call(script: LuaScript, *args: object, keys: Sequence[str] = ()) -> ScriptCall:
    """A script call on a single node: index keys and prefixes first."""
    return ScriptCall(script, (*INDEX_KEYS, *keys), (*PREFIXES, *args))  # type: ignore[arg-type]


# --- the helper itself ---------------------------------------------------------------------------


def test_the_fixed_keys_and_prefixes_are_the_key_strategys() -> None:
    keys = KeyStrategy()
    assert tuple(keys.index_keys()) == INDEX_KEYS
    assert (keys.device_key_prefix, keys.datatype_time_prefix()) == PREFIXES


def test_run_flow_rejects_unused_replies() -> None:
    with pytest.raises(AssertionError, match="unused"):
        run_flow(flows.exists(ctx(), "a"), [1, 2])


def test_run_flow_rejects_missing_replies() -> None:
    with pytest.raises(AssertionError, match="more than"):
        run_flow(flows.exists(ctx(), "a"), [])


# --- get -----------------------------------------------------------------------------------------


def test_get_yields_one_get_with_the_key() -> None:
    result, ops = run_flow(flows.get(ctx(), "a"), [encoded("a")])
    assert ops == [Command(("GET", "device:a"), key="device:a")]
    assert result == make("a")


def test_get_accepts_str_replies() -> None:
    result, _ = run_flow(flows.get(ctx(), "a"), [encoded("a").decode()])
    assert result == make("a")


def test_get_of_nil_raises_device_not_found() -> None:
    with pytest.raises(DeviceNotFoundError) as info:
        run_flow(flows.get(ctx(), "a"), [None])
    assert info.value.device_id == "a"
    assert isinstance(info.value, KeyError)


def test_get_of_garbage_raises_data_corruption_naming_the_key() -> None:
    with pytest.raises(DataCorruptionError) as info:
        run_flow(flows.get(ctx(), "a"), [b"garbage"])
    assert info.value.key == "device:a"


def test_get_of_another_devices_value_raises_data_corruption() -> None:
    with pytest.raises(DataCorruptionError, match="'b'"):
        run_flow(flows.get(ctx(), "a"), [encoded("b")])


def test_get_uses_the_key_strategy() -> None:
    context = flows.FlowContext(keys=KeyStrategy("t[1]", "/"), codec=CODEC, ttl_ms=None)
    _, ops = run_flow(flows.get(context, "a"), [encoded("a")])
    assert ops == [Command(("GET", "t[1]/a"), key="t[1]/a")]


def test_get_validates_before_yielding() -> None:
    flow = flows.get(ctx(), "a b")
    with pytest.raises(ValidationError) as info:
        next(flow)
    assert info.value.field == "device_id"


def test_backend_error_at_get_propagates() -> None:
    error = BackendTimeoutError("slow")
    with pytest.raises(BackendTimeoutError) as info:
        run_flow(flows.get(ctx(), "a"), [error])
    assert info.value is error


# --- get_many ------------------------------------------------------------------------------------


def test_get_many_sorts_found_missing_and_corrupted() -> None:
    flow = flows.get_many(ctx(), ["a", "b", "c", "d", "e", "b"])
    result, ops = run_flow(
        flow,
        [
            [encoded("a"), None, b"garbage", None, None],
            [b"none", b"list", "string"],
        ],
    )
    assert ops == [
        Command(("MGET", "device:a", "device:b", "device:c", "device:d", "device:e")),
        Pipeline(
            (
                Command(("TYPE", "device:b")),
                Command(("TYPE", "device:d")),
                Command(("TYPE", "device:e")),
            )
        ),
    ]
    assert result.found == {"a": make("a")}
    assert result.missing == ["b", "e"]
    assert set(result.corrupted) == {"c", "d"}
    assert result.corrupted["c"].key == "device:c"
    assert result.corrupted["d"].key == "device:d"
    assert "list" in str(result.corrupted["d"])


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        (b"none", "missing"),
        ("none", "missing"),
        (b"string", "missing"),
        (b"list", "corrupted"),
        ("hash", "corrupted"),
        (b"zset", "corrupted"),
        (b"stream", "corrupted"),
    ],
)
def test_get_many_classifies_nil_replies_by_type(kind: bytes | str, outcome: str) -> None:
    # One nil: a bare TYPE command, whose reply is the type itself.
    result, ops = run_flow(flows.get_many(ctx(), ["x"]), [[None], kind])
    assert ops == [Command(("MGET", "device:x")), Command(("TYPE", "device:x"))]
    if outcome == "missing":
        assert result.missing == ["x"]
        assert not result.corrupted
    else:
        assert result.missing == []
        assert result.corrupted["x"].key == "device:x"
    assert result.found == {}


def test_get_many_without_nil_replies_needs_one_round_trip() -> None:
    result, ops = run_flow(flows.get_many(ctx(), ["a", "b"]), [[encoded("a"), encoded("b")]])
    assert len(ops) == 1
    assert result.found == {"a": make("a"), "b": make("b")}


def test_get_many_reports_a_value_of_another_device_as_corrupted() -> None:
    result, _ = run_flow(flows.get_many(ctx(), ["a"]), [[encoded("b")]])
    assert set(result.corrupted) == {"a"}


def test_get_many_of_nothing_sends_nothing() -> None:
    result, ops = run_flow(flows.get_many(ctx(), []), [])
    assert ops == []
    assert (result.found, result.missing, result.corrupted) == ({}, [], {})


def test_get_many_validates_every_id_before_yielding() -> None:
    flow = flows.get_many(ctx(), ["a", "b", ""])
    with pytest.raises(ValidationError) as info:
        next(flow)
    assert info.value.field == "device_ids[2]"


# --- put / put_many ------------------------------------------------------------------------------


def test_put_many_yields_one_put_script_call_with_index_keys_first() -> None:
    items = [make("a"), make("b", last_updated=WHEN + timedelta(seconds=1))]
    written, ops = run_flow(flows.put_many(ctx(ttl_ms=5000), items), [2])
    assert written == 2
    assert ops == [
        ScriptCall(
            lua.PUT,
            (*INDEX_KEYS, "device:a", "device:b"),
            (
                *PREFIXES,
                5000,
                0,
                "a",
                CODEC.encode(items[0]),
                "temp",
                datetime_to_ms(WHEN) * 2 + 1,
                "b",
                CODEC.encode(items[1]),
                "temp",
                (datetime_to_ms(WHEN) + 1000) * 2 + 1,
            ),
        )
    ]


def test_put_many_scores_persist_into_the_lowest_bit() -> None:
    items = [make("a", persist=False), make("b", persist=True, datatype_id="hum")]
    _, ops = run_flow(flows.put_many(ctx(), items), [2])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    # (id, value, datatype, score) per device after the prefixes, the TTL and the if_newer flag.
    assert op.args[4::4] == ("a", "b")
    assert op.args[6::4] == ("temp", "hum")
    assert op.args[7::4] == (score(persist=False), score(persist=True))


def test_put_many_without_ttl_sends_zero() -> None:
    _, ops = run_flow(flows.put_many(ctx(ttl_ms=None), [make("a")]), [1])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.args[:4] == (*PREFIXES, 0, 0)


def test_put_many_last_duplicate_wins() -> None:
    first, last = make("a", datatype_name="first"), make("a", datatype_name="last")
    _, ops = run_flow(flows.put_many(ctx(), [first, make("b"), last]), [2])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.keys == (*INDEX_KEYS, "device:b", "device:a")
    assert op.args[4::4] == ("b", "a")
    assert op.args[9] == CODEC.encode(last)


def test_conditional_put_many_keeps_the_newest_duplicate_and_sets_the_flag() -> None:
    old, new = make("a", datatype_name="old"), make("a", datatype_name="new", last_updated=LATER)
    again = make("a", datatype_name="again", last_updated=LATER)  # equal: the first one stays
    _, ops = run_flow(flows.put_many(ctx(), [new, make("b"), old, again], if_newer=True), [2])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.args[3] == 1
    assert op.args[4::4] == ("b", "a")
    assert op.args[9] == CODEC.encode(new)


def test_put_many_stores_last_updated_in_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=3)))
    _, ops = run_flow(flows.put_many(ctx(), [make("a", last_updated=local)]), [1])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.args[5] == encoded("a")
    assert b'"2024-05-06T07:08:09Z"' in op.args[5]
    assert op.args[7] == score(WHEN)


@pytest.mark.parametrize("bad_index", [0, 1, 2])
def test_put_many_validates_everything_before_the_first_yield(bad_index: int) -> None:
    items = [make("a"), make("b"), make("c")]
    items[bad_index] = make("x", persist=1)
    flow = flows.put_many(ctx(), items)
    with pytest.raises(ValidationError) as info:
        next(flow)
    assert info.value.field == f"[{bad_index}].persist"


def test_put_many_consumes_a_generator_once() -> None:
    _, ops = run_flow(flows.put_many(ctx(), (make(i) for i in "abc")), [3])
    assert len(ops) == 1


@pytest.mark.parametrize("items", [make("a"), "abc", {"a": 1}])
def test_put_many_rejects_a_single_item(items: Any) -> None:
    with pytest.raises(ValidationError):
        next(flows.put_many(ctx(), items))


def test_put_many_of_nothing_sends_nothing() -> None:
    assert run_flow(flows.put_many(ctx(), []), []) == (0, [])


def test_put_yields_the_single_device_script_call_with_the_same_arguments() -> None:
    result, ops = run_flow(flows.put(ctx(ttl_ms=1), make("a")), [1])
    assert result is True
    assert ops == [call(lua.PUT_ONE, 1, 0, "a", encoded("a"), "temp", score(), keys=["device:a"])]


def test_a_retried_conditional_put_sets_flag_2() -> None:
    result, ops = run_flow(flows.put(ctx(ttl_ms=1), make("a"), True, retried=True), [1])
    assert result is True
    assert ops == [call(lua.PUT_ONE, 1, 2, "a", encoded("a"), "temp", score(), keys=["device:a"])]
    _, ops = run_flow(flows.put_many(ctx(), [make("a"), make("b")], True, retried=True), [2])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.args[3] == 2
    _, ops = run_flow(flows.put(ctx(ttl_ms=1), make("a"), retried=True), [1])  # not conditional
    assert ops == [call(lua.PUT_ONE, 1, 0, "a", encoded("a"), "temp", score(), keys=["device:a"])]


def test_drivers_tell_a_retry_aware_flow_which_attempts_retry() -> None:
    seen: list[bool] = []

    @retry_aware
    def aware(x: int, *, retried: bool = False) -> Flow[int]:
        seen.append(retried)
        return x
        yield  # a generator

    def plain(x: int) -> Flow[int]:
        return x
        yield

    attempt = _attempts(aware, (1,), {})
    for _ in range(3):
        run_flow(attempt(), [])
    assert seen == [False, True, True]
    assert knows_retries(aware)
    assert not knows_retries(plain)
    again = _attempts(plain, (1,), {})
    assert [run_flow(again(), [])[0] for _ in range(2)] == [1, 1]


def test_conditional_put_sets_the_flag_and_reports_a_skip() -> None:
    result, ops = run_flow(flows.put(ctx(ttl_ms=1), make("a"), True), [0])
    assert result is False
    assert ops == [call(lua.PUT_ONE, 1, 1, "a", encoded("a"), "temp", score(), keys=["device:a"])]
    with pytest.raises(ValidationError) as info:
        next(flows.put(ctx(), make("a"), "yes"))  # type: ignore[arg-type]
    assert info.value.field == "if_newer"


def test_put_names_the_field_without_a_batch_index() -> None:
    with pytest.raises(ValidationError) as info:
        next(flows.put(ctx(), make("a", datatype_id="")))
    assert info.value.field == "datatype_id"


# --- delete / exists / count / info --------------------------------------------------------------


@pytest.mark.parametrize(("reply", "expected"), [(1, True), (0, False)])
def test_delete(reply: int, expected: bool) -> None:
    result, ops = run_flow(flows.delete(ctx(), "a"), [reply])
    assert result is expected
    assert ops == [call(lua.DELETE, 0, "a", keys=["device:a"])]


def test_delete_many() -> None:
    result, ops = run_flow(flows.delete_many(ctx(), ["a", "b", "a"]), [1])
    assert result == 1
    assert ops == [call(lua.DELETE, 0, "a", "b", keys=["device:a", "device:b"])]
    assert run_flow(flows.delete_many(ctx(), []), []) == (0, [])


@pytest.mark.parametrize(("reply", "expected"), [(1, True), (0, False)])
def test_exists(reply: int, expected: bool) -> None:
    result, ops = run_flow(flows.exists(ctx(), "a"), [reply])
    assert result is expected
    assert ops == [Command(("EXISTS", "device:a"))]


def test_count() -> None:
    result, ops = run_flow(flows.count(ctx()), [7])
    assert result == 7
    assert ops == [call(lua.COUNT)]


def test_info_goes_on_where_a_call_ran_out_of_budget() -> None:
    # The first call found no live entry within its budget at either end: the flow asks again
    # from the (score, id) each end stopped at, and again, until an answer at each end.
    low, high = score(WHEN, persist=False), score(WHEN + timedelta(days=1))
    result, ops = run_flow(
        flows.info(ctx()),
        [
            [5, None, None, [b"10", b"x"], [b"90", b"y"]],
            [4, None, str(high).encode(), [b"20", b"z"], None],
            [3, str(low).encode(), None, None, None],
            {"used_memory": 1},
        ],
    )
    assert ops == [
        call(lua.INFO, flows.INFO_BUDGET, "", "", "", ""),
        call(lua.INFO, flows.INFO_BUDGET, b"10", b"x", b"90", b"y"),
        call(lua.INFO, flows.INFO_BUDGET, b"20", b"z", lua.INFO_DONE, ""),
        Command(("INFO", "memory"), broadcast=True),
    ]
    assert result.total_devices == 5  # the first call's count
    assert result.oldest_entry_timestamp == WHEN
    assert result.newest_entry_timestamp == WHEN + timedelta(days=1)


def test_info() -> None:
    # The script answers the lowest and highest time score: ms * 2 + persist.
    oldest, newest = score(WHEN, persist=False), score(WHEN + timedelta(days=1), persist=True)
    result, ops = run_flow(
        flows.info(ctx()), [[3, str(oldest).encode(), str(newest).encode()], {"used_memory": 123}]
    )
    assert ops == [
        call(lua.INFO, flows.INFO_BUDGET, "", "", "", ""),
        Command(("INFO", "memory"), broadcast=True),
    ]
    assert result.total_devices == 3
    assert result.memory_usage_bytes == 123
    assert result.oldest_entry_timestamp == WHEN
    assert result.newest_entry_timestamp == WHEN + timedelta(days=1)
    assert result.backend == "redis"


def test_info_of_an_empty_cache() -> None:
    result, _ = run_flow(flows.info(ctx()), [[0, None, None], {}])
    assert result.total_devices == 0
    assert result.memory_usage_bytes == 0
    assert result.oldest_entry_timestamp is None
    assert result.newest_entry_timestamp is None


# --- list_ids ------------------------------------------------------------------------------------


def flag(value: bool) -> str:
    return "1" if value else "0"


def range_args(
    start: str | bytes,
    stop: str | bytes,
    *,
    block: str = "",
    datatype: str = "",
    count: int = flows.RANGE_CHUNK,
    reverse: bool = False,
    lo: str = "-inf",
    hi: str = "+inf",
    values: bool = False,
    total: bool = False,
) -> tuple[object, ...]:
    """RANGE's arguments after the prefixes.

    The id-ordered blocks of the ids index, or of the by-type index with a ``datatype``: both
    persist blocks, merged by id in the script (``block=""``, a walk without a persist filter),
    or the one of persist ``"0"`` or ``"1"`` (a str, never an int); the lowest and highest id
    (``start``, ``stop``, in that order walking either way); ``count`` entries examined (a walk's
    first chunk: limit + 1, then x4); the time score bounds; whether the values and the bucket's
    device count are asked too.
    """
    return (datatype, block, start, stop, count, flag(reverse), lo, hi, flag(values), flag(total))


def range_call(start: str | bytes, stop: str | bytes, **kwargs: Any) -> ScriptCall:
    """A RANGE call on a single node (see :func:`range_args`)."""
    return call(lua.RANGE, *range_args(start, stop, **kwargs))


def chunk(
    items: Sequence[object],
    last: object,
    values: Sequence[object] = (),
    total: int | None = None,
) -> list[object]:
    """A RANGE or TIME_RANGE reply: {live entries, continuation or nil, values, count or nil}."""
    return [list(items), last, list(values), total]


def test_list_ids_walks_both_blocks_of_the_literal_prefix_range_in_one_call_per_chunk() -> None:
    high = b"(dev-1\xff"
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="dev-1*"),
        [
            # The script merges both persist blocks by id: one reply per chunk, taken in order.
            chunk([b"dev-1", b"dev-10"], b"dev-10"),
            chunk([b"dev-11"], b"dev-12"),  # dev-12 was examined but its key is gone
            chunk([b"dev-13", b"dev-14"], None),
        ],
    )
    assert result == ["dev-1", "dev-10", "dev-11", "dev-13", "dev-14"]
    # One bare RANGE call per chunk (block "": both persist blocks), never a pipeline of two.
    assert ops == [
        range_call("[dev-1", high),
        range_call(b"(dev-10", high),
        range_call(b"(dev-12", high),
    ]
    for op in ops:
        assert isinstance(op, ScriptCall)
        assert op.args[3] == ""


def test_list_ids_continues_from_a_str_last() -> None:
    high = b"(" + "é".encode() + b"\xff"
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="é*"),
        [chunk(["é1"], "é1"), chunk(["é2"], None)],
    )
    assert result == ["é1", "é2"]
    assert ops == [range_call("[é", high), range_call("(é1", high)]


def test_list_ids_without_pattern_reads_the_whole_index() -> None:
    result, ops = run_flow(flows.list_ids(ctx()), [chunk([b"a", b"b", b"c", b"d"], None)])
    assert result == ["a", "b", "c", "d"]
    assert ops == [range_call("-", "+")]
    # Ids only: neither the values nor the count are asked ("0", "0").
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.args[-2:] == ("0", "0")


def test_list_ids_pattern_without_literal_prefix_reads_the_whole_index() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="*-1"),
        [chunk([b"a-1", b"a-2", b"b-1", b"b-2"], None)],
    )
    assert result == ["a-1", "b-1"]
    assert ops == [range_call("-", "+")]


def test_list_ids_applies_the_glob_beyond_the_prefix() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="dev-?x"),
        [chunk([b"dev-12x", b"dev-1x", b"dev-2x", b"dev-3y", "dev-éx".encode()], None)],
    )
    # "?" matches one byte, as in Redis: "é" is two bytes in UTF-8.
    assert result == ["dev-1x", "dev-2x"]
    assert ops == [range_call("[dev-", b"(dev-\xff")]


def test_list_ids_exact_id_pattern() -> None:
    result, ops = run_flow(flows.list_ids(ctx(), pattern="ab"), [chunk([b"ab", b"abc"], None)])
    assert result == ["ab"]
    assert ops == [range_call("[ab", b"(ab\xff")]


def test_list_ids_escaped_glob_characters_are_part_of_the_prefix() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="a\\*b*"),
        [chunk([b"a*b", b"a*bc", b"a*c"], None)],
    )
    assert result == ["a*b", "a*bc"]
    assert ops == [range_call("[a*b", b"(a*b\xff")]


def test_list_ids_offset_and_limit_count_matching_ids_across_chunks() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="?1", offset=1, limit=2),
        [
            chunk([b"a1", b"a2", b"b1"], b"b2"),
            chunk([b"b3", b"c1", b"d1"], b"d1"),
        ],
    )
    # a1 is skipped (the offset), b1 and c1 taken.
    assert result == ["b1", "c1"]
    # offset + limit + 1 entries first, then four times as many; the limit was reached inside
    # the second chunk: no further RANGE call.
    assert ops == [range_call("-", "+", count=4), range_call(b"(b2", "+", count=16)]


def test_list_ids_without_a_limit_examines_range_chunk_entries_from_the_start() -> None:
    ids = [f"x{n:04d}".encode() for n in range(700)]
    full, rest = ids[: flows.RANGE_CHUNK], ids[flows.RANGE_CHUNK :]
    high = b"(x\xff"
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="x*", offset=600),
        # A full chunk (more to come), then the end.
        [chunk(full, full[-1]), chunk(rest, None)],
    )
    assert result == [i.decode() for i in ids[600:]]
    # Nothing bounds the walk: every chunk, the first included, examines RANGE_CHUNK entries.
    assert ops == [
        range_call("[x", high, count=flows.RANGE_CHUNK),
        range_call(b"(" + full[-1], high, count=flows.RANGE_CHUNK),
    ]


def test_list_ids_offset_beyond_the_end() -> None:
    result, ops = run_flow(flows.list_ids(ctx(), offset=5), [chunk([b"a", b"b"], None)])
    assert result == []
    assert ops == [range_call("-", "+")]  # no limit: RANGE_CHUNK entries


def test_list_ids_limit_zero_sends_nothing() -> None:
    assert run_flow(flows.list_ids(ctx(), limit=0), []) == ([], [])


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": -1}, {"offset": -1}, {"pattern": b"a*"}, {"limit": 1.0}, {"offset": "1"}],
)
def test_list_ids_validates_before_yielding(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        next(flows.list_ids(ctx(), **kwargs))


# --- query ---------------------------------------------------------------------------------------


def time_range_args(
    datatype_id: str = "",
    lo: str = "-inf",
    hi: str = "+inf",
    after: tuple[int | str, str] = ("", ""),
    *,
    count: int,
    reverse: bool = False,
    persist: str = "",
    values: bool = False,
    total: bool = False,
) -> tuple[object, ...]:
    """TIME_RANGE's arguments after the prefixes.

    The time index of ``datatype_id`` ("": of all devices), the score bounds, the (score, id)
    to resume after, ``count`` entries examined (limit + 1 first, then x4), the persist filter
    ("", "0", "1"); then whether the values and the bucket's device count are asked too.
    """
    return (
        datatype_id,
        lo,
        hi,
        *after,
        count,
        flag(reverse),
        persist,
        flag(values),
        flag(total),
    )


def time_range_call(*args: Any, **kwargs: Any) -> ScriptCall:
    """A TIME_RANGE call on a single node (see :func:`time_range_args`)."""
    return call(lua.TIME_RANGE, *time_range_args(*args, **kwargs))


def time_set_args(
    datatype_id: str = "",
    lo: str = "-inf",
    hi: str = "+inf",
    persist: str = "",
    *,
    limit: int,
    prefix: str = "",
    after: str = "",
    reverse: bool = False,
    want: int | None = None,
    values: bool = False,
    whole: bool = False,
) -> tuple[object, ...]:
    """TIME_SET's arguments after the prefixes (``whole``: of a later chunk, read whole).

    The time index of ``datatype_id`` ("": of all devices), the score bounds, the persist filter,
    the page size (limit + 1) and the size up to which the range is read whole; then, for a
    range read whole, the literal id ``prefix``, the id to go on ``after`` ("": from the start),
    the direction, the matches wanted (limit + 1 first; then the walk's chunk) and whether the
    values come too.
    """
    return (
        datatype_id,
        lo,
        hi,
        persist,
        limit + 1,
        flows.READ_WHOLE if whole else flows.SMALL_RANGE,
        prefix,
        after,
        flag(reverse),
        limit + 1 if want is None else want,
        flag(values),
    )


def time_set_call(*args: Any, **kwargs: Any) -> ScriptCall:
    """A TIME_SET call on a single node (see :func:`time_set_args`)."""
    return call(lua.TIME_SET, *time_set_args(*args, **kwargs))


def read_whole(
    in_range: int, ids: Sequence[bytes], last: bytes | None, values: Sequence[object] = ()
) -> list[object]:
    """A TIME_SET reply for a range read whole: {entries in the range, 1, the live matching ids
    in walk order, the last id examined or nil (the range ended), their values (when asked)}."""
    return [in_range, 1, list(ids), last, list(values)]


def walk_by_id(in_range: int) -> list[object]:
    """A TIME_SET reply for a range too large to read whole: the client walks it by id."""
    return [in_range, 0, [], None, []]


def after_bound(when: datetime) -> str:
    """The lowest score ``updated_after=when`` allows (exclusive of ``when``'s millisecond)."""
    return str(score(when + timedelta(milliseconds=1), persist=False))


def before_bound(when: datetime) -> str:
    """The highest score ``updated_before=when`` allows."""
    return str(score(when - timedelta(milliseconds=1), persist=True))


# The first chunk of a query's walk: the default page size plus one (to see a next page).
FIRST = DeviceQuery().limit + 1


def timed(*entries: tuple[str, int]) -> list[bytes | int]:
    """A TIME_RANGE reply's flat list: id, score, id, score... (scores as integer replies)."""
    flat: list[bytes | int] = []
    for device_id, s in entries:
        flat += [device_id.encode(), s]
    return flat


def test_query_by_id_walks_both_blocks_in_one_call_with_the_values_and_the_count() -> None:
    values = [encoded("a"), encoded("b", persist=False), encoded("c")]
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2)),
        # Both persist blocks merged by id in the script: a (persist), b (not), c (persist).
        [chunk([b"a", b"b", b"c"], None, values, 7)],
    )
    # No filter: one RANGE call over both persist blocks (block ""), limit + 1 entries (a full
    # page and a next-page check), the count on the first chunk; one stream on a single node and
    # no matcher: the values come with the walk. One round trip, no MGET.
    assert ops == [range_call("-", "+", count=3, values=True, total=True)]
    assert page.items == [make("a"), make("b", persist=False)]
    assert page.total == 7
    assert page.next_cursor is not None


def test_query_by_id_fetches_the_next_chunk_when_the_first_runs_dry_and_asks_the_count_once() -> (
    None
):
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=3)),
        [
            # c and e were examined but their keys are gone.
            chunk([b"a", b"b", b"d"], b"e", [encoded(i) for i in "abd"], 6),
            chunk([b"f"], None, [encoded("f")]),
        ],
    )
    # The next chunk is four times the first, from after the last id examined; the count is
    # never asked again; both carry the values.
    assert ops == [
        range_call("-", "+", count=4, values=True, total=True),
        range_call(b"(e", "+", count=16, values=True),
    ]
    assert [m.device_id for m in page.items] == ["a", "b", "d"]
    assert page.total == 6
    assert page.next_cursor is not None  # f was the fourth match


def test_query_by_id_descending_walks_both_blocks_in_one_call() -> None:
    query = DeviceQuery(descending=True, limit=2)
    page, ops = run_flow(
        flows.query(ctx(), query),
        [
            chunk([b"e", b"d"], b"c", [encoded("e"), encoded("d", persist=False)], 5),  # c: gone
            chunk([b"b", b"a"], None, [encoded("b"), encoded("a")]),
        ],
    )
    # Walking down, the lex bounds stay in order (lowest, highest); the walk goes on below the
    # last id examined. The script's order is kept (no re-sorting here).
    assert ops == [
        range_call("-", "+", count=3, reverse=True, values=True, total=True),
        range_call("-", b"(c", count=12, reverse=True, values=True),
    ]
    assert page.items == [make("e"), make("d", persist=False)]
    assert page.total == 5
    cursor = page.next_cursor
    assert cursor is not None  # b was the third match
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=cursor)),
        [chunk([b"b", b"a"], None, [encoded("b"), encoded("a")])],
    )
    # The next page: both blocks from below "d", no count.
    assert ops == [range_call("-", "(d", count=3, reverse=True, values=True)]
    assert [m.device_id for m in second.items] == ["b", "a"]
    assert second.next_cursor is None
    assert second.total is None


@pytest.mark.parametrize("persist", [False, True])
def test_query_by_id_with_a_persist_filter_walks_one_block_and_carries_the_values(
    persist: bool,
) -> None:
    values = [encoded(i, persist=persist) for i in "abc"]
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(persist=persist, limit=2)),
        [chunk([b"a", b"b", b"c"], None, values)],
    )
    # The block of the persist flag ("0" or "1", a str); nothing left to the client: the walk
    # carries the values; one round trip, no MGET. A filter: no count.
    assert ops == [range_call("-", "+", block=flag(persist), count=3, values=True)]
    assert page.items == [make("a", persist=persist), make("b", persist=persist)]
    assert page.next_cursor is not None
    assert page.total is None


def test_query_by_id_with_a_datatype_walks_both_its_by_type_blocks_in_one_call() -> None:
    values = [encoded(i, datatype_id="hum", persist=i == "b") for i in "abc"]
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(datatype_id="hum")),
        [chunk([b"a", b"b", b"c"], None, values)],
    )
    # The datatype picks the by-type blocks on the server, both persist blocks merged there:
    # one stream, no matcher: the values come with the walk, no MGET. A filter: no count.
    assert ops == [range_call("-", "+", datatype="hum", count=FIRST, values=True)]
    assert [m.device_id for m in page.items] == ["a", "b", "c"]
    assert page.items[1] == make("b", datatype_id="hum", persist=True)
    assert page.total is None


def test_query_by_id_with_a_datatype_and_persist_walks_one_by_type_block() -> None:
    query = DeviceQuery(datatype_id="hum", persist=False, pattern="s-*", limit=1)
    values = [encoded(i, datatype_id="hum", persist=False) for i in ("s-1", "s-2")]
    page, ops = run_flow(flows.query(ctx(), query), [chunk([b"s-1", b"s-2"], None, values)])
    # "<prefix>*" is answered by the lex range: no matcher, so the values come with the walk.
    assert ops == [
        range_call("[s-", b"(s-\xff", datatype="hum", block="0", count=2, values=True),
    ]
    assert [m.device_id for m in page.items] == ["s-1"]
    assert page.next_cursor is not None


def test_query_cursor_resumes_after_the_last_id_of_the_previous_page() -> None:
    first, _ = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2)),
        [chunk([b"a", b"b", b"c"], None, [encoded(i) for i in "abc"], 3)],
    )
    second, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2, cursor=first.next_cursor)),
        [chunk([b"c"], None, [encoded("c")])],
    )
    # No count on later pages; both blocks (one call) start right after "b", with the values.
    assert ops == [range_call("(b", "+", count=3, values=True)]
    assert second.items == [make("c")]
    assert second.next_cursor is None
    assert second.total is None


def test_query_cursor_of_a_persist_filtered_walk_keeps_carrying_the_values() -> None:
    query = DeviceQuery(persist=True, limit=1)
    first, _ = run_flow(
        flows.query(ctx(), query),
        [chunk([b"a", b"b"], None, [encoded("a"), encoded("b")])],
    )
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=first.next_cursor)),
        [chunk([b"b"], None, [encoded("b")])],
    )
    assert ops == [range_call("(a", "+", block="1", count=2, values=True)]
    assert second.items == [make("b")]


def test_query_exactly_limit_matches_has_no_next_page() -> None:
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2, pattern="*", persist=True)),
        [chunk([b"a", b"b"], None, [encoded("a"), encoded("b")])],
    )
    # A filter (even "*"): no count. "*" leaves nothing to the client: the values come along.
    assert ops == [range_call("-", "+", block="1", count=3, values=True)]
    assert page.items == [make("a"), make("b")]
    assert page.next_cursor is None
    assert page.total is None


def test_query_reads_limit_plus_one_matches_across_chunks() -> None:
    second = [f"a{n}".encode() for n in range(4, 10)] + [f"b{n}".encode() for n in range(6)]
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2, pattern="?1", persist=True)),
        [
            chunk([b"a1", b"a2", b"a3"], b"a3"),  # 3 entries examined, one match
            chunk(second, b"b5"),  # 12 entries examined, one match (b1)
            chunk([b"b6", b"b7", b"b8", b"b9", b"c0", b"c1", b"c2"], None),  # the block's end
            [encoded("a1"), encoded("b1")],
        ],
    )
    # The pattern is matched here: the walk returns no values, the page is read with MGET.
    # c1 is the third match: enough to know a next page exists (c2 is never looked at).
    assert ops == [
        range_call("-", "+", block="1", count=3),
        range_call(b"(a3", "+", block="1", count=12),
        range_call(b"(b5", "+", block="1", count=48),
        Command(("MGET", "device:a1", "device:b1")),
    ]
    assert [m.device_id for m in page.items] == ["a1", "b1"]
    assert page.next_cursor is not None
    assert page.total is None


@pytest.mark.parametrize("persist", [None, True])
def test_query_chunks_grow_fourfold_up_to_range_chunk_while_the_filter_rejects(
    persist: bool | None,
) -> None:
    assert flows.RANGE_CHUNK == 512
    # limit + 1 = 3 entries first, then x4 each time, capped at RANGE_CHUNK.
    sizes = [3, 12, 48, 192, 512, 512]
    hits = {399, 799, 1199}  # the only matches: in the fifth and the sixth chunk
    ids = [f"d{n:04d}-hit" if n in hits else f"d{n:04d}" for n in range(sum(sizes))]
    replies: list[object] = []
    starts: list[str | bytes] = ["-"]
    position = 0
    for size in sizes:
        entries = [i.encode() for i in ids[position : position + size]]
        position += size
        replies.append(chunk(entries, entries[-1]))  # a full chunk: more to come
        starts.append(b"(" + entries[-1])
    replies.append([encoded("d0399-hit"), encoded("d0799-hit")])
    query = DeviceQuery(limit=2, pattern="*-hit", persist=persist)
    page, ops = run_flow(flows.query(ctx(), query), replies)
    # One block or both (one call either way); d1199-hit, the third match, ends the walk inside
    # the sixth chunk.
    block = "" if persist is None else "1"
    assert ops == [
        *(
            range_call(start, "+", block=block, count=size)
            for start, size in zip(starts[:-1], sizes, strict=True)
        ),
        Command(("MGET", "device:d0399-hit", "device:d0799-hit")),
    ]
    assert [m.device_id for m in page.items] == ["d0399-hit", "d0799-hit"]
    assert page.next_cursor is not None


def test_query_descending_by_id_keeps_the_lex_bounds_of_the_prefix() -> None:
    query = DeviceQuery(pattern="dev-?*", descending=True, limit=1)
    page, ops = run_flow(
        flows.query(ctx(), query),
        [chunk([b"dev-9", b"dev-8"], b"dev-8"), [encoded("dev-9")]],
    )
    # A matcher left to the client: no values, the page is read with MGET.
    assert ops == [
        range_call("[dev-", b"(dev-\xff", count=2, reverse=True),
        Command(("MGET", "device:dev-9")),
    ]
    assert [m.device_id for m in page.items] == ["dev-9"]
    cursor = page.next_cursor
    assert cursor is not None
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=cursor)),
        [chunk([b"dev-8", b"dev-7"], None), [encoded("dev-8")]],
    )
    # The cursor becomes the (exclusive) highest id; the prefix's lowest stays.
    assert ops == [
        range_call("[dev-", "(dev-9", count=2, reverse=True),
        Command(("MGET", "device:dev-8")),
    ]
    assert [m.device_id for m in second.items] == ["dev-8"]


def test_query_descending_without_pattern_walks_from_the_top() -> None:
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(descending=True)),
        [chunk([], None, [], 0)],
    )
    assert ops == [range_call("-", "+", count=FIRST, reverse=True, values=True, total=True)]
    assert page.items == []
    assert page.total == 0


def test_query_empty_page_reads_no_values() -> None:
    page, ops = run_flow(flows.query(ctx(), DeviceQuery(pattern="x?*")), [chunk([], None)])
    assert ops == [range_call("[x", b"(x\xff", count=FIRST)]
    assert page.items == []
    assert page.next_cursor is None


def test_query_by_id_of_a_small_time_range_is_read_whole_with_the_values_in_one_round_trip() -> (
    None
):
    before = WHEN + timedelta(seconds=1)
    lo, hi = after_bound(WHEN), before_bound(before)
    query = DeviceQuery(updated_after=WHEN, updated_before=before, limit=2)
    values = [encoded(i) for i in ("d1", "d2", "d3")]
    page, ops = run_flow(
        flows.query(ctx(), query),
        # Sorted by id on the server; limit + 1 live matches, more after d3.
        [read_whole(6, [b"d1", b"d2", b"d3"], b"d3", values)],
    )
    # One TIME_SET: the range is small, so the server reads it whole, sorts it by id and answers
    # the first chunk (limit + 1 matches) with their values: no RANGE, no MGET, no count.
    assert ops == [time_set_call(lo=lo, hi=hi, limit=2, values=True)]
    assert page.items == [make("d1"), make("d2")]
    assert page.total is None
    assert page.next_cursor is not None  # d3 was the third match
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=page.next_cursor)),
        [read_whole(6, [b"d3"], None, [encoded("d3")])],
    )
    # The next page reads the range again; the server goes on after the cursor.
    assert ops == [time_set_call(lo=lo, hi=hi, limit=2, after="d2", values=True)]
    assert second.items == [make("d3")]
    assert second.next_cursor is None
    assert second.total is None


def test_query_by_id_of_a_small_time_range_asks_a_next_chunk_after_the_last_id_examined() -> None:
    before = WHEN + timedelta(seconds=1)
    lo, hi = after_bound(WHEN), before_bound(before)
    # "d?" goes beyond its literal prefix: the server keeps the ids starting "d", the client
    # matches the rest, so the page is read with MGET (no values asked).
    query = DeviceQuery(updated_after=WHEN, updated_before=before, pattern="d?", limit=2)
    page, ops = run_flow(
        flows.query(ctx(), query),
        [
            # By id: d1, d2, d22 (rejected here): the matches ran short.
            read_whole(6, [b"d1", b"d2", b"d22"], b"d22"),
            read_whole(6, [b"d3", b"d4"], None),
            [encoded("d1"), encoded("d2")],
        ],
    )
    assert ops == [
        time_set_call(lo=lo, hi=hi, limit=2, prefix="d"),
        # The next chunk: another TIME_SET after the last id examined, limit + 1 matches, read
        # whole whatever the range's size by now (the plan stays).
        time_set_call(lo=lo, hi=hi, limit=2, prefix="d", after="d22", whole=True),
        Command(("MGET", "device:d1", "device:d2")),
    ]
    assert [m.device_id for m in page.items] == ["d1", "d2"]
    assert page.next_cursor is not None  # d3 was the third match
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=page.next_cursor)),
        [read_whole(6, [b"d22", b"d3", b"d4"], None), [encoded("d3"), encoded("d4")]],
    )
    assert ops == [
        time_set_call(lo=lo, hi=hi, limit=2, prefix="d", after="d2"),
        Command(("MGET", "device:d3", "device:d4")),
    ]
    assert [m.device_id for m in second.items] == ["d3", "d4"]
    assert second.next_cursor is None


def test_query_by_id_of_a_small_time_range_descending() -> None:
    before = WHEN + timedelta(seconds=1)
    hi = before_bound(before)
    query = DeviceQuery(updated_before=before, persist=True, pattern="d*", descending=True, limit=2)
    # The persist filter and the literal prefix go to the server; "d*" leaves nothing to match
    # here, so the values come along. The server's order (descending) is kept.
    page, ops = run_flow(
        flows.query(ctx(), query),
        [read_whole(4, [b"d3", b"d2", b"d1"], b"d1", [encoded(i) for i in ("d3", "d2", "d1")])],
    )
    assert ops == [
        time_set_call(hi=hi, persist="1", limit=2, prefix="d", reverse=True, values=True)
    ]
    assert [m.device_id for m in page.items] == ["d3", "d2"]
    assert page.next_cursor is not None
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=page.next_cursor)),
        [read_whole(4, [b"d1"], None, [encoded("d1")])],
    )
    # Walking down, the next page goes on below the cursor.
    assert ops == [
        time_set_call(
            hi=hi, persist="1", limit=2, prefix="d", after="d2", reverse=True, values=True
        )
    ]
    assert second.items == [make("d1")]
    assert second.next_cursor is None


def test_query_by_id_of_an_empty_small_time_range_reads_nothing_else() -> None:
    query = DeviceQuery(updated_after=WHEN, datatype_id="none-such")
    page, ops = run_flow(flows.query(ctx(), query), [read_whole(0, [], None)])
    assert ops == [
        time_set_call("none-such", after_bound(WHEN), limit=query.limit, values=True),
    ]
    assert page.items == []
    assert page.next_cursor is None
    assert page.total is None


def test_query_by_id_of_a_large_time_range_walks_by_id_with_the_score_bounds() -> None:
    lo = after_bound(WHEN)
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(updated_after=WHEN, limit=2)),
        [
            walk_by_id(900),  # too many entries in the range to read it whole: walk by id
            # The script skipped the entries whose time score is out of the range.
            chunk([b"a", b"b"], b"c", [encoded("a"), encoded("b")]),
            chunk([b"e"], None, [encoded("e")]),
        ],
    )
    # Both persist blocks in one call per chunk, with the time bounds; nothing left to the
    # client on a single node: the values come with the walk (no MGET); never the count.
    assert ops == [
        time_set_call(lo=lo, limit=2, values=True),
        range_call("-", "+", count=3, lo=lo, values=True),
        range_call(b"(c", "+", count=12, lo=lo, values=True),
    ]
    assert page.items == [make("a"), make("b")]
    assert page.next_cursor is not None  # e was the third match
    assert page.total is None


def test_query_by_id_of_a_large_time_range_with_a_pattern_reads_the_page_with_mget() -> None:
    lo = after_bound(WHEN)
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(updated_after=WHEN, pattern="?", limit=1)),
        [walk_by_id(900), chunk([b"a", b"bb", b"c"], None), [encoded("a")]],
    )
    # A matcher left to the client: no values asked, from TIME_SET or the walk; then MGET.
    assert ops == [
        time_set_call(lo=lo, limit=1),
        range_call("-", "+", count=2, lo=lo),
        Command(("MGET", "device:a")),
    ]
    assert page.items == [make("a")]
    assert page.next_cursor is not None  # c was the second match


def test_query_by_id_of_a_large_time_range_with_every_filter_descending() -> None:
    before = WHEN + timedelta(seconds=1)
    query = DeviceQuery(
        updated_after=WHEN,
        updated_before=before,
        datatype_id="temp",
        persist=True,
        pattern="s-*",
        descending=True,
        limit=1,
    )
    lo, hi = after_bound(WHEN), before_bound(before)

    def time_set(after: str = "") -> ScriptCall:
        return time_set_call(
            "temp", lo, hi, "1", limit=1, prefix="s-", after=after, reverse=True, values=True
        )

    def walk(stop: str | bytes) -> ScriptCall:
        # One by-type block (datatype and persist), the prefix range, the time bounds; "s-*"
        # is answered by the prefix range, so the values come along.
        return range_call(
            "[s-",
            stop,
            datatype="temp",
            block="1",
            count=2,
            reverse=True,
            lo=lo,
            hi=hi,
            values=True,
        )

    page, ops = run_flow(
        flows.query(ctx(), query),
        [walk_by_id(5000), chunk([b"s-9", b"s-5"], b"s-5", [encoded("s-9"), encoded("s-5")])],
    )
    assert ops == [time_set(), walk(b"(s-\xff")]
    assert [m.device_id for m in page.items] == ["s-9"]
    assert page.next_cursor is not None
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=page.next_cursor)),
        [walk_by_id(5000), chunk([b"s-5"], None, [encoded("s-5")])],
    )
    assert ops == [time_set(after="s-9"), walk("(s-9")]
    assert [m.device_id for m in second.items] == ["s-5"]
    assert second.next_cursor is None


def test_query_by_last_updated_walks_the_time_index() -> None:
    t = datetime_to_ms(WHEN) * 2
    query = DeviceQuery(sort="last_updated", limit=3)
    page, ops = run_flow(
        flows.query(ctx(), query),
        [
            chunk(
                # In (score, id) order: h1, t1, then h2 and t2 at the same score, by id.
                timed(("h1", t + 2), ("t1", t + 4), ("h2", t + 6)),
                [t + 6, b"h2"],  # more to come after (score, id) of h2
                [encoded("h1"), encoded("t1"), encoded("h2")],
                5,
            ),
            chunk(timed(("t2", t + 6)), None, [encoded("t2")]),
        ],
    )
    # No datatype filter: the time index of every device (""); then 4 times as many entries.
    # Nothing is left to the client on one node: values come with the walk, the count with the
    # first chunk only; no COUNT, no MGET.
    assert ops == [
        time_range_call(count=4, values=True, total=True),
        time_range_call(after=(t + 6, "h2"), count=16, values=True),
    ]
    assert [m.device_id for m in page.items] == ["h1", "t1", "h2"]
    assert page.total == 5
    assert page.next_cursor is not None
    # The next page resumes after (score, id) of h2.
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=page.next_cursor)),
        [
            chunk(
                timed(("t2", t + 6), ("t3", t + 8)),
                None,
                [encoded("t2"), encoded("t3")],
            ),
        ],
    )
    assert ops == [time_range_call(after=(t + 6, "h2"), count=4, values=True)]
    assert [m.device_id for m in second.items] == ["t2", "t3"]
    assert second.next_cursor is None
    assert second.total is None


def test_query_by_last_updated_descending_with_a_datatype_and_time_bounds() -> None:
    t = datetime_to_ms(WHEN)
    query = DeviceQuery(
        sort="last_updated",
        descending=True,
        datatype_id="temp",
        updated_after=WHEN,
        updated_before=WHEN + timedelta(seconds=1),
        persist=False,
    )
    value = encoded("a", persist=False, last_updated=WHEN + timedelta(milliseconds=400))
    page, ops = run_flow(
        flows.query(ctx(), query),
        [chunk(timed(("a", (t + 400) * 2)), None, [value])],
    )
    # The datatype, time and persist filters all go to the server (bounds are exclusive, in
    # ms * 2 + persist): the values come with the matches, no MGET; filtered: no count.
    lo, hi = str((t + 1) * 2), str((t + 999) * 2 + 1)
    assert ops == [
        time_range_call("temp", lo, hi, count=FIRST, reverse=True, persist="0", values=True),
    ]
    assert [m.device_id for m in page.items] == ["a"]
    assert page.total is None


def test_query_by_last_updated_with_a_pattern_reads_the_page_with_mget() -> None:
    t = datetime_to_ms(WHEN) * 2
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(sort="last_updated", pattern="t?*", limit=1)),
        [
            chunk(timed(("h1", t + 2), ("t1", t + 4)), None),
            [encoded("t1")],
        ],
    )
    # The id pattern is matched here, not on the server: no values, no count, then MGET.
    assert ops == [time_range_call(count=2), Command(("MGET", "device:t1"))]
    assert [m.device_id for m in page.items] == ["t1"]
    assert page.next_cursor is None
    assert page.total is None


def test_query_skips_values_deleted_or_corrupted_since_the_index_was_read() -> None:
    # A pattern left to the client: the page is read with MGET, after the walk.
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(pattern="?")),
        [chunk([b"a", b"b", b"c"], None), [None, b"garbage", encoded("c")]],
    )
    assert ops == [
        range_call("-", "+", count=FIRST),
        Command(("MGET", "device:a", "device:b", "device:c")),
    ]
    assert page.items == [make("c")]


@pytest.mark.parametrize("persist", [None, True])
def test_query_skips_a_value_the_walk_could_not_read(
    persist: bool | None, caplog: pytest.LogCaptureFixture
) -> None:
    # The script answers nil for a key of another type (it cannot GET it) and the value as is
    # otherwise; both bad entries are left out of the page, with a warning. With or without a
    # persist filter, the values come with the walk on a single node.
    with caplog.at_level(logging.WARNING, logger="cache_service_client"):
        page, ops = run_flow(
            flows.query(ctx(), DeviceQuery(persist=persist, limit=4)),
            [
                chunk(
                    [b"a", b"b", b"c", b"d"],
                    None,
                    [encoded("a"), None, b"garbage", encoded("d")],  # b: a list; c: not a device
                    4,
                )
            ],
        )
    if persist is None:  # no filter: the count too
        assert ops == [range_call("-", "+", count=5, values=True, total=True)]
        assert page.total == 4
    else:
        assert ops == [range_call("-", "+", block="1", count=5, values=True)]
        assert page.total is None
    assert page.items == [make("a"), make("d")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("device:b" in message for message in warnings)
    assert any("device:c" in message for message in warnings)


def test_query_cursor_of_another_query_raises_before_yielding() -> None:
    first, _ = run_flow(
        flows.query(ctx(), DeviceQuery(limit=1)),
        [chunk([b"a", b"b"], None, [encoded("a"), encoded("b")], 2)],
    )
    assert first.next_cursor is not None
    for other in (
        DeviceQuery(limit=1, descending=True, cursor=first.next_cursor),
        DeviceQuery(limit=1, pattern="a*", cursor=first.next_cursor),
        DeviceQuery(limit=1, persist=True, cursor=first.next_cursor),
        DeviceQuery(limit=1, updated_after=WHEN, cursor=first.next_cursor),
        DeviceQuery(limit=1, sort="last_updated", cursor=first.next_cursor),
    ):
        with pytest.raises(ValidationError) as info:
            next(flows.query(ctx(), other))
        assert info.value.field == "cursor"
    # The same query with another page size keeps its cursors.
    _, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=5, cursor=first.next_cursor)),
        [chunk([], None)],
    )
    assert ops == [range_call("(a", "+", count=6, values=True)]  # the new limit + 1


@pytest.mark.parametrize("cursor", ["not a cursor", "", "AAAA"])
def test_query_rejects_garbage_cursors(cursor: str) -> None:
    with pytest.raises(ValidationError) as info:
        next(flows.query(ctx(), DeviceQuery(cursor=cursor)))
    assert info.value.field == "cursor"


def test_query_validates_a_time_range_before_yielding() -> None:
    naive = datetime(2024, 5, 6, 7, 8, 9)  # no tzinfo: rejected
    with pytest.raises(ValidationError) as info:
        next(flows.query(ctx(), DeviceQuery(updated_after=naive)))
    assert info.value.field == "updated_after"


# --- repair --------------------------------------------------------------------------------------


def legacy_step(keys: KeyStrategy, bucket: int, names: Sequence[str] = ()) -> list[Command]:
    """Repair's first ops in a bucket: mark it layout 2 (unless marked) and read its layout-1
    datatypes; when there are some, delete them and their updated indexes."""
    legacy = keys.legacy_datatypes_index(bucket)
    ops = [
        Command(("SET", keys.layout_key(bucket), lua.LAYOUT_VERSION, "NX")),
        Command(("SMEMBERS", legacy), key=legacy),
    ]
    if names:
        old = [keys.legacy_updated_index(name, bucket) for name in sorted(names)]
        ops.append(Command(("DEL", legacy, *old)))
    return ops


def test_repair_moves_a_layout_1_cache_then_reindexes_and_sweeps_the_indexes() -> None:
    report, ops = run_flow(
        flows.repair(ctx()),
        [
            b"OK",  # the layout key was not there: layout 1
            {b"temp", b"hum"},
            3,
            (17, [b"device:a", b"device:b", b"device:bad id", b"device:c"]),
            [encoded("a"), b"garbage", encoded("c", persist=False)],
            1,
            (None, [b"device:d"]),
            [None],
            b"none",  # gone since the scan
            2,  # two datatype numbers: two per-datatype time indexes
            [b"12", 2],
            [b"0", 1],
            ["0", 0],
            [b"0", 0],
            [b"0", 4],
            [b"0", 1],
            [b"0", 0],
        ],
    )
    assert lua.LAYOUT_VERSION == 2
    assert ops == [
        Command(("SET", "device index:layout", 2, "NX")),
        Command(("SMEMBERS", "device index:datatypes"), key="device index:datatypes"),
        Command(
            (
                "DEL",
                "device index:datatypes",
                "device index:updated:hum",
                "device index:updated:temp",
            )
        ),
        ScanBatch("device:*", None, flows.SCAN_COUNT),
        Command(("MGET", "device:a", "device:b", "device:c")),
        call(
            lua.REINDEX,
            "a",
            "temp",
            score(persist=True),
            lua.value_digest(encoded("a")),
            "c",
            "temp",
            score(persist=False),
            lua.value_digest(encoded("c", persist=False)),
            keys=["device:a", "device:c"],
        ),
        ScanBatch("device:*", 17, flows.SCAN_COUNT),
        Command(("MGET", "device:d")),
        Command(("TYPE", "device:d")),
        Command(("HLEN", "device index:types")),
        call(lua.SWEEP, "0", keys=["device index:ids"]),
        call(lua.SWEEP, "12", keys=["device index:ids"]),
        call(lua.SWEEP, "0", keys=["device index:expiry"]),
        call(lua.SWEEP, "0", keys=["device index:by-type"]),
        call(lua.SWEEP, "0", keys=["device index:by-time"]),
        call(lua.SWEEP, "0", keys=["device index:by-time:1"]),
        call(lua.SWEEP, "0", keys=["device index:by-time:2"]),
    ]
    assert ops[:3] == legacy_step(KeyStrategy(), 0, ["temp", "hum"])
    assert report == RepairReport(
        scanned=4, indexed=1, orphans_removed=8, corrupted=["device:bad id", "device:b"]
    )


def test_repair_of_an_empty_cache_in_layout_2() -> None:
    report, ops = run_flow(
        flows.repair(ctx()),
        [None, set(), (None, []), 0, [b"0", 0], [b"0", 0], [b"0", 0], [b"0", 0]],
    )
    # Marked already (SET NX answers nil), no layout-1 datatypes: nothing deleted. No datatype
    # numbers: the four fixed indexes are swept, no per-datatype one.
    assert ops == [
        *legacy_step(KeyStrategy(), 0),
        ScanBatch("device:*", None, flows.SCAN_COUNT),
        Command(("HLEN", "device index:types")),
        call(lua.SWEEP, "0", keys=["device index:ids"]),
        call(lua.SWEEP, "0", keys=["device index:expiry"]),
        call(lua.SWEEP, "0", keys=["device index:by-type"]),
        call(lua.SWEEP, "0", keys=["device index:by-time"]),
    ]
    assert report == RepairReport()


# --- buckets (Redis Cluster) ---------------------------------------------------------------------

BUCKETED = KeyStrategy(buckets=4)


def bctx() -> flows.FlowContext:
    return flows.FlowContext(keys=BUCKETED, codec=CODEC, ttl_ms=1000)


def bucket_call(
    script: LuaScript, bucket: int, *args: object, keys: Sequence[str] = ()
) -> ScriptCall:
    k = BUCKETED
    return ScriptCall(
        script,
        (*k.index_keys(bucket), *keys),
        (k.bucket_device_prefix(bucket), k.datatype_time_prefix(bucket), *args),  # type: ignore[arg-type]
    )


def ids_in(bucket: int, count: int, start: int = 0) -> list[str]:
    """The first ``count`` ids "d<n>" (n >= start) of ``bucket``."""
    found: list[str] = []
    n = start
    while len(found) < count:
        if BUCKETED.bucket_of(f"d{n}") == bucket:
            found.append(f"d{n}")
        n += 1
    return found


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


def mgets(ids: Sequence[str]) -> Command | Pipeline:
    """The MGETs of a page read in a cluster: one per bucket, in order of first appearance."""
    groups = BUCKETED.group_by_bucket(list(ids))
    commands = [
        Command(("MGET", *(BUCKETED.device_key(ids[p]) for p in group)))
        for group in groups.values()
    ]
    return commands[0] if len(commands) == 1 else Pipeline(tuple(commands))


def test_bucketed_put_many_checks_every_bucket_then_sends_one_put_per_bucket() -> None:
    ids = [f"d{n}" for n in range(12)]
    items = [make(i) for i in ids]
    buckets = list(dict.fromkeys(BUCKETED.bucket_of(i) for i in ids))
    assert len(buckets) > 1
    replies = [[0] * len(buckets), [3] * len(buckets)]
    written, ops = run_flow(flows.put_many(bctx(), items), replies)
    assert written == 3 * len(buckets)
    checks, op = ops
    assert isinstance(checks, Pipeline)
    assert isinstance(op, Pipeline)
    assert len(op.commands) == len(checks.commands) == len(buckets)
    seen: list[str] = []
    for bucket, check, entry in zip(buckets, checks.commands, op.commands, strict=True):
        members = [i for i in ids if BUCKETED.bucket_of(i) == bucket]
        rows: list[object] = []
        for i in members:
            rows += [i, encoded(i), "temp", score()]
        keys = [BUCKETED.device_key(i) for i in members]
        # The check pass: the batch script (one device too), the flag after a "c".
        assert check == bucket_call(lua.PUT, bucket, 1000, "c0", *rows, keys=keys)
        script = lua.PUT_ONE if len(members) == 1 else lua.PUT
        assert entry == bucket_call(script, bucket, 1000, 0, *rows, keys=keys)
        # Everything a script touches lives in one slot: its keys, and those it forms from the
        # device prefix and the per-datatype time index prefix.
        assert len({slot(key) for key in entry.keys}) == 1
        assert len(entry.keys) == 6 + len(members)
        for prefix in entry.args[:2]:
            assert isinstance(prefix, str)
            assert slot(prefix + "x") == slot(entry.keys[0])
        seen += members
    assert sorted(seen) == sorted(ids)


def test_bucketed_put_many_in_one_bucket_is_one_call_without_a_check() -> None:
    ids = ids_in(2, 3)
    written, ops = run_flow(flows.put_many(bctx(), [make(i) for i in ids]), [3])
    assert written == 3
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.script is lua.PUT
    assert op.args[3] == 0


def test_bucketed_put_of_one_device_is_a_bare_script_call() -> None:
    _, ops = run_flow(flows.put(bctx(), make("a")), [1])
    bucket = BUCKETED.bucket_of("a")
    assert ops == [
        bucket_call(
            lua.PUT_ONE,
            bucket,
            1000,
            0,
            "a",
            encoded("a"),
            "temp",
            score(),
            keys=[BUCKETED.device_key("a")],
        )
    ]


def test_bucketed_put_many_refused_by_a_bucket_check_writes_nothing() -> None:
    ids = [*ids_in(0, 1), *ids_in(1, 1)]
    refusal = BackendError("Redis error (script 'put'): WRONGTYPE ...")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        run_flow(flows.put_many(bctx(), [make(i) for i in ids]), [[0, refusal]])
    # Only the check pass ran: the run ended at its reply.
    flow = flows.put_many(bctx(), [make(i) for i in ids])
    first = next(flow)
    assert isinstance(first, Pipeline)
    assert all(isinstance(c, ScriptCall) and c.args[3] == "c0" for c in first.commands)
    # A conditional put's check knows it is one (and a retried one, that it is retried).
    flow = flows.put_many(bctx(), [make(i) for i in ids], if_newer=True, retried=True)
    checks = next(flow)
    assert isinstance(checks, Pipeline)
    assert all(isinstance(c, ScriptCall) and c.args[3] == "c2" for c in checks.commands)
    with pytest.raises(BackendError):
        flow.send([0, refusal])


def test_bucketed_put_many_failing_in_one_bucket_while_writing_says_what_was_done() -> None:
    a = ids_in(0, 2)
    b = ids_in(1, 1)
    c = ids_in(3, 2)
    items = [make(i) for i in (*a, *b, *c)]
    lost = BackendConnectionError("Redis connection failed (script 'put'): lost")
    with pytest.raises(PartialWriteError) as caught:
        run_flow(flows.put_many(bctx(), items), [[0, 0, 0], [2, lost, 1]])
    error = caught.value
    assert (error.operation, error.done, error.failed, error.count) == ("put_many", a + c, b, 3)
    assert error.errors == [lost]
    assert error.__cause__ is lost
    assert error.retryable
    assert RetryPolicy(attempts=2).is_retryable(error)
    assert "1 of 5 devices failed" in str(error)
    # A refusal that began in between: not retryable.
    refused = BackendError("Redis error (script 'put'): OOM ...")
    with pytest.raises(PartialWriteError) as caught:
        run_flow(flows.put_many(bctx(), items), [[0, 0, 0], [2, lost, refused]])
    assert not caught.value.retryable
    assert not RetryPolicy(attempts=2).is_retryable(caught.value)
    assert (caught.value.done, caught.value.failed, caught.value.count) == (a, b + c, 2)
    # Every bucket refused: nothing was written, the first bucket's error as it is.
    with pytest.raises(BackendError, match="OOM"):
        run_flow(flows.put_many(bctx(), items), [[0, 0, 0], [refused, refused, refused]])
    # Every bucket failed, one with a lost connection (it may have been written): partial.
    with pytest.raises(PartialWriteError) as caught:
        run_flow(flows.put_many(bctx(), items), [[0, 0, 0], [lost, refused, refused]])
    assert (caught.value.done, caught.value.count) == ([], 0)
    assert "unknown where a connection was lost" in str(caught.value)
    # The write pipeline failed as a whole (no reply for any bucket): every id unknown.
    with pytest.raises(PartialWriteError) as caught:
        run_flow(flows.put_many(bctx(), items), [[0, 0, 0], lost])
    assert (caught.value.done, sorted(caught.value.failed)) == ([], sorted(a + b + c))
    assert caught.value.retryable
    assert caught.value.__cause__ is lost


def test_bucketed_delete_many_checks_every_bucket_then_sends_one_delete_per_bucket() -> None:
    (a0,) = ids_in(0, 1)
    a2, b2 = ids_in(2, 2)
    key = BUCKETED.device_key
    deleted, ops = run_flow(flows.delete_many(bctx(), [a2, a0, b2]), [[0, 0], [2, 0]])
    assert deleted == 2
    assert ops == [
        Pipeline(
            (
                bucket_call(lua.DELETE, 2, "c", a2, b2, keys=[key(a2), key(b2)]),
                bucket_call(lua.DELETE, 0, "c", a0, keys=[key(a0)]),
            )
        ),
        Pipeline(
            (
                bucket_call(lua.DELETE, 2, 0, a2, b2, keys=[key(a2), key(b2)]),
                bucket_call(lua.DELETE, 0, 0, a0, keys=[key(a0)]),
            )
        ),
    ]
    lost = BackendTimeoutError("Redis did not answer in time (script 'delete')")
    with pytest.raises(PartialWriteError) as caught:
        run_flow(flows.delete_many(bctx(), [a2, a0, b2]), [[0, 0], [lost, 1]])
    assert (caught.value.operation, caught.value.done, caught.value.failed) == (
        "delete_many",
        [a0],
        [a2, b2],
    )
    assert caught.value.count == 1
    assert caught.value.retryable
    # One bucket: one call, no check.
    deleted, ops = run_flow(flows.delete_many(bctx(), [a2, b2]), [2])
    assert ops == [bucket_call(lua.DELETE, 2, 0, a2, b2, keys=[key(a2), key(b2)])]


def test_bucketed_get_many_groups_mgets_by_bucket_and_keeps_request_order() -> None:
    a0, b0 = ids_in(0, 2)
    a2, b2 = ids_in(2, 2)
    (a3,) = ids_in(3, 1)
    ids = [a2, a0, a3, b2, b0]
    key = BUCKETED.device_key
    result, ops = run_flow(
        flows.get_many(bctx(), ids),
        [
            [
                [encoded(a2), None],  # bucket 2: a2, b2
                [encoded(a0), None],  # bucket 0: a0, b0
                [encoded(a3)],  # bucket 3
            ],
            [b"none", b"hash"],
        ],
    )
    assert ops == [
        Pipeline(
            (
                Command(("MGET", key(a2), key(b2))),
                Command(("MGET", key(a0), key(b0))),
                Command(("MGET", key(a3))),
            )
        ),
        # The nil replies, back in request order.
        Pipeline((Command(("TYPE", key(b2))), Command(("TYPE", key(b0))))),
    ]
    assert list(result.found) == [a2, a0, a3]
    assert result.found[a3] == make(a3)
    assert result.missing == [b2]
    assert set(result.corrupted) == {b0}
    assert result.corrupted[b0].key == key(b0)


def test_bucketed_get_many_in_one_bucket_is_a_bare_mget() -> None:
    ids = ids_in(1, 3)
    result, ops = run_flow(flows.get_many(bctx(), ids), [[encoded(i) for i in ids]])
    assert ops == [Command(("MGET", *BUCKETED.device_keys(ids)))]
    assert list(result.found) == ids


def test_bucketed_list_ids_merges_the_buckets_in_id_order() -> None:
    per_bucket = [sorted(ids_in(bucket, 4)) for bucket in range(4)]
    everything = sorted(i for ids in per_bucket for i in ids)
    assert everything != [i for ids in per_bucket for i in ids]  # the buckets interleave
    # Each bucket's reply is id-ordered (its two blocks merged by the script).
    replies = [[i.encode() for i in ids] for ids in per_bucket]
    slow = replies[0]  # bucket 0 answers one id at a time; the others at once
    first = [chunk(slow[:1], slow[0])] + [chunk(ids, None) for ids in replies[1:]]
    result, ops = run_flow(flows.list_ids(bctx()), [first, chunk(slow[1:], None)])
    assert result == everything
    # One stream per bucket (both blocks: block ""), all fetched in one round trip; ids only.
    assert ops[0] == Pipeline(
        tuple(bucket_call(lua.RANGE, bucket, *range_args("-", "+")) for bucket in range(4))
    )
    # Bucket 0 is refetched alone when its buffer runs dry, while the others wait.
    assert ops[1:] == [bucket_call(lua.RANGE, 0, *range_args(b"(" + slow[0], "+"))]


def test_bucketed_list_ids_stops_at_the_limit() -> None:
    result, ops = run_flow(
        flows.list_ids(bctx(), pattern="x*", limit=3),
        [
            [
                chunk([b"x1", b"x5"], b"x6"),  # more to come: never fetched
                chunk([b"x2"], None),
                chunk([], None),
                chunk([b"x3", b"x4"], b"x4"),
            ]
        ],
    )
    assert result == ["x1", "x2", "x3"]
    assert len(ops) == 1
    (op,) = ops
    assert isinstance(op, Pipeline)
    # Every bucket's first chunk: limit + 1 entries, of both blocks.
    assert [entry.args[2:] for entry in op.commands] == [range_args("[x", b"(x\xff", count=4)] * 4


def test_bucketed_query_by_id_sums_the_counts_and_reads_the_page_with_mgets() -> None:
    # Bucket 0: d0, d2; bucket 1: d4; bucket 2: d1; bucket 3: d15, d5, d7 (by id).
    assert [ids_in(b, 2) for b in range(4)] == [
        ["d0", "d2"],
        ["d4", "d6"],
        ["d1", "d3"],
        ["d5", "d7"],
    ]
    assert BUCKETED.bucket_of("d15") == 3
    page, ops = run_flow(
        flows.query(bctx(), DeviceQuery(limit=2)),
        [
            [
                chunk([b"d0", b"d2"], None, [], 2),
                chunk([b"d4"], None, [], 1),
                chunk([b"d1"], None, [], 1),
                chunk([b"d15", b"d5", b"d7"], None, [], 3),
            ],
            [[encoded("d0")], [encoded("d1")]],
        ],
    )
    # One call per bucket over both blocks, each with its bucket's count; no matcher, but no
    # values in a cluster: the buckets are merged here, then one MGET per bucket.
    assert ops == [
        Pipeline(
            tuple(
                bucket_call(lua.RANGE, b, *range_args("-", "+", count=3, total=True))
                for b in range(4)
            )
        ),
        mgets(["d0", "d1"]),
    ]
    assert isinstance(ops[1], Pipeline)
    assert [m.device_id for m in page.items] == ["d0", "d1"]
    assert page.total == 7
    assert page.next_cursor is not None  # d15 was the third


def test_bucketed_query_with_a_persist_filter_walks_one_block_per_bucket_without_values() -> None:
    (a1,) = ids_in(1, 1)
    page, ops = run_flow(
        flows.query(bctx(), DeviceQuery(persist=False, limit=1)),
        [
            [chunk([], None), chunk([a1.encode()], None), chunk([], None), chunk([], None)],
            [encoded(a1, persist=False)],
        ],
    )
    assert ops == [
        Pipeline(
            tuple(
                bucket_call(lua.RANGE, b, *range_args("-", "+", block="0", count=2))
                for b in range(4)
            )
        ),
        Command(("MGET", BUCKETED.device_key(a1))),
    ]
    assert page.items == [make(a1, persist=False)]
    assert page.next_cursor is None


def test_bucketed_query_by_last_updated_fetches_only_the_streams_that_ran_dry() -> None:
    t = datetime_to_ms(WHEN) * 2
    h1, h2 = ids_in(0, 2)
    t1, t2 = ids_in(1, 2)

    def walk(bucket: int, **kwargs: Any) -> ScriptCall:
        return bucket_call(lua.TIME_RANGE, bucket, *time_range_args(**kwargs))

    page, ops = run_flow(
        flows.query(bctx(), DeviceQuery(sort="last_updated", limit=2)),
        [
            [
                # Every bucket's first chunk carries its device count.
                chunk(timed((h1, t + 2)), [str(t + 2).encode(), h1.encode()], [], 2),  # more
                chunk(timed((t1, t + 4), (t2, t + 8)), None, [], 2),
                chunk([], None, [], 0),
                chunk([], None, [], 0),
            ],
            chunk(timed((h2, t + 6)), None),
            [[encoded(h1)], [encoded(t1)]],
        ],
    )
    assert ops == [
        # limit + 1 from every bucket, with the count; several streams: no values.
        Pipeline(tuple(walk(b, count=3, total=True) for b in range(4))),
        # Only bucket 0 ran dry; its next chunk is four times the first, without the count.
        walk(0, after=(t + 2, h1), count=12),
        # The page, one MGET per bucket.
        Pipeline(
            (Command(("MGET", BUCKETED.device_key(h1))), Command(("MGET", BUCKETED.device_key(t1))))
        ),
    ]
    assert [m.device_id for m in page.items] == [h1, t1]
    assert page.items[1] == make(t1)
    assert page.total == 4  # summed over the buckets
    # h2 was the third match; the next page resumes after t1 in every bucket.
    assert page.next_cursor is not None
    query = DeviceQuery(sort="last_updated", limit=2, cursor=page.next_cursor)
    second, ops = run_flow(flows.query(bctx(), query), [[chunk([], None)] * 4])
    assert ops == [Pipeline(tuple(walk(b, after=(t + 4, t1), count=3) for b in range(4)))]
    assert second.items == []
    assert second.total is None


def test_bucketed_query_with_a_filter_reads_the_page_with_one_mget_per_bucket() -> None:
    (a0,) = ids_in(0, 1)
    (a2,) = ids_in(2, 1)
    key = BUCKETED.device_key
    query = DeviceQuery(pattern="d?*", limit=3)  # a glob matched here: no values from the walk
    replies = [chunk([], None)] * 4
    replies[0] = chunk([a0.encode()], None)
    replies[2] = chunk([a2.encode()], None)
    page, ops = run_flow(flows.query(bctx(), query), [replies, [[encoded(a0)], [encoded(a2)]]])
    assert ops == [
        Pipeline(
            tuple(
                bucket_call(lua.RANGE, b, *range_args("[d", b"(d\xff", count=4)) for b in range(4)
            )
        ),
        Pipeline((Command(("MGET", key(a0))), Command(("MGET", key(a2))))),
    ]
    assert [m.device_id for m in page.items] == sorted([a0, a2])
    assert page.total is None


def test_bucketed_query_by_id_of_a_time_range_reads_small_buckets_whole_and_walks_others() -> None:
    lo = after_bound(WHEN)
    assert [ids_in(b, 3) for b in (0, 1, 3)] == [
        ["d0", "d2", "d9"],
        ["d4", "d6", "d14"],
        ["d5", "d7", "d15"],
    ]
    assert BUCKETED.bucket_of("d16") == 1

    def walked(bucket: int, start: str | bytes, count: int) -> ScriptCall:
        return bucket_call(lua.RANGE, bucket, *range_args(start, "+", count=count, lo=lo))

    page, ops = run_flow(
        flows.query(bctx(), DeviceQuery(updated_after=WHEN, limit=3)),
        [
            [
                read_whole(3, [b"d0", b"d2", b"d9"], None),  # small: read whole, sorted by id
                walk_by_id(800),  # large: walked by id
                read_whole(0, [], None),  # empty
                walk_by_id(650),  # large
            ],
            [
                chunk([b"d14"], b"d16"),  # bucket 1: d16 examined, out of the range
                chunk([b"d15"], None),  # bucket 3
            ],
            chunk([b"d4"], None),
            [[encoded("d0")], [encoded("d14")], [encoded("d15")]],
        ],
    )
    assert ops == [
        # Every bucket plans its range and answers its first chunk (limit + 1); a cluster: no
        # values (the page is read with MGETs).
        Pipeline(
            tuple(bucket_call(lua.TIME_SET, b, *time_set_args(lo=lo, limit=3)) for b in range(4))
        ),
        # Only the large buckets are walked, one stream each (both blocks), with the time bounds;
        # never the count.
        Pipeline((walked(1, "-", 4), walked(3, "-", 4))),
        # Bucket 1 ran dry first: it alone is fetched again (bucket 0 ended: never again).
        walked(1, b"(d16", 16),
        mgets(["d0", "d14", "d15"]),
    ]
    assert isinstance(ops[-1], Pipeline)  # one MGET per bucket
    # Merged by id with bucket 0's ids: d0, d14, d15, then d2 (the fourth match).
    assert [m.device_id for m in page.items] == ["d0", "d14", "d15"]
    assert page.next_cursor is not None
    assert page.total is None


def test_bucketed_query_by_id_of_a_time_range_asks_a_bucket_read_whole_again_when_dry() -> None:
    lo = after_bound(WHEN)
    assert [BUCKETED.bucket_of(i) for i in ("d10", "d12", "d19", "d2", "d9")] == [0] * 5
    assert [BUCKETED.bucket_of(i) for i in ("d11", "d3")] == [2, 2]
    assert BUCKETED.bucket_of("d5") == 3

    def time_set(bucket: int, after: str = "", want: int = 2) -> ScriptCall:
        args = time_set_args(lo=lo, limit=1, prefix="d", after=after, want=want, whole=bool(after))
        return bucket_call(lua.TIME_SET, bucket, *args)

    # "d?": the server keeps the ids starting "d", the client rejects the longer ones.
    page, ops = run_flow(
        flows.query(bctx(), DeviceQuery(updated_after=WHEN, pattern="d?", limit=1)),
        [
            [
                read_whole(6, [b"d10", b"d12"], b"d12"),  # both rejected here
                read_whole(0, [], None),
                walk_by_id(900),
                read_whole(1, [b"d5"], None),
            ],
            chunk([b"d11", b"d3"], b"d3"),  # bucket 2, walked
            read_whole(6, [b"d19", b"d2"], b"d2"),  # bucket 0 again: d2 matches
            read_whole(6, [b"d9"], None),  # bucket 0 once more: the range ends
            [encoded("d2")],
        ],
    )
    assert ops == [
        Pipeline(tuple(time_set(b) for b in range(4))),
        bucket_call(lua.RANGE, 2, *range_args("[d", b"(d\xff", count=2, lo=lo)),
        # d10, d11 and d12 rejected: bucket 0 ran dry, and goes on after the last id examined;
        # its chunks grow fourfold like a walk's.
        time_set(0, after="d12"),
        time_set(0, after="d2", want=8),
        Command(("MGET", BUCKETED.device_key("d2"))),
    ]
    # d2, then d3 (the second match: a next page).
    assert [m.device_id for m in page.items] == ["d2"]
    assert page.next_cursor is not None
    assert page.total is None


def test_bucketed_count_and_info_sum_over_the_buckets() -> None:
    total, ops = run_flow(flows.count(bctx()), [[1, 2, 0, 4]])
    assert total == 7
    assert ops == [Pipeline(tuple(bucket_call(lua.COUNT, b) for b in range(4)))]
    low, high = score(WHEN, persist=False), score(WHEN + timedelta(days=1))
    result, ops = run_flow(
        flows.info(bctx()),
        [
            [
                [1, str(high).encode(), str(high).encode()],
                [0, None, None],
                [2, str(low).encode(), str(low + 10).encode()],
                [0, None, None],
            ],
            {"node-1": {"used_memory": 10}, "node-2": {"used_memory": 5}},
        ],
    )
    assert ops[0] == Pipeline(
        tuple(bucket_call(lua.INFO, b, flows.INFO_BUDGET, "", "", "", "") for b in range(4))
    )
    assert result.total_devices == 3
    assert result.oldest_entry_timestamp == WHEN
    assert result.newest_entry_timestamp == WHEN + timedelta(days=1)
    assert result.memory_usage_bytes == 15


def test_bucketed_repair_moves_scans_every_bucket_and_reindexes_per_bucket() -> None:
    (a0,) = ids_in(0, 1)
    (a3,) = ids_in(3, 1)
    key = BUCKETED.device_key
    replies: list[object] = []
    for bucket in range(4):
        # Bucket 2 is in layout 1, with one datatype (a client that decodes replies: str).
        replies += [b"OK", {"temp"}, 2] if bucket == 2 else [None, set()]
    replies += [
        (None, [key(a3).encode(), key(a0).encode(), b"device:plain", b"device index:{b0}:ids"]),
        [[encoded(a3)], [encoded(a0)]],
        [1, 0],
    ]
    for _ in range(4):
        replies += [1, [b"0", 0], [b"0", 1], [b"0", 0], [b"0", 0], [b"0", 0]]
    report, ops = run_flow(flows.repair(bctx()), replies)
    scan = ops.index(ScanBatch(BUCKETED.device_pattern(), None, flows.SCAN_COUNT))
    assert ops[:scan] == [
        *legacy_step(BUCKETED, 0),
        *legacy_step(BUCKETED, 1),
        *legacy_step(BUCKETED, 2, ["temp"]),
        *legacy_step(BUCKETED, 3),
    ]
    # The legacy keys of a bucket share its slot: one DEL.
    (delete,) = [op for op in ops if isinstance(op, Command) and op.args[0] == "DEL"]
    assert len({slot(str(k)) for k in delete.args[1:]}) == 1
    assert ops[scan + 2] == Pipeline(
        (
            bucket_call(
                lua.REINDEX, 3, a3, "temp", score(), lua.value_digest(encoded(a3)), keys=[key(a3)]
            ),
            bucket_call(
                lua.REINDEX, 0, a0, "temp", score(), lua.value_digest(encoded(a0)), keys=[key(a0)]
            ),
        )
    )
    hlens = [op for op in ops if isinstance(op, Command) and op.args[0] == "HLEN"]
    assert hlens == [Command(("HLEN", BUCKETED.types_index(b))) for b in range(4)]
    sweeps = [op for op in ops if isinstance(op, ScriptCall) and op.script is lua.SWEEP]
    assert len(sweeps) == 4 * 5
    for bucket in range(4):
        assert [s.keys[:6] for s in sweeps[5 * bucket : 5 * bucket + 5]] == [
            tuple(BUCKETED.index_keys(bucket))
        ] * 5
        assert [s.keys[6] for s in sweeps[5 * bucket : 5 * bucket + 5]] == [
            BUCKETED.ids_index(bucket),
            BUCKETED.expiry_index(bucket),
            BUCKETED.by_type_index(bucket),
            BUCKETED.by_time_index(bucket),
            BUCKETED.datatype_time_index(1, bucket),
        ]
    assert report == RepairReport(scanned=2, indexed=1, orphans_removed=4, corrupted=[])


# --- health --------------------------------------------------------------------------------------


def healthy_info(**changes: object) -> dict[str, object]:
    info: dict[str, object] = {
        "redis_version": "7.2.4",
        "role": "master",
        "used_memory": 1000,
        "maxmemory": 0,
    }
    info.update(changes)
    return info


IDS_KEY = KeyStrategy().ids_index(0)
PROBE = (
    Command(("EXISTS", IDS_KEY), key=IDS_KEY),
    Command(("EVALSHA", "0" * 40, 1, IDS_KEY), key=IDS_KEY),
)
HEALTH = Pipeline((Command(("PING",)), Command(("INFO",)), *PROBE))
NOSCRIPT = BackendError("Redis error (EVALSHA): No matching script. Please use EVAL.")


def health_replies(info: object = None, read: object = 0, write: object = NOSCRIPT) -> list[object]:
    """The one pipeline reply of a single-node health check."""
    return [[b"PONG", healthy_info() if info is None else info, read, write]]


def test_health_healthy() -> None:
    status, ops = run_flow(flows.health(ctx()), health_replies())
    assert ops == [HEALTH]  # one round trip
    assert status.status == "healthy"
    assert status.is_healthy
    assert status.latency_ms is not None
    assert status.latency_ms >= 0
    assert status.details["redis_version"] == "7.2.4"
    assert status.details["role"] == "master"
    assert status.timestamp.tzinfo is not None


def test_health_names_valkey_and_its_version() -> None:
    assert "valkey_version" not in run_flow(flows.health(ctx()), health_replies())[0].details
    valkey = healthy_info(server_name="valkey", valkey_version="8.1.8")
    status, _ = run_flow(flows.health(ctx()), health_replies(valkey))
    assert status.details["redis_version"] == "7.2.4"  # the Redis API it serves
    assert status.details["valkey_version"] == "8.1.8"


def test_health_on_a_cluster_broadcasts_then_probes() -> None:
    keys = BUCKETED.ids_index(0)
    probe = Pipeline(
        (
            Command(("EXISTS", keys), key=keys),
            Command(("EVALSHA", "0" * 40, 1, keys), key=keys),
        )
    )
    info = {"n1": healthy_info(), "n2": healthy_info()}
    status, ops = run_flow(flows.health(bctx()), [b"PONG", b"PONG", info, [0, NOSCRIPT]])
    assert ops == [PING, PING, INFO, probe]
    assert status.status == "healthy"
    assert status.details["nodes"] == 2


@pytest.mark.parametrize(
    "error",
    [
        BackendConnectionError("Redis connection failed: refused"),
        BackendTimeoutError("Redis did not answer in time"),
        BackendError("Redis error: something"),
    ],
)
def test_health_unhealthy_when_unreachable(error: BackendError) -> None:
    status, ops = run_flow(flows.health(ctx()), [error])
    assert ops == [HEALTH]
    assert status.status == "unhealthy"
    assert not status.is_healthy
    assert status.latency_ms is None
    assert status.details["error"] == type(error).__name__
    assert str(error) in status.message


def test_health_unhealthy_on_authentication_failure() -> None:
    status, _ = run_flow(flows.health(ctx()), [AuthenticationError("WRONGPASS")])
    assert status.status == "unhealthy"
    assert status.message.startswith("authentication failed")
    assert status.details["error"] == "AuthenticationError"


def test_health_unhealthy_when_the_cache_keys_cannot_be_read() -> None:
    denied = AuthenticationError("authentication failed (key 'x'): NOPERM no access to keys")
    status, _ = run_flow(flows.health(ctx()), health_replies(read=denied, write=denied))
    assert status.status == "unhealthy"
    assert status.message.startswith("permission denied: cannot read the cache's keys")
    assert "NOPERM" in status.message


def test_health_degraded_when_the_write_scripts_are_refused() -> None:
    denied = AuthenticationError("authentication failed: NOPERM this user cannot run 'evalsha'")
    status, _ = run_flow(flows.health(ctx()), health_replies(write=denied))
    assert status.status == "degraded"
    assert "read-only access" in status.message


def test_health_degraded_when_scripts_are_unavailable() -> None:
    status, _ = run_flow(
        flows.health(ctx()), health_replies(write=BackendError("ERR unknown command 'EVALSHA'"))
    )
    assert status.status == "degraded"
    assert "scripts unavailable" in status.message


def test_health_degraded_when_a_round_trip_is_slow() -> None:
    flow = flows.health(ctx(slow_ms=1.0))
    assert next(flow) == HEALTH
    time.sleep(0.005)
    with pytest.raises(StopIteration) as stop:
        flow.send(health_replies()[0])
    status = stop.value.value
    assert status.status == "degraded"
    assert "slow" in status.message
    assert status.latency_ms is not None
    assert status.latency_ms >= 5


def test_health_degraded_near_maxmemory() -> None:
    info = healthy_info(used_memory=950, maxmemory=1000)
    status, _ = run_flow(flows.health(ctx()), health_replies(info))
    assert status.status == "degraded"
    assert "maxmemory" in status.message
    assert status.details["used_memory"] == 950
    assert status.details["maxmemory"] == 1000


def test_health_below_the_memory_ratio_is_healthy() -> None:
    info = healthy_info(used_memory=800, maxmemory=1000)
    status, _ = run_flow(flows.health(ctx()), health_replies(info))
    assert status.status == "healthy"


@pytest.mark.parametrize("read_only", [1, "1", "yes-missing"])
def test_health_degraded_on_a_read_only_replica(read_only: object) -> None:
    info = healthy_info(role="slave")
    if read_only != "yes-missing":
        info["slave_read_only"] = read_only
    status, _ = run_flow(flows.health(ctx()), health_replies(info))
    assert status.status == "degraded"
    assert "read-only" in status.message
    assert status.details["role"] == "slave"


def test_health_writable_replica_is_healthy() -> None:
    info = healthy_info(role="slave", slave_read_only=0)
    status, _ = run_flow(flows.health(ctx()), health_replies(info))
    assert status.status == "healthy"


def test_health_several_problems_are_all_reported() -> None:
    flow = flows.health(ctx(slow_ms=1.0))
    next(flow)
    time.sleep(0.005)
    with pytest.raises(StopIteration) as stop:
        flow.send(health_replies(healthy_info(role="slave", used_memory=99, maxmemory=100))[0])
    status = stop.value.value
    assert status.status == "degraded"
    assert status.message.count(";") == 2


@pytest.mark.parametrize("bucketed", [False, True])
def test_health_when_info_is_disabled(bucketed: bool) -> None:
    disabled = BackendError("ERR unknown command 'INFO'")
    if bucketed:
        status, _ = run_flow(flows.health(bctx()), [b"PONG", b"PONG", disabled, [0, NOSCRIPT]])
    else:
        status, _ = run_flow(flows.health(ctx()), health_replies(disabled))
    assert status.status == "healthy"
    assert "unknown command" in status.details["info_error"]
    assert status.details["redis_version"] is None


def test_get_many_does_not_report_a_failed_type_check_as_missing() -> None:
    error = BackendConnectionError("Redis is unavailable (TYPE): LOADING")
    with pytest.raises(BackendConnectionError):
        run_flow(flows.get_many(ctx(), ["x"]), [[None], error])
