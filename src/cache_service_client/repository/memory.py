"""In-memory repositories: the fakes to test against, and the embedded backend for demos.

They behave like the Redis repositories in every observable way: values are stored encoded by
the same :class:`~cache_service_client.MetadataCodec` (so what round-trips through Redis
round-trips here, and nothing more), keys are named by the same
:class:`~cache_service_client.KeyStrategy`, TTLs expire with Redis's millisecond rule, listing
uses Redis's exact glob semantics and byte order, and errors are the same. Both are thread-safe.

The fake keeps the indexes the Redis repository keeps (the private ``_Keyspace``), as sorted
lists of sorted chunks (the private ``_sorted.SortedList``): a write or a delete costs
O(log N) per device, count O(log N), info O(log N) amortised, and a query page the O(log N) of
finding its start plus the entries it walks (see :meth:`InMemoryDeviceMetadataRepository.query`).
"""

from __future__ import annotations

import bisect
import itertools
import operator
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TypeVar, cast

from cache_service_client._attempt import is_retried_request
from cache_service_client._glob import compile_glob, literal_prefix
from cache_service_client._planner import QueryPlan, plan_query
from cache_service_client._sorted import Comparable, SortedList
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
from cache_service_client.config import DEFAULTS
from cache_service_client.exceptions import (
    ConfigurationError,
    DataCorruptionError,
    DeviceNotFoundError,
)
from cache_service_client.keys import KeyStrategy, score_of
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
    validate_batch,
    warn_corrupted,
)

__all__ = ["AsyncInMemoryDeviceMetadataRepository", "InMemoryDeviceMetadataRepository"]

REDIS_TYPES = ("list", "set", "zset", "hash", "stream")


#: The deadline of a value without a TTL: later than any clock.
_NEVER = 1 << 62
#: The deadline of an index entry whose value is gone: earlier than any clock.
_GONE = -(1 << 62)
#: What fetching and sorting one entry of the other range of a query with two ranges costs, in
#: entries walked (measured at 100k devices): a time range sorted by id reads time keys and sorts
#: their ids, an id prefix sorted by time looks up each id's time key and sorts those.
_FETCH_COST_TIME_RANGE = 1.0
_FETCH_COST_PREFIX = 2.0

#: Selects an order: (datatype or None, persist or None), None meaning any.
_OrderKey = tuple[str | None, bool | None]
_ALL: _OrderKey = (None, None)
#: A device in the time orders: its score as fixed-width digits, then its id (see _time_key).
_Timed = str
#: Digits of the score in a time key, and the offset that makes every score positive: scores of
#: the datetimes Python can hold are between -1.3e14 and 5.1e14.
_SCORE_DIGITS = 16
_SCORE_OFFSET = 10**15
_T = TypeVar("_T", bound=Comparable)


class _Entry:
    """One key of the fake keyspace: a string value, or a marker for another Redis type."""

    __slots__ = ("expires_at", "value")

    def __init__(self, value: bytes | str, expires_at: int | None) -> None:
        self.value = value  # bytes: a Redis string; str: the name of another Redis type
        self.expires_at = expires_at


class _Indexed:
    """What the indexes hold about one indexed device, as the Redis indexes do.

    Attributes:
        device_id: The device.
        key: Its key in the fake keyspace.
        datatype: Its datatype, as indexed.
        score: Its index score (last_updated ms * 2 + persist), as indexed.
        persist: ``score & 1``.
        timed: Its entry in the time orders (:func:`_time_key`).
        deadline: When its value expires (``expires_at``; ``_NEVER`` without a TTL), or
            ``_GONE`` when the value is gone: the device is live while ``now <= deadline``.
        size: What it counts in ``memory_usage_bytes`` (key bytes + value length; 0 when gone).
        expires: What the expiry index holds for it (``_NEVER``: no entry): the ``expires_at``
            of the value the library last wrote. Like Redis's expiry index, it follows writes
            through the library only: a value deleted or replaced behind the indexes' back
            leaves it as it was, so the device is still counted until then (or until a repair).
    """

    __slots__ = (
        "datatype",
        "deadline",
        "device_id",
        "expires",
        "key",
        "persist",
        "score",
        "size",
        "timed",
    )

    def __init__(
        self, device_id: str, key: str, datatype: str, score: int, deadline: int, size: int
    ) -> None:
        self.device_id = device_id
        self.key = key
        self.datatype = datatype
        self.score = score
        self.persist = bool(score & 1)
        self.timed = _time_key(score, device_id)
        self.deadline = deadline
        self.size = size
        self.expires = _NEVER


