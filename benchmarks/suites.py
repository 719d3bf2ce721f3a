"""The benchmark groups: which candidates each table compares, and under which names."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks import others
from benchmarks.data import BATCH
from benchmarks.harness import Candidate, GroupResult, Role, Runner
from benchmarks.workloads import (
    GETS_PER_TASK,
    INNER,
    TASKS,
    AsyncRedisWork,
    CodecWork,
    SyncRedisWork,
    run_prefix,
)
from cache_service_client import telemetry as otel

GROUPS = ("codec", "single", "batch", "async", "facade", "telemetry")
REDIS_GROUPS = ("single", "batch", "async", "facade", "telemetry")

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
    fns: dict[str, Callable[[], Any]], names: dict[str, tuple[str, Role]], ops: int
) -> list[Candidate]:
    out = []
    for key, (name, role) in names.items():
        if key in fns:
            out.append(Candidate(name, fns[key], ops=ops, role=role, key=key))
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
            "Ours validates every item and writes values and three indexes in one atomic "
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


def run_groups(runner: Runner, only: tuple[str, ...], url: str | None) -> Iterator[GroupResult]:
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


def optional_status() -> dict[str, bool]:
    """Which competitors can run."""
    return {"pydantic": others.have_pydantic(), "redis-om": others.have_redis_om()}
