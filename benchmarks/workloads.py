"""The work each candidate does, set up once and shared by the suites and the profiler.

Every candidate of a comparison does the same work and returns the same information: the
workloads' ``verify`` methods check that before anything is timed.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import redis
import redis.asyncio

from benchmarks import others
from benchmarks.data import (
    BATCH,
    DataclassDevice,
    dataclass_decode,
    dataclass_encode,
    device_id,
    make_batch,
    make_metadata,
    to_dataclass,
)
from cache_service_client import (
    AsyncNearCachedDeviceMetadataRepository,
    AsyncRedisDeviceMetadataRepository,
    CacheServiceClient,
    DeviceMetadata,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    MetadataCodec,
    NearCachedDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
    telemetry,
)

#: TTL of everything the benchmarks write, in seconds.
TTL = 3600
#: Calls per sample for single-object codec work (sub-microsecond calls need a loop).
INNER = 100
#: Concurrent tasks of the async benchmark, and gets each task makes per sample.
TASKS = 64
GETS_PER_TASK = 8
#: Entries of the near caches whose hot reads are timed (they hold a device or two).
NEAR_SIZE = 1000
#: Seconds a near-cached client may take to start tracking before the benchmark gives up.
CONNECT_TIMEOUT = 5.0
#: Seconds an invalidation trial waits for the new value before counting it as not seen.
SEEN_TIMEOUT = 1.0
#: Seconds between invalidation trials.
TRIAL_PAUSE = 0.001


def run_prefix() -> str:
    """A key prefix of this run's own, so a shared server's other keys are never touched."""
    return f"csc-bench-{uuid.uuid4().hex[:8]}"


class CodecWork:
    """Encode and decode through our codec, bare msgspec, pydantic v2 and json + dataclass."""

    def __init__(self) -> None:
        self.one = make_metadata(0)
        self.batch = make_batch(BATCH)
        self.codec = MetadataCodec()
        keys = KeyStrategy()
        self.key = keys.device_key(self.one.device_id)
        self.ids = [m.device_id for m in self.batch]
        self.keys = keys.device_keys(self.ids)
        self.encoder = msgspec.json.Encoder()
        self.decoder = msgspec.json.Decoder(DeviceMetadata)
        self.raw = self.codec.encode(self.one)
        self.raws = [self.codec.encode(m) for m in self.batch]
        self.dc_one = to_dataclass(self.one)
        self.dc_batch = [to_dataclass(m) for m in self.batch]
        self.dc_raw = dataclass_encode(self.dc_one)
        self.dc_raws = [dataclass_encode(d) for d in self.dc_batch]
        self.pydantic: Any = None
        if others.have_pydantic():
            self.pydantic = others.pydantic_model()
            self.pd_one = others.to_pydantic(self.pydantic, self.one)
            self.pd_batch = [others.to_pydantic(self.pydantic, m) for m in self.batch]
            self.pd_raw = self.pd_one.model_dump_json()
            self.pd_raws = [p.model_dump_json() for p in self.pd_batch]

    # -- one object, INNER times per call ------------------------------------------------

    def encode_one(self) -> dict[str, Callable[[], object]]:
        """Encode one device, INNER times per call; by candidate key."""
        ours, bare, one, dc_one = self.codec.encode, self.encoder.encode, self.one, self.dc_one
        loop = range(INNER)

        def f_ours() -> None:
            for _ in loop:
                ours(one)

        def f_msgspec() -> None:
            for _ in loop:
                bare(one)

        def f_json() -> None:
            for _ in loop:
                dataclass_encode(dc_one)

        out: dict[str, Callable[[], object]] = {
            "msgspec": f_msgspec,
            "ours": f_ours,
            "json": f_json,
        }
        if self.pydantic is not None:
            pd_one = self.pd_one

            def f_pydantic() -> None:
                for _ in loop:
                    pd_one.model_dump_json()

            out["pydantic"] = f_pydantic
        return out

    def decode_one(self) -> dict[str, Callable[[], object]]:
        """Decode one device, INNER times per call; by candidate key."""
        ours, bare = self.codec.decode, self.decoder.decode
        key, raw, device_id, dc_raw = self.key, self.raw, self.one.device_id, self.dc_raw
        loop = range(INNER)

        def f_ours() -> None:
            for _ in loop:
                ours(key, raw, device_id)

        def f_msgspec() -> None:
            for _ in loop:
                bare(raw)

        def f_json() -> None:
            for _ in loop:
                dataclass_decode(dc_raw)

        out: dict[str, Callable[[], object]] = {
            "msgspec": f_msgspec,
            "ours": f_ours,
            "json": f_json,
        }
        if self.pydantic is not None:
            validate, pd_raw = self.pydantic.model_validate_json, self.pd_raw

            def f_pydantic() -> None:
                for _ in loop:
                    validate(pd_raw)

            out["pydantic"] = f_pydantic
        return out

    # -- a batch of BATCH objects, one value each (as they are stored) -------------------

    def encode_batch(self) -> dict[str, Callable[[], object]]:
        """Encode BATCH devices, one value each; by candidate key."""
        codec, bare, batch, dc_batch = self.codec, self.encoder.encode, self.batch, self.dc_batch
        one_by_one = codec.encode
        out: dict[str, Callable[[], object]] = {
            "msgspec": lambda: [bare(m) for m in batch],
            "ours": lambda: codec.encode_many(batch),
            "ours-per-item": lambda: [one_by_one(m) for m in batch],
            "json": lambda: [dataclass_encode(d) for d in dc_batch],
        }
        if self.pydantic is not None:
            pd_batch = self.pd_batch
            out["pydantic"] = lambda: [p.model_dump_json() for p in pd_batch]
        return out

    def decode_batch(self) -> dict[str, Callable[[], object]]:
        """Decode BATCH values, checking each belongs to its key (as ``get_many`` does)."""
        codec, bare = self.codec, self.decoder.decode
        one_by_one = codec.decode
        keys, raws, ids, dc_raws = self.keys, self.raws, self.ids, self.dc_raws
        out: dict[str, Callable[[], object]] = {
            "msgspec": lambda: [bare(r) for r in raws],
            "ours": lambda: codec.decode_many(keys, raws, ids),
            "ours-per-item": lambda: [
                one_by_one(k, r, i) for k, r, i in zip(keys, raws, ids, strict=True)
            ],
            "json": lambda: [dataclass_decode(r) for r in dc_raws],
        }
        if self.pydantic is not None:
            validate, pd_raws = self.pydantic.model_validate_json, self.pd_raws
            out["pydantic"] = lambda: [validate(r) for r in pd_raws]
        return out

    def verify(self) -> None:
        """Every candidate's output decodes back to the same device."""
        assert self.codec.decode(self.key, self.raw, self.one.device_id) == self.one
        assert self.decoder.decode(self.encoder.encode(self.one)) == self.one
        assert self.encoder.encode(self.one) == self.codec.encode(self.one)
        assert self.codec.encode_many(self.batch) == self.raws
        decoded = self.codec.decode_many(self.keys, self.raws, self.ids)
        assert decoded.found == dict(zip(self.ids, self.batch, strict=True))
        assert dataclass_decode(self.dc_raw) == self.dc_one
        assert 250 <= len(self.raw) <= 400, len(self.raw)
        if self.pydantic is not None:
            back = self.pydantic.model_validate_json(self.pd_raw)
            assert back == self.pd_one
            assert back.model_dump() == {"v": 1, **self.one.to_dict()}