def _time_key(score: int, device_id: str = "") -> _Timed:
    """The entry of a device in the time orders: they sort as ``(score, device_id)`` do.

    One str compares faster than a tuple (a single C comparison, no element objects to reach):
    the score takes a fixed width of digits, so the id's order decides only among equal scores.
    Without an id, the key sorts before every device of that score.
    """
    return f"{score + _SCORE_OFFSET:0{_SCORE_DIGITS}d}{device_id}"


def _id_orders(datatype: str, persist: bool) -> tuple[_OrderKey, ...]:
    """The id orders a device of ``datatype`` and ``persist`` is in."""
    return (_ALL, (None, persist), (datatype, None), (datatype, persist))


def _time_orders(datatype: str) -> tuple[_OrderKey, ...]:
    """The time orders a device of ``datatype`` is in (persist is the parity of the score)."""
    return (_ALL, (datatype, None))


def _deadline(entry: _Entry) -> int:
    """The deadline of a stored value (see :class:`_Indexed`)."""
    return _NEVER if entry.expires_at is None else entry.expires_at


def _expiry_agrees(indexed: int, expires_at: int | None) -> bool:
    """Whether the expiry index's entry fits the value's TTL, as Redis's repair judges it.

    No entry for a value without a TTL, or an entry within a second of the value's expiry.
    """
    if expires_at is None:
        return indexed == _NEVER
    return indexed != _NEVER and abs(indexed - expires_at) <= 1000


def _size(key: str, entry: _Entry) -> int:
    """What a stored device counts in ``memory_usage_bytes``: key bytes + value length."""
    return len(key.encode()) + len(entry.value)


