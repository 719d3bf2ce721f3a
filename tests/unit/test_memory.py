"""What only the in-memory repositories offer: an injected clock, raw injection, threads."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_service_client import (
    AsyncDeviceMetadataRepository,
    AsyncInMemoryDeviceMetadataRepository,
    DeviceMetadata,
    DeviceMetadataRepository,
    DeviceNotFoundError,
    DeviceQuery,
    InMemoryDeviceMetadataRepository,
)
from cache_service_client._planner import QueryPlan, plan_query
from cache_service_client.repository import memory as memory_module
from tests import backends
from tests.backends import PLAIN, at_ms

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def meta(device_id: str) -> DeviceMetadata:
    """The suite's factory (tests/backends.py), plain: no unit, no properties, not persisted."""
    plain = {**PLAIN, "datatype_name": "n", "persist": False}
    return backends.meta(device_id, **plain, last_updated=NOW)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_protocols_are_satisfied() -> None:
    assert isinstance(InMemoryDeviceMetadataRepository(), DeviceMetadataRepository)
    assert isinstance(AsyncInMemoryDeviceMetadataRepository(), AsyncDeviceMetadataRepository)


def test_expiry_follows_redis_millisecond_rule_with_a_fake_clock() -> None:
    clock = FakeClock()
    repo = InMemoryDeviceMetadataRepository(ttl=10, clock=clock)
    repo.put(meta("a"))
    clock.now += 10.0  # exactly at the expiry millisecond: Redis still has the key
    assert repo.exists("a")
    clock.now += 0.001
    assert not repo.exists("a")
    with pytest.raises(DeviceNotFoundError):
        repo.get("a")
    assert repo.count() == 0
    assert repo.list_ids() == []


def test_ttl_setter_validates() -> None:
    repo = InMemoryDeviceMetadataRepository()
    repo.ttl = 0
    assert repo.ttl is None
    with pytest.raises(ValueError, match="ttl"):
        repo.ttl = -1


def test_inject_raw_is_not_indexed_like_a_foreign_set_in_redis() -> None:
    repo = InMemoryDeviceMetadataRepository()
    repo.inject_raw("x", b"garbage")
    assert repo.exists("x")
    assert repo.list_ids() == []
    repo.inject_raw("x", None)
    assert not repo.exists("x")
    with pytest.raises(ValueError, match="unknown Redis type"):
        repo.inject_raw("x", None, redis_type="blob")


async def test_async_twin_shares_its_core() -> None:
    core = InMemoryDeviceMetadataRepository()
    twin = AsyncInMemoryDeviceMetadataRepository(core=core)
    await twin.put(meta("a"))
    assert core.get("a") == meta("a")
    twin.ttl = 5
    assert core.ttl == 5


def test_threads_writing_and_deleting_leave_a_consistent_store() -> None:
    repo = InMemoryDeviceMetadataRepository()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(300):
                device_id = f"w{worker}-{i % 50}"
                repo.put(meta(device_id))
                if i % 3 == 0:
                    repo.delete(device_id)
                repo.list_ids(pattern=f"w{worker}-*", limit=5)
                repo.count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ids = repo.list_ids()
    assert ids == sorted(ids)
    assert len(ids) == repo.count() == len(repo.get_many(ids))


# -- the indexes behind the queries ------------------------------------------------------------

BASE = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def dev(
    device_id: str, datatype_id: str = "t", persist: bool = False, ms: int = 0
) -> DeviceMetadata:
    return at_ms(device_id, datatype_id, persist, ms, base=BASE)


