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
    RepairReport,
    ValidationError,
)
from cache_service_client._validation import datetime_to_ms
from cache_service_client.repository.redis import flows, lua
from cache_service_client.repository.redis.ops import (
    Command,
    Flow,
    LuaScript,
    Op,
    Pipeline,
    ScanBatch,
    ScriptCall,
)

T = TypeVar("T")

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
LATER = WHEN + timedelta(milliseconds=1)
# KEYS[1..3] and ARGV[1..2] of every script call on a single node.
INDEX_KEYS = ("device index:ids", "device index:expiry", "device index:datatypes")
PREFIXES = ("device:", "device index:updated:")
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


def test_put_yields_the_same_script_call() -> None:
    result, ops = run_flow(flows.put(ctx(ttl_ms=1), make("a")), [1])
    assert result is True
    assert ops == [call(lua.PUT, 1, 0, "a", encoded("a"), "temp", score(), keys=["device:a"])]


def test_conditional_put_sets_the_flag_and_reports_a_skip() -> None:
    result, ops = run_flow(flows.put(ctx(ttl_ms=1), make("a"), True), [0])
    assert result is False
    assert ops == [call(lua.PUT, 1, 1, "a", encoded("a"), "temp", score(), keys=["device:a"])]
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
    assert ops == [call(lua.DELETE, "a", keys=["device:a"])]


def test_delete_many() -> None:
    result, ops = run_flow(flows.delete_many(ctx(), ["a", "b", "a"]), [1])
    assert result == 1
    assert ops == [call(lua.DELETE, "a", "b", keys=["device:a", "device:b"])]
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


def test_info() -> None:
    # The script answers the lowest and highest index score: ms * 2 + persist.
    oldest, newest = score(WHEN, persist=False), score(WHEN + timedelta(days=1), persist=True)
    result, ops = run_flow(
        flows.info(ctx()), [[3, str(oldest).encode(), str(newest).encode()], {"used_memory": 123}]
    )
    assert ops == [
        call(lua.INFO, flows.INFO_BUDGET),
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


def range_call(
    start: str | bytes,
    stop: str | bytes,
    *,
    count: int = flows.RANGE_CHUNK,
    reverse: bool = False,
    scores: bool = False,
    values: bool = False,
    total: bool = False,
) -> ScriptCall:
    """A RANGE call examining ``count`` entries (a walk's first chunk: limit + 1, then x4).

    ``values``: the live entries' values are asked too; ``total``: the bucket's device count.
    """
    flags = (flag(reverse), flag(scores), flag(values), flag(total))
    return call(lua.RANGE, start, stop, count, *flags)


def chunk(
    items: Sequence[object],
    last: object,
    values: Sequence[object] = (),
    total: int | None = None,
) -> list[object]:
    """A RANGE or SCORE_MERGE reply: {live entries, last examined or nil, values, count or nil}."""
    return [list(items), last, list(values), total]


def test_list_ids_walks_the_literal_prefix_range_in_chunks() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="dev-1*"),
        [
            chunk([b"dev-1", b"dev-10"], b"dev-10"),
            chunk([b"dev-11"], b"dev-12"),  # dev-12 was examined but its key is gone
            chunk([], None),
        ],
    )
    assert result == ["dev-1", "dev-10", "dev-11"]
    assert ops == [
        range_call("[dev-1", b"[dev-1\xff"),
        range_call(b"(dev-10", b"[dev-1\xff"),
        range_call(b"(dev-12", b"[dev-1\xff"),
    ]


def test_list_ids_continues_from_a_str_last() -> None:
    _, ops = run_flow(
        flows.list_ids(ctx(), pattern="é*"), [chunk(["é1"], "é1"), chunk(["é2"], None)]
    )
    assert ops == [
        range_call("[é", "[é".encode() + b"\xff"),
        range_call("(é1", "[é".encode() + b"\xff"),
    ]


