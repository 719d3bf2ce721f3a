"""Tests of KeyStrategy: key names, ids back from keys, and escaped SCAN patterns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_service_client import ConfigurationError, KeyStrategy
from cache_service_client._validation import validate_device_id


def test_defaults() -> None:
    keys = KeyStrategy()
    assert keys.prefix == "device"
    assert keys.separator == ":"
    assert keys.device_key_prefix == "device:"
    assert keys.device_key("a") == "device:a"
    assert keys.device_keys(["a", "b"]) == ["device:a", "device:b"]
    assert keys.ids_index == "device index:ids"
    assert keys.expiry_index == "device index:expiry"
    assert keys.updated_index == "device index:updated"
    assert keys.index_key("custom") == "device index:custom"
    assert keys.index_keys() == ["device index:ids", "device index:expiry", "device index:updated"]
    assert keys.device_pattern() == "device:*"


def test_custom_prefix_and_separator() -> None:
    keys = KeyStrategy(prefix="iot/meta", separator="/")
    assert keys.device_key("x") == "iot/meta/x"
    assert keys.ids_index == "iot/meta index/ids"
    assert keys.device_id("iot/meta/x") == "x"


@pytest.mark.parametrize(
    "device_id",
    [
        "a",
        "sensor-1",
        "a*b",
        "a?b",
        "[abc]",
        "back\\slash",
        "*?[]\\",
        "\\",
        "日本語",
        "🌡️-é",
        "a:b:c",
        ":",
        "::leading",
        "x" * 256,
    ],
)
@pytest.mark.parametrize(
    ("prefix", "separator"), [("device", ":"), ("t[1]", "*"), ("a:b", "::"), ("日本", "→")]
)
def test_device_key_round_trip(prefix: str, separator: str, device_id: str) -> None:
    keys = KeyStrategy(prefix, separator)
    key = keys.device_key(device_id)
    assert key == keys.device_key_prefix + device_id
    assert key.startswith(prefix + separator)
    assert keys.is_device_key(key)
    assert keys.device_id(key) == device_id


@pytest.mark.parametrize(
    "key",
    [
        "other:a",
        "device",
        "device:",
        "devicea",
        "device;a",
        "Device:a",
        "xdevice:a",
        "",
        "device index:ids",
        "device index:expiry",
        "device index:updated",
    ],
)
def test_device_id_of_a_foreign_key_raises_value_error(key: str) -> None:
    keys = KeyStrategy()
    assert not keys.is_device_key(key)
    with pytest.raises(ValueError, match="not a device key"):
        keys.device_id(key)


def test_index_keys_hold_a_space_and_are_not_device_keys() -> None:
    keys = KeyStrategy()
    for index_key in keys.index_keys():
        assert " " in index_key
        assert not keys.is_device_key(index_key)


_printable_no_space = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    prefix=_printable_no_space,
    separator=_printable_no_space,
    device_id=_printable_no_space,
    other_prefix=_printable_no_space,
    other_separator=_printable_no_space,
)
def test_no_device_key_can_equal_any_index_key(
    prefix: str, separator: str, device_id: str, other_prefix: str, other_separator: str
) -> None:
    keys = KeyStrategy(prefix, separator)
    other = KeyStrategy(other_prefix, other_separator)
    validate_device_id(device_id)
    key = keys.device_key(device_id)
    assert " " not in key
    assert key not in keys.index_keys()
    assert key not in other.index_keys()
    assert keys.device_id(key) == device_id


@pytest.mark.parametrize("part", ["prefix", "separator"])
@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "a b",
        "a\tb",
        "\n",
        "a\r",
        "a\x00",
        "\x1b[0m",
        "a\x7f",
        "a\u00a0",
        "a\u2028",
        "a\u200b",
        "\ud800",
        None,
        1,
        b"device",
        ["device"],
    ],
)
def test_invalid_prefix_or_separator_raises_configuration_error(part: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=part):
        KeyStrategy(**{part: value})  # type: ignore[arg-type]


def test_equality_hash_and_repr() -> None:
    assert KeyStrategy() == KeyStrategy("device", ":")
    assert hash(KeyStrategy()) == hash(KeyStrategy("device", ":"))
    assert KeyStrategy() != KeyStrategy("device", "/")
    assert KeyStrategy() != KeyStrategy("dev", ":")
    assert KeyStrategy() != "device:"
    assert repr(KeyStrategy("p", "/")) == "KeyStrategy(prefix='p', separator='/')"


@pytest.mark.parametrize(
    ("prefix", "separator", "expected"),
    [
        ("device", ":", "device:*"),
        ("t[1]", ":", "t\\[1\\]:*"),
        ("a*", "?", "a\\*\\?*"),
        ("back\\", ":", "back\\\\:*"),
    ],
)
def test_device_pattern_escapes_prefix_and_separator(
    prefix: str, separator: str, expected: str
) -> None:
    keys = KeyStrategy(prefix, separator)
    assert keys.device_pattern() == expected
    assert keys.device_pattern("a?[bc]") == expected[:-1] + "a?[bc]"


# --- Against the real server ---------------------------------------------------------------------


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
