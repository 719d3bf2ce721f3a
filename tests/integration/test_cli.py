"""The ``devcache`` command: demo and repair."""

from __future__ import annotations

import pytest
import redis

from cache_service_client import CacheServiceClient, IndexLayoutError, KeyStrategy
from cache_service_client.__main__ import main
from tests.backends import meta, write_layout_1


def test_demo_on_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--devices", "300"]) == 0
    out = capsys.readouterr().out
    for part in (
        "health: healthy",
        "store_many",
        "get_many_device_metadata_sync",
        "list_devices",
        "query_devices",
        "get_cache_info(): 301 devices",
        "500 x get_device_metadata",
    ):
        assert part in out, part


def test_demo_on_redis_cleans_up(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo's own keys (its prefix): the session's server is shared, and other tests' keys
    # expire meanwhile.
    assert not list(redis_client.scan_iter(match="devcache-demo*"))
    assert main(["demo", "--devices", "200", "--url", redis_url]) == 0
    assert "removed the 201 demo devices" in capsys.readouterr().out
    assert not list(redis_client.scan_iter(match="devcache-demo*"))


def test_demo_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", "redis://127.0.0.1:1/0?socket_timeout=0.3&retry_attempts=1"]) == 2
    assert "unhealthy" in capsys.readouterr().out


def test_repair_command(
    redis_url: str,
    redis_client: redis.Redis,
    key_strategy: KeyStrategy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with CacheServiceClient.from_url(redis_url, key_prefix=key_strategy.prefix) as client:
        client.store_device_metadata(
            "x", {"datatype_id": "t", "datatype_name": "n", "persist": True}
        )
    redis_client.delete(key_strategy.ids_index())
    assert main(["repair", "--url", redis_url, "--key-prefix", key_strategy.prefix]) == 0
    out = capsys.readouterr().out
    assert "devices (re)indexed:    1" in out
    assert redis_client.zcard(key_strategy.ids_index()) == 1


def test_repair_command_moves_a_layout_1_cache_to_layout_2(
    redis_url: str,
    redis_client: redis.Redis,
    key_strategy: KeyStrategy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    devices = [meta(f"d{i}", datatype_id=("t", "h")[i % 2]) for i in range(5)]
    write_layout_1(redis_client, key_strategy, devices, 60_000)
    with CacheServiceClient.from_url(redis_url, key_prefix=key_strategy.prefix) as client:
        with pytest.raises(IndexLayoutError, match="run repair"):
            client.count_devices_sync()
        assert main(["repair", "--url", redis_url, "--key-prefix", key_strategy.prefix]) == 0
        assert "devices (re)indexed:    5" in capsys.readouterr().out
        assert client.count_devices_sync() == 5
        assert client.list_devices_sync(pattern="d*") == [f"d{i}" for i in range(5)]


def test_bad_arguments_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--devices", "0"])
    assert "--devices must be at least 1" in capsys.readouterr().err
    assert main(["repair", "--url", "ftp://x"]) == 2
    assert "unsupported scheme" in capsys.readouterr().err
