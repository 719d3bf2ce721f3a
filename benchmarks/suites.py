"""The benchmark groups: which candidates each table compares, and under which names."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from benchmarks import others
from benchmarks.data import BATCH
from benchmarks.harness import Candidate, Figures, GroupResult, Role, Runner, percentile
from benchmarks.workloads import (
    GETS_PER_TASK,
    INNER,
    SEEN_TIMEOUT,
    TASKS,
    AsyncNearWork,
    AsyncRedisWork,
    CodecWork,
    NearWork,
    SyncRedisWork,
    run_prefix,
)
from cache_service_client import telemetry as otel

GROUPS = ("codec", "single", "batch", "async", "facade", "telemetry", "near")
REDIS_GROUPS = ("single", "batch", "async", "facade", "telemetry", "near")

_PYDANTIC_MISSING = (
    "pydantic v2 is not installed: its row is skipped (install the bench dependency group)."
)
_REDIS_OM_MISSING = (
    "redis-om is not installed: its row is skipped "
    "(scripts/bench installs the bench-redis-om dependency group)."
)

# key -> (shown name, role) per comparison
_CODEC_NAMES: dict[str, tuple[str, Role]] = {
    "msgspec": ("bare msgspec Encoder/Decoder", "baseline"),
    "ours": ("MetadataCodec", "ours"),
    "pydantic": ("pydantic v2", "other"),
    "json": ("stdlib json + dataclass", "other"),
}
_CODEC_BATCH_NAMES: dict[str, tuple[str, Role]] = {
    "msgspec": ("bare msgspec Encoder/Decoder", "baseline"),
    "ours": ("MetadataCodec.{}_many", "ours"),
    "ours-per-item": ("MetadataCodec.{}, once per item", "other"),
    "pydantic": ("pydantic v2", "other"),
    "json": ("stdlib json + dataclass", "other"),
}


def _batch_names(verb: str) -> dict[str, tuple[str, Role]]:
    return {k: (name.format(verb), role) for k, (name, role) in _CODEC_BATCH_NAMES.items()}


def _candidates(
    fns: dict[str, Callable[[], Any]],
    names: dict[str, tuple[str, Role]],
    ops: int | Mapping[str, int],
) -> list[Candidate]:
    """The candidates by key; ``ops`` per call, for all or by key (1 for a key not named)."""
    out = []
    for key, (name, role) in names.items():
        if key in fns:
            n = ops if isinstance(ops, int) else ops.get(key, 1)
            out.append(Candidate(name, fns[key], ops=n, role=role, key=key))
    return out


def codec(runner: Runner) -> Iterator[GroupResult]:
    """Encode/decode of one device and of a batch: ours vs msgspec, pydantic, json."""
    work = CodecWork()
    work.verify()
    notes = [] if work.pydantic is not None else [_PYDANTIC_MISSING]
    size = len(work.raw)
    one = [f"One device, {size} bytes of JSON; each sample is {INNER} calls."]
    many = [f"{BATCH} devices, one value each (as they are stored); an op is the whole batch."]
    yield runner.run(
        "codec",
        "codec.encode_one",
        "Codec: encode one device",
        "encode one",
        _candidates(work.encode_one(), _CODEC_NAMES, INNER),
        notes=one + notes,
    )
    yield runner.run(
        "codec",
        "codec.decode_one",
        "Codec: decode one device",
        "decode one",
        _candidates(work.decode_one(), _CODEC_NAMES, INNER),
        notes=[*one, "Ours also checks that the value belongs to the key's device.", *notes],
    )
    yield runner.run(
        "codec",
        "codec.encode_batch",
        f"Codec: encode a batch of {BATCH}",
        f"encode {BATCH}",
        _candidates(work.encode_batch(), _batch_names("encode"), 1),
        unit="batch",
        notes=[*many, *notes],
    )
    yield runner.run(
        "codec",
        "codec.decode_batch",
        f"Codec: decode a batch of {BATCH}",
        f"decode {BATCH}",
        _candidates(work.decode_batch(), _batch_names("decode"), 1),
        unit="batch",
        notes=[
            *many,
            "decode_many returns a dict by id and checks each value's device, as get_many needs.",
            *notes,
        ],
    )


def single(runner: Runner, work: SyncRedisWork) -> Iterator[GroupResult]:
    """Sync get and put of one device: our repository vs raw redis-py + msgspec and redis-om."""
    notes = [] if work.om_model is not None else [_REDIS_OM_MISSING]
    yield runner.run(
        "single",
        "single.get",
        "Single operations: get",
        "get one device",
        _candidates(
            work.get(),
            {
                "raw": ("redis-py GET + msgspec decode", "baseline"),
                "ours": ("RedisDeviceMetadataRepository.get", "ours"),
                "redis-om": ("redis-om HashModel.get", "other"),
            },
            1,
        ),
        notes=[
            "One connection, sync, hiredis parser when installed. Ours validates the id, "
            "checks the value's device and runs under the default RetryPolicy.",
            "redis-om: HGETALL + pydantic validation, then json.loads of the properties field "
            "(a HashModel holds flat fields only).",
            *notes,
        ],
    )
    yield runner.run(
        "single",
        "single.put",
        "Single operations: put",
        "put one device",
        _candidates(
            work.put(),
            {
                "raw": ("redis-py SET EX + msgspec encode", "baseline"),
                "ours": ("RedisDeviceMetadataRepository.put", "ours"),
                "redis-om": ("redis-om save + expire (MULTI/EXEC)", "other"),
            },
            1,
        ),
        notes=[
            "Each put carries a last_updated a millisecond newer than the one before, as a "
            "stream writer's do. Ours validates the metadata and writes the value and its index "
            "entries atomically (one EVALSHA); raw SET EX writes the value only.",
            *notes,
        ],
    )
    yield runner.run(
        "single",
        "single.churn",
        "Single operations: put then delete",
        "put + delete",
        _candidates(
            work.churn(),
            {
                "raw": ("redis-py SET EX + DEL", "baseline"),
                "ours": ("RedisDeviceMetadataRepository.put + delete", "ours"),
            },
            1,
        ),
        notes=[
            "A device stored and deleted again: ours writes and removes five index entries "
            "with the value, in two EVALSHAs; raw SET EX and DEL touch the value only.",
        ],
    )


def batch(runner: Runner, work: SyncRedisWork) -> Iterator[GroupResult]:
    """get_many / put_many of a batch vs raw MGET and a raw pipeline."""
    yield runner.run(
        "batch",
        "batch.get_many",
        f"Batches: get_many of {BATCH}",
        f"get {BATCH}",
        _candidates(
            work.get_many(),
            {
                "raw": ("redis-py MGET + msgspec decode", "baseline"),
                "ours": ("get_many", "ours"),
            },
            1,
        ),
        unit="batch",
        notes=["Both return a dict of id -> DeviceMetadata; ours checks every value's device."],
    )
    yield runner.run(
        "batch",
        "batch.put_many",
        f"Batches: put_many of {BATCH}",
        f"put {BATCH}",
        _candidates(
            work.put_many(),
            {
                "raw": ("redis-py pipeline: SET EX each + one ZADD", "baseline"),
                "ours": ("put_many (indexes, TTL, atomic)", "ours"),
                "raw-multi": ("the same pipeline in MULTI/EXEC", "other"),
            },
            1,
        ),
        unit="batch",
        notes=[
            "Ours validates every item and writes values and five index entries each in one atomic "
            "script call; the raw pipeline (no MULTI) writes values and one index.",
        ],
    )


def facade(runner: Runner, work: SyncRedisWork) -> Iterator[GroupResult]:
    """CacheServiceClient.get_device_metadata_sync vs its repository's get."""
    yield runner.run(
        "facade",
        "facade.get",
        "Facade overhead: get",
        "facade get",
        _candidates(
            work.facade_get(),
            {
                "repository": ("client.repository.get", "baseline"),
                "facade": ("CacheServiceClient.get_device_metadata_sync", "ours"),
            },
            1,
        ),
        notes=["The same repository and connection; the difference is the facade's call."],
    )


