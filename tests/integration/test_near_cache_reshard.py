"""The near cache of a caller's own cluster client while a slot moves onto a new primary.

A user with a ``RedisCluster`` client of their own wraps it as docs/near-cache.md shows ("By
hand"): a Redis repository on that client, a :class:`NearCache` whose tracking
:func:`build_tracking` makes from the cluster's settings, and the near-cached repository in
front (here also behind a :class:`CacheServiceClient`). A primary joins with no slot, and one
bucket's slot is migrated onto it key by key (ASK redirections, then MOVED) while a second,
plain client writes increasing versions of the devices and near-cached readers read them.

Every acknowledged write goes into a ledger. A read that began after the near cache had heard
a report of its device's key (an invalidation, whichever node sent it) returns a version at
least as new as every write acknowledged before that report arrived: this is exact, with no
allowance for time. A write acknowledged before a read began is, besides, never missed by a
read that began more than :data:`DELIVERY` later (the invalidation delivery delay, see the
guarantee in docs/near-cache.md). Once writes stop and the migration is over, every
near-cached read equals the server's value.
"""

from __future__ import annotations

import bisect
import dataclasses
import gc
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from cache_service_client import (
    BackendConnectionError,
    CacheServiceClient,
    DeviceMetadata,
    KeyStrategy,
    NearCache,
    NearCachedDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
    RetryPolicy,
    settings_from_url,
)
from cache_service_client.container import build_tracking
from cache_service_client.repository.near import Connection, Endpoint
from cache_service_client.testing import RedisClusterServers, wait_for_invalidations
from cache_service_client.testing._topologies import free_cluster_port
from tests.integration.test_topologies import migrate_slot
from tests.redis_server import RedisServer, command, server_binary

BASE = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
#: Devices written and read (a quarter of them, one bucket, move to the new primary).
DEVICES = 80
#: Seconds by which a near-cached read may lag a write acknowledged before it began (the
#: invalidation delivery delay): Redis sends the report in the same turn of its event loop as
#: the answer to the write, and the cache's tracking thread handles it once it gets the GIL,
#: which the readers and the writer of this process keep busy (a few milliseconds here). A
#: primary the cache did not track would leave its keys' entries stale until the topology check
#: after the migration: for hundreds of milliseconds.
DELIVERY = 0.25
#: Seconds a reader pauses between rounds, so that the writer in the same process gets its share
#: of the GIL.
PAUSE = 0.001


def version(m: DeviceMetadata) -> int:
    """The version a write gave a device."""
    n: int = m.additional_properties["n"]
    return n


def versioned(device_id: str, n: int) -> DeviceMetadata:
    """``device_id`` at version ``n`` (in its properties and its ``last_updated``)."""
    return DeviceMetadata(
        device_id=device_id,
        datatype_id="t",
        datatype_name="temperature",
        datatype_unit=None,
        persist=True,
        last_updated=BASE + timedelta(milliseconds=n),
        additional_properties={"n": n},
    )


class Ledger:
    """The versions acknowledged per device, and when (``time.monotonic()``)."""

    def __init__(self, device_ids: list[str]) -> None:
        self.newest = dict.fromkeys(device_ids, 0)
        self._times: dict[str, list[float]] = {d: [] for d in device_ids}
        self._versions: dict[str, list[int]] = {d: [] for d in device_ids}

    def acknowledged(self, device_id: str, n: int) -> None:
        self._versions[device_id].append(n)
        self._times[device_id].append(time.monotonic())
        self.newest[device_id] = n

    def first_after(self, device_id: str, n: int) -> float:
        """When the first version newer than ``n`` was acknowledged."""
        at = bisect.bisect_right(self._versions[device_id], n)
        return self._times[device_id][at]


class Heard:
    """Per device, the newest version acknowledged before the near cache was told to drop it.

    Wraps the tracking connections: when one has read a report, the ledger's versions of its
    keys are noted; when the connection is next read from, the cache has handled that report
    (its entries are gone, reads in flight will not be cached), and the noted versions become
    the floor of the reads that begin from then on.
    """

    def __init__(self, ledger: Ledger, device_id: Callable[[str], str]) -> None:
        self.floor: dict[str, int] = {}
        self._reported: Counter[tuple[Endpoint, str]] = Counter()
        self._ledger = ledger
        self._device_id = device_id
        self._lock = threading.Lock()

    def connector(
        self, connect: Callable[[Endpoint], Connection]
    ) -> Callable[[Endpoint], Connection]:
        def make(endpoint: Endpoint) -> Connection:
            return _Noting(connect(endpoint), endpoint, self)

        return make

    def reports(self, endpoint: Endpoint, device_ids: list[str]) -> int:
        """How many reports of ``device_ids``' keys ``endpoint`` sent."""
        return sum(self._reported[endpoint, device_id] for device_id in device_ids)

    def note(self, endpoint: Endpoint, keys: list[bytes]) -> dict[str, int]:
        """A report of ``keys`` came from ``endpoint``: the versions acknowledged so far."""
        noted = {}
        for key in keys:
            try:
                device_id = self._device_id(key.decode())
            except ValueError:
                continue
            noted[device_id] = self._ledger.newest.get(device_id, 0)
            self._reported[endpoint, device_id] += 1
        return noted

    def handled(self, noted: dict[str, int]) -> None:
        with self._lock:
            for device_id, n in noted.items():
                if n > self.floor.get(device_id, 0):
                    self.floor[device_id] = n


