"""What only the in-memory repositories offer: an injected clock, raw injection, threads."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from cache_service_client import (
    AsyncDeviceMetadataRepository,
    AsyncInMemoryDeviceMetadataRepository,
    DeviceMetadata,
    DeviceMetadataRepository,
    DeviceNotFoundError,
    InMemoryDeviceMetadataRepository,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def meta(device_id: str) -> DeviceMetadata:
    return DeviceMetadata(
        device_id=device_id, datatype_id="t", datatype_name="n", persist=False, last_updated=NOW
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_protocols_are_satisfied() -> None:
    assert isinstance(InMemoryDeviceMetadataRepository(), DeviceMetadataRepository)
    assert isinstance(AsyncInMemoryDeviceMetadataRepository(), AsyncDeviceMetadataRepository)


def test_expiry_follows_redis_millisecond_rule_with_a_fake_clock() -> None:
    clock = FakeClock()
    repo = InMemoryDeviceMetadataRepository(ttl=10, clock=clock)
    repo.put(meta("a"))
    clock.now += 10.0  # exactly at the expiry millisecond: Redis still has the key
    assert repo.exists("a")
    clock.now += 0.001
    assert not repo.exists("a")
    with pytest.raises(DeviceNotFoundError):
        repo.get("a")
    assert repo.count() == 0
    assert repo.list_ids() == []


def test_ttl_setter_validates() -> None:
    repo = InMemoryDeviceMetadataRepository()
    repo.ttl = 0
    assert repo.ttl is None
    with pytest.raises(ValueError, match="ttl"):
        repo.ttl = -1


def test_inject_raw_is_not_indexed_like_a_foreign_set_in_redis() -> None:
    repo = InMemoryDeviceMetadataRepository()
    repo.inject_raw("x", b"garbage")
    assert repo.exists("x")
    assert repo.list_ids() == []
    repo.inject_raw("x", None)
    assert not repo.exists("x")
    with pytest.raises(ValueError, match="unknown Redis type"):
        repo.inject_raw("x", None, redis_type="blob")


async def test_async_twin_shares_its_core() -> None:
    core = InMemoryDeviceMetadataRepository()
    twin = AsyncInMemoryDeviceMetadataRepository(core=core)
    await twin.put(meta("a"))
    assert core.get("a") == meta("a")
    twin.ttl = 5
    assert core.ttl == 5


def test_threads_writing_and_deleting_leave_a_consistent_store() -> None:
    repo = InMemoryDeviceMetadataRepository()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(300):
                device_id = f"w{worker}-{i % 50}"
                repo.put(meta(device_id))
                if i % 3 == 0:
                    repo.delete(device_id)
                repo.list_ids(pattern=f"w{worker}-*", limit=5)
                repo.count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ids = repo.list_ids()
    assert ids == sorted(ids)
    assert len(ids) == repo.count() == len(repo.get_many(ids))
