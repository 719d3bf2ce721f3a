"""The Lua scripts: as files (each loads, is whole, keeps to the rules of the prelude) and each
one's edge cases, run on a real server through its call builder and reply parser."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from cache_service_client import (
    DeviceMetadata,
    KeyStrategy,
    MetadataCodec,
    RedisDeviceMetadataRepository,
)
from cache_service_client._validation import datetime_to_ms
from cache_service_client.keys import score_of
from cache_service_client.repository.redis import lua
from cache_service_client.repository.redis.ops import Arg, LuaScript
from tests.backends import at_ms

WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)

SCRIPTS = Path(lua.__file__).parent / "scripts"
WRITES = ("'SET'", "'DEL'", "'ZADD'", "'ZREM'", "'SADD'", "'SREM'", "'HSET'", "'HDEL'")
HEADING, HELPERS = lua._helpers((SCRIPTS / "prelude.lua").read_text(encoding="utf-8"))
HELPERS = [(name, text.replace("{layout}", str(lua.LAYOUT_VERSION))) for name, text in HELPERS]


def body_of(script: LuaScript) -> str:
    """The script's own file, without the prelude's helpers."""
    return (SCRIPTS / f"{script.name}.lua").read_text(encoding="utf-8")


WRITE_HELPERS = (
    "remove_entries(",
    "unindex(",
    "add_entries(",
    "save_numbers(",
    "set_value(",
    "first_write(",
)
ALL = [getattr(lua, name) for name in lua.__all__ if isinstance(getattr(lua, name), LuaScript)]


def test_every_script_file_is_a_script_and_the_other_way_round() -> None:
    files = {path.stem for path in SCRIPTS.glob("*.lua")} - {"prelude"}
    assert files == {script.name for script in ALL}


@pytest.mark.parametrize("script", ALL, ids=lambda s: s.name)
def test_no_constant_is_left_unreplaced(script: LuaScript) -> None:
    assert not re.search(r"\{[a-z_]+\}", script.source), script.name
    assert script.source.startswith(HEADING)
    first_line = body_of(script).split("\n", 1)[0]
    assert script.source.count(first_line) == 1
    assert script.source.rstrip().endswith(body_of(script).rstrip().rsplit("\n", 1)[-1])


@pytest.mark.parametrize("script", ALL, ids=lambda s: s.name)
def test_a_script_holds_the_helpers_it_uses_and_no_other(script: LuaScript) -> None:
    first_line = body_of(script).split("\n", 1)[0]
    head, body = script.source.split(first_line, 1)
    included = {name: text for name, text in HELPERS if text in head}
    assert head == HEADING + "".join(included.values())  # whole, in prelude order
    code = [body, *(text.split("\n", 1)[1] for text in included.values())]
    for name, _ in HELPERS:
        used = any(lua._uses(text, name) for text in code)
        assert (name in included) == used, (script.name, name)


@pytest.mark.parametrize(
    "script", [lua.PUT, lua.PUT_ONE, lua.DELETE, lua.REINDEX], ids=lambda s: s.name
)
def test_write_scripts_read_before_they_write(script: LuaScript) -> None:
    # The rule of writes that cannot half-happen: no write command before the last read of
    # the first phase (the scripts mark the phases with "-- Reads" and "-- Writes").
    body = body_of(script)
    reads, _, writes = body.partition("-- Writes")
    assert writes, script.name
    for command in WRITES:
        assert f"redis.call({command}" not in reads.split("-- Reads", 1)[1], (script.name, command)
    for helper in WRITE_HELPERS:
        assert not re.search(rf"(?<!\w){re.escape(helper)}", reads), (script.name, helper)


def test_read_scripts_never_write() -> None:
    for script in (lua.RANGE, lua.TIME_RANGE, lua.TIME_SET, lua.COUNT, lua.INFO):
        body = body_of(script)
        for command in WRITES:
            assert f"redis.call({command}" not in body, (script.name, command)
        for helper in WRITE_HELPERS:
            assert not re.search(rf"(?<!\w){re.escape(helper)}", body), (script.name, helper)


# -- each script's edge cases, run on a real server through its call builder -------------------


def run(
    client: redis.Redis,
    keys: KeyStrategy,
    script: LuaScript,
    args: tuple[Arg, ...] = (),
    device_keys: tuple[str, ...] = (),
) -> Any:
    """Run ``script`` in bucket 0 as the repository does: fixed keys, prefixes, then ``args``."""
    every_key = (*keys.index_keys(), *device_keys)
    prefixes = (keys.bucket_device_prefix(0), keys.datatype_time_prefix())
    return client.eval(script.source, len(every_key), *every_key, *prefixes, *args)


def device(device_id: str, datatype_id: str = "t", persist: bool = True, ms: int = 0) -> Any:
    return at_ms(device_id, datatype_id, persist, ms, base=WHEN)


def score_at(ms: int, persist: bool = True) -> int:
    return score_of(datetime_to_ms(WHEN) + ms, persist)


@pytest.fixture
def repo(redis_client: redis.Redis, key_strategy: KeyStrategy) -> RedisDeviceMetadataRepository:
    return RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy, ttl=None)


def walk_range(
    client: redis.Redis, keys: KeyStrategy, *, want: int = 100, **kwargs: Any
) -> lua.RangeReply:
    defaults: dict[str, Any] = {
        "datatype_id": None,
        "persist": None,
        "low": "-",
        "high": "+",
        "descending": False,
    }
    args = lua.range_args(want=want, **{**defaults, **kwargs})
    return lua.parse_range(run(client, keys, lua.RANGE, args))


def test_range_merges_both_persist_blocks_by_bytes(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    ids = ["B", "a", "a0", "b", "é", "日", "Z9", "_"]
    repo.put_many([device(i, persist=n % 2 == 0) for n, i in enumerate(ids)])
    assert walk_range(redis_client, key_strategy).ids == sorted(ids)
    assert walk_range(redis_client, key_strategy, descending=True).ids == sorted(ids)[::-1]
    assert walk_range(redis_client, key_strategy, persist=False).ids == sorted(ids[1::2])
    # The same with the byte-wise comparison written out (servers under another locale).
    source = lua.RANGE.source.replace("local bytewise = (", "local bytewise = false and (")
    slow = LuaScript.of("range", source)
    args = lua.range_args(
        datatype_id=None, persist=None, low="-", high="+", want=100, descending=False
    )
    assert lua.parse_range(run(redis_client, key_strategy, slow, args)).ids == sorted(ids)


def test_range_resumes_after_a_bound_that_is_gone_and_reports_the_last_examined(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put_many([device(f"d{i:02d}", persist=i % 3 == 0) for i in range(30)])
    first = walk_range(redis_client, key_strategy, want=7)
    assert first.ids == [f"d{i:02d}" for i in range(7)]
    assert first.last is not None
    assert lua.text(first.last) == "d06"
    repo.delete("d06")  # the bound is no longer a member: found by a binary search
    resumed = walk_range(redis_client, key_strategy, want=7, low="(d06")
    assert resumed.ids == [f"d{i:02d}" for i in range(7, 14)]
    down = walk_range(redis_client, key_strategy, want=5, high="(d06", descending=True)
    assert down.ids == ["d05", "d04", "d03", "d02", "d01"]
    rest = walk_range(redis_client, key_strategy, low="(d06")
    assert rest.last is None  # the range ended
    assert len(rest.ids) == 23


def test_range_of_a_prefix_a_datatype_and_a_time_range(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put_many(
        [device(f"{p}-{i}", ("t", "h")[i % 2], i % 4 < 2, i) for p in "ab" for i in range(10)]
    )
    prefix = walk_range(redis_client, key_strategy, low="[b-", high=b"(b-\xff")
    assert prefix.ids == [f"b-{i}" for i in range(10)]
    typed = walk_range(redis_client, key_strategy, datatype_id="h", persist=True)
    assert typed.ids == ["a-1", "a-5", "a-9", "b-1", "b-5", "b-9"]
    timed = walk_range(redis_client, key_strategy, lo=score_at(3, False), hi=score_at(5, True))
    assert timed.ids == ["a-3", "a-4", "a-5", "b-3", "b-4", "b-5"]
    unknown = walk_range(redis_client, key_strategy, datatype_id="nope", with_total=True)
    assert unknown == lua.RangeReply([], None, [], 20)


def test_range_stops_on_its_budget_with_a_place_to_go_on_from(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    # 2000 devices of which only the last matches the time range: a walk examines its budget
    # (at least WALK_BUDGET entries), returns nothing and says where to go on.
    repo.put_many([device(f"d{i:04d}", ms=0 if i < 1999 else 10) for i in range(2000)])
    got = walk_range(redis_client, key_strategy, want=1, lo=score_at(5, False))
    assert got.ids == []
    assert got.last is not None
    assert lua.text(got.last) == f"d{lua.WALK_BUDGET - 1:04d}"


def test_range_values_are_false_for_a_key_of_another_type(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put_many([device("a"), device("b"), device("c")])
    redis_client.delete(key_strategy.device_key("b"))
    redis_client.rpush(key_strategy.device_key("b"), "x")
    redis_client.delete(key_strategy.device_key("c"))
    got = walk_range(redis_client, key_strategy, with_values=True)
    assert got.ids == ["a", "b"]  # c is gone, b is there (of the wrong type)
    assert got.values[0] is not None
    assert got.values[1] is None  # Lua false


def walk_time(
    client: redis.Redis, keys: KeyStrategy, *, want: int = 100, **kwargs: Any
) -> lua.TimeRangeReply:
    defaults: dict[str, Any] = {
        "datatype_id": None,
        "lo": None,
        "hi": None,
        "after": None,
        "descending": False,
        "persist": None,
    }
    args = lua.time_range_args(want=want, **{**defaults, **kwargs})
    return lua.parse_time_range(run(client, keys, lua.TIME_RANGE, args))


def test_time_range_orders_by_score_then_id_and_resumes_after_a_moved_device(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put_many([device(f"d{i}", ms=i // 3) for i in range(9)])  # three per millisecond
    got = walk_time(redis_client, key_strategy, want=4)
    assert [i for i, _ in got.entries] == ["d0", "d1", "d2", "d3"]
    assert got.last == (score_at(1), "d3")
    repo.put(device("d3", ms=50))  # the cursor's device moved on: its old place is searched
    resumed = walk_time(redis_client, key_strategy, after=got.last)
    assert [i for i, _ in resumed.entries] == ["d4", "d5", "d6", "d7", "d8", "d3"]
    down = walk_time(redis_client, key_strategy, after=(score_at(2), "d7"), descending=True)
    assert [i for i, _ in down.entries] == ["d6", "d5", "d4", "d2", "d1", "d0"]
    assert walk_time(redis_client, key_strategy, persist=False).entries == []
    assert walk_time(redis_client, key_strategy, datatype_id="nope").entries == []
    bounded = walk_time(redis_client, key_strategy, lo=score_at(1, False), hi=score_at(1, True))
    assert [i for i, _ in bounded.entries] == ["d4", "d5"]


def test_time_set_reads_a_small_range_whole_sorted_by_id_and_walks_on_from_the_cursor(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    # Ids in the reverse order of their times, and two prefixes.
    repo.put_many(
        [device(f"{'ab'[i % 2]}{999 - i:03d}", persist=i % 3 == 0, ms=i) for i in range(400)]
    )

    def plan(lo: int, small: int = 0, want: int = 11, **kwargs: Any) -> lua.TimeSetReply:
        options: dict[str, Any] = {"persist": None, **kwargs}
        args = lua.time_set_args(
            datatype_id=None, lo=lo, hi=None, page=11, small=small, want=want, **options
        )
        return lua.parse_time_set(run(redis_client, key_strategy, lua.TIME_SET, args))

    in_range = [f"{'ab'[i % 2]}{999 - i:03d}" for i in range(390, 400)]
    got = plan(score_at(390, False), want=4)
    assert (got.in_range, got.whole) == (10, True)
    assert got.ids == sorted(in_range)[:4]  # sorted by id on the server
    assert got.last is not None
    resumed = plan(score_at(390, False), after=lua.text(got.last))
    assert resumed.ids == sorted(in_range)[4:]
    assert resumed.last is None  # the range ended
    down = plan(score_at(390, False), after=sorted(in_range)[5], descending=True)
    assert down.ids == sorted(in_range)[:5][::-1]
    only_b = plan(score_at(390, False), prefix="b", with_values=True)
    assert only_b.ids == sorted(i for i in in_range if i.startswith("b"))
    assert len(only_b.values) == len(only_b.ids)
    # sqrt(11 x 400 x FETCH_COST_RATIO) = 162: a range of 200 is walked by id instead, unless
    # the least size read whole says otherwise.
    assert plan(score_at(200, False)) == lua.TimeSetReply(200, False, [], None, [])
    persisted = plan(score_at(200, False), small=200, want=100, persist=True)
    assert persisted.whole
    assert persisted.ids == sorted(f"{'ab'[i % 2]}{999 - i:03d}" for i in range(201, 400, 3))[:100]
    redis_client.delete(key_strategy.device_key(sorted(in_range)[0]))
    assert plan(score_at(390, False), want=1).ids == [sorted(in_range)[1]]  # live ones only
    unknown = lua.time_set_args(
        datatype_id="nope", lo=None, hi=None, persist=None, page=2, small=0, want=2
    )
    got = lua.parse_time_set(run(redis_client, key_strategy, lua.TIME_SET, unknown))
    assert got == lua.TimeSetReply(0, True, [], None, [])


def test_count_and_info_leave_out_expired_entries(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy, ttl=0.05)
    repo.put_many([device("old", ms=0), device("new", ms=9)])
    repo.ttl = None
    repo.put(device("mid", ms=5))
    time.sleep(0.1)
    assert run(redis_client, key_strategy, lua.COUNT) == 1
    info = lua.parse_info(run(redis_client, key_strategy, lua.INFO, (100,)))
    assert info == lua.InfoReply(1, score_at(5), score_at(5))
    empty = KeyStrategy(prefix=key_strategy.prefix + "-empty")
    assert lua.parse_info(run(redis_client, empty, lua.INFO, (100,))) == lua.InfoReply(
        0, None, None
    )


def put_one_with(
    script: LuaScript,
    client: redis.Redis,
    keys: KeyStrategy,
    m: DeviceMetadata,
    if_newer: bool,
    retried: bool = False,
) -> int:
    """Run a put script (PUT or PUT_ONE) for the one device ``m``, without a TTL."""
    value = MetadataCodec().encode(m)
    row = (m.device_id, value, m.datatype_id, score_of(datetime_to_ms(m.last_updated), m.persist))
    args = lua.put_args(ttl_ms=0, if_newer=if_newer, devices=[row], retried=retried)
    return int(run(client, keys, script, args, (keys.device_key(m.device_id),)))


PUT_SCRIPTS = pytest.mark.parametrize("script", [lua.PUT, lua.PUT_ONE], ids=lambda s: s.name)


@PUT_SCRIPTS
def test_put_writes_only_the_entries_that_change(
    script: LuaScript, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    def put(m: DeviceMetadata) -> int:
        return put_one_with(script, redis_client, key_strategy, m, False)

    assert put(device("a", "t", ms=0)) == 1
    redis_client.config_resetstat()
    put(device("a", "t", ms=1))  # a new time: by-time, its datatype's, nothing else
    zadds = int(redis_client.info("commandstats")["cmdstat_zadd"]["calls"])
    assert zadds == 2
    put(device("a", "h", persist=False, ms=1))  # a new datatype and flag: all four move
    assert redis_client.zscore(key_strategy.ids_index(), "a") == 0
    assert redis_client.hgetall(key_strategy.types_index()) == {b"t": b"1", b"h": b"2"}
    assert redis_client.zscore(key_strategy.by_type_index(), "a") == 2 * 2 + 0
    assert redis_client.zscore(key_strategy.datatype_time_index(1), "a") is None
    assert redis_client.zscore(key_strategy.datatype_time_index(2), "a") == score_at(1, False)


@PUT_SCRIPTS
def test_a_conditional_put_compares_whole_milliseconds(
    script: LuaScript,
    repo: RedisDeviceMetadataRepository,
    redis_client: redis.Redis,
    key_strategy: KeyStrategy,
) -> None:
    repo.put(device("a", ms=5))

    def put_if_newer(m: DeviceMetadata) -> int:
        return put_one_with(script, redis_client, key_strategy, m, True)

    assert put_if_newer(device("a", persist=False, ms=5)) == 0  # the same ms: not newer
    assert put_if_newer(device("a", ms=4)) == 0
    assert put_if_newer(device("a", ms=6)) == 1


@PUT_SCRIPTS
def test_a_retried_conditional_put_counts_the_identical_stored_value_as_written(
    script: LuaScript,
    repo: RedisDeviceMetadataRepository,
    redis_client: redis.Redis,
    key_strategy: KeyStrategy,
) -> None:
    update = device("a", ms=5)
    repo.put(update)

    def put_if_newer(m: DeviceMetadata, retried: bool) -> int:
        return put_one_with(script, redis_client, key_strategy, m, True, retried)

    redis_client.config_resetstat()
    # Identical to what is stored: written already (by a lost attempt, on a retry), not again.
    assert put_if_newer(update, retried=True) == 1
    assert put_if_newer(update, retried=False) == 0
    stats = redis_client.info("commandstats")
    assert "cmdstat_set" not in stats
    assert "cmdstat_zadd" not in stats
    # As new but different, and older: not written, on a retry too.
    assert put_if_newer(device("a", persist=False, ms=5), retried=True) == 0
    assert put_if_newer(device("a", "h", ms=5), retried=True) == 0
    assert put_if_newer(device("a", ms=4), retried=True) == 0
    assert repo.get("a") == update
    assert put_if_newer(device("a", ms=6), retried=True) == 1
    # A stored value of another type is not "the same" (and fails no read).
    redis_client.delete(key_strategy.device_key("a"))
    redis_client.hset(key_strategy.device_key("a"), "x", "y")
    assert put_if_newer(device("a", ms=6), retried=True) == 0


def test_the_last_delete_of_a_bucket_drops_its_datatype_numbers(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put_many([device("a", "t"), device("b", "h")])
    repo.delete("a")
    assert redis_client.exists(key_strategy.types_index(), key_strategy.layout_key()) == 2
    repo.delete("b")
    assert redis_client.keys(key_strategy.index_prefix() + "*") == []
    repo.put(device("c", "h"))  # numbers start again
    assert redis_client.hgetall(key_strategy.types_index()) == {b"h": b"1"}


def test_sweep_removes_entries_of_another_datatype_and_of_gone_devices(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo.put_many([device("a", "t"), device("b", "h"), device("c", "t")])
    t_index, h_index = key_strategy.datatype_time_index(1), key_strategy.datatype_time_index(2)
    redis_client.zadd(h_index, {"a": 1})  # a stale entry: "a" is of datatype t
    redis_client.delete(key_strategy.device_key("c"))
    swept = lua.parse_sweep(run(redis_client, key_strategy, lua.SWEEP, ("0",), (h_index,)))
    assert swept == lua.SweepReply("0", 1)
    assert redis_client.zrange(h_index, 0, -1) == [b"b"]
    swept = lua.parse_sweep(run(redis_client, key_strategy, lua.SWEEP, ("0",), (t_index,)))
    assert swept.removed == 1
    for index in (key_strategy.ids_index(), key_strategy.by_type_index(), t_index):
        assert redis_client.zscore(index, "c") is None


def test_reindex_marks_a_fresh_bucket_and_unindexes_gone_keys(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    redis_client.set(key_strategy.device_key("a"), b"{}")
    rows = [
        ("a", "t", score_at(0), lua.value_digest(b"{}")),
        ("gone", "t", score_at(0), lua.value_digest(b"{}")),
    ]
    device_keys = (key_strategy.device_key("a"), key_strategy.device_key("gone"))
    changed = run(redis_client, key_strategy, lua.REINDEX, lua.reindex_args(rows), device_keys)
    assert changed == 1
    assert redis_client.get(key_strategy.layout_key()) == b"2"
    assert redis_client.zrange(key_strategy.by_time_index(), 0, -1) == [b"a"]
    assert run(redis_client, key_strategy, lua.REINDEX, lua.reindex_args(rows), device_keys) == 0


def test_reindex_leaves_alone_a_device_written_after_the_repair_read_it(
    repo: RedisDeviceMetadataRepository, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    # a repair read "a" (datatype t, at 0 ms); a put of a newer value (datatype h, at
    # 10 ms) landed before REINDEX ran with what was read. REINDEX must not put the stale
    # datatype and time back into the indexes.
    old = device("a", "t", ms=0)
    repo.put(old)
    read = redis_client.get(key_strategy.device_key("a"))
    assert read is not None
    repo.put(device("a", "h", ms=10))
    row = ("a", "t", score_at(0), lua.value_digest(read))
    changed = run(
        redis_client,
        key_strategy,
        lua.REINDEX,
        lua.reindex_args([row]),
        (key_strategy.device_key("a"),),
    )
    assert changed == 0
    assert redis_client.zscore(key_strategy.by_time_index(), "a") == score_at(10)
    assert redis_client.hgetall(key_strategy.types_index()) == {b"t": b"1", b"h": b"2"}
    assert redis_client.zscore(key_strategy.by_type_index(), "a") == 2 * 2 + 1
    assert redis_client.zscore(key_strategy.datatype_time_index(1), "a") is None
    assert redis_client.zscore(key_strategy.datatype_time_index(2), "a") == score_at(10)
    # if_newer still compares against the newer value: a late older update is refused.
    assert repo.put(device("a", "t", ms=5), if_newer=True) is False
    assert repo.get("a").last_updated == device("a", ms=10).last_updated
    # The value read again (the same bytes): REINDEX does its work.
    redis_client.zrem(key_strategy.by_time_index(), "a")
    now = redis_client.get(key_strategy.device_key("a"))
    assert now is not None
    row = ("a", "h", score_at(10), lua.value_digest(now))
    args = lua.reindex_args([row])
    assert run(redis_client, key_strategy, lua.REINDEX, args, (key_strategy.device_key("a"),)) == 1
    assert redis_client.zscore(key_strategy.by_time_index(), "a") == score_at(10)


@pytest.mark.parametrize(("descending", "before_max"), [(False, 6), (True, 4)])
def test_a_time_walk_resumes_exactly_after_a_score_of_fifteen_digits(
    descending: bool,
    before_max: int,
    repo: RedisDeviceMetadataRepository,
    redis_client: redis.Redis,
    key_strategy: KeyStrategy,
) -> None:
    # Lua prints numbers with %.14g. The score of a last_updated near datetime.max
    # has 15 digits: a cursor at a deleted device was rounded past its neighbour (up walking
    # up, down walking down), and the neighbour was skipped.
    base = datetime.max.replace(tzinfo=timezone.utc) - timedelta(milliseconds=before_max)
    a, b = at_ms("a", "t", True, 0, base=base), at_ms("b", "t", True, 1, base=base)
    repo.put_many([a, b])
    score_a, score_b = (score_of(datetime_to_ms(m.last_updated), True) for m in (a, b))
    gone, kept, cursor = ("b", "a", score_b) if descending else ("a", "b", score_a)
    rounded = float(f"{cursor:.14g}")
    assert rounded < score_a if descending else rounded > score_b  # where %.14g went wrong
    repo.delete(gone)
    args = lua.time_range_args(
        datatype_id=None,
        lo=None,
        hi=None,
        after=(cursor, gone),
        want=10,
        descending=descending,
        persist=None,
    )
    got = lua.parse_time_range(run(redis_client, key_strategy, lua.TIME_RANGE, args))
    assert [entry[0] for entry in got.entries] == [kept]


def test_info_goes_on_where_its_budget_ran_out(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    # from each end, a call examines at most its budget and says where to go on.
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy, ttl=0.05)
    repo.put_many([device(f"old{i}", ms=i) for i in range(5)])
    repo.put_many([device(f"new{i}", ms=100 + i) for i in range(5)])
    repo.ttl = None
    repo.put(device("mid", ms=50))
    time.sleep(0.1)
    got = lua.parse_info(run(redis_client, key_strategy, lua.INFO, lua.info_args(budget=3)))
    assert (got.devices, got.lowest, got.highest) == (1, None, None)
    assert got.low_next is not None
    assert got.high_next is not None
    assert lua.text(got.low_next[1]) == "old2"
    assert lua.text(got.high_next[1]) == "new2"
    args = lua.info_args(budget=3, low=got.low_next, high=got.high_next)
    got = lua.parse_info(run(redis_client, key_strategy, lua.INFO, args))
    assert got == lua.InfoReply(1, score_at(50), score_at(50))
    args = lua.info_args(budget=100, search_low=False, high=(score_at(50), "mid"))
    got = lua.parse_info(run(redis_client, key_strategy, lua.INFO, args))
    assert got == lua.InfoReply(1, None, None)  # nothing live before "mid"
