"""The unit tier runs without any server: a test here that asks for one fails at once.

The fixtures below shadow the suite's server fixtures (``tests/conftest.py``) for this folder
only; tests that need Redis, the cluster, Sentinel or the gateway live in ``tests/contract`` or
``tests/integration``.
"""

from __future__ import annotations

from typing import NoReturn

import pytest


def _no_server(name: str) -> NoReturn:
    pytest.fail(f"tests/unit use no server: move a test that needs {name!r} to tests/integration")


@pytest.fixture(scope="session")
def redis_url() -> NoReturn:
    """Refused in the unit tier."""
    _no_server("redis_url")


@pytest.fixture(scope="session")
def cluster_url() -> NoReturn:
    """Refused in the unit tier."""
    _no_server("cluster_url")


@pytest.fixture
def own_redis() -> NoReturn:
    """Refused in the unit tier."""
    _no_server("own_redis")


@pytest.fixture
def http_gateway() -> NoReturn:
    """Refused in the unit tier."""
    _no_server("http_gateway")