def test_list_ids_without_pattern_reads_the_whole_index() -> None:
    result, ops = run_flow(flows.list_ids(ctx()), [chunk([b"a", b"b", "c"], None)])
    assert result == ["a", "b", "c"]
    # Unfiltered, but ids only: neither the values nor the count are asked ("0", "0").
    assert ops == [range_call("-", "+", values=False, total=False)]
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.args[-2:] == ("0", "0")


def test_list_ids_pattern_without_literal_prefix_reads_the_whole_index() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="*-1"), [chunk([b"a-1", b"a-2", b"b-1"], None)]
    )
    assert result == ["a-1", "b-1"]
    assert ops == [range_call("-", "+")]


def test_list_ids_applies_the_glob_beyond_the_prefix() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="dev-?x"),
        [chunk([b"dev-1x", b"dev-12x", b"dev-2x", b"dev-3y", "dev-éx"], None)],
    )
    # "?" matches one byte, as in Redis: "é" is two bytes in UTF-8.
    assert result == ["dev-1x", "dev-2x"]
    assert ops == [range_call("[dev-", b"[dev-\xff")]


def test_list_ids_exact_id_pattern() -> None:
    result, ops = run_flow(flows.list_ids(ctx(), pattern="ab"), [chunk([b"ab", b"abc"], None)])
    assert result == ["ab"]
    assert ops == [range_call("[ab", b"[ab\xff")]


def test_list_ids_escaped_glob_characters_are_part_of_the_prefix() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="a\\*b*"), [chunk([b"a*b", b"a*bc", b"a*c"], None)]
    )
    assert result == ["a*b", "a*bc"]
    assert ops == [range_call("[a*b", b"[a*b\xff")]


def test_list_ids_offset_and_limit_count_matching_ids_across_chunks() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="?1", offset=1, limit=2),
        [
            chunk([b"a1", b"a2", b"b1"], b"b1"),
            chunk([b"b2", b"c1", b"d1", b"e1"], b"e1"),
        ],
    )
    assert result == ["b1", "c1"]
    # offset + limit + 1 entries first, then four times as many; the limit was reached inside
    # the second chunk: no third RANGE call.
    assert ops == [range_call("-", "+", count=4), range_call(b"(b1", "+", count=16)]


def test_list_ids_without_a_limit_examines_range_chunk_entries_from_the_start() -> None:
    ids = [f"x{n:04d}".encode() for n in range(700)]
    full, rest = ids[: flows.RANGE_CHUNK], ids[flows.RANGE_CHUNK :]
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="x*", offset=600),
        [chunk(full, full[-1]), chunk(rest, None)],  # a full chunk (more to come), then the end
    )
    assert result == [i.decode() for i in ids[600:]]
    # Nothing bounds the walk: every chunk, the first included, examines RANGE_CHUNK entries.
    assert ops == [
        range_call("[x", b"[x\xff", count=flows.RANGE_CHUNK),
        range_call(b"(" + full[-1], b"[x\xff", count=flows.RANGE_CHUNK),
    ]


def test_list_ids_offset_beyond_the_end() -> None:
    result, _ = run_flow(flows.list_ids(ctx(), offset=5), [chunk([b"a", b"b"], None)])
    assert result == []


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


def merge_args(
    datatype_id: str = "",
    lo: str = "-inf",
    hi: str = "+inf",
    after: tuple[int | str, str] = ("", ""),
    *,
    count: int,
    reverse: bool = False,
    persist: str = "",
    budget: int = flows.RANGE_CHUNK,
    values: bool = False,
    total: bool = False,
) -> tuple[object, ...]:
    """SCORE_MERGE's arguments after the prefixes: ``count`` live matches asked (limit + 1 first,
    then x4), at most ``budget`` entries examined ("" datatype: all of them merged); then
    whether the values and the bucket's device count are asked too."""
    return (
        datatype_id,
        lo,
        hi,
        *after,
        count,
        flag(reverse),
        persist,
        budget,
        flag(values),
        flag(total),
    )


def score_merge_call(*args: Any, **kwargs: Any) -> ScriptCall:
    """A SCORE_MERGE call on a single node (see :func:`merge_args`)."""
    return call(lua.SCORE_MERGE, *merge_args(*args, **kwargs))