def check_indexes(repo: InMemoryDeviceMetadataRepository) -> None:
    """Every order, the expiry index, the gone set and the memory total agree with the entries."""
    ks = repo._ks
    by_id: dict[Any, list[str]] = {}
    by_time: dict[Any, list[str]] = {}
    expiry = []
    expiring: dict[int, set[str]] = {}
    memory = 0
    for device_id, m in ks.indexed.items():
        assert m.device_id == device_id
        assert m.timed == memory_module._time_key(m.score, device_id)
        assert m.persist == bool(m.score & 1)
        entry = ks.data.get(m.key)
        if m.deadline == memory_module._GONE:
            assert m.size == 0
            assert device_id in ks.gone
        else:
            assert device_id not in ks.gone
            assert entry is not None
            assert m.deadline == memory_module._deadline(entry)
            assert m.size == len(m.key.encode()) + len(entry.value)
        # The expiry index follows the library's writes, not values changed behind its back.
        if m.expires != memory_module._NEVER:
            expiry.append(m.expires)
            expiring.setdefault(m.expires, set()).add(device_id)
        memory += m.size
        for which in memory_module._id_orders(m.datatype, m.persist):
            by_id.setdefault(which, []).append(device_id)
        for which in memory_module._time_orders(m.datatype):
            by_time.setdefault(which, []).append(m.timed)
    assert ks.gone <= set(ks.indexed)
    assert ks.memory == memory
    assert list(ks.expiry) == sorted(expiry)
    assert ks.expiring == expiring
    assert ks.by_id[(None, None)] is ks.index
    assert {k: list(v) for k, v in ks.by_id.items() if v} == {
        k: sorted(v) for k, v in by_id.items()
    }
    assert all(v for k, v in ks.by_time.items() if k != (None, None))  # emptied ones are dropped
    assert {k: list(v) for k, v in ks.by_time.items() if v} == {
        k: sorted(v) for k, v in by_time.items()
    }


def plan_matches(plan: QueryPlan, device_id: str, score: int) -> bool:
    """Whether a device passes the plan's id pattern, persist and time filters (plainly)."""
    if plan.matcher is not None and not plan.matcher(device_id):
        return False
    if plan.persist is not None and (score & 1) != plan.persist:
        return False
    if plan.lo is not None and score < plan.lo:
        return False
    return not (plan.hi is not None and score > plan.hi)


def reference(repo: InMemoryDeviceMetadataRepository, query: DeviceQuery, now_ms: int) -> list[str]:
    """The ids a query walk must return: a full scan of the live indexed devices."""
    plan = plan_query(query)
    rows = []
    for device_id, m in repo._ks.indexed.items():
        entry = repo._data.get(m.key)
        if entry is None or (entry.expires_at is not None and now_ms > entry.expires_at):
            continue
        if plan.datatype_id is not None and m.datatype != plan.datatype_id:
            continue
        if plan_matches(plan, device_id, m.score):
            rows.append((plan.sort_key(device_id, m.score), device_id))
    rows.sort(reverse=plan.descending)
    return [device_id for _, device_id in rows]


def walk_all(repo: InMemoryDeviceMetadataRepository, query: DeviceQuery) -> list[list[str]]:
    pages = []
    while True:
        page = repo.query(query)
        pages.append([m.device_id for m in page.items])
        if page.next_cursor is None:
            return pages
        query = msgspec.structs.replace(query, cursor=page.next_cursor)


STRATEGIES = {
    "fetch": lambda k, walk, n, want, cost: True,
    "walk": lambda k, walk, n, want, cost: False,
    "cost": memory_module._prefer_fetch,
}

fleets = st.lists(
    st.tuples(
        st.text(alphabet="ab1-é\U000e01ef", min_size=1, max_size=4),
        st.sampled_from(["t", "h"]),
        st.booleans(),
        st.integers(0, 6),
        st.sampled_from(["keep", "keep", "keep", "delete", "gone", "expire", "raw", "move"]),
    ),
    max_size=30,
    unique_by=lambda row: row[0],
)
memory_queries = st.builds(
    DeviceQuery,
    datatype_id=st.none() | st.sampled_from(["t", "h", "x"]),
    persist=st.none() | st.booleans(),
    updated_after=st.none() | st.integers(-1, 6).map(lambda n: BASE + timedelta(milliseconds=n)),
    updated_before=st.none() | st.integers(0, 7).map(lambda n: BASE + timedelta(milliseconds=n)),
    pattern=st.none() | st.sampled_from(["a*", "ab*", "*b", "a?", "\U000e01ef*", "é*1", "*"]),
    sort=st.sampled_from(["device_id", "last_updated"]),
    descending=st.booleans(),
    limit=st.integers(1, 5),
)


