"""The repository implementations behind one async interface, for the contract suite.

Sync repositories run through :class:`SyncAsAsync`, a test-only adapter. Each backend also gets a
:class:`Backdoor` that reaches under the repository (raw values, keyspace size) the way another
tool writing to Redis would.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from redis.cluster import RedisCluster

from cache_service_client import (
    AsyncDeviceMetadataRepository,
    DeviceMetadata,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    MetadataCodec,
    NearCache,
)
from cache_service_client.repository.base import InlineAsyncRepository
from cache_service_client.testing import wait_for_invalidations

NOW = datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=timezone.utc)


def datatype_time_index(
    client: redis.Redis | RedisCluster, keys: KeyStrategy, datatype_id: str, bucket: int = 0
) -> str:
    """The name of a datatype's time index in a bucket (its number is in the types index)."""
    number = client.hget(keys.types_index(bucket), datatype_id)
    assert number is not None, f"datatype {datatype_id!r} has no number in bucket {bucket}"
    return keys.datatype_time_index(int(number), bucket)


#: ``meta``'s changes for plain metadata: datatype ``t``, no unit, no properties.
PLAIN: dict[str, Any] = {
    "datatype_id": "t",
    "datatype_name": "temperature",
    "datatype_unit": None,
    "additional_properties": {},
}


def meta(device_id: str, **changes: Any) -> DeviceMetadata:
    """Typical metadata for ``device_id`` (fixed time, a few properties), with ``changes``."""
    fields: dict[str, Any] = {
        "device_id": device_id,
        "datatype_id": "temp",
        "datatype_name": "temperature",
        "datatype_unit": "C",
        "persist": True,
        "last_updated": NOW,
        "additional_properties": {"firmware": "1.2", "gain": 0.5, "tags": ["a", {"b": None}]},
    }
    fields.update(changes)
    return DeviceMetadata(**fields)


def at_ms(
    device_id: str,
    datatype_id: str = "t",
    persist: bool = True,
    ms: int = 0,
    *,
    base: datetime = NOW,
) -> DeviceMetadata:
    """Metadata of ``datatype_id`` last updated ``ms`` milliseconds after ``base``."""
    when = base + timedelta(milliseconds=ms)
    return meta(device_id, datatype_id=datatype_id, persist=persist, last_updated=when)


class SyncAsAsync(InlineAsyncRepository):
    """Runs a sync repository through the async protocol (the contract suite is async)."""

    @property
    def ttl(self) -> float | None:
        ttl: float | None = getattr(self.sync, "ttl")  # noqa: B009
        return ttl

    @ttl.setter
    def ttl(self, value: float | None) -> None:
        self.sync.ttl = value  # type: ignore[attr-defined]


class Backdoor:
    """Reaches under a repository: what another tool could do to the stored data."""

    def set_raw(self, device_id: str, value: bytes) -> None:
        """Store raw bytes under the device's key, bypassing codec and indexes."""
        raise NotImplementedError

    def set_wrong_type(self, device_id: str) -> None:
        """Store a key of another Redis type (a list) under the device's key."""
        raise NotImplementedError

    def size(self) -> int:
        """Number of keys in the store (for Redis: under the test's key prefix)."""
        raise NotImplementedError

    def delete_raw(self, device_id: str) -> None:
        """Delete the device's key behind the repository's back (its index entries stay)."""
        raise NotImplementedError


@dataclass
class RedisBackdoor(Backdoor):
    client: redis.Redis | RedisCluster
    keys: KeyStrategy

    def set_raw(self, device_id: str, value: bytes) -> None:
        self.client.set(self.keys.device_key(device_id), value)

    def set_wrong_type(self, device_id: str) -> None:
        key = self.keys.device_key(device_id)
        self.client.delete(key)
        self.client.rpush(key, b"x")

    def size(self) -> int:
        # The keys of this test's namespace (every key the repository writes starts with its
        # prefix), not DBSIZE: the session's server is shared, and other tests' keys expire
        # while this one runs.
        return sum(1 for _ in self.client.scan_iter(match=f"{self.keys.prefix}*", count=1000))

    def delete_raw(self, device_id: str) -> None:
        self.client.delete(self.keys.device_key(device_id))


@dataclass
class MemoryBackdoor(Backdoor):
    repo: InMemoryDeviceMetadataRepository

    def set_raw(self, device_id: str, value: bytes) -> None:
        self.repo.inject_raw(device_id, value)

    def set_wrong_type(self, device_id: str) -> None:
        self.repo.inject_raw(device_id, None, redis_type="list")

    def size(self) -> int:
        # The fake keyspace: the value keys plus the index entries.
        return len(self.repo._data) + len(self.repo._index)

    def delete_raw(self, device_id: str) -> None:
        self.repo.inject_raw(device_id, None)


@dataclass
class Backend:
    """One implementation under test."""

    name: str
    repo: AsyncDeviceMetadataRepository
    backdoor: Backdoor
    keys: KeyStrategy


def write_layout_1(
    client: redis.Redis, keys: KeyStrategy, devices: list[DeviceMetadata], ttl_ms: int
) -> int:
    """Store devices as a release with index layout 1 did: ids (score 0), expiry, datatypes, and
    one updated index per datatype name."""
    codec = MetadataCodec()
    at = int(time.time() * 1000) + ttl_ms
    for m in devices:
        score = int(m.last_updated.timestamp() * 1000) * 2 + int(m.persist)
        client.set(keys.device_key(m.device_id), codec.encode(m), px=ttl_ms)
        client.zadd(keys.ids_index(), {m.device_id: 0})
        client.zadd(keys.expiry_index(), {m.device_id: at})
        client.sadd(keys.legacy_datatypes_index(), m.datatype_id)
        client.zadd(keys.legacy_updated_index(m.datatype_id), {m.device_id: score})
    return at


@dataclass
class NearBackdoor(RedisBackdoor):
    """A Redis backdoor for a near-cached repository: each write waits until the cache heard it.

    Redis reports changes on the tracking connection in order, so once the report of a marker
    key written after the change has arrived, so has the change's.
    """

    cache: NearCache

    def set_raw(self, device_id: str, value: bytes) -> None:
        super().set_raw(device_id, value)
        self.barrier()

    def set_wrong_type(self, device_id: str) -> None:
        super().set_wrong_type(device_id)
        self.barrier()

    def delete_raw(self, device_id: str) -> None:
        super().delete_raw(device_id)
        self.barrier()

    def barrier(self, timeout: float = 5.0) -> None:
        """Return once the cache has heard every change made before the call."""
        wait_for_invalidations(self.cache, self.client, self.keys, timeout)


class Flavour:
    """One of the library's two flavours, so one test body serves both (the ``flavour`` fixture).

    ``await flavour.run(repo.get("d"))`` awaits what the async flavour returns and passes the
    sync flavour's value through; ``flavour.is_async`` picks the class to build.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_async = name == "async"

    def __repr__(self) -> str:
        return self.name

    async def run(self, value: Any) -> Any:
        """The result of a call of this flavour: awaited when it is awaitable."""
        return await value if inspect.isawaitable(value) else value