# The first chunk of a query's walk: the default page size plus one (to see a next page).
FIRST = DeviceQuery().limit + 1


def merged(*entries: tuple[str, int]) -> list[bytes | int]:
    """A SCORE_MERGE reply's flat list: id, score, id, score... (scores as integer replies)."""
    flat: list[bytes | int] = []
    for device_id, s in entries:
        flat += [device_id.encode(), s]
    return flat


def with_scores(*entries: tuple[str, str, int | None]) -> list[bytes]:
    """A RANGE reply's flat list with scores: id, datatype, score... ("" when not indexed)."""
    flat: list[bytes] = []
    for device_id, datatype_id, s in entries:
        flat += [device_id.encode(), datatype_id.encode(), b"" if s is None else str(s).encode()]
    return flat


def test_query_by_id_reads_the_page_and_the_count_in_one_walk_request() -> None:
    # No filter: every live entry the walk meets is on the page, so the walk carries the values,
    # and on a first page the count. No COUNT script call, no MGET.
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2)),
        [chunk([b"a", b"b", b"c"], None, [encoded("a"), encoded("b"), encoded("c")], 7)],
    )
    # limit + 1 entries: a full page and a next-page check.
    assert ops == [range_call("-", "+", count=3, values=True, total=True)]
    assert page.items == [make("a"), make("b")]
    assert page.total == 7
    assert page.next_cursor is not None


def test_query_cursor_resumes_after_the_last_id_of_the_previous_page() -> None:
    first, _ = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2)),
        [chunk([b"a", b"b", b"c"], None, [encoded("a"), encoded("b"), encoded("c")], 3)],
    )
    second, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2, cursor=first.next_cursor)),
        [chunk([b"c"], None, [encoded("c")])],
    )
    # No count on later pages (values still); the walk starts right after "b".
    assert ops == [range_call("(b", "+", count=3, values=True)]
    assert second.items == [make("c")]
    assert second.next_cursor is None
    assert second.total is None


def test_query_exactly_limit_matches_has_no_next_page() -> None:
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2, pattern="*")),
        [chunk([b"a", b"b"], None, [encoded("a"), encoded("b")])],
    )
    # A filter (even "*"): no count. "*" leaves nothing to the client: the values come along.
    assert ops == [range_call("-", "+", count=3, values=True)]
    assert page.items == [make("a"), make("b")]
    assert page.next_cursor is None
    assert page.total is None


def test_query_reads_limit_plus_one_matches_across_chunks() -> None:
    second = [f"a{n}".encode() for n in range(4, 10)] + [f"b{n}".encode() for n in range(6)]
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=2, pattern="?1")),
        [
            chunk([b"a1", b"a2", b"a3"], b"a3"),  # 3 entries examined, one match
            chunk(second, b"b5"),  # 12 entries examined, one match (b1)
            chunk([b"b6", b"b7", b"b8", b"b9", b"c0", b"c1", b"c2"], None),  # the index's end
            [encoded("a1"), encoded("b1")],
        ],
    )
    # The pattern is matched here: the walk returns no values, the page is read with MGET.
    # c1 is the third match: enough to know a next page exists (c2 is never looked at).
    assert ops == [
        range_call("-", "+", count=3),
        range_call(b"(a3", "+", count=12),
        range_call(b"(b5", "+", count=48),
        Command(("MGET", "device:a1", "device:b1")),
    ]
    assert [m.device_id for m in page.items] == ["a1", "b1"]
    assert page.next_cursor is not None
    assert page.total is None


def test_query_chunks_grow_fourfold_up_to_range_chunk_while_the_filter_rejects() -> None:
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
    page, ops = run_flow(flows.query(ctx(), DeviceQuery(limit=2, pattern="*-hit")), replies)
    # d1199-hit, the third match, ends the walk inside the sixth chunk.
    assert ops == [
        *(
            range_call(start, "+", count=size)
            for start, size in zip(starts[:-1], sizes, strict=True)
        ),
        Command(("MGET", "device:d0399-hit", "device:d0799-hit")),
    ]
    assert [m.device_id for m in page.items] == ["d0399-hit", "d0799-hit"]
    assert page.next_cursor is not None


