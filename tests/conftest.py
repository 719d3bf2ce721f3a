from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import session_redis_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the Redis server for this test session (started here unless REDIS_URL is set)."""
    url, server = session_redis_url()
    try:
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain sync redis-py client (bytes replies) on the session's server."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()
