"""Key patterns against the real server: SCAN MATCH finds exactly a strategy's own keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from cache_service_client import KeyStrategy


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A unique outer namespace; every key under it is removed afterwards."""
    ns = uuid.uuid4().hex
    try:
        yield ns
    finally:
        stale = list(redis_client.scan_iter(match=f"{ns}*", count=1000))
        if stale:
            redis_client.delete(*stale)


def _scan(client: redis.Redis, pattern: str) -> set[str]:
    return {key.decode() for key in client.scan_iter(match=pattern, count=1000)}


def test_device_pattern_matches_only_its_own_prefix(
    redis_client: redis.Redis, namespace: str
) -> None:
    bracket = KeyStrategy(f"{namespace}t[1]")
    plain = KeyStrategy(f"{namespace}t1")
    star = KeyStrategy(f"{namespace}t*", "?")
    ids = ["a1", "a2", "b1", "*", "[x]"]
    all_keys = [ks.device_key(i) for ks in (bracket, plain, star) for i in ids]
    # Neighbours that an unescaped pattern would catch.
    all_keys += [f"{namespace}t1x:a1", f"{namespace}tZZZ?a1", f"{namespace}t[1]"]
    redis_client.mset(dict.fromkeys(all_keys, b"v"))

    for keys in (bracket, plain, star):
        assert _scan(redis_client, keys.device_pattern()) == {keys.device_key(i) for i in ids}
        assert _scan(redis_client, keys.device_pattern("a*")) == {
            keys.device_key("a1"),
            keys.device_key("a2"),
        }
        assert _scan(redis_client, keys.device_pattern("?1")) == {
            keys.device_key("a1"),
            keys.device_key("b1"),
        }
        assert _scan(redis_client, keys.device_pattern("\\*")) == {keys.device_key("*")}
        assert _scan(redis_client, keys.device_pattern("\\[x\\]")) == {keys.device_key("[x]")}
        for key in _scan(redis_client, keys.device_pattern()):
            assert keys.is_device_key(key)
