"""Maintenance and bulk loads racing writers, checked by a ledger of acknowledged writes
against the final values and indexes.

``repair()`` while the cache is in use: a write that lands between a repair's read of a batch
and its REINDEX of that batch is never undone in the indexes. A repair reads values (MGET) and
re-indexes them in a later round trip. A put in between indexes its new value; the repair's
stale datatype and time score must not replace those entries (the device would be listed under
the old datatype, and ``if_newer``, which compares against the time index, would let an older
update overwrite the newer value).

``devcache import --if-newer`` while other writers ``put`` the same devices and others, with
and without ``if_newer``: every device ends with the value the ledger allows (the newest time
wherever only ``if_newer`` writes followed the seed), and the indexes agree with the values.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from cache_service_client import (
    DeviceMetadata,
    DeviceQuery,
    KeyStrategy,
    MetadataCodec,
    RedisDeviceMetadataRepository,
    RepairReport,
)
from cache_service_client.__main__ import main
from cache_service_client.repository.redis import flows, lua
from cache_service_client.repository.redis.flows import FlowContext
from cache_service_client.repository.redis.ops import Flow, Op, Pipeline, ScriptCall
from tests.backends import PLAIN, meta

WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def device(device_id: str, datatype_id: str, ms: int) -> DeviceMetadata:
    return device_at(device_id, datatype_id, WHEN + timedelta(milliseconds=ms))


def device_at(device_id: str, datatype_id: str, when: datetime) -> DeviceMetadata:
    plain = {**PLAIN, "datatype_id": datatype_id, "datatype_name": datatype_id}
    return meta(device_id, **plain, last_updated=when)


def _is_reindex(op: Op) -> bool:
    calls = op.commands if isinstance(op, Pipeline) else (op,)
    return any(isinstance(c, ScriptCall) and c.script is lua.REINDEX for c in calls)


def repair_with(ctx: FlowContext, before_reindex: Callable[[], None]) -> Flow[RepairReport]:
    """The repair flow, with ``before_reindex`` run once before its first REINDEX is sent."""
    flow = flows.repair(ctx)
    reply: Any = None
    done = False
    while True:
        try:
            op = flow.send(reply)
        except StopIteration as stop:
            report: RepairReport = stop.value
            return report
        if not done and _is_reindex(op):
            done = True
            before_reindex()
        reply = yield op


def test_a_put_between_the_repairs_read_and_its_reindex_stays_indexed(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy, ttl=None)
    repo.put_many([device("a", "t", 0), device("b", "t", 0)])
    redis_client.zrem(key_strategy.by_time_index(), "b")  # something for the repair to do

    def newer_put() -> None:
        assert repo.put(device("a", "h", 10), if_newer=True)

    report = repo._driver.run(repair_with, repo._ctx, newer_put)
    assert report.scanned == 2
    assert report.indexed == 1  # "b"; "a" was left to the put that changed it
    assert repo.get("a").datatype_id == "h"
    t_page = repo.query(DeviceQuery(datatype_id="t"))
    assert [m.device_id for m in t_page.items] == ["b"]
    h_page = repo.query(DeviceQuery(datatype_id="h"))
    assert [m.device_id for m in h_page.items] == ["a"]
    by_time = repo.query(DeviceQuery(sort="last_updated"))
    assert [m.device_id for m in by_time.items] == ["b", "a"]
    # A late, older update is refused: the time index still holds the newer value's time.
    assert repo.put(device("a", "t", 5), if_newer=True) is False
    assert repo.get("a").last_updated == WHEN + timedelta(milliseconds=10)
    assert repo.info().newest_entry_timestamp == WHEN + timedelta(milliseconds=10)


def test_repair_in_a_loop_beside_writers_loses_no_acknowledged_write(
    redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    devices = [f"d{i:03d}" for i in range(200)]
    writers = 3
    datatypes = ("t", "h", "p")
    # Each writer owns its devices and gives every write a time of its own (no ties), in an
    # order that goes back and forth, with if_newer.
    ledger: list[dict[str, DeviceMetadata]] = [{} for _ in range(writers)]
    stop = threading.Event()
    errors: list[BaseException] = []
    repo = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy, ttl=None)
    repo.put_many([device(d, "t", 0) for d in devices])

    def write(n: int) -> None:
        rng = random.Random(n)
        mine = devices[n::writers]
        slots = list(range(1, 100_000))
        rng.shuffle(slots)
        try:
            for ms in slots:
                if stop.is_set():
                    return
                m = device(rng.choice(mine), rng.choice(datatypes), ms * writers + n)
                if repo.put(m, if_newer=True):
                    best = ledger[n].get(m.device_id)
                    assert best is None or best.last_updated < m.last_updated
                    ledger[n][m.device_id] = m
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    repairs = 0

    def repair() -> None:
        nonlocal repairs
        try:
            while not stop.is_set():
                repo.repair()
                repairs += 1
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    threads.append(threading.Thread(target=repair))
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert repairs > 0
    expected = {d: device(d, "t", 0) for d in devices}
    for own in ledger:
        expected.update(own)
    # Every value is the newest acknowledged write of its device.
    stored = repo.get_many(devices)
    assert {d: m.last_updated for d, m in stored.items()} == {
        d: m.last_updated for d, m in expected.items()
    }
    assert {d: m.datatype_id for d, m in stored.items()} == {
        d: m.datatype_id for d, m in expected.items()
    }
    # The indexes agree with the values: by datatype, and in last_updated order.
    for datatype in datatypes:
        page = repo.query(DeviceQuery(datatype_id=datatype, limit=1000))
        assert sorted(m.device_id for m in page.items) == sorted(
            d for d, m in expected.items() if m.datatype_id == datatype
        ), datatype
    page = repo.query(DeviceQuery(sort="last_updated", limit=1000))
    order = sorted(expected, key=lambda d: (expected[d].last_updated, d))
    assert [m.device_id for m in page.items] == order
    # if_newer compares against the newest value: an update 1 ms older is refused.
    for d, m in expected.items():
        older = device_at(d, "p", m.last_updated - timedelta(milliseconds=1))
        assert repo.put(older, if_newer=True) is False, d
    assert repo.repair().indexed == 0  # nothing was left to fix


# -- devcache import racing writers -------------------------------------------------------------

#: Seconds of racing.
RACE = 2.5
#: Devices per group (five groups).
GROUP = 50
#: Writer identities: a write's time is ``WHEN + slot * IDENTITIES + identity`` milliseconds, so
#: no two writes of a run share a time (``if_newer`` compares whole milliseconds, equal: refused).
SEED, IMPORTER, NEWER_A, NEWER_B, PLAIN_A, PLAIN_B = range(6)
IDENTITIES = 6


@dataclass(frozen=True)
class Write:
    """One completed write of one device, as the ledger keeps it.

    Attributes:
        metadata: What was written.
        kind: ``"seed"`` (before the race), ``"import"`` (a line of a ``devcache import
            --if-newer`` round), ``"newer"`` (``put``/``put_many`` with ``if_newer``) or
            ``"plain"`` (``put`` without it).
        started: ``time.monotonic()`` before the call (an import round's: before the round).
        acked: ``time.monotonic()`` after it returned.
        written: What ``put`` returned; None where it is not known per device.
    """

    metadata: DeviceMetadata
    kind: str
    started: float
    acked: float
    written: bool | None = None


class Slots:
    """The write times of one writer identity: distinct, in an order that goes back and forth."""

    def __init__(self, identity: int, rng: random.Random) -> None:
        slots = list(range(1, 100_000))
        rng.shuffle(slots)
        self._slots = iter(slots)
        self._identity = identity

    def next(self) -> datetime:
        return WHEN + timedelta(milliseconds=next(self._slots) * IDENTITIES + self._identity)


def random_device(device_id: str, when: datetime, rng: random.Random) -> DeviceMetadata:
    """``device_id`` of a random datatype and persist flag, last updated ``when``."""
    datatype = rng.choice(("t", "h", "p"))
    fields = {
        **PLAIN,
        "datatype_id": datatype,
        "datatype_name": datatype,
        "persist": rng.random() < 0.5,
        "additional_properties": {"written": when.isoformat()},
    }
    return meta(device_id, **fields, last_updated=when)


@pytest.fixture(params=["redis", "cluster"])
def import_target(
    request: pytest.FixtureRequest, key_strategy: KeyStrategy
) -> tuple[str, RedisDeviceMetadataRepository]:
    """A ``devcache`` URL and a repository of its keys: one node, or the cluster (8 buckets)."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        client: redis.Redis | RedisCluster = request.getfixturevalue("redis_client")
        return f"{url}?key_prefix={key_strategy.prefix}", RedisDeviceMetadataRepository(
            client, key_strategy=key_strategy
        )
    base: str = request.getfixturevalue("cluster_url")
    keys = KeyStrategy(prefix=key_strategy.prefix, buckets=8)
    cluster: RedisCluster = request.getfixturevalue("cluster_client")
    url = f"{base}?key_prefix={keys.prefix}&cluster_buckets=8"
    return url, RedisDeviceMetadataRepository(cluster, key_strategy=keys)


def test_devcache_import_racing_writers_loses_no_acknowledged_write(
    import_target: tuple[str, RedisDeviceMetadataRepository],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``devcache import --if-newer`` rounds, back to back, while other threads ``put`` the
    same devices (with and without ``if_newer``) and others; afterwards every value is the one
    the ledger of completed writes says, and the indexes agree with the values."""
    url, repo = import_target
    groups = {
        name: [f"{name}-{i:03d}" for i in range(GROUP)]
        # mixed-newer: imports and if_newer puts; mixed-plain: imports and plain puts;
        # imported: imports only; newer: if_newer puts only; plain: plain puts only.
        for name in ("mixed-newer", "mixed-plain", "imported", "newer", "plain")
    }
    devices = [d for ids in groups.values() for d in ids]
    imported = groups["mixed-newer"] + groups["mixed-plain"] + groups["imported"]
    by_newer = groups["mixed-newer"] + groups["newer"]
    by_plain = groups["mixed-plain"] + groups["plain"]
    ledgers: dict[int, list[Write]] = {identity: [] for identity in range(IDENTITIES)}
    rounds: list[tuple[float, float]] = []  # (started, acked) of each import round
    stop = threading.Event()
    errors: list[BaseException] = []

    seed_rng = random.Random(SEED)
    seed_slots = Slots(SEED, seed_rng)
    began = time.monotonic()
    seeds = [random_device(d, seed_slots.next(), seed_rng) for d in devices]
    repo.put_many(seeds)
    ledgers[SEED] = [Write(m, "seed", began, time.monotonic()) for m in seeds]

    def run_imports() -> None:
        rng = random.Random(IMPORTER)
        slots = Slots(IMPORTER, rng)
        codec = MetadataCodec("json")
        try:
            while not stop.is_set():
                order = rng.sample(imported, len(imported))
                lines = [random_device(d, slots.next(), rng) for d in order]
                path = tmp_path / f"round-{len(rounds)}.jsonl"
                path.write_bytes(b"\n".join(codec.encode(m) for m in lines) + b"\n")
                started = time.monotonic()
                argv = ["import", str(path), "--url", url, "--if-newer", "--batch", "16"]
                code = main([*argv, "--json"])
                acked = time.monotonic()
                assert code == 0, f"devcache import failed with exit code {code}"
                rounds.append((started, acked))
                ledgers[IMPORTER] += [Write(m, "import", started, acked) for m in lines]
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    def put_newer(identity: int) -> None:
        rng = random.Random(identity)
        slots = Slots(identity, rng)
        try:
            while not stop.is_set():
                started = time.monotonic()
                if rng.random() < 0.2:  # a batch of distinct devices
                    batch = [random_device(d, slots.next(), rng) for d in rng.sample(by_newer, 4)]
                    written = repo.put_many(batch, if_newer=True)
                    assert 0 <= written <= len(batch)
                    acked = time.monotonic()
                    ledgers[identity] += [Write(m, "newer", started, acked) for m in batch]
                    continue
                m = random_device(rng.choice(by_newer), slots.next(), rng)
                written_one = repo.put(m, if_newer=True)
                ledgers[identity].append(
                    Write(m, "newer", started, time.monotonic(), written=written_one)
                )
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    def put_plain(identity: int, mine: list[str]) -> None:
        rng = random.Random(identity)
        slots = Slots(identity, rng)
        try:
            while not stop.is_set():
                m = random_device(rng.choice(mine), slots.next(), rng)
                started = time.monotonic()
                assert repo.put(m) is True
                ledgers[identity].append(Write(m, "plain", started, time.monotonic(), True))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [
        threading.Thread(target=run_imports),
        threading.Thread(target=put_newer, args=(NEWER_A,)),
        threading.Thread(target=put_newer, args=(NEWER_B,)),
        # each device has one plain writer: its plain writes are in the ledger's order
        threading.Thread(target=put_plain, args=(PLAIN_A, by_plain[0::2])),
        threading.Thread(target=put_plain, args=(PLAIN_B, by_plain[1::2])),
    ]
    for thread in threads:
        thread.start()
    time.sleep(RACE)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    # Every round went through the command, and imported every line of its file.
    summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(summaries) == len(rounds) >= 2
    assert all(s["devices"] == len(imported) and s["invalid"] == 0 for s in summaries)
    assert all(0 <= s["written"] <= len(imported) for s in summaries)
    # Every kind of writer overlapped the imports.
    first_round, last_round = rounds[0][0], rounds[-1][1]
    for identity in (NEWER_A, NEWER_B, PLAIN_A, PLAIN_B):
        during = [w for w in ledgers[identity] if first_round < w.acked < last_round]
        assert len(during) > 20, identity

    writes: dict[str, list[Write]] = {d: [] for d in devices}
    for ledger in ledgers.values():
        for w in ledger:
            writes[w.metadata.device_id].append(w)
    stored = repo.get_many(devices)
    assert sorted(stored) == sorted(devices)

    def newest(device_id: str) -> Write:
        return max(writes[device_id], key=lambda w: w.metadata.last_updated)

    expected: dict[str, DeviceMetadata] = {}
    # Where every write after the seed was conditional, the newest of them wins, whoever made
    # it, and a put of the newest time was never refused.
    for device_id in groups["mixed-newer"] + groups["imported"] + groups["newer"]:
        best = newest(device_id)
        assert best.written is not False, best
        expected[device_id] = best.metadata
    # A plain put always wins over what was stored; the last one is where if_newer writes start.
    for device_id in groups["plain"]:
        expected[device_id] = writes[device_id][-1].metadata  # seed, then one writer's, in order
    for device_id in groups["mixed-plain"]:
        plain = [w for w in writes[device_id] if w.kind in ("seed", "plain")]
        last = plain[-1]
        lines = [w for w in writes[device_id] if w.kind == "import"]
        # The stored value is the last plain write, or an import line newer than it from a
        # round that ended after that write began ...
        value = stored[device_id]
        candidates = [last] + [
            w
            for w in lines
            if w.metadata.last_updated > last.metadata.last_updated and w.acked > last.started
        ]
        assert value in [w.metadata for w in candidates], (device_id, value, last)
        # ... and no older than any line a round imported after that write was acknowledged.
        after = [w for w in lines if w.started > last.acked]
        assert all(value.last_updated >= w.metadata.last_updated for w in after), device_id
        expected[device_id] = value
    assert stored == expected

    # The indexes agree with the values: count, ids, by datatype, persist and time.
    assert repo.count() == len(devices)
    assert repo.list_ids() == sorted(devices)
    for name, ids in groups.items():
        assert repo.list_ids(pattern=f"{name}-*") == ids
    for datatype in ("t", "h", "p"):
        page = repo.query(DeviceQuery(datatype_id=datatype, limit=1000))
        assert [m.device_id for m in page.items] == sorted(
            d for d, m in expected.items() if m.datatype_id == datatype
        ), datatype
    for persist in (True, False):
        page = repo.query(DeviceQuery(persist=persist, datatype_id="h", limit=1000))
        assert [m.device_id for m in page.items] == sorted(
            d for d, m in expected.items() if m.persist is persist and m.datatype_id == "h"
        ), persist
    order = sorted(expected, key=lambda d: (expected[d].last_updated, d))
    page = repo.query(DeviceQuery(sort="last_updated", limit=1000))
    assert [m.device_id for m in page.items] == order
    times = sorted(m.last_updated for m in expected.values())
    low, high = times[len(times) // 4], times[3 * len(times) // 4]
    page = repo.query(
        DeviceQuery(updated_after=low, updated_before=high, sort="last_updated", limit=1000)
    )
    assert [m.device_id for m in page.items] == [
        d for d in order if low < expected[d].last_updated < high
    ]
    info = repo.info()
    assert (info.total_devices, info.oldest_entry_timestamp, info.newest_entry_timestamp) == (
        len(devices),
        times[0],
        times[-1],
    )
    # if_newer compares against the stored value's time: 1 ms older is refused, 1 ms newer not.
    for device_id, m in expected.items():
        older = device_at(device_id, "p", m.last_updated - timedelta(milliseconds=1))
        assert repo.put(older, if_newer=True) is False, device_id
    assert repo.repair() == RepairReport(scanned=len(devices))  # nothing to fix