class _Noting:
    """A tracking connection that tells :class:`Heard` which reports the cache has handled."""

    def __init__(self, connection: Connection, endpoint: Endpoint, heard: Heard) -> None:
        self._connection = connection
        self._endpoint = endpoint
        self._heard = heard
        self._noted: dict[str, int] = {}

    @property
    def _sock(self) -> Any:
        return getattr(self._connection, "_sock", None)

    def connect(self) -> None:
        self._connection.connect()

    def disconnect(self) -> None:
        self._connection.disconnect()

    def send_command(self, *args: Any) -> None:
        self._connection.send_command(*args)

    def can_read(self, timeout: float) -> bool:
        return self._connection.can_read(timeout)

    def read_response(self) -> Any:
        if self._noted:
            self._heard.handled(self._noted)
            self._noted = {}
        reply = self._connection.read_response()
        if (
            isinstance(reply, list)
            and len(reply) == 3
            and reply[0] == b"message"
            and isinstance(reply[2], list)
        ):
            self._noted = self._heard.note(self._endpoint, reply[2])
        return reply


@pytest.fixture
def new_primary() -> Iterator[RedisServer]:
    """A cluster-enabled server that is no cluster's member yet."""
    server = RedisServer(
        server_binary(),
        port=free_cluster_port(),
        extra_args=(
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "2000"),
        ),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.02)


#: redis-py releases before 6 misalign replies while a slot moves onto a new primary: with
#: redis-py 5.0.2 and 5.2.1 this test saw commands answered with another command's reply (a
#: script call with CLIENT SETINFO's error, a batch read with other devices). Not the near
#: cache's doing, and not to be asserted away: see docs/servers.md.
REPLIES_ALIGNED_IN_RESHARDS = tuple(int(p) for p in redis.__version__.split(".")[:1]) >= (6,)