def telemetry(runner: Runner, work: SyncRedisWork) -> Iterator[GroupResult]:
    """get through the OpenTelemetry wrapper (API installed, no SDK) vs the repository alone."""
    notes = [
        "The same repository (and connection). Instrumented: the wrapper the container applies "
        "when opentelemetry-api is installed, with no SDK configured (spans are skipped, the "
        "duration histogram is the API's no-op proxy). Without the API nothing is wrapped, "
        "which is the baseline. The in-memory table does no I/O: its difference in µs/op is "
        "the wrapper's own cost."
    ]
    if not otel.AVAILABLE:
        notes.append("opentelemetry-api is not installed: its row is skipped (the otel extra).")
    for table, title, fns, name in (
        ("telemetry.get", "get", work.telemetry_get(), "RedisDeviceMetadataRepository"),
        (
            "telemetry.memory_get",
            "get from memory",
            work.telemetry_memory_get(),
            "InMemoryDeviceMetadataRepository",
        ),
    ):
        names: dict[str, tuple[str, Role]] = {
            "plain": (f"{name}.get", "baseline"),
            "instrumented": ("InstrumentedRepository.get, no SDK", "ours"),
        }
        yield runner.run(
            "telemetry",
            table,
            f"Telemetry overhead: {title}",
            "get one device",
            _candidates(fns, names, 1),
            notes=notes,
        )


