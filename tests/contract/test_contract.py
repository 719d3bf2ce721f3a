"""The repository contract: one suite, run unchanged against every implementation."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_service_client import (
    DataCorruptionError,
    DeviceMetadata,
    DeviceNotFoundError,
    DeviceQuery,
    KeyStrategy,
    Page,
    ValidationError,
)
from cache_service_client._glob import glob_match
from cache_service_client._validation import MAX_PATTERN_BYTES
from tests.backends import NOW, Backend, meta


def utf8_order(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda s: s.encode())


# -- round trips ---------------------------------------------------------------------------


ODD_IDS = [
    "sensor-1",
    "a*b",
    "q?",
    "[x]",
    "back\\slash",
    "^caret",
    "ünïcödé-中文-🙂",
    "x" * 256,
    "colon:inside:id",
    "{tag}",
]


@pytest.mark.parametrize("device_id", ODD_IDS)
async def test_round_trip_keeps_every_field(backend: Backend, device_id: str) -> None:
    stored = meta(device_id)
    await backend.repo.put(stored)
    assert await backend.repo.get(device_id) == stored
    assert await backend.repo.exists(device_id)
    assert await backend.repo.list_ids() == [device_id]


async def test_optional_fields_and_empty_properties(backend: Backend) -> None:
    stored = meta("d", datatype_unit=None, additional_properties={}, persist=False)
    await backend.repo.put(stored)
    got = await backend.repo.get("d")
    assert got == stored
    assert got.datatype_unit is None
    assert got.persist is False


async def test_other_timezones_are_stored_as_the_same_instant_in_utc(backend: Backend) -> None:
    local = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    await backend.repo.put(meta("d", last_updated=local))
    got = await backend.repo.get("d")
    assert got.last_updated == NOW
    assert got.last_updated.utcoffset() == timedelta(0)


async def test_tuples_come_back_as_lists_like_json(backend: Backend) -> None:
    await backend.repo.put(meta("d", additional_properties={"t": (1, 2)}))
    assert (await backend.repo.get("d")).additional_properties == {"t": [1, 2]}


async def test_overwrite_replaces(backend: Backend) -> None:
    await backend.repo.put(meta("d"))
    await backend.repo.put(meta("d", datatype_name="humidity", additional_properties={}))
    got = await backend.repo.get("d")
    assert got.datatype_name == "humidity"
    assert got.additional_properties == {}
    assert await backend.repo.count() == 1


async def test_missing_device_raises_key_error(backend: Backend) -> None:
    with pytest.raises(DeviceNotFoundError) as caught:
        await backend.repo.get("nope")
    assert isinstance(caught.value, KeyError)
    assert caught.value.device_id == "nope"
    assert "nope" in str(caught.value)
    assert not await backend.repo.exists("nope")


# -- batches --------------------------------------------------------------------------------


async def test_put_many_and_get_many(backend: Backend) -> None:
    items = [meta(f"dev-{i:03d}", additional_properties={"i": i}) for i in range(150)]
    assert await backend.repo.put_many(items) == 150
    got = await backend.repo.get_many(["dev-005", "missing", "dev-149", "dev-005"])
    assert got == {"dev-005": items[5], "dev-149": items[149]}
    assert await backend.repo.count() == 150


async def test_get_many_detailed_reports_missing_in_order(backend: Backend) -> None:
    await backend.repo.put_many([meta("b"), meta("d")])
    result = await backend.repo.get_many_detailed(["z", "b", "a", "d", "c"])
    assert set(result.found) == {"b", "d"}
    assert result.missing == ["z", "a", "c"]
    assert result.corrupted == {}


async def test_empty_batches(backend: Backend) -> None:
    assert await backend.repo.put_many([]) == 0
    assert await backend.repo.get_many([]) == {}
    assert await backend.repo.delete_many([]) == 0


async def test_put_many_duplicate_ids_last_wins(backend: Backend) -> None:
    stored = await backend.repo.put_many(
        [meta("d", datatype_name="one"), meta("d", datatype_name="two")]
    )
    assert stored == 1
    assert (await backend.repo.get("d")).datatype_name == "two"


async def test_delete_and_delete_many(backend: Backend) -> None:
    await backend.repo.put_many([meta(f"d{i}") for i in range(5)])
    assert await backend.repo.delete("d0") is True
    assert await backend.repo.delete("d0") is False
    assert await backend.repo.delete_many(["d1", "d2", "nope", "d1"]) == 2
    assert await backend.repo.list_ids() == ["d3", "d4"]
    assert await backend.repo.count() == 2
    with pytest.raises(DeviceNotFoundError):
        await backend.repo.get("d1")


# -- ordering and paging ---------------------------------------------------------------------


async def test_list_ids_sorted_by_utf8_bytes(backend: Backend) -> None:
    ids = ["b", "B", "a", "aa", "a-1", "a_1", "Z9", "é", "中", "🙂", "~", "0", "a*", "a[", "a\\"]
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    await backend.repo.put_many([meta(i) for i in shuffled])
    assert await backend.repo.list_ids() == utf8_order(ids)


@pytest.mark.parametrize(
    ("limit", "offset"),
    [
        (None, None),
        (10, None),
        (10, 0),
        (10, 5),
        (None, 7),
        (0, 0),
        (3, 1200),
        (1000, 995),
        (1, 999),
    ],
)
async def test_paging_slices_the_sorted_ids(
    backend: Backend, limit: int | None, offset: int | None
) -> None:
    ids = [f"dev-{i:04d}" for i in range(1000)]
    await backend.repo.put_many([meta(i) for i in reversed(ids)])
    start = offset or 0
    expected = ids[start:] if limit is None else ids[start : start + limit]
    assert await backend.repo.list_ids(limit=limit, offset=offset) == expected


async def test_pattern_with_paging(backend: Backend) -> None:
    ids = [f"{kind}-{i:03d}" for kind in ("temp", "hum", "tempx") for i in range(300)]
    await backend.repo.put_many([meta(i) for i in ids])
    temp = [i for i in ids if i.startswith("temp-")]
    assert await backend.repo.list_ids(pattern="temp-*") == temp
    assert await backend.repo.list_ids(pattern="temp-*", limit=5, offset=290) == temp[290:295]
    assert await backend.repo.list_ids(pattern="*-1?9", limit=4) == [
        "hum-109",
        "hum-119",
        "hum-129",
        "hum-139",
    ]
    assert await backend.repo.list_ids(pattern="hum-00[0-2]") == ["hum-000", "hum-001", "hum-002"]


async def test_glob_patterns_are_bounded(backend: Backend) -> None:
    # A long pattern of bracket classes once cost seconds of CPU to compile; the bound is
    # counted in UTF-8 bytes, so that every backend and the server agree on it.
    await backend.repo.put_many([meta("ab"), meta("é" * 3)])
    longest = "*" * (MAX_PATTERN_BYTES - 2) + "ab"
    assert await backend.repo.list_ids(pattern=longest) == ["ab"]
    non_ascii = "é" * 3 + "*" * (MAX_PATTERN_BYTES - 6)  # 2045 characters, 2048 bytes
    assert await backend.repo.list_ids(pattern=non_ascii) == ["é" * 3]
    for too_long in ("[ab]" * 20000, "*" + longest, "é" * (MAX_PATTERN_BYTES // 2 + 1)):
        with pytest.raises(ValidationError, match="longer than") as caught:
            await backend.repo.list_ids(pattern=too_long)
        assert caught.value.field == "pattern"
        with pytest.raises(ValidationError, match="longer than") as caught:
            await backend.repo.query(DeviceQuery(pattern=too_long))
        assert caught.value.field == "pattern"
    page = await backend.repo.query(DeviceQuery(pattern=longest))
    assert [m.device_id for m in page.items] == ["ab"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a\\*b", ["a*b"]),
        ("a?b", ["a*b", "a-b", "acb"]),
        ("\\[x]", ["[x]"]),
        ("[[]x]", ["[x]"]),
        ("[^a]*", ["[x]", "back\\", "é", "中"]),
        ("?", []),  # ? matches one byte: é and 中 are longer
        ("??", ["é"]),
        ("???", ["a*b", "a-b", "acb", "[x]", "中"]),
        ("a[*-]b", []),  # "*-]" is a range: the class never closes
        ("a[-*]b", ["a*b", "a-b"]),
        ("a[c-a]b", ["acb"]),
        ("*\\\\", ["back\\"]),
        ("back\\", ["back\\"]),
        ("[", []),
        ("[a", []),
        ("*", ["[x]", "a*b", "a-b", "acb", "back\\", "é", "中"]),
    ],
)
async def test_glob_edge_cases_match_redis(
    backend: Backend, pattern: str, expected: list[str]
) -> None:
    ids = ["a*b", "a-b", "acb", "[x]", "back\\", "é", "中"]
    await backend.repo.put_many([meta(i) for i in ids])
    assert await backend.repo.list_ids(pattern=pattern) == utf8_order(expected)


# -- counts and info -------------------------------------------------------------------------


async def test_count_and_info(backend: Backend) -> None:
    empty = await backend.repo.info()
    assert (empty.total_devices, empty.oldest_entry_timestamp, empty.newest_entry_timestamp) == (
        0,
        None,
        None,
    )
    items = [meta(f"d{i}", last_updated=NOW + timedelta(minutes=i)) for i in range(10)]
    await backend.repo.put_many(items)
    info = await backend.repo.info()
    assert info.total_devices == 10 == await backend.repo.count()
    assert info.oldest_entry_timestamp == NOW.replace(microsecond=123000)
    assert info.newest_entry_timestamp == NOW.replace(microsecond=123000) + timedelta(minutes=9)
    assert info.memory_usage_bytes > 0
    await backend.repo.delete("d9")
    assert (await backend.repo.info()).newest_entry_timestamp == NOW.replace(
        microsecond=123000
    ) + timedelta(minutes=8)


async def test_health_is_healthy(backend: Backend) -> None:
    health = await backend.repo.health()
    for _ in range(4):  # a loaded machine can slow one round trip past the 100 ms threshold
        if not (health.status == "degraded" and health.message.startswith("slow: ")):
            break
        health = await backend.repo.health()
    assert health.status == "healthy"
    assert health.is_healthy
    assert health.latency_ms is not None


# -- TTL -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_ttl_expiry_removes_from_every_read(backend: Backend) -> None:
    backend.repo.ttl = 0.4  # type: ignore[attr-defined]
    await backend.repo.put_many(
        [meta("short-1"), meta("short-2", last_updated=NOW - timedelta(days=1))]
    )
    backend.repo.ttl = None  # type: ignore[attr-defined]
    await backend.repo.put(meta("forever", last_updated=NOW + timedelta(days=1)))
    assert await backend.repo.count() == 3
    await asyncio.sleep(0.6)
    assert not await backend.repo.exists("short-1")
    with pytest.raises(DeviceNotFoundError):
        await backend.repo.get("short-1")
    assert await backend.repo.count() == 1
    info = await backend.repo.info()
    assert info.total_devices == 1
    assert (
        info.oldest_entry_timestamp
        == info.newest_entry_timestamp
        == NOW.replace(microsecond=123000) + timedelta(days=1)
    )
    assert await backend.repo.list_ids() == ["forever"]
    assert await backend.repo.list_ids(pattern="short*") == []
    assert await backend.repo.get_many(["short-1", "short-2", "forever"]) == {
        "forever": meta("forever", last_updated=NOW + timedelta(days=1))
    }
    assert await backend.repo.delete("short-2") is False


@pytest.mark.slow
async def test_rewrite_refreshes_ttl(backend: Backend) -> None:
    backend.repo.ttl = 0.5  # type: ignore[attr-defined]
    await backend.repo.put(meta("d"))
    await asyncio.sleep(0.3)
    await backend.repo.put(meta("d"))
    await asyncio.sleep(0.3)
    assert await backend.repo.exists("d")
    assert await backend.repo.list_ids() == ["d"]


@pytest.mark.slow
async def test_conditional_write_after_expiry_finds_nothing_stored(backend: Backend) -> None:
    backend.repo.ttl = 0.3  # type: ignore[attr-defined]
    await backend.repo.put(meta("d", last_updated=NOW + timedelta(days=1)))
    backend.repo.ttl = None  # type: ignore[attr-defined]
    assert await backend.repo.put(meta("d"), if_newer=True) is False
    await asyncio.sleep(0.5)
    assert await backend.repo.put(meta("d"), if_newer=True) is True
    assert await backend.repo.get("d") == meta("d")


# -- conditional writes ----------------------------------------------------------------------

MS = timedelta(milliseconds=1)


async def test_conditional_put_writes_only_what_is_newer(backend: Backend) -> None:
    repo = backend.repo
    assert await repo.put(meta("d")) is True  # unconditional: True always
    assert await repo.put(meta("d")) is True
    assert await repo.put(meta("new"), if_newer=True) is True  # nothing stored
    before = backend.backdoor.size()
    # Equal (a redelivery) and older: not written, nothing changes.
    assert await repo.put(meta("d", datatype_name="again"), if_newer=True) is False
    assert await repo.put(meta("d", last_updated=NOW - MS, persist=False), if_newer=True) is False
    # The same millisecond counts as equal: the index keeps milliseconds.
    same_ms = NOW.replace(microsecond=123999)
    assert await repo.put(meta("d", last_updated=same_ms), if_newer=True) is False
    assert await repo.get("d") == meta("d")
    assert backend.backdoor.size() == before
    assert await repo.query(DeviceQuery(persist=False)) == Page(items=[])
    # Strictly newer: written, indexes follow (a new datatype included).
    newer = meta("d", last_updated=NOW + MS, datatype_id="hum", persist=False)
    assert await repo.put(newer, if_newer=True) is True
    assert await repo.get("d") == newer
    assert [m.device_id for m in (await repo.query(DeviceQuery(datatype_id="hum"))).items] == ["d"]
    assert (await repo.query(DeviceQuery(datatype_id="temp"))).items == [meta("new")]
    # Unconditional writes still replace a newer value.
    assert await repo.put(meta("d")) is True
    assert await repo.get("d") == meta("d")


async def test_a_conditional_put_of_the_stored_update_itself_is_not_written_again(
    backend: Backend,
) -> None:
    # The same update stored already (identical bytes) is a redelivery: not written, as one
    # as new but different or older. (Only a retried attempt, after a lost reply, counts it as
    # written: tests/faults/test_lost_replies.py.)
    repo = backend.repo
    update = meta("d", datatype_name="first")
    assert await repo.put(update, if_newer=True) is True
    before = backend.backdoor.size()
    assert await repo.put(update, if_newer=True) is False
    assert await repo.put_many([update], if_newer=True) == 0
    assert await repo.put(meta("d", datatype_name="other"), if_newer=True) is False
    assert await repo.put(meta("d", last_updated=NOW - MS), if_newer=True) is False
    assert await repo.get("d") == update
    assert backend.backdoor.size() == before
    assert await repo.put_many([update, meta("e")], if_newer=True) == 1
    assert await repo.put(meta("d", last_updated=NOW + MS), if_newer=True) is True


async def test_conditional_put_many_counts_what_it_wrote(backend: Backend) -> None:
    repo = backend.repo
    await repo.put_many([meta("a"), meta("b")])
    items = [
        meta("a", last_updated=NOW - MS),  # older: skipped
        meta("b", last_updated=NOW + MS),  # newer: written
        meta("c"),  # new: written
        meta("b", last_updated=NOW + 2 * MS, datatype_name="newest"),  # the newest b wins
        meta("b", last_updated=NOW + MS, datatype_name="stale"),
    ]
    assert await repo.put_many(items, if_newer=True) == 2
    assert await repo.get_many(["a", "b", "c"]) == {
        "a": meta("a"),
        "b": meta("b", last_updated=NOW + 2 * MS, datatype_name="newest"),
        "c": meta("c"),
    }
    assert await repo.put_many(items, if_newer=True) == 0  # the whole batch redelivered
    assert await repo.put_many([], if_newer=True) == 0
    assert await repo.count() == 3


async def test_shuffled_redeliveries_leave_the_newest(backend: Backend) -> None:
    rng = random.Random(12)
    versions = [
        meta(f"dev-{d}", last_updated=NOW + timedelta(seconds=v), persist=v % 2 == 0,
             datatype_id=f"dt-{v % 3}", additional_properties={"v": v})
        for d in range(6)
        for v in range(8)
    ]  # fmt: skip
    deliveries = versions * 2  # every message delivered twice
    rng.shuffle(deliveries)
    position = 0
    while position < len(deliveries):
        size = rng.choice([1, 1, 3, 7])
        chunk = deliveries[position : position + size]
        position += size
        if size == 1:
            await backend.repo.put(chunk[0], if_newer=True)
        elif size == 3:  # racing writers
            await asyncio.gather(*(backend.repo.put(m, if_newer=True) for m in chunk))
        else:
            await backend.repo.put_many(chunk, if_newer=True)
    newest = {m.device_id: m for m in versions if m.additional_properties["v"] == 7}
    assert await backend.repo.get_many(list(newest)) == newest
    page = await backend.repo.query(DeviceQuery(sort="last_updated", limit=100))
    assert page.items == sorted(newest.values(), key=lambda m: (m.last_updated, m.device_id))
    assert await backend.repo.count() == 6


async def test_a_value_nobody_indexed_counts_as_older(backend: Backend) -> None:
    newer = meta("raw", last_updated=NOW + timedelta(days=1))
    backend.backdoor.set_raw("raw", msgspec.json.encode(newer))
    assert await backend.repo.put(meta("raw"), if_newer=True) is True
    assert await backend.repo.get("raw") == meta("raw")
    assert await backend.repo.list_ids() == ["raw"]  # indexed now


async def test_the_if_newer_flag_must_be_a_bool(backend: Backend) -> None:
    for bad in (1, "true", None):
        with pytest.raises(ValidationError) as caught:
            await backend.repo.put(meta("d"), if_newer=bad)  # type: ignore[arg-type]
        assert caught.value.field == "if_newer"
        with pytest.raises(ValidationError) as caught:
            await backend.repo.put_many([meta("d")], if_newer=bad)  # type: ignore[arg-type]
        assert caught.value.field == "if_newer"
    assert await backend.repo.count() == 0


# -- bad input: nothing is written -----------------------------------------------------------

BAD_IDS: list[Any] = [
    "",
    " ",
    "a b",
    "tab\there",
    "new\nline",
    "nul\x00",
    "nbsp\u00a0",
    "line\u2028sep",
    "x" * 257,
    "lone\ud800",
    123,
    None,
    b"bytes",
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
async def test_bad_ids_are_rejected_before_any_write(backend: Backend, bad: Any) -> None:
    await backend.repo.put(meta("keep"))
    before = backend.backdoor.size()
    repo = backend.repo
    for call in (
        lambda: repo.get(bad),
        lambda: repo.exists(bad),
        lambda: repo.delete(bad),
        lambda: repo.put(meta(bad)),
        lambda: repo.put_many([meta("ok"), meta(bad)]),
        lambda: repo.get_many(["keep", bad]),
        lambda: repo.delete_many(["keep", bad]),
    ):
        with pytest.raises(ValidationError) as caught:
            await call()
        assert "device_id" in str(caught.value) or "device_ids" in str(caught.value)
    assert backend.backdoor.size() == before
    assert await repo.list_ids() == ["keep"]


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"datatype_id": None}, "datatype_id"),
    ({"datatype_id": ""}, "datatype_id"),
    ({"datatype_id": 7}, "datatype_id"),
    ({"datatype_name": None}, "datatype_name"),
    ({"datatype_unit": 5}, "datatype_unit"),
    ({"persist": 1}, "persist"),
    ({"persist": "yes"}, "persist"),
    ({"last_updated": datetime(2026, 1, 1)}, "last_updated"),
    ({"last_updated": "2026-01-01T00:00:00Z"}, "last_updated"),
    ({"additional_properties": {"x": float("nan")}}, "additional_properties.x"),
    ({"additional_properties": {"x": [1, {"y": float("inf")}]}}, "additional_properties.x[1].y"),
    ({"additional_properties": {"x": -float("inf")}}, "additional_properties.x"),
    ({"additional_properties": {1: "int key"}}, "additional_properties"),
    ({"additional_properties": {"s": {1, 2}}}, "additional_properties.s"),
    ({"additional_properties": {"b": b"raw"}}, "additional_properties.b"),
    ({"additional_properties": {"big": 2**70}}, "additional_properties.big"),
    ({"additional_properties": {"when": NOW}}, "additional_properties.when"),
    ({"additional_properties": {"s": "lone\ud800"}}, "additional_properties"),
    ({"datatype_name": "lone\ud800"}, "datatype_name"),
    ({"additional_properties": []}, "additional_properties"),
]


@pytest.mark.parametrize(("changes", "field"), BAD_FIELDS, ids=lambda v: repr(v)[:40])
async def test_bad_metadata_is_rejected_naming_the_field(
    backend: Backend, changes: dict[str, Any], field: str
) -> None:
    await backend.repo.put(meta("keep"))
    before = backend.backdoor.size()
    with pytest.raises(ValidationError) as caught:
        await backend.repo.put(meta("bad", **changes))
    assert isinstance(caught.value, ValueError)
    assert field in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        await backend.repo.put_many([meta("ok-1"), meta("bad", **changes), meta("ok-2")])
    assert f"[1].{field}" in str(caught.value) or "bad" in str(caught.value)
    assert backend.backdoor.size() == before
    assert await backend.repo.list_ids() == ["keep"]


async def test_nesting_too_deep_is_rejected(backend: Backend) -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"n": deep}
    with pytest.raises(ValidationError, match="nesting"):
        await backend.repo.put(meta("d", additional_properties=deep))
    assert await backend.repo.count() == 0


async def test_wrong_argument_types_are_rejected(backend: Backend) -> None:
    with pytest.raises(ValidationError):
        await backend.repo.put({"device_id": "d"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await backend.repo.get_many("single-string")
    with pytest.raises(ValidationError):
        await backend.repo.list_ids(limit=-1)
    with pytest.raises(ValidationError):
        await backend.repo.list_ids(offset=-1)
    with pytest.raises(ValidationError):
        await backend.repo.list_ids(pattern=b"x*")  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [0, 5, None, 1.5, object()], ids=repr)
async def test_a_batch_that_is_no_iterable_is_rejected(backend: Backend, batch: Any) -> None:
    await backend.repo.put(meta("keep"))
    before = backend.backdoor.size()
    for method, field in [
        ("put_many", "items"),
        ("get_many", "device_ids"),
        ("get_many_detailed", "device_ids"),
        ("delete_many", "device_ids"),
    ]:
        with pytest.raises(ValidationError, match="must be an iterable") as caught:
            await getattr(backend.repo, method)(batch)
        assert caught.value.field == field, method
    assert backend.backdoor.size() == before
    assert await backend.repo.list_ids() == ["keep"]


# -- corrupted stored values -------------------------------------------------------------------

VALID_JSON = msgspec.json.encode(meta("victim"))
DEEP = (
    b'{"device_id":"victim","datatype_id":"t","datatype_name":"n","persist":true,'
    b'"last_updated":"2026-01-01T00:00:00Z","additional_properties":{"x":'
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}}"
)
CORRUPT_VALUES: list[tuple[str, bytes]] = [
    ("not-json", b"hello world"),
    ("non-utf8", b"\xff\xfe\xfd"),
    ("non-utf8-in-string", VALID_JSON.replace(b"temperature", b"temp\xffrature")),
    ("truncated", VALID_JSON[:-5]),
    ("empty", b""),
    ("json-array", b"[]"),
    ("json-string", b'"victim"'),
    ("empty-object", b"{}"),
    ("missing-field", b'{"device_id":"victim","datatype_id":"t"}'),
    ("wrong-type", VALID_JSON.replace(b'"persist":true', b'"persist":"yes"')),
    ("naive-datetime", VALID_JSON.replace(b'.123456Z"', b'.123456"')),
    ("unknown-version", VALID_JSON.replace(b'"v":1', b'"v":99')),
    ("other-device", msgspec.json.encode(meta("someone-else"))),
    ("deep-nesting", DEEP),
]


@pytest.mark.parametrize(("kind", "raw"), CORRUPT_VALUES, ids=[k for k, _ in CORRUPT_VALUES])
async def test_corrupted_values_raise_naming_the_key(
    backend: Backend, kind: str, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.repo.put_many([meta("victim"), meta("fine")])
    backend.backdoor.set_raw("victim", raw)
    key = backend.keys.device_key("victim")
    with pytest.raises(DataCorruptionError) as caught:
        await backend.repo.get("victim")
    assert caught.value.key == key
    assert key in str(caught.value)
    result = await backend.repo.get_many_detailed(["victim", "fine", "missing"])
    assert set(result.found) == {"fine"}
    assert set(result.corrupted) == {"victim"}
    assert result.corrupted["victim"].key == key
    assert result.missing == ["missing"]
    caplog.set_level(logging.WARNING, "cache_service_client")
    assert set(await backend.repo.get_many(["victim", "fine"])) == {"fine"}
    warned = [r for r in caplog.records if getattr(r, "corrupted_key", None) == key]
    assert warned, "get_many logs the corrupted entry it skipped, naming its key"
    assert warned[0].levelno == logging.WARNING
    assert warned[0].corrupted_reason  # type: ignore[attr-defined]
    # A good write repairs the entry.
    await backend.repo.put(meta("victim"))
    assert await backend.repo.get("victim") == meta("victim")


async def test_value_of_wrong_redis_type(backend: Backend) -> None:
    await backend.repo.put_many([meta("victim"), meta("fine")])
    backend.backdoor.set_wrong_type("victim")
    key = backend.keys.device_key("victim")
    with pytest.raises(DataCorruptionError) as caught:
        await backend.repo.get("victim")
    assert caught.value.key == key
    result = await backend.repo.get_many_detailed(["victim", "fine"])
    assert set(result.corrupted) == {"victim"}
    assert set(result.found) == {"fine"}
    assert await backend.repo.exists("victim")
    assert await backend.repo.delete("victim") is True
    assert await backend.repo.list_ids() == ["fine"]


async def test_legacy_value_without_schema_version_is_read(backend: Backend) -> None:
    await backend.repo.put(meta("old"))
    backend.backdoor.set_raw("old", VALID_JSON.replace(b'"v":1,', b"").replace(b"victim", b"old"))
    assert await backend.repo.get("old") == meta("old")


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_reads_with_cancellations_never_cross_replies(backend: Backend) -> None:
    ids = [f"dev-{i:03d}" for i in range(60)]
    await backend.repo.put_many([meta(i, additional_properties={"n": i}) for i in ids])
    rng = random.Random(42)
    crossed = 0
    for _round in range(5):
        wanted = [rng.choice(ids) for _ in range(200)]
        tasks = [asyncio.ensure_future(backend.repo.get(i)) for i in wanted]
        await asyncio.sleep(0)
        doomed = set(rng.sample(range(len(tasks)), len(tasks) // 10))
        for index in doomed:
            tasks[index].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for index, (device_id, result) in enumerate(zip(wanted, results, strict=True)):
            if isinstance(result, asyncio.CancelledError):
                assert index in doomed
                continue
            assert isinstance(result, DeviceMetadata), result
            if result.device_id != device_id or result.additional_properties["n"] != device_id:
                crossed += 1
    assert crossed == 0
    # The connections are still usable afterwards.
    got = await asyncio.gather(*(backend.repo.get(i) for i in ids))
    assert [g.device_id for g in got] == ids


# -- glob fidelity against a real Redis ----------------------------------------------------------

ID_ALPHABET = "ab-^]*?[\\é中Z0:"
ids_strategy = st.lists(
    st.text(alphabet=ID_ALPHABET, min_size=1, max_size=6), min_size=1, max_size=12, unique=True
)
pattern_strategy = st.text(alphabet=ID_ALPHABET, max_size=7)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ids=ids_strategy, data=st.data())
async def test_list_ids_pattern_matches_exactly_what_redis_scan_matches(
    backend: Backend, scan_client: redis.Redis, ids: list[str], data: st.DataObject
) -> None:
    # Patterns built from the ids themselves match often; random ones probe the edges.
    pattern = data.draw(
        st.one_of(
            pattern_strategy,
            st.sampled_from(ids).flatmap(
                lambda i: st.builds(
                    lambda cut, tail: i[:cut] + tail, st.integers(0, len(i)), pattern_strategy
                )
            ),
        ),
        label="pattern",
    )
    repo = backend.repo
    await repo.delete_many(await repo.list_ids())
    await repo.put_many([meta(i) for i in ids])
    reference = KeyStrategy(prefix=f"ref-{uuid.uuid4().hex[:10]}")
    scan_client.mset({reference.device_key(i): b"1" for i in ids})
    try:
        found = scan_client.scan_iter(match=reference.device_pattern(pattern), count=1000)
        expected = utf8_order([reference.device_id(k.decode()) for k in found])
    finally:
        scan_client.delete(*reference.device_keys(ids))
    assert await repo.list_ids(pattern=pattern) == expected
    assert await repo.list_ids(pattern=pattern, limit=2, offset=1) == expected[1:3]


# -- queries -------------------------------------------------------------------------------------


def fleet() -> list[DeviceMetadata]:
    """30 devices over 3 datatypes, with ties in last_updated (same millisecond)."""
    items = []
    for i in range(30):
        items.append(
            meta(
                f"dev-{i:02d}",
                datatype_id=("temp", "hum", "co2")[i % 3],
                persist=i % 4 != 0,
                last_updated=NOW + timedelta(milliseconds=(i * 7) % 10),
            )
        )
    return items


def order_key(m: DeviceMetadata) -> tuple[datetime, bool, str]:
    return (
        m.last_updated.replace(microsecond=m.last_updated.microsecond // 1000 * 1000),
        m.persist,
        m.device_id,
    )


async def walk(repo: Any, query: DeviceQuery) -> list[str]:
    ids: list[str] = []
    pages = 0
    while True:
        page = await repo.query(query)
        ids += [m.device_id for m in page.items]
        pages += 1
        assert pages < 100
        if page.next_cursor is None:
            return ids
        query = msgspec.structs.replace(query, cursor=page.next_cursor)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("limit", [1, 7, 30, 100])
async def test_query_by_id_pages_through_everything(
    backend: Backend, descending: bool, limit: int
) -> None:
    items = fleet()
    await backend.repo.put_many(items)
    expected = sorted((m.device_id for m in items), reverse=descending)
    assert await walk(backend.repo, DeviceQuery(limit=limit, descending=descending)) == expected


@pytest.mark.parametrize("descending", [False, True])
async def test_query_by_last_updated_breaks_ties_by_persist_then_id(
    backend: Backend, descending: bool
) -> None:
    items = fleet()
    await backend.repo.put_many(items)
    expected = [m.device_id for m in sorted(items, key=order_key, reverse=descending)]
    query = DeviceQuery(sort="last_updated", descending=descending, limit=4)
    assert await walk(backend.repo, query) == expected


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("limit", [3, 50])
async def test_query_by_last_updated_walks_past_gone_and_corrupted_entries(
    backend: Backend, descending: bool, limit: int
) -> None:
    # Unbalanced datatypes: nine in ten devices are "temp", so its index is read several times
    # per page while the others are nearly idle.
    items = [
        meta(
            f"m-{i:03d}",
            datatype_id="temp" if i % 10 else f"dt{i % 3}",
            persist=i % 4 != 0,
            last_updated=NOW + timedelta(milliseconds=i // 2),
        )
        for i in range(120)
    ]
    await backend.repo.put_many(items)
    # Scattered and in a run: the walk must replace them and fetch on after them.
    gone = {f"m-{i:03d}" for i in [*range(5, 120, 9), *range(60, 75)]}
    for device_id in gone:
        backend.backdoor.delete_raw(device_id)  # their index entries stay behind
    backend.backdoor.set_wrong_type("m-052")
    backend.backdoor.set_raw("m-053", b"not json")
    skipped = gone | {"m-052", "m-053"}
    ordered = sorted(items, key=order_key, reverse=descending)
    for datatype_id, persist in [(None, None), ("temp", None), (None, True), ("temp", False)]:
        query = DeviceQuery(
            sort="last_updated",
            descending=descending,
            limit=limit,
            datatype_id=datatype_id,
            persist=persist,
        )
        expected = [
            m.device_id
            for m in ordered
            if m.device_id not in skipped
            and (datatype_id is None or m.datatype_id == datatype_id)
            and (persist is None or m.persist == persist)
        ]
        assert await walk(backend.repo, query) == expected
    # The corrupted entries were skipped, not taken for gone: they stay listed until repaired.
    listed = await backend.repo.list_ids()
    assert {"m-052", "m-053"} <= set(listed)
    assert not gone & set(listed)


FILTERS: list[dict[str, Any]] = [
    {"datatype_id": "hum"},
    {"persist": False},
    {"persist": True, "datatype_id": "co2"},
    {"updated_after": NOW + timedelta(milliseconds=3)},
    {"updated_before": NOW + timedelta(milliseconds=3)},
    {
        "updated_after": NOW + timedelta(milliseconds=1),
        "updated_before": NOW + timedelta(milliseconds=8),
        "persist": True,
    },
    {"pattern": "dev-1?"},
    {"pattern": "*[05]", "datatype_id": "temp"},
    {"datatype_id": "nope"},
]


def expected_for(items: list[DeviceMetadata], filters: dict[str, Any]) -> list[DeviceMetadata]:
    def ms(value: datetime) -> int:
        return int((value - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(milliseconds=1))

    out = []
    for m in items:
        if "datatype_id" in filters and m.datatype_id != filters["datatype_id"]:
            continue
        if "persist" in filters and m.persist != filters["persist"]:
            continue
        if "updated_after" in filters and not ms(m.last_updated) > ms(filters["updated_after"]):
            continue
        if "updated_before" in filters and not ms(m.last_updated) < ms(filters["updated_before"]):
            continue
        if "pattern" in filters and not glob_match(filters["pattern"], m.device_id):
            continue
        out.append(m)
    return out


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(sorted(f)))
@pytest.mark.parametrize("sort", ["device_id", "last_updated"])
async def test_query_filters(backend: Backend, filters: dict[str, Any], sort: str) -> None:
    items = fleet()
    await backend.repo.put_many(items)
    matching = expected_for(items, filters)
    if sort == "device_id":
        expected = sorted(m.device_id for m in matching)
    else:
        expected = [m.device_id for m in sorted(matching, key=order_key)]
    query = DeviceQuery(sort=sort, limit=5, **filters)  # type: ignore[arg-type]
    assert await walk(backend.repo, query) == expected
    first = await backend.repo.query(msgspec.structs.replace(query, limit=1000))
    assert [m.device_id for m in first.items] == expected
    assert first.total is None  # filtered: no total


async def test_query_items_and_total(backend: Backend) -> None:
    items = fleet()
    await backend.repo.put_many(items)
    page = await backend.repo.query(DeviceQuery(limit=3))
    assert page.items == sorted(items, key=lambda m: m.device_id)[:3]
    assert page.total == 30
    follow = await backend.repo.query(DeviceQuery(limit=3, cursor=page.next_cursor))
    assert follow.total is None
    empty = await backend.repo.query(DeviceQuery(datatype_id="none"))
    assert (empty.items, empty.next_cursor) == ([], None)


async def test_query_rejects_bad_input(backend: Backend) -> None:
    await backend.repo.put_many(fleet())
    page = await backend.repo.query(DeviceQuery(limit=2))
    for query, field in [
        (DeviceQuery(limit=0), "limit"),
        (DeviceQuery(limit=1001), "limit"),
        (DeviceQuery(sort="colour"), "sort"),  # type: ignore[arg-type]
        (DeviceQuery(updated_after=datetime(2026, 1, 1)), "updated_after"),
        (DeviceQuery(cursor="garbage!"), "cursor"),
        (DeviceQuery(limit=2, cursor=page.next_cursor, datatype_id="temp"), "cursor"),
        (DeviceQuery(sort="last_updated", cursor=page.next_cursor), "cursor"),
        (DeviceQuery(datatype_id=""), "datatype_id"),
        (DeviceQuery(datatype_id="lone\ud800"), "datatype_id"),
        (DeviceQuery(pattern="lone\ud800*"), "pattern"),
        (DeviceQuery(cursor="lone\ud800"), "cursor"),
        (DeviceQuery(cursor=["\ud800"]), "cursor"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ValidationError) as caught:
            await backend.repo.query(query)
        assert caught.value.field == field
    with pytest.raises(ValidationError):
        await backend.repo.query({"limit": 5})  # type: ignore[arg-type]


async def test_query_pages_are_stable_under_concurrent_changes(backend: Backend) -> None:
    stable = [meta(f"s-{i:03d}", last_updated=NOW + timedelta(seconds=i)) for i in range(40)]
    await backend.repo.put_many(stable)
    churn = [meta(f"c-{i:03d}") for i in range(40)]
    for sort in ("device_id", "last_updated"):
        for descending in (False, True):
            await backend.repo.put_many(churn)
            query: DeviceQuery | None = DeviceQuery(sort=sort, descending=descending, limit=6)
            seen: list[str] = []
            step = 0
            while query is not None:
                page = await backend.repo.query(query)
                seen += [m.device_id for m in page.items]
                # Between pages: delete some churn devices, add new ones on both sides.
                step += 1
                await backend.repo.delete_many([f"c-{i:03d}" for i in range(step, 40, 7)])
                await backend.repo.put_many(
                    [
                        meta(f"a-{step}-{sort}-{descending}", last_updated=NOW - timedelta(days=1)),
                        meta(f"z-{step}-{sort}-{descending}", last_updated=NOW + timedelta(days=1)),
                    ]
                )
                query = (
                    None
                    if page.next_cursor is None
                    else msgspec.structs.replace(query, cursor=page.next_cursor)
                )
            stable_seen = [i for i in seen if i.startswith("s-")]
            assert sorted(stable_seen) == [m.device_id for m in stable]  # each exactly once
            assert len(seen) == len(set(seen))


@pytest.mark.slow
async def test_query_never_returns_expired_devices(backend: Backend) -> None:
    backend.repo.ttl = 0.3  # type: ignore[attr-defined]
    await backend.repo.put_many([meta(f"short-{i}") for i in range(5)])
    backend.repo.ttl = None  # type: ignore[attr-defined]
    await backend.repo.put(meta("long"))
    await asyncio.sleep(0.45)
    for sort in ("device_id", "last_updated"):
        page = await backend.repo.query(DeviceQuery(sort=sort))
        assert [m.device_id for m in page.items] == ["long"]
    assert (await backend.repo.query(DeviceQuery())).total == 1


async def test_a_value_deleted_behind_the_indexes_counts_until_repaired(backend: Backend) -> None:
    """A raw DEL leaves the index entries: Redis counts the device until a repair."""
    backend.repo.ttl = 0.4  # type: ignore[attr-defined]
    await backend.repo.put(meta("short"))
    backend.repo.ttl = None  # type: ignore[attr-defined]
    await backend.repo.put_many([meta("a"), meta("b"), meta("c")])
    backend.backdoor.delete_raw("b")  # no TTL: counted until a repair
    backend.backdoor.delete_raw("short")  # counted until its indexed expiry passes
    for _ in range(2):  # reads skip them and leave them be
        assert await backend.repo.count() == 4
        assert (await backend.repo.info()).total_devices == 4
        for sort in ("device_id", "last_updated"):
            page = await backend.repo.query(DeviceQuery(sort=sort))
            assert page.total == 4
            assert sorted(m.device_id for m in page.items) == ["a", "c"]
        assert await backend.repo.list_ids() == ["a", "c"]
    await asyncio.sleep(0.45)
    assert await backend.repo.count() == 3
    assert (await backend.repo.info()).total_devices == 3
    assert (await backend.repo.query(DeviceQuery())).total == 3
    await backend.repo.put(meta("d"))  # a writer prunes the expired entries, not "b"
    assert await backend.repo.count() == 4
    await backend.repo.repair()
    assert await backend.repo.count() == 3
    assert (await backend.repo.info()).total_devices == 3
    assert (await backend.repo.query(DeviceQuery())).total == 3


async def test_a_value_set_again_without_a_ttl_behind_the_indexes_lives_on(
    backend: Backend,
) -> None:
    """A raw SET (no TTL) over a device whose indexed expiry then passes.

    Its value lives, so it stays listed and no writer prunes it, but the expiry index no longer
    counts it; a repair rewrites its expiry entry and it counts again.
    """
    backend.repo.ttl = 0.3  # type: ignore[attr-defined]
    device = meta("a")
    await backend.repo.put(device)
    backend.repo.ttl = None  # type: ignore[attr-defined]
    backend.backdoor.set_raw("a", msgspec.json.encode(device))
    await asyncio.sleep(0.4)
    await backend.repo.info()  # prunes the expired entries whose value is gone: not this one
    await backend.repo.put(meta("b"))  # so does a writer
    assert await backend.repo.list_ids() == ["a", "b"]
    page = await backend.repo.query(DeviceQuery())
    assert sorted(m.device_id for m in page.items) == ["a", "b"]
    before = await backend.repo.count()
    report = await backend.repo.repair()
    assert report.indexed == 1
    assert await backend.repo.count() == before + 1 == 2
    assert (await backend.repo.info()).total_devices == 2


# -- repair ---------------------------------------------------------------------------------------


async def test_repair_indexes_foreign_values_and_removes_orphans(backend: Backend) -> None:
    await backend.repo.put_many([meta("a"), meta("b"), meta("c")])
    assert (await backend.repo.repair()).indexed == 0
    backend.backdoor.delete_raw("b")  # gone behind our back: an orphan in the indexes
    foreign = msgspec.json.encode(meta("from-other-tool", datatype_id="hum"))
    backend.backdoor.set_raw("from-other-tool", foreign)  # a value nobody indexed
    backend.backdoor.set_raw("broken", b"not json")
    report = await backend.repo.repair()
    assert report.indexed == 1
    assert report.orphans_removed == 1
    assert report.corrupted == [backend.keys.device_key("broken")]
    assert report.scanned == 4  # a, c, from-other-tool, broken
    assert await backend.repo.list_ids() == ["a", "c", "from-other-tool"]
    assert await backend.repo.count() == 3
    page = await backend.repo.query(DeviceQuery(datatype_id="hum"))
    assert [m.device_id for m in page.items] == ["from-other-tool"]
    again = await backend.repo.repair()
    assert (again.indexed, again.orphans_removed) == (0, 0)


async def test_repair_fixes_a_changed_datatype(backend: Backend) -> None:
    await backend.repo.put(meta("x", datatype_id="temp"))
    backend.backdoor.set_raw("x", msgspec.json.encode(meta("x", datatype_id="hum", persist=False)))
    report = await backend.repo.repair()
    assert report.indexed == 1
    hum = await backend.repo.query(DeviceQuery(datatype_id="hum", sort="last_updated"))
    temp = await backend.repo.query(DeviceQuery(datatype_id="temp", sort="last_updated"))
    assert ([m.device_id for m in hum.items], temp.items) == (["x"], [])
    assert [m.device_id for m in (await backend.repo.query(DeviceQuery(persist=False))).items] == [
        "x"
    ]