def _prefix_end(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def _add(orders: dict[_OrderKey, SortedList[_T]], which: _OrderKey, value: _T) -> None:
    """Add ``value`` to the order ``which``, creating it when it is new."""
    order = orders.get(which)
    if order is None:
        orders[which] = order = SortedList()
    order.add(value)


def _remove(orders: dict[_OrderKey, SortedList[_T]], which: _OrderKey, value: _T) -> None:
    """Remove ``value`` from the order ``which``, dropping the order when it empties.

    The ids index (``(None, None)``) is kept even when empty: the keyspace holds it.
    """
    order = orders[which]
    order.remove(value)
    if not order and which != _ALL:
        del orders[which]


class _Keyspace:
    """The data of one fake Redis keyspace: what repositories sharing a store share.

    Besides the values (``data``: key -> entry) it keeps the Redis repository's indexes, as
    sorted lists (O(log N) per change):

    * ``by_id[(datatype, persist)]``: the ids of the indexed devices of that datatype and persist
      flag, in id order (str order, which is UTF-8 byte order), a None in the key meaning any:
      ``by_id[(None, None)]`` is ``index``, every indexed id (kept when empty);
    * ``by_time[(datatype, None)]`` and ``by_time[(None, None)]``: the devices of a datatype,
      and all, by ``(score, id)`` (:func:`_time_key`), as the Redis indexes keep them; the
      persist flag is the score's parity, checked on the walk. So the common write, a device
      reporting a newer ``last_updated``, moves two entries there and none in the id orders;
    * ``expiry``: the expiry index, as Redis keeps it: the ``expires_at`` (``_Indexed.expires``)
      of the indexed devices the library wrote with a TTL (an int per device), and
      ``expiring``: the ids per ``expires_at``;
    * ``indexed``: per indexed id, its :class:`_Indexed` entry;
    * ``gone``: the indexed ids whose value is gone (deadline ``_GONE``);
    * ``memory``: the sum of the sizes of the indexed devices (``memory_usage_bytes`` once
      the expired ones are removed).

    Invariant: an indexed device's value is in ``data`` with the deadline its entry says, or it
    is gone (deadline ``_GONE``, size 0: removed behind the indexes' back with
    ``inject_raw(id, None)``, or found expired and deleted by a read). The expiry index
    follows the library's writes only, so the count is Redis's: the indexed devices minus those
    the expiry index says have expired; a device whose value was deleted behind the indexes'
    back counts until its indexed expiry passes or a repair removes it, as in Redis. Reads
    skip gone devices (their deadline has passed) without removing them.
    """

    __slots__ = (
        "by_id",
        "by_time",
        "codec_format",
        "data",
        "expiring",
        "expiry",
        "gone",
        "index",
        "indexed",
        "lock",
        "memory",
    )

    def __init__(self, codec_format: str) -> None:
        self.codec_format = codec_format
        self.lock = threading.RLock()
        self.data: dict[str, _Entry] = {}
        self.indexed: dict[str, _Indexed] = {}
        self.index: SortedList[str] = SortedList()
        self.by_id: dict[_OrderKey, SortedList[str]] = {_ALL: self.index}
        self.by_time: dict[_OrderKey, SortedList[_Timed]] = {}
        self.expiry: SortedList[int] = SortedList()
        self.expiring: dict[int, set[str]] = {}
        self.gone: set[str] = set()
        self.memory = 0

    def clear(self) -> None:
        """Remove every key and index entry."""
        self.data.clear()
        self.indexed.clear()
        self.index.clear()
        self.by_id.clear()
        self.by_id[_ALL] = self.index
        self.by_time.clear()
        self.expiry.clear()
        self.expiring.clear()
        self.gone.clear()
        self.memory = 0

    def count(self, now: int) -> int:
        """How many devices Redis counts at ``now`` (see the class), in O(log N)."""
        return len(self.index) - self.expiry.bisect_left(now)  # expires_at < now

    def all_live(self, now: int) -> bool:
        """Whether every indexed device is live at ``now`` (none gone or expired), in O(log N).

        A value's TTL is only ever set by a write through the library, which writes the
        expiry index with it: so a device is dead exactly when it is gone or expired there.
        """
        return not self.gone and not self.expiry.bisect_left(now)

    def _expire_at(self, device_id: str, at: int) -> None:
        """Add a device to the expiry index."""
        self.expiry.add(at)
        self.expiring.setdefault(at, set()).add(device_id)

    def _unexpire(self, device_id: str, at: int) -> None:
        """Remove a device from the expiry index."""
        self.expiry.remove(at)
        ids = self.expiring[at]
        ids.discard(device_id)
        if not ids:
            del self.expiring[at]

    def index_device(
        self, device_id: str, key: str, datatype: str, score: int, entry: _Entry
    ) -> None:
        """Index a device whose value ``entry`` is stored under ``key``, in O(log N).

        A device indexed already moves to the orders of its new datatype, persist and score.
        """
        persist = bool(score & 1)
        timed = _time_key(score, device_id)
        m = self.indexed.get(device_id)
        if m is None:
            m = _Indexed(device_id, key, datatype, score, _NEVER, 0)
            self.indexed[device_id] = m
            for which in _id_orders(datatype, persist):
                _add(self.by_id, which, device_id)
            for which in _time_orders(datatype):
                _add(self.by_time, which, timed)
        else:
            if (datatype, persist) != (m.datatype, m.persist):
                old, new = _id_orders(m.datatype, m.persist), _id_orders(datatype, persist)
                for which in old:
                    if which not in new:
                        _remove(self.by_id, which, device_id)
                for which in new:
                    if which not in old:
                        _add(self.by_id, which, device_id)
            if timed != m.timed or datatype != m.datatype:
                for which in _time_orders(m.datatype):
                    _remove(self.by_time, which, m.timed)
                for which in _time_orders(datatype):
                    _add(self.by_time, which, timed)
            m.datatype, m.score, m.persist, m.timed = datatype, score, persist, timed
        # A write through the library writes the expiry index with the value.
        expires = _deadline(entry)
        if expires != m.expires:
            if m.expires < _NEVER:
                self._unexpire(device_id, m.expires)
            if expires < _NEVER:
                self._expire_at(device_id, expires)
            m.expires = expires
        self.value_changed(device_id, entry)

    def value_changed(self, device_id: str, entry: _Entry | None) -> None:
        """Record that an indexed device's value is now ``entry`` (None: gone).

        Its index entries (the expiry index's too) stay; its deadline and size follow the
        value. Does nothing for a device that is not indexed.
        """
        m = self.indexed.get(device_id)
        if m is None:
            return
        m.deadline = _GONE if entry is None else _deadline(entry)
        if entry is None:
            self.gone.add(device_id)
        else:
            self.gone.discard(device_id)
        self.memory -= m.size
        m.size = 0 if entry is None else _size(m.key, entry)
        self.memory += m.size

    def unindex(self, device_id: str) -> _Indexed | None:
        """Remove a device's index entries, in O(log N); return what they were, or None."""
        m = self.indexed.pop(device_id, None)
        if m is None:
            return None
        for which in _id_orders(m.datatype, m.persist):
            _remove(self.by_id, which, device_id)
        for which in _time_orders(m.datatype):
            _remove(self.by_time, which, m.timed)
        if m.expires < _NEVER:
            self._unexpire(device_id, m.expires)
        self.gone.discard(device_id)
        self.memory -= m.size
        return m


_id_of_key = operator.itemgetter(slice(_SCORE_DIGITS, None))  # the id of a time key
_timed = operator.attrgetter("timed")  # the time key of an _Indexed


def _cut(
    rows: list[str], minimum: str | None, minimum_in: bool, maximum: str | None, reverse: bool
) -> Iterable[str]:
    """The values of the sorted ``rows`` from ``minimum`` to ``maximum`` (excluded).

    Found by bisection, iterated without a copy, from the highest down when ``reverse``.
    """
    start = 0
    if minimum is not None:
        start = (bisect.bisect_left if minimum_in else bisect.bisect_right)(rows, minimum)
    stop = len(rows) if maximum is None else bisect.bisect_left(rows, maximum)
    if start >= stop:
        return ()
    if reverse:
        return itertools.islice(reversed(rows), len(rows) - stop, len(rows) - start)
    return itertools.islice(rows, start, stop)


def _prefer_fetch(k: int, walk_range: int, n: int, want: int, cost: float) -> bool:
    """Whether fetching the ``k`` entries of a query's other range beats walking its order.

    A walk of the order meets devices of the other range at a rate of about ``k / n`` (when the
    two are independent), so it examines about ``want * n / k`` entries to fill a page, and no
    more than the ``walk_range`` entries between the page's start and the order's bound. A
    fetched entry costs ``cost`` walked ones.
    """
    walk = walk_range if k == 0 else min(walk_range, want * n // k)
    return k * cost < walk


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
        ttl: float | None = DEFAULTS.metadata_ttl,
        clock: Callable[[], float] | None = None,
        codec: MetadataCodec | None = None,
    ) -> None:
        self.key_strategy = key_strategy if key_strategy is not None else KeyStrategy()
        self.codec = codec if codec is not None else MetadataCodec()
        self._ttl = validate_ttl(ttl)
        self._clock = clock if clock is not None else time.time
        self._use(_Keyspace(self.codec.format))

    def _use(self, keyspace: _Keyspace) -> None:
        self._ks = keyspace
        self._lock = keyspace.lock
        self._data = keyspace.data
        self._index = keyspace.index

    @classmethod
    def shared(
        cls,
        name: str,
        *,
        key_strategy: KeyStrategy | None = None,
        ttl: float | None = DEFAULTS.metadata_ttl,
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
        """The value under ``key``, unless it has expired.

        An expired value is deleted; its index entries stay (as in Redis), marked gone.
        """
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and now > entry.expires_at:
            del self._data[key]
            self._ks.value_changed(self.key_strategy.device_id(key), None)
            return None
        return entry

    def _prune(self, device_ids: Iterable[str], now: int) -> None:
        """Remove the index entries of ``device_ids`` the expiry index says have expired.

        Expired at ``now``; an expired value is deleted too. As Redis's writers do: an entry
        whose value was deleted behind the indexes' back stays (and counts) until its indexed
        expiry passes, or until :meth:`repair`.
        """
        ks = self._ks
        for device_id in device_ids:
            m = ks.indexed.get(device_id)
            # Redis's writers prune an entry whose indexed expiry passed only if its value is
            # gone too (a value set again without a TTL behind the indexes' back stays).
            if m is None or m.expires >= now or m.deadline >= now:
                continue
            ks.unindex(device_id)
            entry = self._data.get(m.key)
            if entry is not None and entry.expires_at is not None and now > entry.expires_at:
                del self._data[m.key]

    def _prune_expired(self, now: int) -> None:
        """Remove every indexed device whose indexed expiry has passed and whose value is gone.

        Amortised O(log N) each: a device is removed once. One whose value is still there (set
        again behind the indexes' back) stays, as in Redis, until a repair or a write.
        """
        ks = self._ks
        due: list[str] = []
        last = None
        for at in ks.expiry.islice(0, ks.expiry.bisect_left(now)):
            if at != last:
                due.extend(ks.expiring[at])
                last = at
        self._prune(due, now)

    def _end_score(self, order: SortedList[_Timed], now: int, reverse: bool) -> int | None:
        """The lowest (highest if ``reverse``) score of a live device of ``order``, or None.

        Expired entries met at that end are pruned (amortised O(log N)); entries whose value
        is gone behind the indexes' back are skipped, as Redis's info script skips them.
        """
        indexed = self._ks.indexed
        dead: list[str] = []
        found: int | None = None
        for timed in reversed(order) if reverse else iter(order):
            m = indexed[timed[_SCORE_DIGITS:]]
            if m.deadline >= now:
                found = m.score
                break
            dead.append(m.device_id)
        self._prune(dead, now)
        return found

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
            value: The raw bytes (for ``redis_type="string"``); None deletes the key, as a
                ``DEL`` by another client does: the index entries stay, and the device is
                still counted (``count``, ``info``, a query's total) until its indexed expiry
                passes or :meth:`repair` removes them.
            redis_type: ``"string"``, or one of ``list set zset hash stream`` to simulate a key
                of the wrong type.

        """
        key = self.key_strategy.device_key(device_id)
        with self._lock:
            entry: _Entry | None
            if value is None and redis_type == "string":
                self._data.pop(key, None)
                entry = None
            elif redis_type == "string":
                entry = self._data[key] = _Entry(bytes(value or b""), None)
            elif redis_type in REDIS_TYPES:
                entry = self._data[key] = _Entry(redis_type, None)
            else:
                raise ValueError(f"unknown Redis type {redis_type!r}")
            # The index entries stay as they are; only what the value counts changes.
            self._ks.value_changed(device_id, entry)

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
        # As the Redis script: a stored value identical to the update counts as written when
        # the request repeats one whose answer was lost (which wrote it).
        retried = if_newer and is_retried_request()
        with self._lock:
            ks = self._ks
            now = self._now_ms()
            expires_at = None if ttl is None else now + max(1, round(ttl * 1000))
            for device_id, value, (datatype_id, score) in encoded:
                key = self.key_strategy.device_key(device_id)
                if if_newer and (stored := self._live(key, now)) is not None:
                    # As the Redis script: the stored value's index score, in milliseconds.
                    old = ks.indexed.get(device_id)
                    if old is not None and old.score // 2 >= score // 2:
                        if retried and old.score // 2 == score // 2 and stored.value == value:
                            written += 1
                        continue
                entry = self._data[key] = _Entry(value, expires_at)
                ks.index_device(device_id, key, datatype_id, score, entry)
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
                self._ks.unindex(device_id)
        return deleted

    def exists(self, device_id: str) -> bool:
        """Return True if a value is stored for ``device_id``."""
        validate_device_id(device_id)
        key = self.key_strategy.device_key(device_id)
        with self._lock:
            return self._live(key, self._now_ms()) is not None

    def list_ids(
        self, *, pattern: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> list[str]:
        """Return stored ids in ascending order, filtered by a Redis glob and paged.

        Walks the ids index from the pattern's literal prefix; an offset without other filtering
        (no pattern, or ``<prefix>*``) is a positional jump when no dead entry is left.
        """
        limit, skip, pattern = validate_paging(limit, offset, pattern)
        if limit == 0:
            return []
        prefix = literal_prefix(pattern) if pattern is not None else ""
        prefix_only = pattern is None or pattern == prefix + "*"
        matches = None if prefix_only or pattern is None else compile_glob(pattern)
        end = _prefix_end(prefix)
        result: list[str] = []
        dead: list[str] = []
        with self._lock:
            now = self._now_ms()
            ks = self._ks
            index = ks.index
            if skip and matches is None and ks.all_live(now):
                start = index.bisect_left(prefix) + skip
                stop = len(index) if end is None else index.bisect_left(end)
                if limit is not None:
                    stop = min(stop, start + limit)
                return list(index.islice(start, stop))
            indexed = ks.indexed
            for device_id in index.irange(prefix or None, end, (True, False)):
                if indexed[device_id].deadline < now:
                    dead.append(device_id)
                    continue
                if matches is not None and not matches(device_id):
                    continue
                if skip:
                    skip -= 1
                    continue
                result.append(device_id)
                if limit is not None and len(result) >= limit:
                    break
            self._prune(dead, now)
        return result

    def count(self) -> int:
        """Return how many devices are stored, in O(log N)."""
        with self._lock:
            return self._ks.count(self._now_ms())

    def query(self, query: DeviceQuery) -> Page[DeviceMetadata]:
        """Return one page of devices matching ``query``; see :class:`.DeviceMetadataRepository`.

        The page is read from the order matching the query's datatype and persist filters, by
        id or by (score, id): O(log N) to find where the page starts (after the cursor, in the
        id prefix or the time range), then one step per entry examined. Entries the remaining
        filters drop (a time range sorted by id, the rest of a pattern after its literal prefix,
        an id prefix sorted by time) and dead ones cost a step each, as in Redis.

        A time range sorted by id, or an id prefix sorted by time, has no one-dimensional order.
        Both ranges are counted (O(log N)). A walk of the query's order examines about
        ``(limit + 1) * n / k`` entries to fill a page (n: the order's devices, k: those in the
        other range), each a Python step; fetching the k entries of the other range, sorting
        them (in C) and cutting the page out by bisection costs O(k log k), about k steps at
        these sizes. The cheaper is chosen: a page costs O(min(k, limit * n / k)) steps, at most
        O(sqrt(limit * n)) whatever the range (about 3,000 steps, some 0.5 ms, at 100k devices
        and 100 a page, for a range of about 3 % of them; much less for narrower or wider ones).
        Dead entries met are pruned.
        """
        plan = plan_query(query)
        dead: list[str] = []
        with self._lock:
            now = self._now_ms()
            chosen = self._select(plan, now, dead)
            entries = [(m.device_id, m.key, self._data[m.key]) for m in chosen[: plan.limit]]
            more = len(chosen) > plan.limit
            last = chosen[plan.limit - 1] if more else None
            position = None if last is None else plan.sort_key(last.device_id, last.score)
            self._prune(dead, now)
            total = self._ks.count(now) if plan.after is None and not query.has_filters else None
        items: list[DeviceMetadata] = []
        for device_id, key, entry in entries:
            try:
                items.append(self._decode(key, entry, device_id))
            except DataCorruptionError as exc:
                warn_corrupted("query", exc.key, exc.reason)
        next_cursor = plan.cursor(position) if position is not None else None
        return Page(items=items, next_cursor=next_cursor, total=total)

    def _select(self, plan: QueryPlan, now: int, dead: list[str]) -> list[_Indexed]:
        """The first ``limit + 1`` live devices matching ``plan``, in its order.

        Dead entries met are added to ``dead``. Must be called with the lock held.
        """
        ids = self._ks.by_id.get((plan.datatype_id, plan.persist))  # exactly the filtered ones
        times = self._ks.by_time.get((plan.datatype_id, None))  # persist is checked on the walk
        if not ids or times is None:
            return []
        want = plan.limit + 1
        prefix = plan.prefix
        end = _prefix_end(prefix)
        low = None if plan.lo is None else _time_key(plan.lo)
        high = None if plan.hi is None else _time_key(plan.hi + 1)  # excluded
        if plan.by_time:
            # The walk: from the time range's start or after the cursor, to its end (excluded).
            after = None if plan.after is None else _time_key(*cast("tuple[int, str]", plan.after))
            t_min, t_min_in, t_max = low, True, high
            if after is not None and plan.descending:
                t_max = after if high is None or after < high else high
            elif after is not None and (low is None or after >= low):
                t_min, t_min_in = after, False
            if prefix:
                k = ids.count_range(prefix, end, (True, False))
                walk = times.count_range(t_min, t_max, (t_min_in, False))
                if _prefer_fetch(k, walk, len(times), want, _FETCH_COST_PREFIX):
                    # The prefix range (of the persist flag asked), sorted by (score, id), cut
                    # to the walk's bounds.
                    in_prefix = ids.irange(prefix, end, (True, False))
                    entries = map(self._ks.indexed.__getitem__, in_prefix)
                    by_time = sorted(map(_timed, entries))
                    fetched = _cut(by_time, t_min, t_min_in, t_max, plan.descending)
                    return self._take_times(plan, fetched, now, dead, filtered=True)
            walk_times = times.irange(t_min, t_max, (t_min_in, False), plan.descending)
            return self._take_times(plan, walk_times, now, dead, filtered=False)
        # The walk: from the prefix or after the cursor, to the prefix range's end (excluded).
        after_id = None if plan.after is None else cast("tuple[str]", plan.after)[0]
        i_min, i_min_in, i_max = prefix or None, True, end
        if after_id is not None and plan.descending:
            i_max = after_id if end is None or after_id < end else end
        elif after_id is not None and after_id >= prefix:
            i_min, i_min_in = after_id, False
        timed = low is not None or high is not None
        if timed:
            k = times.count_range(low, high, (True, False))
            walk = ids.count_range(i_min, i_max, (i_min_in, False))
            # k counts both persist flags: the ids walk meets the range at a rate of k / len(times).
            if _prefer_fetch(k, walk, len(times), want, _FETCH_COST_TIME_RANGE):
                # The time range (both persist flags), sorted by id, cut to the walk's bounds.
                by_id = sorted(map(_id_of_key, times.irange(low, high, (True, False))))
                fetched_ids = _cut(by_id, i_min, i_min_in, i_max, plan.descending)
                return self._take_ids(plan, fetched_ids, now, dead, fetched=True)
        walk_ids = ids.irange(i_min, i_max, (i_min_in, False), plan.descending)
        return self._take_ids(plan, walk_ids, now, dead, fetched=False)

    def _take_ids(
        self, plan: QueryPlan, walk: Iterable[str], now: int, dead: list[str], fetched: bool
    ) -> list[_Indexed]:
        """The first ``limit + 1`` live devices of ``walk`` (ids) that match ``plan``.

        ``walk`` is inside the prefix range: the pattern is checked beyond its literal prefix.
        ``walk`` is either the query's id order (datatype and persist match; the time range is
        checked) or, when ``fetched``, ids from a time range (datatype and time match; the
        persist flag is checked). Dead entries met are added to ``dead``.
        """
        indexed = self._ks.indexed
        matcher = None if plan.prefix_only else plan.matcher
        check_time = not fetched and (plan.lo is not None or plan.hi is not None)
        lo = _GONE if plan.lo is None else plan.lo
        hi = _NEVER if plan.hi is None else plan.hi
        persist = plan.persist if fetched else None
        want = plan.limit + 1
        chosen: list[_Indexed] = []
        if matcher is not None:
            walk = filter(matcher, walk)
        for device_id in walk:
            m = indexed[device_id]
            if m.deadline < now:
                dead.append(device_id)
            elif (not check_time or lo <= m.score <= hi) and (
                persist is None or m.persist == persist
            ):
                chosen.append(m)
                if len(chosen) == want:
                    break
        return chosen

    def _take_times(
        self,
        plan: QueryPlan,
        walk: Iterable[_Timed],
        now: int,
        dead: list[str],
        filtered: bool,
    ) -> list[_Indexed]:
        """The first ``limit + 1`` live devices of ``walk`` (time keys) that match ``plan``.

        ``walk`` is inside the time range, of the query's datatype. Unless ``filtered`` (keys
        of the prefix range and persist flag asked), the persist flag (the parity of the
        score's last digit) and the literal prefix are checked; the rest of the pattern always
        is. Dead entries met are added to ``dead``.
        """
        indexed = self._ks.indexed
        prefix = "" if filtered else plan.prefix
        parity = -1 if filtered or plan.persist is None else int(plan.persist)
        last_digit = _SCORE_DIGITS - 1
        matcher = None if plan.prefix_only else plan.matcher
        want = plan.limit + 1
        chosen: list[_Indexed] = []
        for timed in walk:
            if parity >= 0 and ord(timed[last_digit]) & 1 != parity:
                continue
            device_id = timed[_SCORE_DIGITS:]
            if not device_id.startswith(prefix):
                continue
            if matcher is not None and not matcher(device_id):
                continue
            m = indexed[device_id]
            if m.deadline < now:
                dead.append(device_id)
            else:
                chosen.append(m)
                if len(chosen) == want:
                    break
        return chosen

    def repair(self) -> RepairReport:
        """Rebuild the index from the stored values, as the Redis repository does.

        Values written past the index (with :meth:`inject_raw`) are indexed when they decode;
        index entries whose value is gone are removed.
        """
        keys = self.key_strategy
        with self._lock:
            ks = self._ks
            now = self._now_ms()
            dead = [device_id for device_id, m in ks.indexed.items() if m.deadline < now]
            for device_id in dead:
                m = ks.unindex(device_id)
                assert m is not None
                entry = self._data.get(m.key)
                if entry is not None and entry.expires_at is not None and now > entry.expires_at:
                    del self._data[m.key]
            orphans = len(dead)
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
                datatype_id = metadata.datatype_id
                score = score_of(datetime_to_ms(metadata.last_updated), metadata.persist)
                m = ks.indexed.get(device_id)
                if (
                    m is None
                    or (m.datatype, m.score) != (datatype_id, score)
                    or not _expiry_agrees(m.expires, entry.expires_at)
                ):
                    ks.index_device(device_id, key, datatype_id, score, entry)
                    indexed += 1
        return RepairReport(
            scanned=scanned, indexed=indexed, orphans_removed=orphans, corrupted=corrupted
        )

    def info(self) -> CacheInfo:
        """Return figures about the cache; memory is the bytes of keys and encoded values.

        O(log N) amortised: the expired devices are removed first (each once), then the oldest
        and the newest live device are the ends of the time order (dead entries met there are
        removed), the count and the memory running totals.
        """
        with self._lock:
            now = self._now_ms()
            self._prune_expired(now)
            order = self._ks.by_time.get(_ALL)
            lowest = highest = None
            if order is not None:
                lowest = self._end_score(order, now, reverse=False)
                highest = self._end_score(order, now, reverse=True)
            total = self._ks.count(now)
            size = self._ks.memory
        return CacheInfo(
            total_devices=total,
            memory_usage_bytes=size,
            oldest_entry_timestamp=None if lowest is None else datetime_from_ms(lowest // 2),
            newest_entry_timestamp=None if highest is None else datetime_from_ms(highest // 2),
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
            self._ks.clear()


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
        ttl: float | None = DEFAULTS.metadata_ttl,
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