@settings(max_examples=300, deadline=None)
@given(fleet=fleets, queries=st.lists(memory_queries, min_size=1, max_size=4))
def test_every_strategy_pages_like_a_full_scan(
    fleet: list[tuple[str, str, bool, int, str]], queries: list[DeviceQuery]
) -> None:
    clock = FakeClock()
    repo = InMemoryDeviceMetadataRepository(ttl=None, clock=clock)
    for device_id, datatype_id, persist, ms, fate in fleet:
        repo.ttl = 5 if fate == "expire" else None
        repo.put(dev(device_id, datatype_id, persist, ms))
    repo.ttl = None
    for device_id, datatype_id, persist, ms, fate in fleet:
        if fate == "delete":
            repo.delete(device_id)
        elif fate == "gone":
            repo.inject_raw(device_id, None)
        elif fate == "raw":  # a value past the index: the index still says the old one
            repo.inject_raw(device_id, msgspec.json.encode(dev(device_id, "h", True, 1)))
        elif fate == "move":
            repo.put(dev(device_id, "h" if datatype_id == "t" else "t", not persist, 6 - ms))
    clock.now += 6  # the "expire" ones are gone
    check_indexes(repo)
    now_ms = int(clock.now * 1000)
    for query in queries:
        expected = reference(repo, query, now_ms)
        results = {}
        for name, strategy in STRATEGIES.items():
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(memory_module, "_prefer_fetch", strategy)
                results[name] = walk_all(repo, query)
            check_indexes(repo)  # pruning dead entries on the walk keeps everything consistent
        pages = results["cost"]
        assert results["fetch"] == results["walk"] == pages
        assert [i for page in pages for i in page] == expected
        assert all(len(page) == query.limit for page in pages[:-1])
    # As Redis does, a value deleted behind the indexes' back counts until a repair.
    ghosts = sum(1 for *_, fate in fleet if fate == "gone")
    assert repo.count() == len(reference(repo, DeviceQuery(), now_ms)) + ghosts
    info = repo.info()
    check_indexes(repo)
    assert info.total_devices == repo.count()
    dead = [m for m in repo._ks.indexed.values() if m.deadline < now_ms]
    repair = repo.repair()
    check_indexes(repo)
    assert repair.orphans_removed == len(dead)  # those the reads have not pruned yet
    assert repo.count() == len(repo.list_ids())


@pytest.mark.parametrize("sort", ["device_id", "last_updated"])
def test_expiry_while_paging_drops_expired_devices_from_later_pages(
    sort: Literal["device_id", "last_updated"],
) -> None:
    clock = FakeClock()
    repo = InMemoryDeviceMetadataRepository(ttl=None, clock=clock)
    repo.put_many([dev(f"k{i}", ms=i) for i in range(0, 10, 2)])
    repo.ttl = 1
    repo.put_many([dev(f"k{i}", ms=i) for i in range(1, 10, 2)])  # the odd ones expire
    first = repo.query(DeviceQuery(sort=sort, limit=3))
    assert [m.device_id for m in first.items] == ["k0", "k1", "k2"]
    assert (first.total, repo.count()) == (10, 10)
    clock.now += 1.001
    assert repo.count() == 5
    rest = repo.query(DeviceQuery(sort=sort, limit=3, cursor=first.next_cursor))
    assert [m.device_id for m in rest.items] == ["k4", "k6", "k8"]
    assert rest.next_cursor is None
    check_indexes(repo)
    assert set(repo._ks.indexed) == {f"k{i}" for i in range(0, 10, 2)} | {"k1"}  # walked: pruned
    assert repo.count() == 5
    assert repo.repair().orphans_removed == 1  # "k1", which no walk met since it expired
    check_indexes(repo)


