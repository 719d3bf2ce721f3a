"""KeyStrategy: every Redis key name and SCAN pattern is made here, and nowhere else.

Layout for ``KeyStrategy(prefix="device", separator=":")`` (a single Redis node), index layout
version 2:

==================================  =========================================================
``device:<id>``                     the device's encoded metadata (a string, with a TTL)
``device index:layout``             the index layout version (``"2"``)
``device index:ids``                sorted set of all ids, score ``persist`` (0 or 1): each
                                    score block is an id-ordered list
``device index:types``              hash datatype id -> its number ``n`` (1, 2, ...; kept)
``device index:by-type``            sorted set of all ids, score ``n * 2 + persist``
``device index:by-time``            sorted set of all ids, score ``last_updated`` in ms since
                                    the epoch, times two, plus ``persist``
``device index:by-time:<n>``        the same for the devices of datatype number ``n``
``device index:expiry``             sorted set id -> expiry time in ms since the epoch
==================================  =========================================================

The score of a device in ``by-time`` (:func:`score_of`): ``last_updated`` in whole milliseconds
since the epoch, times two, plus one when ``persist`` is set. Ordering by score orders by
``last_updated``; at the same millisecond devices without ``persist`` come first, then by id.

Every query shape is one index range: by id a block of ``ids`` (all, by persist) or of
``by-type`` (by datatype, and persist); by time ``by-time`` or ``by-time:<n>``. A device's
``by-type`` score tells its datatype and persist flag in O(1), so a delete or a datatype change
finds its old entries without probing.

Index keys hold a space, which neither a prefix, a separator nor a device id may contain; so no
device key of any strategy can ever be an index key, and ``SCAN MATCH device:*`` finds exactly
the device values.

For Redis Cluster (``buckets > 1``) devices are spread over ``buckets`` buckets (device
groups). Every key of a bucket carries the bucket's hash tag, so a device's value and the index
entries it belongs to share a slot (writes stay atomic in one script): ``device:{16.7}:<id>``,
``device index:{16.7}:ids``, ... (the tag names the bucket count, then a number). The tags are
chosen so that the buckets' slots are spread evenly over the slot space, hence over the masters.
"""

from __future__ import annotations

import functools
import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from cache_service_client._glob import escape_glob
from cache_service_client.config import DEFAULTS
from cache_service_client.exceptions import ConfigurationError

__all__ = ["KeyStrategy", "score_of"]

MAX_BUCKETS = 1024


def score_of(last_updated_ms: int, persist: bool) -> int:
    """The ``by-time`` index score of a device: ``last_updated_ms * 2 + persist``."""
    return last_updated_ms * 2 + (1 if persist else 0)


def _check_part(name: str, value: object) -> str:
    if type(value) is not str or not value:
        raise ConfigurationError(f"KeyStrategy {name}: must be a non-empty str, not {value!r}")
    if not value.isprintable() or " " in value:
        raise ConfigurationError(
            f"KeyStrategy {name}: {value!r} must not contain whitespace or control characters"
        )
    if "{" in value or "}" in value:
        raise ConfigurationError(
            f"KeyStrategy {name}: {value!r} must not contain braces (Redis Cluster hash tags)"
        )
    return value


@functools.lru_cache(maxsize=32)
def _spread_tags(buckets: int) -> tuple[str, ...]:
    """Return one hash tag per bucket, the b-th landing in the b-th slice of the slot space.

    Tags name the bucket count too (``16.3``), so strategies with different bucket counts never
    share a key.
    """
    tags: list[str | None] = [None] * buckets
    missing = buckets
    candidate = 0
    while missing:
        tag = f"{buckets}.{candidate}"
        candidate += 1
        # The slice of the slot's bucket, in exact integer arithmetic.
        bucket = key_slot(tag.encode()) * buckets // REDIS_CLUSTER_HASH_SLOTS
        if tags[bucket] is None:
            tags[bucket] = tag
            missing -= 1
    return tuple(tag for tag in tags if tag is not None)


