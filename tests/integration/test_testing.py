"""The testing toolkit users get: the pytest plugin's fixtures, the fake clock, fault injection."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis

from cache_service_client import (
    AsyncDeviceMetadataRepository,
    AsyncInMemoryDeviceMetadataRepository,
    AuthenticationError,
    BackendConnectionError,
    BackendTimeoutError,
    CacheServiceClient,
    DeviceMetadataRepository,
    InMemoryDeviceMetadataRepository,
)
from cache_service_client.testing import (
    AsyncFaultyRepository,
    FakeClock,
    Faults,
    FaultyRepository,
    RedisServer,
)
from tests.backends import meta


def test_the_plugin_serves_a_service_test_suite(tmp_path: Path) -> None:
    # A user's test suite, run by its own pytest: the fixtures come from the installed
    # package's entry point, with nothing imported or configured.
    (tmp_path / "test_service.py").write_text(
        textwrap.dedent(
            """
            from cache_service_client import CacheServiceClient

            PLAN = {"datatype_id": "t", "datatype_name": "n", "persist": True}

            def test_with_real_redis(redis_server_url):
                with CacheServiceClient.from_url(redis_server_url) as client:
                    client.store_device_metadata("d", PLAN)
                    assert client.count_devices_sync() == 1

            def test_each_test_has_its_own_keys(redis_server_url):
                with CacheServiceClient.from_url(redis_server_url) as client:
                    assert client.count_devices_sync() == 0

            def test_in_memory_with_a_fake_clock(memory_repository, fake_clock):
                memory_repository.ttl = 60
                client = CacheServiceClient(repository=memory_repository)
                client.store_device_metadata("d", PLAN)
                fake_clock.advance(61)
                assert not client.device_exists_sync("d")

            async def test_the_async_twin(async_memory_repository, memory_repository):
                client = CacheServiceClient(
                    repository=memory_repository, async_repository=async_memory_repository
                )
                await client.store_device_metadata_async("d", PLAN)
                assert client.device_exists_sync("d")
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
         "asyncio_mode=auto", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_redis_server_is_a_context_manager_that_cleans_up() -> None:
    with RedisServer(extra_args=("--maxmemory", "10mb")) as server:
        with redis.Redis(port=server.port) as client:
            assert client.config_get("maxmemory")["maxmemory"] == str(10 * 1024 * 1024)
        workdir = Path(server.workdir)
        assert workdir.is_dir()
    assert server.process is None
    assert not workdir.exists()


def test_the_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=1_000.0)
    assert clock() == 1_000.0
    clock.advance(2.5)
    assert clock() == 1_002.5
    clock.set(datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert clock.now() == datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


def test_faults_on_a_sync_repository() -> None:
    inner = InMemoryDeviceMetadataRepository()
    faulty = FaultyRepository(inner)
    typed: DeviceMetadataRepository = faulty  # it is a repository like any other
    typed.put(meta("a"))
    with faulty.faults.outage():
        for call in (lambda: typed.get("a"), lambda: typed.put(meta("b")), typed.count):
            with pytest.raises(BackendConnectionError, match="injected outage"):
                call()
        assert typed.health().status == "unhealthy"
    assert typed.health().status == "healthy"
    faulty.faults.fail("put", AuthenticationError("NOPERM injected"), times=2)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            typed.put(meta("c"))
    typed.put(meta("c"))  # the third one passes
    assert typed.get("a").device_id == "a"  # other operations were never affected
    with faulty.faults.latency(0.05, ["get"]):
        started = time.monotonic()
        typed.get("a")
        assert time.monotonic() - started >= 0.05
    assert faulty.faults.calls[:2] == ["put", "get"]
    assert sorted(inner.list_ids()) == ["a", "c"]
    with pytest.raises(ValueError, match="unknown operations"):
        faulty.faults.fail("gett")


async def test_faults_on_an_async_repository_through_the_facade() -> None:
    faults = Faults()  # one set of faults for both twins
    core = InMemoryDeviceMetadataRepository()
    sync_side = FaultyRepository(core, faults)
    async_side: AsyncDeviceMetadataRepository = AsyncFaultyRepository(
        AsyncInMemoryDeviceMetadataRepository(core=core), faults
    )
    client = CacheServiceClient(repository=sync_side, async_repository=async_side)
    await client.store_device_metadata_async("a", {"datatype_id": "t", "datatype_name": "n",
                                                     "persist": True})  # fmt: skip
    faults.fail(["get", "get_many"], BackendTimeoutError("injected timeout"))
    with pytest.raises(BackendTimeoutError):
        await client.get_device_metadata("a")
    with pytest.raises(BackendTimeoutError):
        client.get_device_metadata_sync("a")
    assert await client.device_exists("a")
    faults.start_outage()
    assert (await client.check_health()).status == "unhealthy"  # never raises
    faults.clear()
    assert (await client.get_device_metadata("a")).device_id == "a"