class SyncRedisWork:
    """Sync Redis work: our repository, raw redis-py + msgspec, redis-om and the facade.

    Args:
        url: The Redis server.
        prefix: Every key written starts with it (see :func:`run_prefix`).

    """

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.client: redis.Redis = redis.Redis.from_url(url)
        self.keys = KeyStrategy(prefix=prefix)
        self.repo = RedisDeviceMetadataRepository(self.client, key_strategy=self.keys, ttl=TTL)
        self.raw_prefix = f"{prefix}-raw:"
        self.raw_index = f"{prefix}-raw index:updated"
        self.encoder = msgspec.json.Encoder()
        self.decoder = msgspec.json.Decoder(DeviceMetadata)
        self.one = make_metadata(0)
        self.batch = make_batch(BATCH)
        self.ids = [m.device_id for m in self.batch]
        self.repo.put_many(self.batch)
        pipe = self.client.pipeline(transaction=False)
        for m in self.batch:
            pipe.set(self.raw_prefix + m.device_id, self.encoder.encode(m), ex=TTL)
        pipe.execute()
        self.om_client: Any = None
        self.om_model: Any = None
        if others.have_redis_om():
            self.om_client = redis.Redis.from_url(url, decode_responses=True)
            self.om_model = others.redis_om_model(self.om_client, f"{prefix}-om")
            self.om_one = others.to_redis_om(self.om_model, self.one)
            self._om_put()
        self.facade = CacheServiceClient(url=url, key_prefix=prefix, metadata_ttl=TTL)

    # -- single operations ---------------------------------------------------------------

    def get(self) -> dict[str, Callable[[], object]]:
        """One GET + decode of the same device; by candidate key."""
        repo_get, client_get, decode = self.repo.get, self.client.get, self.decoder.decode
        device_id, raw_prefix = self.one.device_id, self.raw_prefix
        out: dict[str, Callable[[], object]] = {
            "raw": lambda: decode(client_get(raw_prefix + device_id)),  # type: ignore[arg-type]
            "ours": lambda: repo_get(device_id),
        }
        if self.om_model is not None:
            om_get = self.om_model.get
            loads = json.loads

            def f_om() -> object:
                found = om_get(device_id)
                return found, loads(found.additional_properties)

            out["redis-om"] = f_om
        return out

    def _updates(self) -> Callable[[], DeviceMetadata]:
        """The next of a cycle of updates of one device, each a millisecond newer than the last
        (a stream writer's puts), the same for every candidate."""
        updates = [
            msgspec.structs.replace(self.one, last_updated=self.one.last_updated + ms)
            for ms in (timedelta(milliseconds=i) for i in range(4096))
        ]
        return itertools.cycle(updates).__next__

    def put(self) -> dict[str, Callable[[], object]]:
        """Store one device with a TTL, a newer ``last_updated`` each time; by candidate key."""
        repo_put, client_set, encode = self.repo.put, self.client.set, self.encoder.encode
        key = self.raw_prefix + self.one.device_id
        raw_next, ours_next = self._updates(), self._updates()
        out: dict[str, Callable[[], object]] = {
            "raw": lambda: client_set(key, encode(raw_next()), ex=TTL),
            "ours": lambda: repo_put(ours_next()),
        }
        if self.om_model is not None:
            out["redis-om"] = self._om_put
        return out

    def churn(self) -> dict[str, Callable[[], object]]:
        """Store a device with a TTL and delete it again; by candidate key."""
        repo_put, repo_delete = self.repo.put, self.repo.delete
        client_set, client_delete, encode = self.client.set, self.client.delete, self.encoder.encode
        churned = msgspec.structs.replace(self.one, device_id="churned")
        key, device_id = self.raw_prefix + churned.device_id, churned.device_id

        def raw() -> object:
            client_set(key, encode(churned), ex=TTL)
            return client_delete(key)

        def ours() -> object:
            repo_put(churned)
            return repo_delete(device_id)

        return {"raw": raw, "ours": ours}

    def _om_put(self) -> object:
        """redis-om's save + expire, atomic in one MULTI/EXEC round trip like our put."""
        pipe = self.om_client.pipeline()
        self.om_one.save(pipeline=pipe)
        self.om_one.expire(TTL, pipeline=pipe)
        return pipe.execute()

    # -- batches -------------------------------------------------------------------------

    def get_many(self) -> dict[str, Callable[[], object]]:
        """Read BATCH devices in one round trip; by candidate key."""
        repo_get_many, mget, decode = self.repo.get_many, self.client.mget, self.decoder.decode
        ids, raw_prefix = self.ids, self.raw_prefix

        def f_raw() -> dict[str, DeviceMetadata]:
            raws = mget([raw_prefix + i for i in ids])
            return {i: decode(r) for i, r in zip(ids, raws, strict=True) if r is not None}

        return {"raw": f_raw, "ours": lambda: repo_get_many(ids)}

    def put_many(self) -> dict[str, Callable[[], object]]:
        """Store BATCH devices with a TTL and an index; by candidate key."""
        repo_put_many, batch = self.repo.put_many, self.batch
        client, encode = self.client, self.encoder.encode
        raw_prefix, raw_index = self.raw_prefix, self.raw_index

        def raw_pipeline(transaction: bool) -> object:
            pipe = client.pipeline(transaction=transaction)
            for m in batch:
                pipe.set(raw_prefix + m.device_id, encode(m), ex=TTL)
            pipe.zadd(raw_index, {m.device_id: m.last_updated.timestamp() * 1000 for m in batch})
            return pipe.execute()

        return {
            "raw": lambda: raw_pipeline(False),
            "ours": lambda: repo_put_many(batch),
            "raw-multi": lambda: raw_pipeline(True),
        }

    # -- the facade ----------------------------------------------------------------------

    def facade_get(self) -> dict[str, Callable[[], object]]:
        """``CacheServiceClient.get_device_metadata_sync`` and its repository's ``get``."""
        device_id = self.one.device_id
        repo_get = self.facade.repository.get
        facade_get = self.facade.get_device_metadata_sync
        return {"repository": lambda: repo_get(device_id), "facade": lambda: facade_get(device_id)}

    # -- telemetry -----------------------------------------------------------------------

    def telemetry_get(self) -> dict[str, Callable[[], object]]:
        """``get`` of the repository alone and wrapped for OpenTelemetry (no SDK configured).

        Without opentelemetry-api the wrapped candidate is missing (and nothing is wrapped).
        """
        return _traced_get(self.repo, self.one.device_id)

    def telemetry_memory_get(self) -> dict[str, Callable[[], object]]:
        """The same on the in-memory repository: no I/O, so the wrapper's own cost shows."""
        memory = InMemoryDeviceMetadataRepository(key_strategy=self.keys, ttl=TTL)
        memory.put(self.one)
        return _traced_get(memory, self.one.device_id)

    def verify(self) -> None:
        """Every candidate reads and writes the same information."""
        for fn in self.put().values():
            fn()
        got = {key: fn() for key, fn in self.get().items()}
        assert got["ours"] == got["raw"] == self.one, got
        if "redis-om" in got:
            om: Any = got["redis-om"]
            found, props = om
            assert props == self.one.additional_properties
            assert found.pk == self.one.device_id
            assert found.last_updated == self.one.last_updated
            assert found.persist == self.one.persist
        for fn in self.put_many().values():
            fn()
        many = {key: fn() for key, fn in self.get_many().items()}
        assert many["ours"] == many["raw"]
        assert isinstance(many["ours"], dict)
        assert len(many["ours"]) == BATCH
        facade = {key: fn() for key, fn in self.facade_get().items()}
        assert facade["facade"] == facade["repository"] == self.one
        for traced in (self.telemetry_get(), self.telemetry_memory_get()):
            assert all(fn() == self.one for fn in traced.values())
        assert self.repo.count() == BATCH

    def cleanup(self) -> None:
        """Delete every key this run wrote and close the clients."""
        doomed = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        for start in range(0, len(doomed), 500):
            self.client.delete(*doomed[start : start + 500])
        self.facade.close()
        self.client.close()
        if self.om_client is not None:
            self.om_client.close()