@pytest.mark.skipif(
    not REPLIES_ALIGNED_IN_RESHARDS,
    reason=f"redis-py {redis.__version__} misaligns replies during a reshard onto a new primary",
)
def test_near_cached_reads_of_a_callers_cluster_client_follow_a_reshard_onto_a_new_primary(
    own_cluster: RedisClusterServers, new_primary: RedisServer
) -> None:
    prefix = f"reshard-{uuid.uuid4().hex[:8]}"
    keys = KeyStrategy(prefix=prefix, buckets=4)
    ids = [f"dev-{i:03d}" for i in range(DEVICES)]
    slot = key_slot(keys.device_key(ids[0]).encode())
    moving = [d for d in ids if key_slot(keys.device_key(d).encode()) == slot]
    staying = [d for d in ids if d not in moving]
    assert len(moving) >= 10
    new_node: Endpoint = ("127.0.0.1", new_primary.port)
    ledger = Ledger(ids)
    heard = Heard(ledger, keys.device_id)
    # The caller's own cluster client (its own pools), and a near cache made by hand for it,
    # tracking the cluster its settings name.
    callers = RedisCluster(host="127.0.0.1", port=own_cluster.ports[1])
    tracking = build_tracking(settings_from_url(own_cluster.url), keys)
    cache = NearCache(
        1000, dataclasses.replace(tracking, connect=heard.connector(tracking.connect))
    )
    retry = RetryPolicy(attempts=50, deadline=3.0, backoff_max=0.1)
    near = NearCachedDeviceMetadataRepository(
        RedisDeviceMetadataRepository(callers, key_strategy=keys, retry=retry), cache
    )
    reader = CacheServiceClient(repository=near)
    # A second, plain client writes.
    writer = CacheServiceClient.from_url(
        own_cluster.url,
        key_prefix=prefix,
        cluster_buckets=4,
        retry_deadline=20.0,
        retry_attempts=100,
        retry_backoff_max=0.1,
    )
    nodes = [redis.Redis(port=port) for port in [*own_cluster.ports, new_primary.port]]
    stop_writing, stop_reading, migrating = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []
    retried = {"writes": 0, "reads": 0}  # calls that raised BackendConnectionError
    # While the slot migrated: writes of its devices begun (they wait for the migration's
    # end: a put script needs every key of its bucket on one node), reads and hits.
    during = {"moving writes": 0, "reads": 0, "hits": 0}
    behind_heard: list[str] = []  # reads older than a write acknowledged before the cache heard
    regressions: list[str] = []  # reads older than what the same reader had read before
    behind: list[tuple[str, float, int]] = []  # reads older than a write acknowledged before

    def write(device_ids: list[str]) -> None:
        n = 0
        try:
            while not stop_writing.is_set():
                n += 1
                for device_id in device_ids:
                    began_migrating = migrating.is_set()
                    try:
                        writer.repository.put(versioned(device_id, n))
                    except BackendConnectionError:
                        retried["writes"] += 1
                        continue
                    ledger.acknowledged(device_id, n)
                    if began_migrating and device_id in moving:
                        during["moving writes"] += 1
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    def check(
        seen: dict[str, int], device_id: str, n: int, floor: int, known: int, began: float
    ) -> None:
        """One read of version ``n``: ``floor`` was acknowledged before it began, the cache
        had heard of ``known`` before it began, the reader had read ``seen`` before."""
        if n < known:
            behind_heard.append(f"{device_id}: read {n}, the cache had heard of {known}")
        if n < seen.get(device_id, 0):
            regressions.append(f"{device_id}: read {n} after {seen[device_id]}")
        seen[device_id] = max(n, seen.get(device_id, 0))
        if n < floor:
            behind.append((device_id, began, n))
        if migrating.is_set():
            during["reads"] += 1

    def read_one_by_one() -> None:  # through the client facade
        seen: dict[str, int] = {}
        try:
            while not stop_reading.is_set():
                time.sleep(PAUSE)
                for device_id in moving + staying[::4]:
                    floor, known = ledger.newest[device_id], heard.floor.get(device_id, 0)
                    began = time.monotonic()
                    try:
                        m = reader.get_device_metadata_sync(device_id)
                    except BackendConnectionError:
                        retried["reads"] += 1
                        continue
                    check(seen, device_id, version(m), floor, known, began)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    def read_batches() -> None:  # through the near-cached repository
        seen: dict[str, int] = {}
        try:
            while not stop_reading.is_set():
                time.sleep(PAUSE)
                floors, known = dict(ledger.newest), dict(heard.floor)
                began = time.monotonic()
                try:
                    found = near.get_many(ids)
                except BackendConnectionError:
                    retried["reads"] += 1
                    continue
                assert sorted(found) == ids
                for device_id, m in found.items():
                    floor, heard_of = floors[device_id], known.get(device_id, 0)
                    check(seen, device_id, version(m), floor, heard_of, began)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(group,)) for group in (moving, staying)]
    readers = [threading.Thread(target=read_one_by_one), threading.Thread(target=read_batches)]

    def settled() -> bool:
        infos = [command(n, "CLUSTER", "INFO") for n in nodes]
        return all(b"known_nodes:4" in i and b"state:ok" in i for i in infos)

    try:
        assert writer.container.key_strategy() == keys
        writer.store_many_device_metadata_sync([versioned(d, 0) for d in ids])
        assert cache.wait_connected(10.0)
        for thread in writers + readers:
            thread.start()
        try:
            time.sleep(0.2)
            # The new node joins with no slot; the near cache tracks it before it owns one.
            command(nodes[-1], "CLUSTER", "MEET", "127.0.0.1", own_cluster.ports[0])
            eventually(settled, "every node knows the new one")
            eventually(lambda: new_node in cache.tracked_endpoints(), "the new node is tracked")
            assert cache.wait_connected(10.0)
            before = cache.stats()
            migrating.set()
            moved = migrate_slot(own_cluster, slot, 0.3, target_port=new_primary.port)
            migrating.clear()
            during["hits"] = cache.stats().hits - before.hits
            from_new_node = heard.reports(new_node, moving)
            assert moved > len(moving)  # the devices, and their bucket's indexes
            # The slot map changed: the next topology check flushes the cache.
            eventually(lambda: cache.stats().flushes > before.flushes, "a topology flush")
            assert cache.wait_connected(10.0)
            time.sleep(0.5)  # traffic on the grown cluster
        finally:
            stop_writing.set()
            for thread in writers:
                thread.join(30)
            time.sleep(0.1)  # reads after the last write
            stop_reading.set()
            for thread in readers:
                thread.join(30)
        assert errors == []
        assert during["moving writes"] > 0, during
        assert during["reads"] > 0, during
        assert during["hits"] > 0, during
        # The new primary's reports were heard while the slot migrated (a key's arrival is
        # one), and after.
        assert from_new_node >= len(moving)
        assert heard.reports(new_node, moving) > from_new_node
        assert regressions == []
        assert behind_heard == []
        lagging = sorted((began - ledger.first_after(d, n), d) for d, began, n in behind)
        late = [(round(lag, 3), d) for lag, d in lagging if lag > DELIVERY]
        assert late == [], f"{len(late)} of {len(behind)} lagging reads later than {DELIVERY} s"
        # Writes have stopped, the migration is over and every report has come: each
        # near-cached read equals the server's value, the newest acknowledged.
        wait_for_invalidations(cache, callers, keys)
        on_server = writer.get_many_device_metadata_sync(ids)
        assert all(version(on_server[d]) >= ledger.newest[d] for d in ids)
        for _ in range(3):
            assert near.get_many(ids) == on_server
            assert {d: reader.get_device_metadata_sync(d) for d in ids} == on_server
    finally:
        reader.close()
        writer.close()
        callers.close()
        cache.close()
        for node in nodes:
            node.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
