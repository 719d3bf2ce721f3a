"""``repair()`` while the cache is in use: a write that lands between a repair's read
of a batch and its REINDEX of that batch is never undone in the indexes.

A repair reads values (MGET) and re-indexes them in a later round trip. A put in between
indexes its new value; the repair's stale datatype and time score must not replace those
entries (the device would be listed under the old datatype, and ``if_newer``, which compares
against the time index, would let an older update overwrite the newer value).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import redis

from cache_service_client import (
    DeviceMetadata,
    DeviceQuery,
    KeyStrategy,
    RedisDeviceMetadataRepository,
    RepairReport,
)
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