def test_a_changed_datatype_and_persist_moves_a_device_between_orders() -> None:
    repo = InMemoryDeviceMetadataRepository()
    repo.put_many([dev("x", "t", True, 5), dev("y", "t", True, 1)])
    repo.put(dev("x", "h", False, 3))
    check_indexes(repo)
    assert set(repo._ks.by_time) == {(None, None), ("t", None), ("h", None)}
    assert set(repo._ks.by_id) == {(None, None), (None, True), (None, False)} | {
        ("t", None),
        ("t", True),
        ("h", None),
        ("h", False),
    }

    def ids(**fields: Any) -> list[str]:
        return [m.device_id for m in repo.query(DeviceQuery(**fields)).items]

    assert ids(datatype_id="t") == ids(datatype_id="t", sort="last_updated") == ["y"]
    assert ids(datatype_id="h", persist=False, sort="last_updated") == ["x"]
    assert ids(datatype_id="h", persist=True) == []
    assert ids(persist=True) == ["y"]
    assert ids(sort="last_updated") == ["y", "x"]
    repo.delete("y")
    check_indexes(repo)
    assert ("t", None) not in repo._ks.by_id  # an emptied order is dropped
    assert ids(datatype_id="t") == []


def test_a_value_removed_behind_the_index_is_skipped_then_repaired() -> None:
    repo = InMemoryDeviceMetadataRepository()
    repo.put_many([dev("a", ms=1), dev("b", ms=2), dev("c", ms=3)])
    size = repo.info().memory_usage_bytes
    repo.inject_raw("c", None)
    assert repo.count() == 3  # as in Redis: counted until a repair
    check_indexes(repo)
    info = repo.info()
    assert (info.total_devices, info.newest_entry_timestamp) == (
        3,
        BASE + timedelta(milliseconds=2),  # "c" is skipped
    )
    assert info.memory_usage_bytes < size
    repo.inject_raw("a", None)
    assert [m.device_id for m in repo.query(DeviceQuery(sort="last_updated", limit=1)).items] == [
        "b"
    ]
    assert repo.query(DeviceQuery()).total == 3
    check_indexes(repo)
    assert repo.list_ids() == ["b"]
    repo.inject_raw("b", None)
    assert repo.count() == 3
    assert repo.repair().orphans_removed == 3  # reads skip entries, they do not remove them
    check_indexes(repo)
    info = repo.info()
    assert (info.total_devices, info.memory_usage_bytes, info.oldest_entry_timestamp) == (
        0,
        0,
        None,
    )


def test_memory_usage_follows_puts_overwrites_deletes_and_expiry() -> None:
    clock = FakeClock()
    repo = InMemoryDeviceMetadataRepository(ttl=10, clock=clock)
    codec = repo.codec

    def size(*devices: DeviceMetadata) -> int:
        keys = repo.key_strategy
        return sum(
            len(keys.device_key(m.device_id).encode()) + len(codec.encode(m)) for m in devices
        )

    assert repo.info().memory_usage_bytes == 0
    a, b = dev("a"), dev("bb", ms=1)
    repo.put_many([a, b])
    assert repo.info().memory_usage_bytes == size(a, b)
    longer = msgspec.structs.replace(a, datatype_name="a much longer name")
    repo.put(longer)
    assert repo.info().memory_usage_bytes == size(longer, b)
    repo.inject_raw("bb", b"xyz")  # counted as stored, while indexed
    assert repo.info().memory_usage_bytes == size(longer) + len(b"device:bb") + 3
    repo.inject_raw("new", b"unindexed")  # not indexed: not counted
    assert repo.info().memory_usage_bytes == size(longer) + len(b"device:bb") + 3
    repo.delete("bb")
    assert repo.info().memory_usage_bytes == size(longer)
    repo.ttl = 20
    repo.put(b)
    clock.now += 10.001  # "a" expires, "bb" not yet
    info = repo.info()
    assert (info.total_devices, info.memory_usage_bytes) == (1, size(b))
    assert info.oldest_entry_timestamp == info.newest_entry_timestamp == b.last_updated
    check_indexes(repo)
    clock.now += 10
    info = repo.info()
    assert (info.total_devices, info.memory_usage_bytes, info.oldest_entry_timestamp) == (
        0,
        0,
        None,
    )
    check_indexes(repo)