def _traced_get(repository: Any, device_id: str) -> dict[str, Callable[[], object]]:
    """``get`` of ``repository`` alone and through the OpenTelemetry wrapper, by candidate key."""
    plain_get = repository.get
    out: dict[str, Callable[[], object]] = {"plain": lambda: plain_get(device_id)}
    if telemetry.AVAILABLE:
        wrapped_get = telemetry.InstrumentedRepository(repository).get
        out["instrumented"] = lambda: wrapped_get(device_id)
    return out


class AsyncRedisWork:
    """Async Redis work: TASKS concurrent tasks of ``get``, ours vs redis.asyncio + msgspec.

    Build it with :meth:`create` inside the event loop that will run it.
    """

    client: redis.asyncio.Redis
    repo: AsyncRedisDeviceMetadataRepository
    facade: CacheServiceClient
    facade_pool_client: redis.asyncio.Redis
    blocking_client: redis.asyncio.Redis

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.keys = KeyStrategy(prefix=prefix)
        self.raw_prefix = f"{prefix}-raw:"
        self.decoder = msgspec.json.Decoder(DeviceMetadata)
        self.batch = make_batch(TASKS)
        self.ids = [m.device_id for m in self.batch]

    @classmethod
    async def create(cls, url: str, prefix: str) -> AsyncRedisWork:
        """Connect and store TASKS devices (one per task)."""
        self = cls(url, prefix)
        self.client = redis.asyncio.Redis.from_url(url)
        self.repo = AsyncRedisDeviceMetadataRepository(self.client, key_strategy=self.keys, ttl=TTL)
        await self.repo.put_many(self.batch)
        encode = msgspec.json.Encoder().encode
        async with self.client.pipeline(transaction=False) as pipe:
            for m in self.batch:
                pipe.set(self.raw_prefix + m.device_id, encode(m), ex=TTL)
            await pipe.execute()
        # The facade, on the bounded pool it builds (callers wait for a free connection), and
        # raw redis.asyncio on that very pool and on redis-py's own blocking pool.
        self.facade = CacheServiceClient.from_url(url, key_prefix=prefix, max_connections=TASKS)
        await self.facade.get_async_repository()
        facade_client = await self.facade.container.async_redis_client()
        self.facade_pool_client = redis.asyncio.Redis(connection_pool=facade_client.connection_pool)
        self.blocking_client = redis.asyncio.Redis.from_pool(
            redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=TASKS, timeout=5)
        )
        return self

    def get(self) -> dict[str, Callable[[], Any]]:
        """TASKS tasks, each making GETS_PER_TASK gets of its own device; by candidate key."""
        repo_get, decode = self.repo.get, self.decoder.decode
        ids, raw_prefix, gather = self.ids, self.raw_prefix, asyncio.gather
        rounds = range(GETS_PER_TASK)

        async def task_ours(device_id: str) -> None:
            for _ in rounds:
                await repo_get(device_id)

        facade_get = self.facade.get_device_metadata

        async def task_facade(device_id: str) -> None:
            for _ in rounds:
                await facade_get(device_id)

        def raw_on(client: redis.asyncio.Redis) -> Callable[[], Any]:
            get = client.get

            async def task_raw(device_id: str) -> None:
                key = raw_prefix + device_id
                for _ in rounds:
                    decode(await get(key))  # type: ignore[arg-type, unused-ignore]

            async def f_raw() -> None:
                await gather(*[task_raw(i) for i in ids])

            return f_raw

        async def f_ours() -> None:
            await gather(*[task_ours(i) for i in ids])

        async def f_facade() -> None:
            await gather(*[task_facade(i) for i in ids])

        return {
            "raw": raw_on(self.client),
            "raw-bounded": raw_on(self.facade_pool_client),
            "raw-blocking": raw_on(self.blocking_client),
            "ours": f_ours,
            "facade": f_facade,
        }

    async def verify(self) -> None:
        """Both read the same devices."""
        for m in self.batch[:3]:
            raw = await self.client.get(self.raw_prefix + m.device_id)
            assert raw is not None
            assert self.decoder.decode(raw) == await self.repo.get(m.device_id) == m
            assert await self.facade.get_device_metadata(m.device_id) == m
            for client in (self.facade_pool_client, self.blocking_client):
                assert await client.get(self.raw_prefix + m.device_id) == raw

    async def cleanup(self) -> None:
        """Delete every key this run wrote and close the client."""
        doomed = [key async for key in self.client.scan_iter(match=f"{self.prefix}*", count=1000)]
        for start in range(0, len(doomed), 500):
            await self.client.delete(*doomed[start : start + 500])
        await self.client.aclose()
        await self.blocking_client.aclose()
        await self.facade.aclose()