class KeyStrategy:
    """Names the keys of one cache namespace.

    Args:
        prefix: First part of every key (``"device"``). No whitespace, control characters or
            braces.
        separator: Put between the prefix and the device id (``":"``).
        buckets: 1 for a single Redis node (keys without hash tags); more for Redis Cluster,
            where devices and their indexes are split into this many buckets (at most 1024).
    """

    __slots__ = (
        "_device_prefixes",
        "_index_prefixes",
        "_tags",
        "buckets",
        "prefix",
        "separator",
    )

    def __init__(
        self,
        prefix: str = DEFAULTS.key_prefix,
        separator: str = DEFAULTS.key_separator,
        *,
        buckets: int = 1,
    ) -> None:
        self.prefix = _check_part("prefix", prefix)
        self.separator = _check_part("separator", separator)
        if type(buckets) is not int or not 1 <= buckets <= MAX_BUCKETS:
            raise ConfigurationError(
                f"KeyStrategy buckets: must be an int from 1 to {MAX_BUCKETS}, not {buckets!r}"
            )
        self.buckets = buckets
        if buckets == 1:
            self._tags = [""]
            self._device_prefixes = [prefix + separator]
            self._index_prefixes = [f"{prefix} index{separator}"]
        else:
            self._tags = [f"{{{tag}}}" for tag in _spread_tags(buckets)]
            self._device_prefixes = [f"{prefix}{separator}{t}{separator}" for t in self._tags]
            self._index_prefixes = [f"{prefix} index{separator}{t}{separator}" for t in self._tags]

    def __repr__(self) -> str:
        extra = f", buckets={self.buckets}" if self.buckets > 1 else ""
        return f"KeyStrategy(prefix={self.prefix!r}, separator={self.separator!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeyStrategy)
            and other.prefix == self.prefix
            and other.separator == self.separator
            and other.buckets == self.buckets
        )

    def __hash__(self) -> int:
        return hash((KeyStrategy, self.prefix, self.separator, self.buckets))

    # -- buckets ---------------------------------------------------------------------------

    def bucket_of(self, device_id: str) -> int:
        """Return the bucket a device belongs to; always 0 on a single node."""
        if self.buckets == 1:
            return 0
        return zlib.crc32(device_id.encode()) % self.buckets

    def group_by_bucket(self, device_ids: list[str]) -> dict[int, list[int]]:
        """Return, per bucket, the positions in ``device_ids`` of the ids that belong to it."""
        groups: dict[int, list[int]] = {}
        for position, device_id in enumerate(device_ids):
            groups.setdefault(self.bucket_of(device_id), []).append(position)
        return groups

    # -- device keys -----------------------------------------------------------------------

    @property
    def device_key_prefix(self) -> str:
        """The part every device key starts with (``"device:"``); single node only."""
        if self.buckets != 1:
            raise ValueError("device keys of a bucketed KeyStrategy have one prefix per bucket")
        return self._device_prefixes[0]

    def bucket_device_prefix(self, bucket: int) -> str:
        """The part every device key of ``bucket`` starts with."""
        return self._device_prefixes[bucket]

    def device_key(self, device_id: str) -> str:
        """Return the key that holds ``device_id``'s metadata."""
        return self._device_prefixes[self.bucket_of(device_id)] + device_id

    def device_keys(self, device_ids: list[str]) -> list[str]:
        """Return the keys of several devices, in order."""
        if self.buckets == 1:
            prefix = self._device_prefixes[0]
            return [prefix + device_id for device_id in device_ids]
        return [self.device_key(device_id) for device_id in device_ids]

    def is_device_key(self, key: str) -> bool:
        """Return True when ``key`` is a device key of this strategy."""
        try:
            self.device_id(key)
        except ValueError:
            return False
        return True

    def device_id(self, key: str) -> str:
        """Return the device id stored under ``key``.

        Raises:
            ValueError: If ``key`` is not a device key of this strategy.
        """
        if self.buckets == 1:
            prefix = self._device_prefixes[0]
            if key.startswith(prefix) and len(key) > len(prefix):
                return key[len(prefix) :]
        else:
            head = self.prefix + self.separator
            if key.startswith(head + "{"):
                end = key.find("}", len(head))
                prefix = key[: end + 1 + len(self.separator)]
                device_id = key[len(prefix) :]
                if end > 0 and device_id and self.device_key(device_id) == key:
                    return device_id
        raise ValueError(f"{key!r} is not a device key of {self!r}")

    def device_pattern(self, pattern: str | None = None) -> str:
        """Return a ``SCAN MATCH`` pattern for device keys whose id matches ``pattern``.

        The prefix and separator are escaped, so a prefix like ``t[1]`` never matches keys of
        prefix ``t1``; ``pattern`` itself is a Redis glob over device ids (None: all). With
        buckets, the pattern covers every bucket's tag and may match more than asked (a glob
        cannot stop at the tag's ``}``): check each key with :meth:`device_id` and the id glob.
        """
        tail = "*" if pattern is None else pattern
        if self.buckets == 1:
            return escape_glob(self._device_prefixes[0]) + tail
        head = escape_glob(self.prefix + self.separator)
        return f"{head}{{*}}{escape_glob(self.separator)}{tail}"

    # -- index keys ------------------------------------------------------------------------

    def index_prefix(self, bucket: int = 0) -> str:
        """The part every index key of ``bucket`` starts with (``"device index:"``)."""
        return self._index_prefixes[bucket]

    def ids_index(self, bucket: int = 0) -> str:
        """Sorted set of the bucket's device ids scored ``persist`` (0 or 1), by id in each."""
        return self._index_prefixes[bucket] + "ids"

    def expiry_index(self, bucket: int = 0) -> str:
        """Sorted set of the bucket's device ids scored by expiry time (ms since the epoch)."""
        return self._index_prefixes[bucket] + "expiry"

    def types_index(self, bucket: int = 0) -> str:
        """Hash of the bucket's datatype ids -> their numbers (1, 2, ... in order of first use)."""
        return self._index_prefixes[bucket] + "types"

    def by_type_index(self, bucket: int = 0) -> str:
        """Sorted set of the bucket's device ids scored ``datatype number * 2 + persist``."""
        return self._index_prefixes[bucket] + "by-type"

    def by_time_index(self, bucket: int = 0) -> str:
        """Sorted set of the bucket's device ids scored ``last_updated ms * 2 + persist``."""
        return self._index_prefixes[bucket] + "by-time"

    def datatype_time_prefix(self, bucket: int = 0) -> str:
        """Prefix of the bucket's per-datatype time indexes (the datatype's number follows)."""
        return self._index_prefixes[bucket] + "by-time" + self.separator

    def datatype_time_index(self, number: int, bucket: int = 0) -> str:
        """The time index (as :meth:`by_time_index`) of the devices of datatype ``number``."""
        return self.datatype_time_prefix(bucket) + str(number)

    def layout_key(self, bucket: int = 0) -> str:
        """String key holding the bucket's index layout version."""
        return self._index_prefixes[bucket] + "layout"

    def index_keys(self, bucket: int = 0) -> list[str]:
        """The fixed index keys of a bucket, in the order the server-side scripts expect.

        ids, expiry, types, by-type, by-time, layout.
        """
        return [
            self.ids_index(bucket),
            self.expiry_index(bucket),
            self.types_index(bucket),
            self.by_type_index(bucket),
            self.by_time_index(bucket),
            self.layout_key(bucket),
        ]

    # -- index layout version 1 (read by repair, which rebuilds version 2) -------------------

    def legacy_datatypes_index(self, bucket: int = 0) -> str:
        """Layout 1: set of the datatype ids that have an updated index."""
        return self._index_prefixes[bucket] + "datatypes"

    def legacy_updated_index(self, datatype_id: str, bucket: int = 0) -> str:
        """Layout 1: sorted set of one datatype's devices scored ``ms * 2 + persist``."""
        return self._index_prefixes[bucket] + "updated" + self.separator + datatype_id
