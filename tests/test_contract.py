"""The repository contract: one suite, run unchanged against every implementation."""

from __future__ import annotations

import asyncio
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
    KeyStrategy,
    ValidationError,
)
from tests.backends import Backend

NOW = datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=timezone.utc)


def meta(device_id: str, **changes: Any) -> DeviceMetadata:
    fields: dict[str, Any] = {
        "device_id": device_id,
        "datatype_id": "temp",
        "datatype_name": "temperature",
        "datatype_unit": "C",
        "persist": True,
        "last_updated": NOW,
        "additional_properties": {"firmware": "1.2", "gain": 0.5, "tags": ["a", {"b": None}]},
    }
    fields.update(changes)
    return DeviceMetadata(**fields)


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
    assert (empty.total_devices, empty.oldest_entry, empty.newest_entry) == (0, None, None)
    items = [meta(f"d{i}", last_updated=NOW + timedelta(minutes=i)) for i in range(10)]
    await backend.repo.put_many(items)
    info = await backend.repo.info()
    assert info.total_devices == 10 == await backend.repo.count()
    assert info.oldest_entry == NOW.replace(microsecond=123000)
    assert info.newest_entry == NOW.replace(microsecond=123000) + timedelta(minutes=9)
    assert info.memory_usage_bytes > 0
    await backend.repo.delete("d9")
    assert (await backend.repo.info()).newest_entry == NOW.replace(microsecond=123000) + timedelta(
        minutes=8
    )


async def test_health_is_healthy(backend: Backend) -> None:
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
        info.oldest_entry
        == info.newest_entry
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
    backend: Backend, kind: str, raw: bytes
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
    assert set(await backend.repo.get_many(["victim", "fine"])) == {"fine"}
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
    backend: Backend, redis_client: redis.Redis, ids: list[str], data: st.DataObject
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
    redis_client.mset({reference.device_key(i): b"1" for i in ids})
    try:
        found = redis_client.scan_iter(match=reference.device_pattern(pattern), count=1000)
        expected = utf8_order([reference.device_id(k.decode()) for k in found])
    finally:
        redis_client.delete(*reference.device_keys(ids))
    assert await repo.list_ids(pattern=pattern) == expected
    assert await repo.list_ids(pattern=pattern, limit=2, offset=1) == expected[1:3]
