"""Scale: how the index-backed reads behave as the fleet grows (10k, 100k, 1M devices).

``python -m benchmarks.scale`` loads N devices (20 datatypes) into its own redis-server (or
``--url``) and reports, per N: the latency of cache info, count, the first and the next (cursor)
page of every query shape (by id or by last_updated, either way round, with datatype, persist,
time range and pattern filters, and a time range sorted by id at 1 % and 10 % of the fleet), a
prefix-pattern listing and a leading-wildcard listing, plus memory per device (``used_memory``
delta / N, indexes included). Two floors are measured in the same run: a bare round trip (a PING
through redis-py) and the least a page can cost (``ZRANGE 0 99`` + ``MGET`` of the 100 values +
one msgspec decode of each). The index-bounded reads run in interleaved blocks of ten calls, so
that a slow spell of a shared machine slows them all alike; the leading wildcard, which grows
with N, runs on its own with a tenth of the calls. Then the ratio of the largest N to the
smallest for each read (close to 1: the read does not grow with N), and each read against its
floor at the largest N.

``python -m benchmarks.scale --memory [--memory-size 100000]`` times the in-memory twin instead
(no Redis): the first and a cursor page of every query shape, count, info, put and delete, each
the median of ``--rounds`` calls on a fleet of that size.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import msgspec
import redis

from benchmarks.report import cpu_model
from benchmarks.server import add_server_argument, server_for, server_name
from cache_service_client import (
    DeviceMetadata,
    DeviceQuery,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    RedisDeviceMetadataRepository,
)

SITES = ("berlin", "lisbon", "oslo", "tokyo", "lima", "cairo", "perth", "quito")
DATATYPES = tuple(f"dt{k:02d}" for k in range(20))
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=300)


def devices(n: int, seed: int = 7) -> list[DeviceMetadata]:
    """N devices like a real fleet: site prefixes, 20 datatypes, spread last_updated."""
    rng = random.Random(seed)
    return [
        DeviceMetadata(
            device_id=f"{SITES[i % len(SITES)]}-sensor-{i:07d}",
            datatype_id=DATATYPES[rng.randrange(len(DATATYPES))],
            datatype_name="temperature",
            datatype_unit="C",
            persist=rng.random() < 0.7,
            last_updated=START + timedelta(seconds=rng.randrange(int(SPAN.total_seconds()))),
            additional_properties={"firmware": "1.2.3", "floor": rng.randrange(12)},
        )
        for i in range(n)
    ]


def interleaved_medians(
    fns: dict[str, Callable[[], object]], rounds: int, block: int = 10
) -> dict[str, float]:
    """Median wall time of each function in microseconds over about ``rounds`` calls.

    The calls come in blocks of ``block`` in a row per function, the blocks interleaved: a slow
    spell of a shared machine slows every function alike instead of one whole series, while
    each block still runs warm. One warm-up call each first.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, -(-rounds // block))):
        for name, fn in fns.items():
            series = times[name]
            for _ in range(block):
                started = time.perf_counter()
                fn()
                series.append(time.perf_counter() - started)
    return {name: statistics.median(series) * 1e6 for name, series in times.items()}


#: The floor of every read: one round trip through redis-py (not a read of the library).
ROUND_TRIP = "round trip (redis-py PING)"
#: The floor of a page: ZRANGE of 100 ids, MGET of their values, a decode of each.
PAGE_FLOOR = "page floor (ZRANGE 100 + MGET + decode)"
NEWEST_1 = START + SPAN * 0.99
NEWEST_10 = START + SPAN * 0.90
#: Every query shape; each is timed on its first page and on the page its cursor gives.
SHAPES: dict[str, DeviceQuery] = {
    "by id": DeviceQuery(limit=100),
    "by id, descending": DeviceQuery(limit=100, descending=True),
    "by id, datatype": DeviceQuery(limit=100, datatype_id="dt07"),
    "by id, persist": DeviceQuery(limit=100, persist=False),
    "by id, datatype + persist": DeviceQuery(limit=100, datatype_id="dt07", persist=True),
    "by id, prefix pattern": DeviceQuery(limit=100, pattern="oslo-*"),
    "by time, descending": DeviceQuery(limit=100, sort="last_updated", descending=True),
    "by time, datatype": DeviceQuery(limit=100, sort="last_updated", datatype_id="dt07"),
    "by time, persist": DeviceQuery(limit=100, sort="last_updated", persist=False),
    "by time, newest 1 %": DeviceQuery(limit=100, sort="last_updated", updated_after=NEWEST_1),
    "by id, newest 1 % (time range)": DeviceQuery(limit=100, updated_after=NEWEST_1),
    "by id, newest 10 % (time range)": DeviceQuery(limit=100, updated_after=NEWEST_10),
}
#: Shapes with no one-dimensional order (planned; their target is looser).
TIME_RANGE_BY_ID = ("by id, newest 1 % (time range)", "by id, newest 10 % (time range)")
READS: dict[str, Callable[[RedisDeviceMetadataRepository], object]] = {
    "cache info": lambda repo: repo.info(),
    "count": lambda repo: repo.count(),
    "first page by id (100)": lambda repo: repo.query(DeviceQuery(limit=100)),
    "first page by last_updated (100)": lambda repo: repo.query(
        DeviceQuery(sort="last_updated", descending=True, limit=100)
    ),
    "prefix pattern 'oslo-sensor-00*' (100)": lambda repo: repo.list_ids(
        pattern="oslo-sensor-00*", limit=100
    ),
}
BOUNDED = list(READS)[:4]
#: A read that walks the ids index and grows with N: timed on its own, with a tenth of the rounds.
SCANNING: dict[str, Callable[[RedisDeviceMetadataRepository], object]] = {
    "leading wildcard '*7' (100)": lambda repo: repo.list_ids(pattern="*7", limit=100),
}


def page_floor(client: redis.Redis, keys: KeyStrategy) -> Callable[[], object]:
    """The least a page of 100 can cost: two round trips (ids, then values) and the decodes."""
    decoder = msgspec.json.Decoder(DeviceMetadata)
    ids_index = keys.ids_index()

    def read() -> object:
        ids: list[bytes] = client.zrange(ids_index, 0, 99)  # type: ignore[assignment]
        values = client.mget(keys.device_keys([i.decode() for i in ids]))
        return [decoder.decode(v) for v in values if v is not None]

    return read


def shape_reads(repo: RedisDeviceMetadataRepository) -> dict[str, Callable[[], object]]:
    """The first page and the cursor page of each shape (its cursor taken once, here)."""
    reads: dict[str, Callable[[], object]] = {}
    for name, query in SHAPES.items():
        first = repo.query(query)
        reads[f"{name}: first page"] = partial(repo.query, query)
        if first.next_cursor is not None:
            resumed = msgspec.structs.replace(query, cursor=first.next_cursor)
            reads[f"{name}: cursor page"] = partial(repo.query, resumed)
    return reads


def _purge(client: redis.Redis) -> None:
    """Give freed memory back (jemalloc), so that used_memory deltas are about live data."""
    purge: Any = client.execute_command
    purge("MEMORY", "PURGE")


def load(client: redis.Redis, n: int) -> tuple[RedisDeviceMetadataRepository, float]:
    """Load ``n`` devices into the client's (empty) database; return a repository on them and
    the memory per device (``used_memory`` delta / n, indexes included)."""
    repo = RedisDeviceMetadataRepository(client, key_strategy=KeyStrategy(), ttl=86400)
    client.flushdb()
    _purge(client)
    before = int(client.info("memory")["used_memory"])
    fleet = devices(n)
    for start in range(0, n, 1000):
        repo.put_many(fleet[start : start + 1000])
    _purge(client)
    return repo, (int(client.info("memory")["used_memory"]) - before) / n


def measure(clients: dict[int, redis.Redis], rounds: int) -> dict[int, dict[str, float]]:
    """Load a fleet of each size, one database each, then time every read on every fleet.

    The index-bounded reads of all sizes are interleaved (see :func:`interleaved_medians`), so
    that the ratio of two sizes is not the ratio of two spells of a shared machine. Each fleet
    has a database of its own, so that its keyspace table is sized for it alone.
    """
    rows: dict[int, dict[str, float]] = {}
    reads: dict[str, Callable[[], object]] = {}
    repos = {}
    for n, client in clients.items():
        repos[n], memory = load(client, n)
        rows[n] = {"memory per device (bytes)": memory}
        reads[f"{n}\t{ROUND_TRIP}"] = client.ping
        reads[f"{n}\t{PAGE_FLOOR}"] = page_floor(client, repos[n].key_strategy)
        for name, read in READS.items():
            reads[f"{n}\t{name}"] = partial(read, repos[n])
        for name, shape in shape_reads(repos[n]).items():
            reads[f"{n}\t{name}"] = shape
    for label, median in interleaved_medians(reads, rounds).items():
        size, name = label.split("\t")
        rows[int(size)][name] = median
    for n, repo in repos.items():
        for name, read in SCANNING.items():
            scan: Callable[[], object] = partial(read, repo)
            rows[n].update(interleaved_medians({name: scan}, max(5, rounds // 10), block=1))
    for client in clients.values():
        client.flushdb(asynchronous=True)  # a million keys take longer than a timeout
    return rows


#: Query shapes timed on the in-memory twin (``--memory``): every shape of the Redis run, and
#: patterns that leave matching to the walk; every page holds 100 devices.
DAY = timedelta(days=1)
MEMORY_QUERIES: dict[str, DeviceQuery] = {
    **SHAPES,
    "by time, time range 10 %": DeviceQuery(
        sort="last_updated", updated_after=START + 150 * DAY, updated_before=START + 180 * DAY
    ),
    "by time, prefix 'oslo-sensor-000*'": DeviceQuery(
        pattern="oslo-sensor-000*", sort="last_updated"
    ),
    "by id, pattern 'oslo-*-0001*' (prefix + filter)": DeviceQuery(pattern="oslo-*-0001*"),
    "by id, newest 1 % (time range), descending": DeviceQuery(
        updated_after=NEWEST_1, descending=True
    ),
}


def memory_reads(
    repo: InMemoryDeviceMetadataRepository, fleet: Sequence[DeviceMetadata]
) -> dict[str, Callable[[], object]]:
    """The calls timed on the in-memory twin: each query shape's first page and the page after
    it (through the first page's cursor), count, info, and writes that keep the fleet's size
    (a put of a new device, a put overwriting one, a delete of a device a put added)."""
    reads: dict[str, Callable[[], object]] = {}
    for name, query in MEMORY_QUERIES.items():
        query = msgspec.structs.replace(query, limit=100)
        reads[f"{name}: first page"] = partial(repo.query, query)
        cursor = repo.query(query).next_cursor
        if cursor is not None:
            after = msgspec.structs.replace(query, cursor=cursor)
            reads[f"{name}: cursor page"] = partial(repo.query, after)
    reads["count"] = repo.count
    reads["info"] = repo.info
    added: deque[str] = deque()
    serial = iter(range(10**9))
    template = fleet[0]

    def put_new() -> None:
        k = next(serial)  # ids spread over the whole order, not appended at its end
        device_id = f"{SITES[k % len(SITES)]}-sensor-{k * 7919 % 10**7:07d}-new"
        repo.put(msgspec.structs.replace(template, device_id=device_id))
        added.append(device_id)

    def put_overwrite() -> None:
        m = fleet[next(serial) % len(fleet)]
        repo.put(msgspec.structs.replace(m, last_updated=m.last_updated + DAY))

    def delete() -> None:
        repo.delete(added.popleft() if added else "none")

    reads["put (new device)"] = put_new
    reads["put (overwrite, new last_updated)"] = put_overwrite
    reads["delete"] = delete
    return reads


def measure_memory(n: int, rounds: int) -> dict[str, float]:
    """Load ``n`` devices into an in-memory twin and time :func:`memory_reads` on it (µs)."""
    repo = InMemoryDeviceMetadataRepository(ttl=86400)
    fleet = devices(n)
    for start in range(0, n, 1000):
        repo.put_many(fleet[start : start + 1000])
    return interleaved_medians(memory_reads(repo, fleet), rounds)


def table(sizes: Sequence[int], rows: dict[int, dict[str, float]]) -> str:
    """A markdown table: one row per measurement, one column per N, and the ratio."""
    first, last = sizes[0], sizes[-1]
    header = "| read | " + " | ".join(f"N = {n:,}" for n in sizes) + f" | {last:,} / {first:,} |"
    lines = [header, "|---" * (len(sizes) + 2) + "|"]
    for name in rows[first]:
        unit = "" if "memory" in name else " µs"
        cells = [f"{rows[n][name]:,.0f}{unit}" for n in sizes]
        ratio = rows[last][name] / rows[first][name]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines)


def _client(url: str, offset: int) -> redis.Redis:
    """A client of the database ``offset`` places after the URL's (the URL's own db wins over a
    ``db=`` argument of ``from_url``, so the pool is built from its parsed options)."""
    pool = redis.ConnectionPool.from_url(url)
    options = dict(pool.connection_kwargs)
    options["db"] = int(options.get("db", 0)) + offset
    pool.disconnect()
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **options)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m benchmarks.scale [--sizes 10000,100000,1000000] [--url URL]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated fleet sizes")
    parser.add_argument(
        "--url",
        default=None,
        help="use this Redis: the URL's database and the next ones, one per size, are FLUSHED",
    )
    add_server_argument(parser)
    parser.add_argument("--rounds", type=int, default=200, help="timed calls per read")
    parser.add_argument("--quick", action="store_true", help="1000 and 5000 devices, 20 rounds")
    parser.add_argument(
        "--memory", action="store_true", help="time the in-memory twin instead (no Redis)"
    )
    parser.add_argument(
        "--memory-size", type=int, default=100_000, help="devices of the in-memory twin"
    )
    args = parser.parse_args(argv)
    if args.memory:
        n = 1000 if args.quick else args.memory_size
        rounds = 20 if args.quick else args.rounds
        figures = measure_memory(n, rounds)
        print(f"In-memory twin, {n:,} devices, {cpu_model()}, median of {rounds} calls\n")
        print("| call | µs |\n|---|---|")
        for name, median in figures.items():
            print(f"| {name} | {median:,.1f} |")
        return 0
    sizes = [1000, 5000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rounds = 20 if args.quick else args.rounds
    server = None if args.url else server_for(args.server)
    if server is not None:
        server.start()
    url = args.url or (server.url if server else "")
    clients = {n: _client(url, i) for i, n in enumerate(sizes)}
    try:
        version = server_name(clients[sizes[0]].info("server"))
        rows = measure(clients, rounds)
    finally:
        for client in clients.values():
            client.close()
        if server is not None:
            server.stop()
    slow_rounds = max(5, rounds // 10)
    print(f"{version}, {cpu_model()}, median of {rounds} calls ({slow_rounds} when scanning)\n")
    print(table(sizes, rows))
    worst = max(rows[sizes[-1]][name] / rows[sizes[0]][name] for name in BOUNDED)
    print(f"\nlargest growth of the index-bounded reads ({', '.join(BOUNDED)}): {worst:.2f}x")
    for n in sizes:
        print(f"\nN = {n:,}, against the floors measured in the same run:\n")
        print(floor_ratios(rows[n]))
    return 0


def floor_ratios(row: dict[str, float]) -> str:
    """Each read against its floor: pages against the page floor (target 3x, 12x for a time
    range sorted by id), count against a PING (3x), info against the page floor (1.5x)."""
    floor, ping = row[PAGE_FLOOR], row[ROUND_TRIP]
    lines = ["| read | median | ratio | target |", "|---|---|---|---|"]
    for name, median in row.items():
        if name.endswith((": first page", ": cursor page")):
            target = 12.0 if name.split(":")[0] in TIME_RANGE_BY_ID else 3.0
            ratio = median / floor
        elif name == "count":
            target, ratio = 3.0, median / ping
        elif name == "cache info":
            target, ratio = 1.5, median / floor
        else:
            continue
        met = "met" if ratio <= target else "missed"
        lines.append(f"| {name} | {median:,.0f} µs | {ratio:.2f}x | {target:g}x ({met}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