def _unwrapped(repo: Any) -> Any:
    """``repo`` without the telemetry wrapper the container adds when the [otel] extra is in."""
    wrappers = (telemetry.InstrumentedRepository, telemetry.AsyncInstrumentedRepository)
    return repo.repository if isinstance(repo, wrappers) else repo


def _near_repository(client: CacheServiceClient) -> NearCachedDeviceMetadataRepository:
    """The client's near-cached repository, once it tracks its server."""
    repo = _unwrapped(client.repository)
    if not isinstance(repo, NearCachedDeviceMetadataRepository):
        raise RuntimeError(f"expected a near-cached repository, got {repo!r}")
    if not repo.near_cache.wait_connected(CONNECT_TIMEOUT):
        raise RuntimeError(f"the near cache did not start tracking within {CONNECT_TIMEOUT:g} s")
    return repo


def _clean(client: redis.Redis, prefix: str) -> None:
    doomed = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(doomed), 500):
        client.delete(*doomed[start : start + 500])


class NearWork:
    """Sync near cache work: hot reads, another client's writes seen, memory per entry.

    A near-cached :class:`CacheServiceClient` (``near_cache_size`` > 0) against raw redis-py +
    msgspec and the same client without a near cache, all on one server and one device.

    Args:
        url: The Redis server.
        prefix: Every key written starts with it (see :func:`run_prefix`).

    """

    #: The device whose value another client rewrites in the invalidation trials.
    WRITTEN = "sensor-rewritten"

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.client: redis.Redis = redis.Redis.from_url(url)
        self.raw_prefix = f"{prefix}-raw:"
        self.decoder = msgspec.json.Decoder(DeviceMetadata)
        self.codec = MetadataCodec()
        self.one = make_metadata(0)
        self.written = msgspec.structs.replace(make_metadata(1), device_id=self.WRITTEN)
        self.client.set(self.raw_prefix + self.one.device_id, self.codec.encode(self.one), ex=TTL)
        self.plain = CacheServiceClient(url=url, key_prefix=prefix, metadata_ttl=TTL)
        self.plain.repository.put_many([self.one, self.written])
        self.near = CacheServiceClient(
            url=url, key_prefix=prefix, metadata_ttl=TTL, near_cache_size=NEAR_SIZE
        )
        self.near_repo = _near_repository(self.near)
        self._version = 0

    # -- hot reads -----------------------------------------------------------------------

    def get(self) -> dict[str, Callable[[], object]]:
        """A get of a device the near cache holds (INNER per call for the cached ones)."""
        get, decode = self.client.get, self.decoder.decode
        key, device = self.raw_prefix + self.one.device_id, self.one.device_id
        facade_get, repo_get = self.near.get_device_metadata_sync, self.near_repo.get
        plain_get = self.plain.get_device_metadata_sync
        loop = range(INNER)

        def f_facade() -> None:
            for _ in loop:
                facade_get(device)

        def f_repository() -> None:
            for _ in loop:
                repo_get(device)

        return {
            "raw": lambda: decode(get(key)),  # type: ignore[arg-type]
            "ours": f_facade,
            "repository": f_repository,
            "plain": lambda: plain_get(device),
        }

    def hits_and_misses(self) -> tuple[int, int]:
        """The near cache's hit and miss counters."""
        stats = self.near.near_cache_stats()
        return stats.hits, stats.misses

    def verify(self) -> None:
        """Every candidate returns the device; the near-cached ones without asking Redis."""
        fns = self.get()
        assert fns["raw"]() == self.plain.get_device_metadata_sync(self.one.device_id) == self.one
        assert self.near.get_device_metadata_sync(self.one.device_id) == self.one  # cached now
        for key in ("ours", "repository"):
            hits, misses = self.hits_and_misses()
            fns[key]()
            assert self.hits_and_misses() == (hits + INNER, misses), key
        assert self.near_repo.get(self.one.device_id) == self.one

    # -- another client's write, seen by the near-cached reader --------------------------

    def _cached(self, device: str) -> None:
        """Read ``device`` until the read is served from the near cache."""
        get, stats = self.near.get_device_metadata_sync, self.near.near_cache_stats
        for _ in range(1000):
            hits = stats().hits
            get(device)
            if stats().hits > hits:
                return
        raise RuntimeError(f"the near cache does not keep {device!r} (is tracking down?)")

    def invalidation_delays(self, trials: int, *, spin: bool) -> tuple[list[float], int]:
        """Seconds from another client's write of a cached device to the first read of it.

        Each trial caches the device, then sends a SET of a new value (a changed unit, a newer
        ``last_updated``, encoded with :class:`MetadataCodec`) on a plain redis-py connection
        of its own, and reads the device with ``get_device_metadata_sync`` until it returns
        the new value; the writer's reply is read afterwards. ``spin``: read in a tight loop;
        else release the GIL between reads (``time.sleep(0)``, as a reader doing any I/O does).

        Returns:
            The delay of each trial, and how many trials did not see the value within
            :data:`SEEN_TIMEOUT` (their delay is counted as that).
        """
        pool = self.client.connection_pool
        writer = pool.connection_class(**pool.connection_kwargs)
        key = self.near_repo.key_strategy.device_key(self.WRITTEN)
        get, device = self.near.get_device_metadata_sync, self.WRITTEN
        clock, pause = time.perf_counter, time.sleep
        delays: list[float] = []
        missed = 0
        try:
            writer.connect()
            for _ in range(trials):
                self._version += 1
                new = msgspec.structs.replace(
                    self.written,
                    datatype_unit=("degF", "degC")[self._version % 2],
                    last_updated=self.written.last_updated + timedelta(milliseconds=self._version),
                )
                raw = self.codec.encode(new)
                self._cached(device)
                start = clock()
                writer.send_command("SET", key, raw, "EX", TTL)
                deadline = start + SEEN_TIMEOUT
                if spin:
                    while get(device) != new:
                        if clock() > deadline:
                            missed += 1
                            break
                else:
                    while get(device) != new:
                        if clock() > deadline:
                            missed += 1
                            break
                        pause(0)
                delays.append(min(clock() - start, SEEN_TIMEOUT))
                writer.read_response()
                pause(TRIAL_PAUSE)
        finally:
            writer.disconnect()
        return delays, missed

    # -- memory --------------------------------------------------------------------------

    def memory(self, entries: int) -> dict[str, float]:
        """Bytes per device: encoded, decoded, and held by a near cache full of them.

        ``entries`` devices are written under a prefix of their own, then read with
        ``get_many`` (in batches of BATCH) into a near cache of that size; the near cache's
        cost is the traced memory (``tracemalloc``, after a full collection) that the reads
        leave behind, the device ids included.
        """
        prefix = f"{self.prefix}-mem"
        writer = RedisDeviceMetadataRepository(
            self.client, key_strategy=KeyStrategy(prefix=prefix), ttl=TTL
        )
        for start in range(0, entries, BATCH):
            writer.put_many(make_batch(min(BATCH, entries - start), start))
        raws = [self.codec.encode(m) for m in make_batch(entries)]
        reader = CacheServiceClient(
            url=self.url, key_prefix=prefix, metadata_ttl=TTL, near_cache_size=entries
        )
        try:
            repo = _near_repository(reader)
            # Warm connections and buffers, then empty the cache again.
            repo.get_many([device_id(i) for i in range(min(BATCH, entries))])
            repo.near_cache.flush()
            cached = _traced(
                lambda: [
                    repo.get_many([device_id(i) for i in range(start, min(start + BATCH, entries))])
                    for start in range(0, entries, BATCH)
                ]
            )
            stats = reader.near_cache_stats()
            assert stats.entries == entries, stats
            assert stats.flushes == 1, stats  # the one above: tracking never dropped
        finally:
            reader.close()
        decode = self.decoder.decode
        holder: list[list[DeviceMetadata]] = []
        decoded = _traced(lambda: holder.append([decode(r) for r in raws]))
        decoded -= sys.getsizeof(holder[0])
        return {
            "entries": float(entries),
            "json": sum(map(len, raws)) / entries,
            "device": decoded / entries,
            "entry": cached / entries,
        }

    def cleanup(self) -> None:
        """Delete every key this run wrote and close the clients."""
        _clean(self.client, self.prefix)
        self.near.close()
        self.plain.close()
        self.client.close()