def async_(runner: Runner, work: AsyncRedisWork) -> Iterator[GroupResult]:
    """TASKS concurrent tasks of get: the async repository vs redis.asyncio + msgspec."""
    yield runner.run(
        "async",
        "async.get",
        f"Async: {TASKS} concurrent tasks of get",
        f"{TASKS} tasks x get",
        _candidates(
            work.get(),
            {
                "raw": ("redis.asyncio GET + msgspec decode", "baseline"),
                "raw-bounded": ("the same on the facade's bounded pool", "ours"),
                "raw-blocking": ("the same on redis-py's BlockingConnectionPool", "other"),
                "ours": ("AsyncRedisDeviceMetadataRepository.get", "ours"),
                "facade": ("CacheServiceClient.get_device_metadata", "ours"),
            },
            TASKS * GETS_PER_TASK,
        ),
        notes=[
            f"One sample: {TASKS} tasks each making {GETS_PER_TASK} sequential gets "
            f"(asyncio.gather); an op is one get. Pools of {TASKS} connections: redis-py's "
            f"default pool (refuses a call beyond its size) for the baseline and the "
            f"repository; the facade's bounded pool and redis-py's BlockingConnectionPool "
            f"(both make callers wait for a free connection, with a timeout) for the others.",
        ],
    )


def _near_get(
    runner: Runner,
    table: str,
    name: str,
    title: str,
    fns: dict[str, Callable[[], Any]],
    names: dict[str, tuple[str, Role]],
    hits_and_misses: Callable[[], tuple[int, int]],
    notes: list[str],
) -> GroupResult:
    """Time hot gets, and say whether every near-cached read stayed a hit meanwhile."""
    hits, misses = hits_and_misses()
    result = runner.run(
        "near",
        table,
        name,
        title,
        _candidates(fns, names, {"ours": INNER, "repository": INNER}),
        notes=notes,
    )
    hits_after, misses_after = hits_and_misses()
    if misses_after != misses:
        result.notes.append(
            f"**{misses_after - misses} of {hits_after - hits + misses_after - misses} "
            "near-cached reads missed while timed** (the near cache was flushed: "
            "its tracking connection dropped); the figures are not of hits alone."
        )
    return result


def _delay_row(label: str, delays: list[float], missed: int) -> list[str]:
    ms = [d * 1e3 for d in delays]
    return [
        label,
        f"{len(ms)}",
        f"{percentile(ms, 50):.2f}",
        f"{percentile(ms, 99):.2f}",
        f"{max(ms):.2f}",
        f"{missed}",
    ]


