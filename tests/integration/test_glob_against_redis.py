"""The glob matcher against the real server: SCAN MATCH and HSCAN MATCH keep what it keeps."""

from __future__ import annotations

import uuid

import pytest
import redis
from hypothesis import HealthCheck, given, settings

from cache_service_client._glob import compile_glob, escape_glob, glob_match
from tests.unit.test_glob import EDGE_CASES, texts_and_pattern


def redis_hscan_matches(client: redis.Redis, pattern: str, texts: set[str]) -> set[str]:
    """Return the texts that the server's HSCAN MATCH keeps, as hash fields of a scratch key."""
    key = f"globtest:{uuid.uuid4()}"
    client.hset(key, mapping={text.encode(): b"1" for text in texts})
    try:
        return {
            field.decode()
            for field, _ in client.hscan_iter(key, match=pattern.encode(), count=1000)
        }
    finally:
        client.delete(key)


def redis_scan_matches(client: redis.Redis, pattern: str, texts: set[str]) -> tuple[str, set[str]]:
    """Store ``prefix + text`` keys and return the prefix and the texts SCAN MATCH keeps."""
    prefix = f"globtest:{uuid.uuid4()}:"
    raw_prefix = prefix.encode()
    pipe = client.pipeline(transaction=False)
    for text in texts:
        pipe.set(raw_prefix + text.encode(), b"1")
    pipe.execute()
    try:
        found = client.scan_iter(match=(escape_glob(prefix) + pattern).encode(), count=1000)
        return prefix, {key[len(raw_prefix) :].decode() for key in found}
    finally:
        client.delete(*(raw_prefix + text.encode() for text in texts))


def test_edge_cases_agree_with_redis(scan_client: redis.Redis) -> None:
    by_pattern: dict[str, dict[str, bool]] = {}
    for pattern, text, expected in EDGE_CASES:
        by_pattern.setdefault(pattern, {})[text] = expected
    for pattern, expected_by_text in by_pattern.items():
        matched = redis_hscan_matches(scan_client, pattern, set(expected_by_text))
        assert matched == {text for text, ok in expected_by_text.items() if ok}, pattern


@pytest.mark.parametrize("stars", [1000, 1001])
def test_nesting_limit_agrees_with_redis(scan_client: redis.Redis, stars: int) -> None:
    version = str(scan_client.info("server")["redis_version"])
    texts = {"a" * stars, "a" * (stars + 1), "b" * stars}
    pattern = "*a" * stars
    expected = {text for text in texts if glob_match(pattern, text)}
    assert expected == ({"a" * stars, "a" * (stars + 1)} if stars <= 1000 else set())
    if stars > 1000 and int(version.split(".")[0]) < 7:
        # Redis 6.2 has no nesting limit (Redis 7 and Valkey stop at 1000 nested "*"): its
        # SCAN MATCH matches where the library's matcher, which follows Redis 7, does not. The
        # library matches patterns itself, so its answers are the same on every server
        # (docs/servers.md).
        assert redis_hscan_matches(scan_client, pattern, texts) == {"a" * stars, "a" * (stars + 1)}
        return
    assert redis_hscan_matches(scan_client, pattern, texts) == expected


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=texts_and_pattern())
def test_matchers_agree_with_redis(scan_client: redis.Redis, case: tuple[set[str], str]) -> None:
    texts, pattern = case
    compiled = compile_glob(pattern)

    # SCAN MATCH over keys "prefix + text", as the library does it.
    prefix, matched = redis_scan_matches(scan_client, pattern, texts)
    full_pattern = escape_glob(prefix) + pattern
    compiled_full = compile_glob(full_pattern)
    assert {text for text in texts if glob_match(full_pattern, prefix + text)} == matched
    assert {text for text in texts if compiled_full(prefix + text)} == matched

    # HSCAN MATCH over hash fields: the raw pattern against the raw texts (the empty one too).
    # The servers skip matching for exactly "*", which lists everything.
    if pattern != "*":
        matched = redis_hscan_matches(scan_client, pattern, texts)
        assert {text for text in texts if glob_match(pattern, text)} == matched
        assert {text for text in texts if compiled(text)} == matched