def test_query_descending_by_id_swaps_the_lex_bounds() -> None:
    query = DeviceQuery(pattern="dev-?*", descending=True, limit=1)
    page, ops = run_flow(
        flows.query(ctx(), query), [chunk([b"dev-9", b"dev-8"], None), [encoded("dev-9")]]
    )
    assert ops[0] == range_call(b"[dev-\xff", "[dev-", count=2, reverse=True)
    assert [m.device_id for m in page.items] == ["dev-9"]
    cursor = page.next_cursor
    assert cursor is not None
    _, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=cursor)),
        [chunk([b"dev-8"], None), [encoded("dev-8")]],
    )
    assert ops[0] == range_call("(dev-9", "[dev-", count=2, reverse=True)


def test_query_descending_without_pattern_walks_from_the_top() -> None:
    page, ops = run_flow(flows.query(ctx(), DeviceQuery(descending=True)), [chunk([], None, [], 0)])
    assert ops == [range_call("+", "-", count=FIRST, reverse=True, values=True, total=True)]
    assert page.items == []
    assert page.total == 0


def test_query_empty_page_reads_no_values() -> None:
    page, ops = run_flow(flows.query(ctx(), DeviceQuery(pattern="x?*")), [chunk([], None)])
    assert ops == [range_call("[x", b"[x\xff", count=FIRST)]
    assert page.items == []
    assert page.next_cursor is None


def test_query_by_id_asks_for_scores_to_filter_on_persist() -> None:
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(persist=True)),
        [
            chunk(
                with_scores(
                    ("a", "temp", score(persist=True)),
                    ("b", "temp", score(persist=False)),
                    ("c", "", None),  # in the ids index only: never matches a score filter
                    ("d", "hum", score(persist=True)),
                ),
                None,
            ),
            [encoded("a"), encoded("d", datatype_id="hum")],
        ],
    )
    # The persist filter is applied here, on the scores: no values from the walk, then MGET.
    assert ops == [
        range_call("-", "+", count=FIRST, scores=True),
        Command(("MGET", "device:a", "device:d")),
    ]
    assert [m.device_id for m in page.items] == ["a", "d"]
    assert page.total is None


def test_query_by_id_filters_on_the_datatype_from_the_scores() -> None:
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(datatype_id="hum")),
        [
            chunk(
                with_scores(("a", "temp", score()), ("b", "hum", score()), ("c", "", None)), None
            ),
            [encoded("b", datatype_id="hum")],
        ],
    )
    assert ops[0] == range_call("-", "+", count=FIRST, scores=True)
    assert ops[1] == Command(("MGET", "device:b"))
    assert [m.device_id for m in page.items] == ["b"]


def test_query_by_id_filters_on_time_bounds() -> None:
    later = WHEN + timedelta(seconds=1)
    query = DeviceQuery(updated_after=WHEN, updated_before=later + timedelta(seconds=1))
    page, ops = run_flow(
        flows.query(ctx(), query),
        [
            chunk(
                with_scores(
                    ("a", "temp", score(WHEN)),  # not strictly after
                    ("b", "temp", score(later, persist=False)),
                    ("c", "temp", score(later + timedelta(seconds=1))),  # not strictly before
                ),
                None,
            ),
            [encoded("b", last_updated=later, persist=False)],
        ],
    )
    assert ops[0] == range_call("-", "+", count=FIRST, scores=True)
    assert [m.device_id for m in page.items] == ["b"]


