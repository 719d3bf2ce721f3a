"""Test helpers for HTTP mode: the gateway served by uvicorn in a background thread.

:class:`Gateway` serves :func:`cache_service_client.server.create_app` (or any ASGI app) on a
free loopback port, in a thread with its own event loop, so that sync HTTP repositories can
call it from a test's event loop without blocking the server. The repository behind it sits
in a :class:`RepositorySwitch`, so one gateway per session serves every test, each with a
repository (and key namespace) of its own.

For the contract suite: the session fixture :func:`http_gateway` and :func:`http_backend`,
which turns a backend name (``http-memory-sync``, ``http-memory-async``, ``http-redis-sync``,
``http-redis-async``) into a :class:`tests.backends.Backend` talking HTTP to the gateway.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import pytest
import redis.asyncio
import uvicorn
from starlette.types import ASGIApp

from cache_service_client import (
    AsyncDeviceMetadataRepository,
    AsyncInMemoryDeviceMetadataRepository,
    AsyncRedisDeviceMetadataRepository,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
)
from cache_service_client.repository.base import _AsyncForwarding
from cache_service_client.repository.http import (
    AsyncHttpDeviceMetadataRepository,
    HttpDeviceMetadataRepository,
)
from cache_service_client.server import create_app
from tests.backends import Backdoor, Backend, MemoryBackdoor, RedisBackdoor, SyncAsAsync

T = TypeVar("T")
P = ParamSpec("P")

#: The token of the session gateway (the contract suite always runs with authentication on).
CONTRACT_TOKEN = "contract-suite-token-0123456789"
HTTP_BACKENDS = ["http-memory-sync", "http-memory-async", "http-redis-sync", "http-redis-async"]


class RepositorySwitch(_AsyncForwarding):
    """An async repository that forwards every call to ``target``, which tests swap."""

    def __init__(self, target: AsyncDeviceMetadataRepository) -> None:
        self.target = target

    @property
    def ttl(self) -> float | None:
        ttl: float | None = getattr(self.target, "ttl")  # noqa: B009
        return ttl

    @ttl.setter
    def ttl(self, value: float | None) -> None:
        self.target.ttl = value  # type: ignore[attr-defined]

    def _forward(
        self,
        method: Callable[Concatenate[Any, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Awaitable[T]:
        call: Awaitable[T] = getattr(self.target, method.__name__)(*args, **kwargs)
        return call


class Gateway:
    """An ASGI app served by uvicorn on ``127.0.0.1:<free port>`` in a background thread.

    Args:
        repository: What the gateway serves first (default: a fresh in-memory repository);
            swap it with :meth:`serving`.
        app: Serve this ASGI app instead of the gateway (e.g. a stub for redirect tests).
        **options: Passed to :func:`create_app` (``auth_token``, ``open_health``, ...).

    """

    def __init__(
        self,
        repository: AsyncDeviceMetadataRepository | None = None,
        *,
        app: ASGIApp | None = None,
        **options: Any,
    ) -> None:
        self.switch = RepositorySwitch(repository or AsyncInMemoryDeviceMetadataRepository())
        self.auth_token: str | None = options.get("auth_token")
        self.app: ASGIApp = app if app is not None else create_app(self.switch, **options)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis: dict[str, redis.asyncio.Redis] = {}

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Gateway:
        """Start serving; return when the server accepts connections."""
        # Binding here, before uvicorn starts, avoids any race for a "free" port. The protocol
        # must be named: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP,
        # and without it every answer waits some 40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # leave the test session's logging alone
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.serve(sockets=[sock]))
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
                sock.close()

        self._server, self._loop = server, loop
        self._thread = threading.Thread(target=run, name=f"gateway-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.005)
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coroutine`` in the gateway's event loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def redis_client(self, url: str) -> redis.asyncio.Redis:
        """An async Redis client for repositories behind the gateway (used in its loop only)."""
        client = self._redis.get(url)
        if client is None:
            pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=32)
            client = self._redis[url] = redis.asyncio.Redis(connection_pool=pool)
        return client

    @contextmanager
    def serving(self, repository: AsyncDeviceMetadataRepository) -> Iterator[None]:
        """Serve ``repository`` inside the block, then go back to the previous one."""
        previous, self.switch.target = self.switch.target, repository
        try:
            yield
        finally:
            self.switch.target = previous

    def stop(self) -> None:
        """Close the Redis clients, stop the server and wait for its thread."""
        if self._server is None or self._thread is None:
            return
        for client in self._redis.values():
            self.run(_close_redis(client))
        self._redis.clear()
        self._server.should_exit = True
        self._thread.join(10)
        self._server = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _close_redis(client: redis.asyncio.Redis) -> None:
    await client.aclose()
    await client.connection_pool.disconnect()


def http_repositories(
    gateway: Gateway, **options: Any
) -> tuple[AsyncHttpDeviceMetadataRepository, HttpDeviceMetadataRepository]:
    """An async and a sync HTTP repository on ``gateway``, with its token.

    Create them inside the event loop that uses the async one; close both when done.
    """
    options.setdefault("auth_token", gateway.auth_token)
    options.setdefault("trust_env", False)  # no proxy from the environment on loopback
    return (
        AsyncHttpDeviceMetadataRepository(gateway.url, **options),
        HttpDeviceMetadataRepository(gateway.url, **options),
    )


# -- the contract suite ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def http_gateway() -> Iterator[Gateway]:
    """One gateway for the session (token required, per-request TTL accepted)."""
    with Gateway(auth_token=CONTRACT_TOKEN, allow_client_ttl=True) as gateway:
        yield gateway


def underlying_repository(
    request: pytest.FixtureRequest, gateway: Gateway, kind: str, key_strategy: KeyStrategy
) -> tuple[AsyncDeviceMetadataRepository, Backdoor]:
    """The repository behind the gateway (``memory`` or ``redis``) and its backdoor."""
    if kind == "memory":
        core = InMemoryDeviceMetadataRepository(key_strategy=key_strategy)
        return AsyncInMemoryDeviceMetadataRepository(core=core), MemoryBackdoor(core)
    redis_url: str = request.getfixturevalue("redis_url")
    repository = AsyncRedisDeviceMetadataRepository(
        gateway.redis_client(redis_url), key_strategy=key_strategy
    )
    return repository, RedisBackdoor(request.getfixturevalue("redis_client"), key_strategy)


@asynccontextmanager
async def http_backend(
    request: pytest.FixtureRequest, name: str, key_strategy: KeyStrategy
) -> AsyncIterator[Backend]:
    """The backend ``name`` (one of :data:`HTTP_BACKENDS`), over the session's gateway."""
    _, kind, flavour = name.split("-")
    gateway: Gateway = request.getfixturevalue("http_gateway")
    underlying, backdoor = underlying_repository(request, gateway, kind, key_strategy)
    async_repo, sync_repo = http_repositories(gateway)
    with gateway.serving(underlying):
        try:
            if flavour == "sync":
                yield Backend(name, SyncAsAsync(sync_repo), backdoor, key_strategy)
            else:
                yield Backend(name, async_repo, backdoor, key_strategy)
        finally:
            sync_repo.close()
            await async_repo.close()


@pytest.fixture
async def http_contract_backend(
    request: pytest.FixtureRequest, key_strategy: KeyStrategy
) -> AsyncIterator[Backend]:
    """The HTTP backend the parametrized ``backend`` fixture names (for a sync ``backend``).

    ``backend`` can ``return request.getfixturevalue("http_contract_backend")`` for the names
    in :data:`HTTP_BACKENDS`; this fixture closes the repositories in the test's event loop.
    """
    name: str = request.node.callspec.params["backend"]
    async with http_backend(request, name, key_strategy) as backend:
        yield backend
