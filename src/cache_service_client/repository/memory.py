"""In-memory repositories: the fakes to test against, and the embedded backend for demos.

They behave like the Redis repositories in every observable way: values are stored encoded by
the same :class:`~cache_service_client.MetadataCodec` (so what round-trips through Redis
round-trips here, and nothing more), keys are named by the same
:class:`~cache_service_client.KeyStrategy`, TTLs expire with Redis's millisecond rule, listing
uses Redis's exact glob semantics and byte order, and errors are the same. Both are thread-safe.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Generator, Iterable
from datetime import datetime, timezone

from cache_service_client._glob import compile_glob, literal_prefix
from cache_service_client._query import plan_query, score_of
from cache_service_client._validation import (
    check_flag,
    datetime_from_ms,
    datetime_to_ms,
    validate_device_id,
    validate_device_ids,
    validate_metadata,
    validate_paging,
    validate_ttl,
)
from cache_service_client.codec import MetadataCodec
from cache_service_client.exceptions import (
    ConfigurationError,
    DataCorruptionError,
    DeviceNotFoundError,
)
from cache_service_client.keys import KeyStrategy
from cache_service_client.models import (
    BatchGetResult,
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    Page,
    RepairReport,
)
from cache_service_client.repository.base import (
    InlineAsyncRepository,
    log_corrupted,
    logger,
    validate_batch,
)

__all__ = ["AsyncInMemoryDeviceMetadataRepository", "InMemoryDeviceMetadataRepository"]

REDIS_TYPES = ("list", "set", "zset", "hash", "stream")


class _Entry:
    """One key of the fake keyspace: a string value, or a marker for another Redis type."""

    __slots__ = ("expires_at", "value")

    def __init__(self, value: bytes | str, expires_at: int | None) -> None:
        self.value = value  # bytes: a Redis string; str: the name of another Redis type
        self.expires_at = expires_at


class _Keyspace:
    """The data of one fake Redis keyspace: what repositories sharing a store share."""

    __slots__ = ("codec_format", "data", "index", "lock", "updated")

    def __init__(self, codec_format: str) -> None:
        self.codec_format = codec_format
        self.lock = threading.RLock()
        self.data: dict[str, _Entry] = {}
        # The ids index: sorted ids (str order is UTF-8 byte order), and per indexed id its
        # datatype and index score (last_updated ms * 2 + persist), as the Redis indexes keep.
        self.index: list[str] = []
        self.updated: dict[str, tuple[str, int]] = {}


# Named stores of this process: (name, key prefix, separator, buckets) -> keyspace. Different
# key naming gives different data, as different prefixes do on one Redis server.
_SHARED: dict[tuple[str, str, str, int], _Keyspace] = {}
_SHARED_LOCK = threading.Lock()


class InMemoryDeviceMetadataRepository:
    """A thread-safe in-process :class:`.DeviceMetadataRepository` that behaves like Redis.

    Args:
        key_strategy: Names keys (only visible through :meth:`inject_raw` and errors).
        ttl: Seconds until a stored device expires; 0 or None: never.
        clock: Returns the current time in seconds since the epoch (default ``time.time``);
            inject a fake one to test expiry without sleeping.
        codec: How values are encoded (default JSON).

    """

    def __init__(
        self,
        *,
        key_strategy: KeyStrategy | None = None,
        ttl: float | None = 86400,
        clock: Callable[[], float] | None = None,
        codec: MetadataCodec | None = None,
    ) -> None:
        self.key_strategy = key_strategy if key_strategy is not None else KeyStrategy()
        self.codec = codec if codec is not None else MetadataCodec()
        self._ttl = validate_ttl(ttl)
        self._clock = clock if clock is not None else time.time
        self._use(_Keyspace(self.codec.format))

    def _use(self, keyspace: _Keyspace) -> None:
        self._lock = keyspace.lock
        self._data = keyspace.data
        self._index = keyspace.index
        self._updated = keyspace.updated

    @classmethod
    def shared(
        cls,
        name: str,
        *,
        key_strategy: KeyStrategy | None = None,
        ttl: float | None = 86400,
        clock: Callable[[], float] | None = None,
        codec: MetadataCodec | None = None,
    ) -> InMemoryDeviceMetadataRepository:
        """A repository on the process-wide store ``name`` (what ``memory://NAME`` uses).

        Every repository of the process on the same name and key naming (prefix, separator,
        buckets) sees the same data, like clients of one Redis server; another key naming
        gives other data, as other prefixes do on one server. The TTL and the clock are each
        repository's own. Thread-safe. The store lives as long as the process (or until
        :meth:`drop_shared`).

        Raises:
            ConfigurationError: ``name`` is empty or not a str, or the store holds values of
                another codec format.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError("argument name: must be a non-empty str")
        repository = cls(key_strategy=key_strategy, ttl=ttl, clock=clock, codec=codec)
        keys = repository.key_strategy
        where = (name, keys.prefix, keys.separator, keys.buckets)
        with _SHARED_LOCK:
            keyspace = _SHARED.setdefault(where, _Keyspace(repository.codec.format))
        if keyspace.codec_format != repository.codec.format:
            raise ConfigurationError(
                f"codec: the in-memory store {name!r} holds {keyspace.codec_format} values, "
                f"not {repository.codec.format}"
            )
        repository._use(keyspace)
        return repository

    @staticmethod
    def drop_shared(name: str) -> None:
        """Forget the process-wide store ``name`` (every key naming): its data is gone.

        Repositories already on it keep what they hold; new ones start empty.
        """
        with _SHARED_LOCK:
            for where in [w for w in _SHARED if w[0] == name]:
                del _SHARED[where]

    def __repr__(self) -> str:
        return (
            f"InMemoryDeviceMetadataRepository(key_strategy={self.key_strategy!r}, "
            f"ttl={self._ttl!r}, codec={self.codec!r})"
        )

    @property
    def ttl(self) -> float | None:
        """Seconds until a newly stored device expires (None: never); settable."""
        return self._ttl

    @ttl.setter
    def ttl(self, value: float | None) -> None:
        self._ttl = validate_ttl(value)

    # -- the fake keyspace -------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _live(self, key: str, now: int) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and now > entry.expires_at:
            del self._data[key]
            return None
        return entry

    def _unindex(self, device_id: str) -> None:
        if self._updated.pop(device_id, None) is not None:
            del self._index[bisect.bisect_left(self._index, device_id)]

    def _decode(self, key: str, entry: _Entry, device_id: str) -> DeviceMetadata:
        if isinstance(entry.value, str):
            raise DataCorruptionError(key, f"holds a Redis {entry.value}, not a string (WRONGTYPE)")
        return self.codec.decode(key, entry.value, device_id)

    def inject_raw(
        self, device_id: str, value: bytes | None, *, redis_type: str = "string"
    ) -> None:
        """Store a raw value under a device's key, bypassing the codec and the indexes.

        A testing aid that mirrors ``SET key value`` (or a key of another type) done by another
        tool in Redis: use it to check how your code handles corrupted entries.

        Args:
            device_id: Whose key to write.
            value: The raw bytes (for ``redis_type="string"``); None deletes the key.
            redis_type: ``"string"``, or one of ``list set zset hash stream`` to simulate a key
                of the wrong type.

        """
        key = self.key_strategy.device_key(device_id)
        with self._lock:
            if value is None and redis_type == "string":
                self._data.pop(key, None)
            elif redis_type == "string":
                self._data[key] = _Entry(bytes(value or b""), None)
            elif redis_type in REDIS_TYPES:
                self._data[key] = _Entry(redis_type, None)
            else:
                raise ValueError(f"unknown Redis type {redis_type!r}")

    # -- the repository --------------------------------------------------------------------

    def get(self, device_id: str) -> DeviceMetadata:
        """Return the metadata of ``device_id``; see :meth:`.DeviceMetadataRepository.get`."""
        validate_device_id(device_id)
        key = self.key_strategy.device_key(device_id)
        with self._lock:
            entry = self._live(key, self._now_ms())
        if entry is None:
            raise DeviceNotFoundError(device_id)
        return self._decode(key, entry, device_id)

    def get_many_detailed(self, device_ids: Iterable[str]) -> BatchGetResult:
        """Return found, missing and corrupted entries of a batch read."""
        ids = validate_device_ids(device_ids)
        keys = self.key_strategy.device_keys(ids)
        with self._lock:
            now = self._now_ms()
            entries = [self._live(key, now) for key in keys]
        found: dict[str, DeviceMetadata] = {}
        missing: list[str] = []
        corrupted: dict[str, DataCorruptionError] = {}
        for device_id, key, entry in zip(ids, keys, entries, strict=True):
            if entry is None:
                missing.append(device_id)
                continue
            try:
                found[device_id] = self._decode(key, entry, device_id)
            except DataCorruptionError as exc:
                corrupted[device_id] = exc
        return BatchGetResult(found=found, missing=missing, corrupted=corrupted)

    def get_many(self, device_ids: Iterable[str]) -> dict[str, DeviceMetadata]:
        """Return the stored metadata of the given ids (missing and corrupted ones left out)."""
        return log_corrupted(self.get_many_detailed(device_ids))

    def put(self, metadata: DeviceMetadata, *, if_newer: bool = False) -> bool:
        """Store ``metadata`` with the repository's TTL; see :meth:`.DeviceMetadataRepository.put`.

        Returns True if it was written.
        """
        return self.put_many([validate_metadata(metadata)], if_newer=if_newer) == 1

    def put_many(self, items: Iterable[DeviceMetadata], *, if_newer: bool = False) -> int:
        """Store several devices atomically; return how many were written.

        Nothing is written if any is invalid; ``if_newer`` as in
        :meth:`.DeviceMetadataRepository.put`.
        """
        check_flag(if_newer, "if_newer")
        checked = validate_batch(items, newest=if_newer)
        encoded = [
            (
                m.device_id,
                self.codec.encode(m),
                (m.datatype_id, score_of(datetime_to_ms(m.last_updated), m.persist)),
            )
            for m in checked
        ]
        ttl = self._ttl
        written = 0
        with self._lock:
            now = self._now_ms()
            expires_at = None if ttl is None else now + max(1, round(ttl * 1000))
            for device_id, value, indexed in encoded:
                key = self.key_strategy.device_key(device_id)
                if if_newer and self._live(key, now) is not None:
                    # As the Redis script: the stored value's index score, in milliseconds.
                    old = self._updated.get(device_id)
                    if old is not None and old[1] // 2 >= indexed[1] // 2:
                        continue
                self._data[key] = _Entry(value, expires_at)
                if device_id not in self._updated:
                    bisect.insort(self._index, device_id)
                self._updated[device_id] = indexed
                written += 1
        return written

    def delete(self, device_id: str) -> bool:
        """Delete a device; return True if it was stored."""
        validate_device_id(device_id)
        return self.delete_many([device_id]) == 1

    def delete_many(self, device_ids: Iterable[str]) -> int:
        """Delete several devices atomically; return how many were stored."""
        ids = validate_device_ids(device_ids)
        deleted = 0
        with self._lock:
            now = self._now_ms()
            for device_id in ids:
                key = self.key_strategy.device_key(device_id)
                if self._live(key, now) is not None:
                    del self._data[key]
                    deleted += 1
                self._unindex(device_id)
        return deleted

    def exists(self, device_id: str) -> bool:
        """Return True if a value is stored for ``device_id``."""
        validate_device_id(device_id)
        key = self.key_strategy.device_key(device_id)
        with self._lock:
            return self._live(key, self._now_ms()) is not None

    def _alive_ids(self, now: int, start: int = 0, prefix: str = "") -> Generator[str, None, None]:
        """Yield indexed ids from position ``start`` that share ``prefix``, pruning dead ones.

        Must be called with the lock held and consumed before it is released.
        """
        dead: list[str] = []
        device_key = self.key_strategy.device_key
        try:
            index = self._index  # not changed while this runs: pruning waits for the end
            for position in range(start, len(index)):
                device_id = index[position]
                if not device_id.startswith(prefix):
                    break
                if self._live(device_key(device_id), now) is None:
                    dead.append(device_id)
                    continue
                yield device_id
        finally:
            for device_id in dead:
                self._unindex(device_id)

    def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """Return stored ids in ascending order, filtered by a Redis glob and paged."""
        limit, skip, pattern = validate_paging(limit, offset, pattern)
        if limit == 0:
            return []
        prefix = literal_prefix(pattern) if pattern is not None else ""
        matches = compile_glob(pattern) if pattern is not None else None
        result: list[str] = []
        with self._lock:
            start = bisect.bisect_left(self._index, prefix)
            ids = self._alive_ids(self._now_ms(), start, prefix)
            for device_id in ids:
                if matches is not None and not matches(device_id):
                    continue
                if skip:
                    skip -= 1
                    continue
                result.append(device_id)
                if limit is not None and len(result) >= limit:
                    break
            ids.close()  # prunes the dead entries seen so far
        return result

    def count(self) -> int:
        """Return how many devices are stored."""
        with self._lock:
            return sum(1 for _ in self._alive_ids(self._now_ms()))

    def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """Return one page of devices matching ``query``; see :class:`.DeviceMetadataRepository`."""
        plan = plan_query(query)
        keys = self.key_strategy
        with self._lock:
            now = self._now_ms()
            start = bisect.bisect_left(self._index, plan.prefix)
            candidates = []
            for device_id in self._alive_ids(now, start, plan.prefix):
                datatype_id, score = self._updated[device_id]
                if plan.datatype_id is not None and datatype_id != plan.datatype_id:
                    continue
                if plan.matches(device_id, score):
                    candidates.append((plan.sort_key(device_id, score), device_id))
            candidates.sort(reverse=plan.descending)
            chosen = [c for c in candidates if plan.is_after(c[0])][: plan.limit + 1]
            entries = [
                (device_id, self._data[keys.device_key(device_id)]) for _, device_id in chosen
            ]
            total = len(candidates) if plan.after is None and not query.has_filters else None
        items: list[DeviceMetadata] = []
        for device_id, entry in entries[: plan.limit]:
            try:
                items.append(self._decode(keys.device_key(device_id), entry, device_id))
            except DataCorruptionError as exc:
                logger.warning("query skipped a corrupted entry: %s", exc)
        more = len(chosen) > plan.limit
        next_cursor = plan.cursor(chosen[plan.limit - 1][0]) if more else None
        return Page(items=items, next_cursor=next_cursor, total=total)

    def repair(self) -> RepairReport:
        """Rebuild the index from the stored values, as the Redis repository does.

        Values written past the index (with :meth:`inject_raw`) are indexed when they decode;
        index entries whose value is gone are removed.
        """
        keys = self.key_strategy
        with self._lock:
            now = self._now_ms()
            orphans = 0
            for device_id in list(self._index):
                if self._live(keys.device_key(device_id), now) is None:
                    self._unindex(device_id)
                    orphans += 1
            scanned = indexed = 0
            corrupted: list[str] = []
            for key in sorted(self._data):
                entry = self._live(key, now)
                if entry is None:
                    continue
                scanned += 1
                device_id = keys.device_id(key)
                try:
                    metadata = self._decode(key, entry, device_id)
                except DataCorruptionError:
                    corrupted.append(key)
                    continue
                wanted = (
                    metadata.datatype_id,
                    score_of(datetime_to_ms(metadata.last_updated), metadata.persist),
                )
                if self._updated.get(device_id) != wanted:
                    if device_id not in self._updated:
                        bisect.insort(self._index, device_id)
                    self._updated[device_id] = wanted
                    indexed += 1
        return RepairReport(
            scanned=scanned, indexed=indexed, orphans_removed=orphans, corrupted=corrupted
        )

    def info(self) -> CacheInfo:
        """Return figures about the cache; memory is the bytes of keys and encoded values."""
        with self._lock:
            ids = list(self._alive_ids(self._now_ms()))
            size = 0
            for device_id in ids:
                key = self.key_strategy.device_key(device_id)
                size += len(key.encode()) + len(self._data[key].value)
            stamps = [self._updated[device_id][1] // 2 for device_id in ids]
        return CacheInfo(
            total_devices=len(ids),
            memory_usage_bytes=size,
            oldest_entry_timestamp=datetime_from_ms(min(stamps)) if stamps else None,
            newest_entry_timestamp=datetime_from_ms(max(stamps)) if stamps else None,
            backend="memory",
        )

    def health(self) -> HealthStatus:
        """Report healthy: an in-process store is always reachable."""
        started = time.perf_counter()
        with self._lock:
            keys = len(self._data)
        return HealthStatus(
            status="healthy",
            message="in-memory backend",
            timestamp=datetime.now(timezone.utc),
            latency_ms=(time.perf_counter() - started) * 1000,
            details={"backend": "memory", "keys": keys},
        )

    def close(self) -> None:
        """Nothing to release; the data stays, as it would in a Redis server."""

    def clear(self) -> None:
        """Remove every key (a testing aid, like FLUSHDB)."""
        with self._lock:
            self._data.clear()
            self._index.clear()
            self._updated.clear()


class AsyncInMemoryDeviceMetadataRepository(InlineAsyncRepository):
    """The async twin of :class:`InMemoryDeviceMetadataRepository`, sharing its core.

    Takes the same arguments, or ``core=`` an existing sync repository to share its data.
    Operations run inline (they never wait on I/O), so they are trivially cancellation-safe.
    """

    sync: InMemoryDeviceMetadataRepository

    def __init__(
        self,
        *,
        key_strategy: KeyStrategy | None = None,
        ttl: float | None = 86400,
        clock: Callable[[], float] | None = None,
        codec: MetadataCodec | None = None,
        core: InMemoryDeviceMetadataRepository | None = None,
    ) -> None:
        super().__init__(
            core
            or InMemoryDeviceMetadataRepository(
                key_strategy=key_strategy, ttl=ttl, clock=clock, codec=codec
            )
        )

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    @property
    def ttl(self) -> float | None:
        """Seconds until a newly stored device expires (None: never); settable."""
        return self.sync.ttl

    @ttl.setter
    def ttl(self, value: float | None) -> None:
        self.sync.ttl = value

    @property
    def key_strategy(self) -> KeyStrategy:
        """The key strategy of the shared core."""
        return self.sync.key_strategy