def near(runner: Runner, url: str) -> Iterator[GroupResult | Figures]:
    """The near cache: hot gets (sync, async) vs raw GET + decode; invalidation delay; memory."""
    work = NearWork(url, run_prefix())
    try:
        work.verify()
        yield _near_get(
            runner,
            "near.get",
            "Near cache: get of a cached device",
            "get a cached device",
            work.get(),
            {
                "raw": ("redis-py GET + msgspec decode", "baseline"),
                "ours": ("CacheServiceClient.get_device_metadata_sync, near cache on", "ours"),
                "repository": ("NearCachedDeviceMetadataRepository.get", "ours"),
                "plain": ("get_device_metadata_sync without a near cache", "other"),
            },
            work.hits_and_misses,
            [
                f"The near cache holds the device, so ours never asks Redis; each of their "
                f"samples is {INNER} calls (their percentiles are of {INNER}-call means). "
                "The baseline is the single group's: one connection, hiredis parser when "
                "installed.",
            ],
        )
        loop = asyncio.new_event_loop()
        try:
            awork = loop.run_until_complete(AsyncNearWork.create(url, run_prefix()))
            try:
                loop.run_until_complete(awork.verify())
                yield _near_get(
                    Runner(runner.config, loop),
                    "near.async_get",
                    "Near cache: async get of a cached device",
                    "async get, cached device",
                    awork.get(),
                    {
                        "raw": ("redis.asyncio GET + msgspec decode", "baseline"),
                        "ours": (
                            "await CacheServiceClient.get_device_metadata, near cache on",
                            "ours",
                        ),
                        "repository": ("AsyncNearCachedDeviceMetadataRepository.get", "ours"),
                        "plain": ("get_device_metadata without a near cache", "other"),
                    },
                    awork.hits_and_misses,
                    [
                        f"Sequential awaits in one task; each sample of ours is {INNER} awaits. "
                        "The baseline and the client without a near cache make one round trip "
                        "per get.",
                    ],
                )
            finally:
                loop.run_until_complete(awork.cleanup())
        finally:
            loop.close()
        trials = runner.config.trials
        spin, spin_missed = work.invalidation_delays(trials, spin=True)
        idle, idle_missed = work.invalidation_delays(trials, spin=False)
        values: dict[str, float] = {}
        for label, delays, missed in (("spin", spin, spin_missed), ("yield", idle, idle_missed)):
            ms = [d * 1e3 for d in delays]
            values[f"{label}.p50"] = percentile(ms, 50)
            values[f"{label}.p99"] = percentile(ms, 99)
            values[f"{label}.max"] = max(ms)
            values[f"{label}.missed"] = float(missed)
        yield Figures(
            "near",
            "near.invalidation",
            "Near cache: another client's write, seen by a near-cached reader",
            ["reader", "trials", "p50 ms", "p99 ms", "max ms", f"not seen in {SEEN_TIMEOUT:g} s"],
            [
                _delay_row("reads in a tight loop (holds the GIL)", spin, spin_missed),
                _delay_row("releases the GIL between reads (time.sleep(0))", idle, idle_missed),
            ],
            values,
            [
                "Each trial: the device is cached; a plain redis-py connection sends a SET of "
                "a new value (MetadataCodec JSON) without waiting for the reply; the reader "
                "calls get_device_metadata_sync until it returns the new value. The delay runs "
                "from just before the SET is sent to the return of that read (itself a round "
                "trip to Redis, as the entry was dropped).",
                "The entry is dropped by the near cache's tracking thread, which needs the GIL: "
                "a reader that never releases it lets that thread run only when the interpreter "
                f"forces a switch (every sys.getswitchinterval() = "
                f"{sys.getswitchinterval() * 1e3:g} ms), and on a loaded machine only when the "
                "OS schedules it as well, so its tail grows with both.",
            ],
        )
        memory = work.memory(runner.config.entries)
        entries = int(memory["entries"])
        yield Figures(
            "near",
            "near.memory",
            "Near cache: memory per cached device",
            ["what", "bytes per device"],
            [
                ["the value in Redis (MetadataCodec JSON)", f"{memory['json']:,.0f}"],
                ["a decoded DeviceMetadata", f"{memory['device']:,.0f}"],
                ["a near cache entry (device, id, LRU slot)", f"{memory['entry']:,.0f}"],
                ["of which the near cache's own", f"{memory['entry'] - memory['device']:,.0f}"],
            ],
            memory,
            [
                f"{entries:,} devices read with get_many into a near cache of {entries:,} "
                f"entries: {memory['entry'] * entries / 2**20:.1f} MiB. Traced memory "
                "(tracemalloc) left behind, after a full collection, divided by the entries; "
                "the decoded device is traced the same way (msgspec decode into a list, the "
                "list left out).",
            ],
        )
    finally:
        work.cleanup()


def run_groups(
    runner: Runner, only: tuple[str, ...], url: str | None
) -> Iterator[GroupResult | Figures]:
    """Run the selected groups in order; ``url`` is needed for the Redis ones."""
    if "codec" in only:
        yield from codec(runner)
    sync_groups = [g for g in ("single", "batch", "facade", "telemetry") if g in only]
    if sync_groups:
        assert url is not None
        work = SyncRedisWork(url, run_prefix())
        try:
            work.verify()
            suites = {"single": single, "batch": batch, "facade": facade, "telemetry": telemetry}
            for name in sync_groups:
                yield from suites[name](runner, work)
        finally:
            work.cleanup()
    if "async" in only:
        assert url is not None
        loop = asyncio.new_event_loop()
        try:
            awork = loop.run_until_complete(AsyncRedisWork.create(url, run_prefix()))
            try:
                loop.run_until_complete(awork.verify())
                yield from async_(Runner(runner.config, loop), awork)
            finally:
                loop.run_until_complete(awork.cleanup())
        finally:
            loop.close()
    if "near" in only:
        assert url is not None
        yield from near(runner, url)


def optional_status() -> dict[str, bool]:
    """Which competitors can run."""
    return {"pydantic": others.have_pydantic(), "redis-om": others.have_redis_om()}
