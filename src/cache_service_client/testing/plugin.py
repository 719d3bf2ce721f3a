"""The pytest plugin of cache-service-client: fixtures for testing services that use it.

Installed with the package (the ``pytest11`` entry point), so the fixtures are there in any
test suite of an environment that has the library; nothing to import. Disable it with
``-p no:cache_service_client``.

Fixtures:

- ``redis_server`` (session): a :class:`~cache_service_client.testing.RedisServer` started for
  the test session on a free loopback port, stopped at the end. The environment variable
  ``CSC_TEST_SERVER`` picks its kind (see :func:`~cache_service_client.testing.find_server`):
  ``redis`` (default), ``redis-6.2`` or ``valkey``.
- ``redis_server_url``: a ``redis://`` URL of that server with a ``key_prefix`` of the test's
  own, so tests never see each other's data; the test's keys are deleted after it.
- ``fake_clock``: a :class:`~cache_service_client.testing.FakeClock`.
- ``memory_repository`` / ``async_memory_repository``: fresh in-memory repositories (sync and
  async twin of one store) on ``fake_clock``: ``fake_clock.advance(ttl)`` expires entries.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from cache_service_client.repository.memory import (
    AsyncInMemoryDeviceMetadataRepository,
    InMemoryDeviceMetadataRepository,
)
from cache_service_client.testing._faults import FakeClock
from cache_service_client.testing._server import RedisServer, find_server

__all__ = [
    "async_memory_repository",
    "fake_clock",
    "memory_repository",
    "redis_server",
    "redis_server_url",
]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A server for the test session on a free loopback port, of the kind ``CSC_TEST_SERVER`` names.

    ``redis`` (the default), ``redis-6.2`` or ``valkey``.
    """
    with RedisServer(find_server(os.environ.get("CSC_TEST_SERVER") or "redis")) as server:
        yield server


@pytest.fixture
def redis_server_url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, with a key prefix of this test's own (its keys are removed)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield f"{redis_server.url}?key_prefix={prefix}"
    with redis.Redis(port=redis_server.port) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when told (``fake_clock.advance(seconds)``)."""
    return FakeClock()


@pytest.fixture
def memory_repository(fake_clock: FakeClock) -> InMemoryDeviceMetadataRepository:
    """A fresh in-memory repository on ``fake_clock``."""
    return InMemoryDeviceMetadataRepository(clock=fake_clock)


@pytest.fixture
def async_memory_repository(
    memory_repository: InMemoryDeviceMetadataRepository,
) -> AsyncInMemoryDeviceMetadataRepository:
    """The async twin of ``memory_repository`` (the same store)."""
    return AsyncInMemoryDeviceMetadataRepository(core=memory_repository)