def test_query_by_last_updated_has_the_server_merge_the_datatype_indexes() -> None:
    t = datetime_to_ms(WHEN) * 2
    query = DeviceQuery(sort="last_updated", limit=3)
    page, ops = run_flow(
        flows.query(ctx(), query),
        [
            chunk(
                # Merged by (score, id): h1, t1, then h2 and t2 at the same score, by id.
                merged(("h1", t + 2), ("t1", t + 4), ("h2", t + 6)),
                [t + 6, b"h2"],  # the budget ran out before limit + 1 matches
                [encoded("h1"), encoded("t1"), encoded("h2")],
                5,
            ),
            chunk(merged(("t2", t + 6)), None, [encoded("t2")]),
        ],
    )
    # No datatype filter: every datatype ("") in one call, no SMEMBERS; then 4 times as many.
    # Nothing is left to the client: values come with the matches, the count with the first
    # chunk only; no COUNT, no MGET.
    assert ops == [
        score_merge_call(count=4, values=True, total=True),
        score_merge_call(after=(t + 6, "h2"), count=16, values=True),
    ]
    assert [m.device_id for m in page.items] == ["h1", "t1", "h2"]
    assert page.total == 5
    assert page.next_cursor is not None
    # The next page resumes after (score, id) of h2.
    second, ops = run_flow(
        flows.query(ctx(), msgspec.structs.replace(query, cursor=page.next_cursor)),
        [
            chunk(
                merged(("t2", t + 6), ("t3", t + 8)),
                None,
                [encoded("t2"), encoded("t3")],
            ),
        ],
    )
    assert ops == [score_merge_call(after=(t + 6, "h2"), count=4, values=True)]
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
        [chunk(merged(("a", (t + 400) * 2)), None, [value])],
    )
    # The datatype, time and persist filters all go to the server (bounds are exclusive, in
    # ms * 2 + persist): the values come with the matches, no MGET; filtered: no count.
    lo, hi = str((t + 1) * 2), str((t + 999) * 2 + 1)
    assert ops == [
        score_merge_call("temp", lo, hi, count=FIRST, reverse=True, persist="0", values=True),
    ]
    assert [m.device_id for m in page.items] == ["a"]
    assert page.total is None


def test_query_by_last_updated_with_a_pattern_reads_the_page_with_mget() -> None:
    t = datetime_to_ms(WHEN) * 2
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(sort="last_updated", pattern="t?*", limit=1)),
        [
            chunk(merged(("h1", t + 2), ("t1", t + 4)), None),
            [encoded("t1")],
        ],
    )
    # The id pattern is matched here, not on the server: no values, no count, then MGET.
    assert ops == [score_merge_call(count=2), Command(("MGET", "device:t1"))]
    assert [m.device_id for m in page.items] == ["t1"]
    assert page.next_cursor is None
    assert page.total is None


def test_query_skips_values_deleted_or_corrupted_since_the_index_was_read() -> None:
    # A pattern left to the client: the page is read with MGET, after the walk.
    page, ops = run_flow(
        flows.query(ctx(), DeviceQuery(pattern="?")),
        [chunk([b"a", b"b", b"c"], None), [None, b"garbage", encoded("c")]],
    )
    assert ops[-1] == Command(("MGET", "device:a", "device:b", "device:c"))
    assert page.items == [make("c")]


def test_query_skips_a_value_the_walk_could_not_read(caplog: pytest.LogCaptureFixture) -> None:
    # The script answers nil for a key of another type (it cannot GET it) and the value as is
    # otherwise; both bad entries are left out of the page, with a warning.
    with caplog.at_level(logging.WARNING, logger="cache_service_client"):
        page, ops = run_flow(
            flows.query(ctx(), DeviceQuery(limit=4)),
            [
                chunk(
                    [b"a", b"b", b"c", b"d"],
                    None,
                    [encoded("a"), None, b"garbage", encoded("d")],  # b: a list; c: not a device
                    4,
                )
            ],
        )
    assert ops == [range_call("-", "+", count=5, values=True, total=True)]
    assert page.items == [make("a"), make("d")]
    assert page.total == 4
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
        DeviceQuery(limit=1, sort="last_updated", cursor=first.next_cursor),
    ):
        with pytest.raises(ValidationError) as info:
            next(flows.query(ctx(), other))
        assert info.value.field == "cursor"
    # The same query with another page size keeps its cursors.
    _, ops = run_flow(
        flows.query(ctx(), DeviceQuery(limit=5, cursor=first.next_cursor)), [chunk([], None)]
    )
    assert ops == [range_call("(a", "+", count=6, values=True)]  # the new limit + 1