def test_list_ids_offset_jumps_or_walks_alike() -> None:
    repo = InMemoryDeviceMetadataRepository()
    repo.put_many([dev(f"d{i:04d}") for i in range(3000)])
    assert repo.list_ids(offset=2990) == [f"d{i:04d}" for i in range(2990, 3000)]
    assert repo.list_ids(pattern="d1*", offset=5, limit=3) == ["d1005", "d1006", "d1007"]
    repo.inject_raw("d1006", None)  # a dead entry: the walk skips it
    assert repo.list_ids(pattern="d1*", offset=5, limit=3) == ["d1005", "d1007", "d1008"]
    assert repo.list_ids(pattern="d1*", offset=5, limit=3) == ["d1005", "d1007", "d1008"]
    assert repo.list_ids(pattern="d2?9?", offset=1, limit=2) == ["d2091", "d2092"]
    assert repo.list_ids(pattern="e*", offset=1) == []


def test_prefix_end_bounds_every_id_with_the_prefix() -> None:
    end = memory_module._prefix_end
    assert end("") is None
    assert end("ab") == "ac"
    assert end("a\U0010ffff") == "b"
    assert end("\U0010ffff\U0010ffff") is None
    assert end("a\U0010ffff") > "a\U0010ffff\U0010ffff"  # type: ignore[operator]


def test_clear_and_shared_stores_keep_the_indexes() -> None:
    first = InMemoryDeviceMetadataRepository.shared("indexes-test")
    second = InMemoryDeviceMetadataRepository.shared("indexes-test")
    try:
        first.put_many([dev("a", "t"), dev("b", "h", True)])
        assert [m.device_id for m in second.query(DeviceQuery(datatype_id="h")).items] == ["b"]
        second.clear()
        assert first.count() == 0
        assert first.query(DeviceQuery(sort="last_updated")).items == []
        first.put(dev("c"))
        assert second.list_ids() == ["c"]
        check_indexes(first)
    finally:
        InMemoryDeviceMetadataRepository.drop_shared("indexes-test")


def test_time_keys_sort_as_score_then_id() -> None:
    key = memory_module._time_key
    pairs = [(-(10**14), "b"), (-1, "a"), (0, "z"), (0, "zz"), (1, "a"), (5 * 10**14, "é")]
    keys = [key(score, device_id) for score, device_id in pairs]
    assert sorted(keys) == keys
    assert key(0) < key(0, "a") < key(1)
    assert [len(k) - memory_module._SCORE_DIGITS for k in keys] == [len(i) for _, i in pairs]
    assert [ord(k[memory_module._SCORE_DIGITS - 1]) & 1 for k in keys] == [s & 1 for s, _ in pairs]


def test_a_prefix_sorted_by_time_read_whole_stops_before_the_next_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = InMemoryDeviceMetadataRepository(ttl=None)
    repo.put_many([dev("a1"), dev("b"), dev("a", ms=1)])
    monkeypatch.setattr(memory_module, "_prefer_fetch", lambda *args: True)
    page = repo.query(DeviceQuery(pattern="a*", sort="last_updated"))
    assert [m.device_id for m in page.items] == ["a1", "a"]  # not "b", the prefix range's end
