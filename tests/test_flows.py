"""Tests of the Redis flows, driven by hand with scripted replies (no server)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from cache_service_client import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    DataCorruptionError,
    DeviceMetadata,
    DeviceNotFoundError,
    KeyStrategy,
    MetadataCodec,
    ValidationError,
)
from cache_service_client.repository.base import datetime_to_ms
from cache_service_client.repository.redis import flows, lua
from cache_service_client.repository.redis.ops import Command, Flow, Op, Pipeline, ScriptCall

T = TypeVar("T")

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
INDEX_KEYS = ("device index:ids", "device index:expiry", "device index:updated")
CODEC = MetadataCodec()


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
    result, _ = run_flow(flows.get_many(ctx(), ["x"]), [[None], [kind]])
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
                5000,
                "a",
                CODEC.encode(items[0]),
                datetime_to_ms(WHEN),
                "b",
                CODEC.encode(items[1]),
                datetime_to_ms(WHEN) + 1000,
            ),
        )
    ]


def test_put_many_without_ttl_sends_zero() -> None:
    _, ops = run_flow(flows.put_many(ctx(ttl_ms=None), [make("a")]), [1])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.args[0] == 0


def test_put_many_last_duplicate_wins() -> None:
    first, last = make("a", datatype_name="first"), make("a", datatype_name="last")
    _, ops = run_flow(flows.put_many(ctx(), [first, make("b"), last]), [2])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.keys == (*INDEX_KEYS, "device:b", "device:a")
    assert op.args[1::3] == ("b", "a")
    assert op.args[5] == CODEC.encode(last)


def test_put_many_stores_last_updated_in_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=3)))
    _, ops = run_flow(flows.put_many(ctx(), [make("a", last_updated=local)]), [1])
    (op,) = ops
    assert isinstance(op, ScriptCall)
    assert op.args[2] == encoded("a")
    assert b'"2024-05-06T07:08:09Z"' in op.args[2]


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
    assert result is None
    assert ops == [
        ScriptCall(lua.PUT, (*INDEX_KEYS, "device:a"), (1, "a", encoded("a"), datetime_to_ms(WHEN)))
    ]


def test_put_names_the_field_without_a_batch_index() -> None:
    with pytest.raises(ValidationError) as info:
        next(flows.put(ctx(), make("a", datatype_id="")))
    assert info.value.field == "datatype_id"


# --- delete / exists / count / info --------------------------------------------------------------


@pytest.mark.parametrize(("reply", "expected"), [(1, True), (0, False)])
def test_delete(reply: int, expected: bool) -> None:
    result, ops = run_flow(flows.delete(ctx(), "a"), [reply])
    assert result is expected
    assert ops == [ScriptCall(lua.DELETE, (*INDEX_KEYS, "device:a"), ("a",))]


def test_delete_many() -> None:
    result, ops = run_flow(flows.delete_many(ctx(), ["a", "b", "a"]), [1])
    assert result == 1
    assert ops == [ScriptCall(lua.DELETE, (*INDEX_KEYS, "device:a", "device:b"), ("a", "b"))]
    assert run_flow(flows.delete_many(ctx(), []), []) == (0, [])


@pytest.mark.parametrize(("reply", "expected"), [(1, True), (0, False)])
def test_exists(reply: int, expected: bool) -> None:
    result, ops = run_flow(flows.exists(ctx(), "a"), [reply])
    assert result is expected
    assert ops == [Command(("EXISTS", "device:a"))]


def test_count() -> None:
    result, ops = run_flow(flows.count(ctx()), [7])
    assert result == 7
    assert ops == [ScriptCall(lua.COUNT, INDEX_KEYS, ("device:", flows.PRUNE_BATCH))]


def test_info() -> None:
    oldest, newest = datetime_to_ms(WHEN), datetime_to_ms(WHEN + timedelta(days=1))
    result, ops = run_flow(
        flows.info(ctx()), [[3, str(oldest).encode(), str(newest).encode()], {"used_memory": 123}]
    )
    assert ops == [
        ScriptCall(lua.INFO, INDEX_KEYS, ("device:", flows.PRUNE_BATCH, flows.INFO_BUDGET)),
        Command(("INFO", "memory")),
    ]
    assert result.total_devices == 3
    assert result.memory_usage_bytes == 123
    assert result.oldest_entry == WHEN
    assert result.newest_entry == WHEN + timedelta(days=1)
    assert result.backend == "redis"


def test_info_of_an_empty_cache() -> None:
    result, _ = run_flow(flows.info(ctx()), [[0, None, None], {}])
    assert result.total_devices == 0
    assert result.memory_usage_bytes == 0
    assert result.oldest_entry is None
    assert result.newest_entry is None


# --- list_ids ------------------------------------------------------------------------------------


def range_call(start: str | bytes, stop: str | bytes) -> ScriptCall:
    return ScriptCall(lua.RANGE, INDEX_KEYS, ("device:", start, stop, flows.RANGE_CHUNK))


def test_list_ids_walks_the_literal_prefix_range_in_chunks() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="dev-1*"),
        [
            [[b"dev-1", b"dev-10"], b"dev-10"],
            [[b"dev-11"], b"dev-12"],  # dev-12 was examined but its key is gone
            [[], None],
        ],
    )
    assert result == ["dev-1", "dev-10", "dev-11"]
    assert ops == [
        range_call("[dev-1", b"[dev-1\xff"),
        range_call(b"(dev-10", b"[dev-1\xff"),
        range_call(b"(dev-12", b"[dev-1\xff"),
    ]


def test_list_ids_continues_from_a_str_last() -> None:
    _, ops = run_flow(flows.list_ids(ctx(), pattern="é*"), [[["é1"], "é1"], [["é2"], None]])
    assert ops == [
        range_call("[é", "[é".encode() + b"\xff"),
        range_call("(é1", "[é".encode() + b"\xff"),
    ]


def test_list_ids_without_pattern_reads_the_whole_index() -> None:
    result, ops = run_flow(flows.list_ids(ctx()), [[[b"a", b"b", "c"], None]])
    assert result == ["a", "b", "c"]
    assert ops == [range_call("-", "+")]


def test_list_ids_pattern_without_literal_prefix_reads_the_whole_index() -> None:
    result, ops = run_flow(flows.list_ids(ctx(), pattern="*-1"), [[[b"a-1", b"a-2", b"b-1"], None]])
    assert result == ["a-1", "b-1"]
    assert ops == [range_call("-", "+")]


def test_list_ids_applies_the_glob_beyond_the_prefix() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="dev-?x"),
        [[[b"dev-1x", b"dev-12x", b"dev-2x", b"dev-3y", "dev-éx"], None]],
    )
    # "?" matches one byte, as in Redis: "é" is two bytes in UTF-8.
    assert result == ["dev-1x", "dev-2x"]
    assert ops == [range_call("[dev-", b"[dev-\xff")]


def test_list_ids_exact_id_pattern() -> None:
    result, ops = run_flow(flows.list_ids(ctx(), pattern="ab"), [[[b"ab", b"abc"], None]])
    assert result == ["ab"]
    assert ops == [range_call("[ab", b"[ab\xff")]


def test_list_ids_escaped_glob_characters_are_part_of_the_prefix() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="a\\*b*"), [[[b"a*b", b"a*bc", b"a*c"], None]]
    )
    assert result == ["a*b", "a*bc"]
    assert ops == [range_call("[a*b", b"[a*b\xff")]


def test_list_ids_offset_and_limit_count_matching_ids_across_chunks() -> None:
    result, ops = run_flow(
        flows.list_ids(ctx(), pattern="?1", offset=1, limit=2),
        [
            [[b"a1", b"a2", b"b1"], b"b1"],
            [[b"b2", b"c1", b"d1", b"e1"], b"e1"],
        ],
    )
    assert result == ["b1", "c1"]
    # The limit was reached inside the second chunk: no third RANGE call.
    assert len(ops) == 2


def test_list_ids_offset_beyond_the_end() -> None:
    result, _ = run_flow(flows.list_ids(ctx(), offset=5), [[[b"a", b"b"], None]])
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


def test_health_healthy() -> None:
    status, ops = run_flow(flows.health(ctx()), [b"PONG", healthy_info()])
    assert ops == [Command(("PING",)), Command(("INFO",))]
    assert status.status == "healthy"
    assert status.is_healthy
    assert status.latency_ms is not None
    assert status.latency_ms >= 0
    assert status.details["redis_version"] == "7.2.4"
    assert status.details["role"] == "master"
    assert status.timestamp.tzinfo is not None


@pytest.mark.parametrize(
    "error",
    [
        BackendConnectionError("Redis connection failed: refused"),
        BackendTimeoutError("Redis did not answer in time"),
        BackendError("Redis error: something"),
    ],
)
def test_health_unhealthy_when_ping_fails(error: BackendError) -> None:
    status, ops = run_flow(flows.health(ctx()), [error])
    assert ops == [Command(("PING",))]
    assert status.status == "unhealthy"
    assert not status.is_healthy
    assert status.latency_ms is None
    assert status.details["error"] == type(error).__name__
    assert str(error) in status.message


def test_health_unhealthy_on_authentication_failure() -> None:
    flow = flows.health(ctx())
    assert next(flow) == Command(("PING",))
    with pytest.raises(StopIteration) as stop:
        flow.throw(AuthenticationError("WRONGPASS"))
    status = stop.value.value
    assert status.status == "unhealthy"
    assert status.message.startswith("authentication failed")
    assert status.details["error"] == "AuthenticationError"


def test_health_degraded_when_ping_is_slow() -> None:
    flow = flows.health(ctx(slow_ms=1.0))
    assert next(flow) == Command(("PING",))
    time.sleep(0.005)
    assert flow.send(b"PONG") == Command(("INFO",))
    with pytest.raises(StopIteration) as stop:
        flow.send(healthy_info())
    status = stop.value.value
    assert status.status == "degraded"
    assert "slow" in status.message
    assert status.latency_ms is not None
    assert status.latency_ms >= 5


def test_health_degraded_near_maxmemory() -> None:
    info = healthy_info(used_memory=950, maxmemory=1000)
    status, _ = run_flow(flows.health(ctx()), [b"PONG", info])
    assert status.status == "degraded"
    assert "maxmemory" in status.message
    assert status.details["used_memory"] == 950
    assert status.details["maxmemory"] == 1000


def test_health_below_the_memory_ratio_is_healthy() -> None:
    info = healthy_info(used_memory=800, maxmemory=1000)
    status, _ = run_flow(flows.health(ctx()), [b"PONG", info])
    assert status.status == "healthy"


@pytest.mark.parametrize("read_only", [1, "1", "yes-missing"])
def test_health_degraded_on_a_read_only_replica(read_only: object) -> None:
    info = healthy_info(role="slave")
    if read_only != "yes-missing":
        info["slave_read_only"] = read_only
    status, _ = run_flow(flows.health(ctx()), [b"PONG", info])
    assert status.status == "degraded"
    assert "read-only" in status.message
    assert status.details["role"] == "slave"


def test_health_writable_replica_is_healthy() -> None:
    info = healthy_info(role="slave", slave_read_only=0)
    status, _ = run_flow(flows.health(ctx()), [b"PONG", info])
    assert status.status == "healthy"


def test_health_several_problems_are_all_reported() -> None:
    flow = flows.health(ctx(slow_ms=1.0))
    next(flow)
    time.sleep(0.005)
    flow.send(b"PONG")
    with pytest.raises(StopIteration) as stop:
        flow.send(healthy_info(role="slave", used_memory=99, maxmemory=100))
    status = stop.value.value
    assert status.status == "degraded"
    assert status.message.count(";") == 2


def test_health_when_info_is_disabled() -> None:
    status, _ = run_flow(flows.health(ctx()), [b"PONG", BackendError("ERR unknown command 'INFO'")])
    assert status.status == "healthy"
    assert "unknown command" in status.details["info_error"]
    assert status.details["redis_version"] is None


def test_get_many_does_not_report_a_failed_type_check_as_missing() -> None:
    error = BackendConnectionError("Redis is unavailable (TYPE): LOADING")
    with pytest.raises(BackendConnectionError):
        run_flow(flows.get_many(ctx(), ["x"]), [[None], [error]])