@pytest.mark.parametrize("cursor", ["not a cursor", "", "AAAA"])
def test_query_rejects_garbage_cursors(cursor: str) -> None:
    with pytest.raises(ValidationError) as info:
        next(flows.query(ctx(), DeviceQuery(cursor=cursor)))
    assert info.value.field == "cursor"


# --- repair --------------------------------------------------------------------------------------


def test_repair_indexes_every_stored_device_and_sweeps_the_indexes() -> None:
    report, ops = run_flow(
        flows.repair(ctx()),
        [
            (17, [b"device:a", b"device:b", b"device:bad id", "device:c"]),
            [encoded("a"), b"garbage", encoded("c", persist=False)],
            1,
            (None, [b"device:d"]),
            [None],
            b"none",  # gone since the scan
            {b"temp", b"hum"},
            [b"12", 2],
            [b"0", 1],
            ["0", 0],
            [b"0", 0],
            [b"0", 4],
            [b"0", 1],  # the datatypes set: not index entries of devices
        ],
    )
    assert ops == [
        ScanBatch("device:*", None, flows.SCAN_COUNT),
        Command(("MGET", "device:a", "device:b", "device:c")),
        call(
            lua.REINDEX,
            "a",
            "temp",
            score(persist=True),
            "c",
            "temp",
            score(persist=False),
            keys=["device:a", "device:c"],
        ),
        ScanBatch("device:*", 17, flows.SCAN_COUNT),
        Command(("MGET", "device:d")),
        Command(("TYPE", "device:d")),
        Command(("SMEMBERS", "device index:datatypes")),
        call(lua.SWEEP, "0", keys=["device index:ids"]),
        call(lua.SWEEP, b"12", keys=["device index:ids"]),
        call(lua.SWEEP, "0", keys=["device index:expiry"]),
        call(lua.SWEEP, "0", keys=["device index:updated:hum"]),
        call(lua.SWEEP, "0", keys=["device index:updated:temp"]),
        call(lua.SWEEP, "0", keys=["device index:datatypes"]),
    ]
    assert report == RepairReport(
        scanned=4, indexed=1, orphans_removed=7, corrupted=["device:bad id", "device:b"]
    )


def test_repair_of_an_empty_cache() -> None:
    report, ops = run_flow(
        flows.repair(ctx()),
        [(None, []), set(), [b"0", 0], [b"0", 0], [b"0", 0]],
    )
    assert len(ops) == 5
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
        (k.bucket_device_prefix(bucket), k.updated_index_prefix(bucket), *args),  # type: ignore[arg-type]
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


def test_bucketed_put_many_sends_one_put_per_bucket_in_one_pipeline() -> None:
    ids = [f"d{n}" for n in range(12)]
    items = [make(i) for i in ids]
    buckets = list(dict.fromkeys(BUCKETED.bucket_of(i) for i in ids))
    assert len(buckets) > 1
    written, ops = run_flow(flows.put_many(bctx(), items), [[3] * len(buckets)])
    assert written == 3 * len(buckets)
    (op,) = ops
    assert isinstance(op, Pipeline)
    assert len(op.commands) == len(buckets)
    seen: list[str] = []
    for bucket, entry in zip(buckets, op.commands, strict=True):
        members = [i for i in ids if BUCKETED.bucket_of(i) == bucket]
        args: list[object] = [1000, 0]
        for i in members:
            args += [i, encoded(i), "temp", score()]
        assert entry == bucket_call(
            lua.PUT, bucket, *args, keys=[BUCKETED.device_key(i) for i in members]
        )
        # Everything a script touches lives in one slot.
        assert len({slot(key) for key in entry.keys}) == 1
        assert isinstance(entry.args[0], str)
        assert slot(entry.args[0] + "x") == slot(entry.keys[0])
        seen += members
    assert sorted(seen) == sorted(ids)