def _traced(fn: Callable[[], object]) -> int:
    """Bytes of traced memory that calling ``fn`` leaves behind (after a full collection).

    What ``fn`` returns is dropped at once: what is measured is what it stores elsewhere.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        if started:
            tracemalloc.stop()


class AsyncNearWork:
    """Async near cache work: sequential awaits of a get of a device the near cache holds.

    Build it with :meth:`create` inside the event loop that will run it.
    """

    client: redis.asyncio.Redis
    near: CacheServiceClient
    near_repo: AsyncNearCachedDeviceMetadataRepository
    plain: CacheServiceClient

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.raw_prefix = f"{prefix}-raw:"
        self.decoder = msgspec.json.Decoder(DeviceMetadata)
        self.one = make_metadata(0)

    @classmethod
    async def create(cls, url: str, prefix: str) -> AsyncNearWork:
        """Connect, store the device, and wait until the near cache tracks the server."""
        self = cls(url, prefix)
        self.client = redis.asyncio.Redis.from_url(url)
        raw = MetadataCodec().encode(self.one)
        await self.client.set(self.raw_prefix + self.one.device_id, raw, ex=TTL)
        self.plain = CacheServiceClient(url=url, key_prefix=prefix, metadata_ttl=TTL)
        await self.plain.store_device_metadata_async(self.one.device_id, self.one)
        self.near = CacheServiceClient(
            url=url, key_prefix=prefix, metadata_ttl=TTL, near_cache_size=NEAR_SIZE
        )
        repo = _unwrapped(await self.near.get_async_repository())
        if not isinstance(repo, AsyncNearCachedDeviceMetadataRepository):
            raise RuntimeError(f"expected a near-cached repository, got {repo!r}")
        if not repo.near_cache.wait_connected(CONNECT_TIMEOUT):
            raise RuntimeError(
                f"the near cache did not start tracking within {CONNECT_TIMEOUT:g} s"
            )
        self.near_repo = repo
        return self

    def get(self) -> dict[str, Callable[[], Any]]:
        """A get of a device the near cache holds (INNER awaits per call for the cached ones)."""
        get, decode = self.client.get, self.decoder.decode
        key, device = self.raw_prefix + self.one.device_id, self.one.device_id
        facade_get, repo_get = self.near.get_device_metadata, self.near_repo.get
        plain_get = self.plain.get_device_metadata
        loop = range(INNER)

        async def f_raw() -> object:
            return decode(await get(key))  # type: ignore[arg-type, unused-ignore]

        async def f_facade() -> None:
            for _ in loop:
                await facade_get(device)

        async def f_repository() -> None:
            for _ in loop:
                await repo_get(device)

        async def f_plain() -> object:
            return await plain_get(device)

        return {"raw": f_raw, "ours": f_facade, "repository": f_repository, "plain": f_plain}

    def hits_and_misses(self) -> tuple[int, int]:
        """The near cache's hit and miss counters."""
        stats = self.near.near_cache_stats()
        return stats.hits, stats.misses

    async def verify(self) -> None:
        """Every candidate returns the device; the near-cached ones without asking Redis."""
        fns = self.get()
        assert await fns["raw"]() == await fns["plain"]() == self.one
        assert await self.near.get_device_metadata(self.one.device_id) == self.one  # cached now
        for key in ("ours", "repository"):
            hits, misses = self.hits_and_misses()
            await fns[key]()
            assert self.hits_and_misses() == (hits + INNER, misses), key
        assert await self.near_repo.get(self.one.device_id) == self.one

    async def cleanup(self) -> None:
        """Delete every key this run wrote and close the clients."""
        doomed = [key async for key in self.client.scan_iter(match=f"{self.prefix}*", count=1000)]
        for start in range(0, len(doomed), 500):
            await self.client.delete(*doomed[start : start + 500])
        await self.client.aclose()
        await self.near.aclose()
        await self.plain.aclose()


__all__ = [
    "GETS_PER_TASK",
    "INNER",
    "NEAR_SIZE",
    "TASKS",
    "TTL",
    "AsyncNearWork",
    "AsyncRedisWork",
    "CodecWork",
    "DataclassDevice",
    "NearWork",
    "SyncRedisWork",
    "run_prefix",
]