def test_bucketed_put_of_one_device_is_a_bare_script_call() -> None:
    _, ops = run_flow(flows.put(bctx(), make("a")), [1])
    bucket = BUCKETED.bucket_of("a")
    assert ops == [
        bucket_call(
            lua.PUT,
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


def test_bucketed_put_many_raises_the_error_of_a_failed_bucket() -> None:
    ids = [*ids_in(0, 1), *ids_in(1, 1)]
    error = BackendConnectionError("Redis is unavailable: CLUSTERDOWN")
    with pytest.raises(BackendConnectionError):
        run_flow(flows.put_many(bctx(), [make(i) for i in ids]), [[1, error]])


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
    per_bucket = [sorted(ids_in(bucket, 3)) for bucket in range(4)]
    everything = sorted(i for ids in per_bucket for i in ids)
    assert everything != [i for ids in per_bucket for i in ids]  # the buckets interleave
    # Ids only: neither values nor the count ("0", "0" after the reverse and scores flags).
    flags = ("0", "0", "0", "0")
    start = ("-", "+", flows.RANGE_CHUNK, *flags)
    replies: list[object] = [
        [
            # Bucket 0 answers one id at a time; the others at once.
            chunk([per_bucket[0][0].encode()], per_bucket[0][0].encode()),
            *(chunk([i.encode() for i in ids], None) for ids in per_bucket[1:]),
        ]
    ]
    # Bucket 0 is refetched alone each time its buffer runs dry, while the others wait.
    replies.append(chunk([per_bucket[0][1].encode()], per_bucket[0][1].encode()))
    replies.append(chunk([per_bucket[0][2].encode()], None))
    result, ops = run_flow(flows.list_ids(bctx()), replies)
    assert result == everything
    assert ops[0] == Pipeline(tuple(bucket_call(lua.RANGE, b, *start) for b in range(4)))
    assert ops[1:] == [
        bucket_call(lua.RANGE, 0, b"(" + per_bucket[0][0].encode(), "+", flows.RANGE_CHUNK, *flags),
        bucket_call(lua.RANGE, 0, b"(" + per_bucket[0][1].encode(), "+", flows.RANGE_CHUNK, *flags),
    ]


def test_bucketed_list_ids_stops_at_the_limit() -> None:
    result, ops = run_flow(
        flows.list_ids(bctx(), pattern="x*", limit=3),
        [
            [
                chunk([b"x1", b"x5"], None),
                chunk([b"x2"], None),
                chunk([], None),
                chunk([b"x3", b"x4"], None),
            ]
        ],
    )
    assert result == ["x1", "x2", "x3"]
    assert len(ops) == 1
    (op,) = ops
    assert isinstance(op, Pipeline)
    # Every bucket's first chunk: limit + 1 entries.
    assert [entry.args[2:] for entry in op.commands] == [
        ("[x", b"[x\xff", 4, "0", "0", "0", "0")
    ] * 4


def test_bucketed_query_by_last_updated_fetches_only_the_streams_that_ran_dry() -> None:
    t = datetime_to_ms(WHEN) * 2
    h1, h2 = ids_in(0, 2)
    t1, t2 = ids_in(1, 2)

    def merge(bucket: int, **kwargs: Any) -> ScriptCall:
        return bucket_call(lua.SCORE_MERGE, bucket, *merge_args(**kwargs))

    page, ops = run_flow(
        flows.query(bctx(), DeviceQuery(sort="last_updated", limit=2)),
        [
            [
                # Every bucket's first chunk carries its values and its device count.
                chunk(
                    merged((h1, t + 2)),
                    [str(t + 2).encode(), h1.encode()],  # more to come
                    [encoded(h1)],
                    2,
                ),
                chunk(
                    merged((t1, t + 4), (t2, t + 8)),
                    None,
                    [encoded(t1), encoded(t2)],
                    2,
                ),
                chunk([], None, [], 0),
                chunk([], None, [], 0),
            ],
            chunk(merged((h2, t + 6)), None, [encoded(h2)]),
        ],
    )
    assert ops == [
        # limit + 1 from every bucket, with the values and the count.
        Pipeline(tuple(merge(b, count=3, values=True, total=True) for b in range(4))),
        # Only bucket 0 ran dry; its next chunk is four times the first, without the count.
        merge(0, after=(t + 2, h1), count=12, values=True),
        # No COUNT pipeline and no MGETs: the page and the total came with the walk.
    ]
    assert [m.device_id for m in page.items] == [h1, t1]
    assert page.items[1] == make(t1)
    assert page.total == 4  # summed over the buckets
    # h2 was the third match; the next page resumes after t1 in every bucket.
    assert page.next_cursor is not None
    query = DeviceQuery(sort="last_updated", limit=2, cursor=page.next_cursor)
    second, ops = run_flow(flows.query(bctx(), query), [[chunk([], None)] * 4])
    assert ops == [
        Pipeline(tuple(merge(b, after=(t + 4, t1), count=3, values=True) for b in range(4)))
    ]
    assert second.total is None


def test_bucketed_query_with_a_filter_reads_the_page_with_one_mget_per_bucket() -> None:
    (a0,) = ids_in(0, 1)
    (a2,) = ids_in(2, 1)
    key = BUCKETED.device_key
    query = DeviceQuery(pattern="d?*", limit=3)  # a glob matched here: no values from the walk
    page, ops = run_flow(
        flows.query(bctx(), query),
        [
            [
                chunk([a0.encode()], None),
                chunk([], None),
                chunk([a2.encode()], None),
                chunk([], None),
            ],
            [[encoded(a0)], [encoded(a2)]],
        ],
    )
    first = ("[d", b"[d\xff", 4, "0", "0", "0", "0")
    assert ops == [
        Pipeline(tuple(bucket_call(lua.RANGE, b, *first) for b in range(4))),
        Pipeline((Command(("MGET", key(a0))), Command(("MGET", key(a2))))),
    ]
    assert [m.device_id for m in page.items] == sorted([a0, a2])
    assert page.total is None


def test_bucketed_count_and_info_sum_over_the_buckets() -> None:
    total, ops = run_flow(flows.count(bctx()), [[1, 2, 0, 4]])
    assert total == 7
    assert ops == [Pipeline(tuple(bucket_call(lua.COUNT, b) for b in range(4)))]
    low, high = score(WHEN, persist=False), score(WHEN + timedelta(days=1))
    result, _ = run_flow(
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
    assert result.total_devices == 3
    assert result.oldest_entry_timestamp == WHEN
    assert result.newest_entry_timestamp == WHEN + timedelta(days=1)
    assert result.memory_usage_bytes == 15


def test_bucketed_repair_scans_every_bucket_and_reindexes_per_bucket() -> None:
    (a0,) = ids_in(0, 1)
    (a3,) = ids_in(3, 1)
    key = BUCKETED.device_key
    replies: list[object] = [
        (None, [key(a3).encode(), key(a0).encode(), b"device:plain", b"device index:{b0}:ids"]),
        [[encoded(a3)], [encoded(a0)]],
        [1, 0],
    ]
    for _ in range(4):
        replies += [{b"temp"}, [b"0", 0], [b"0", 1], [b"0", 0], [b"0", 0]]
    report, ops = run_flow(flows.repair(bctx()), replies)
    assert ops[0] == ScanBatch(BUCKETED.device_pattern(), None, flows.SCAN_COUNT)
    assert ops[2] == Pipeline(
        (
            bucket_call(lua.REINDEX, 3, a3, "temp", score(), keys=[key(a3)]),
            bucket_call(lua.REINDEX, 0, a0, "temp", score(), keys=[key(a0)]),
        )
    )
    sweeps = [op for op in ops if isinstance(op, ScriptCall) and op.script is lua.SWEEP]
    assert len(sweeps) == 4 * 4
    for bucket in range(4):
        assert [s.keys[3] for s in sweeps[4 * bucket : 4 * bucket + 4]] == [
            BUCKETED.ids_index(bucket),
            BUCKETED.expiry_index(bucket),
            BUCKETED.updated_index("temp", bucket),
            BUCKETED.datatypes_index(bucket),
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
