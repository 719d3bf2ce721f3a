"""The CacheServiceClient facade: signature, sync and async behaviour, config, secrets, health."""

from __future__ import annotations

import asyncio
import inspect
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from dependency_injector import providers

from cache_service_client import (
    AsyncInMemoryDeviceMetadataRepository,
    AsyncUsageError,
    AuthenticationError,
    BackendConnectionError,
    BackendTimeoutError,
    CacheServiceClient,
    ConfigurationError,
    DeviceMetadata,
    DeviceNotFoundError,
    DeviceQuery,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    RetryPolicy,
    ValidationError,
)
from cache_service_client.container import Container
from cache_service_client.telemetry import InstrumentedRepository
from tests.backends import Flavour
from tests.delay_proxy import DelayProxy
from tests.http_gateway import Gateway
from tests.redis_server import RedisServer, free_port, server_binary

SECRET = "hunter2-secret"
PLAN = {
    "datatype_id": "temp",
    "datatype_name": "temperature",
    "datatype_unit": "C",
    "persist": True,
}


def test_constructor_keeps_the_plan_signature() -> None:
    parameters = list(inspect.signature(CacheServiceClient.__init__).parameters.values())[1:]
    plan = [
        ("host", "localhost"),
        ("port", 6379),
        ("password", None),
        ("db", 0),
        ("socket_timeout", 5.0),
        ("connection_pool", None),
        ("metadata_ttl", 86400),
        ("use_http", False),
        ("http_url", None),
        ("http_timeout", 10.0),
        ("http_auth_token", None),
    ]
    assert [(p.name, p.default) for p in parameters[: len(plan)]] == plan
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters[: len(plan)])
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in parameters[len(plan) :])


def test_every_async_method_has_a_sync_twin() -> None:
    async_methods = [
        name
        for name, member in inspect.getmembers(CacheServiceClient)
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    ]
    assert "get_device_metadata" in async_methods
    for name in async_methods:
        if name in ("aclose", "get_async_repository"):
            continue
        twin = name.removesuffix("_async") if name.endswith("_async") else f"{name}_sync"
        assert callable(getattr(CacheServiceClient, twin, None)), twin


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest, key_strategy: KeyStrategy) -> str:
    if request.param == "memory":
        return "memory://"
    base: str = request.getfixturevalue("redis_url")
    return f"{base}?key_prefix={key_strategy.prefix}"


@pytest.fixture
def client(url: str) -> Iterator[CacheServiceClient]:
    with CacheServiceClient.from_url(url) as client:
        yield client


@pytest.fixture
async def async_client(url: str) -> AsyncIterator[CacheServiceClient]:
    async with CacheServiceClient.from_url(url) as client:
        yield client


def test_sync_round_trip_with_a_plain_dict(client: CacheServiceClient) -> None:
    assert client.store_device_metadata("sensor-1", {**PLAN, "firmware": "1.2", "rack": 7}) is True
    meta = client.get_device_metadata_sync("sensor-1")
    assert isinstance(meta, DeviceMetadata)
    assert meta.additional_properties == {"firmware": "1.2", "rack": 7}
    assert meta.last_updated.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - meta.last_updated).total_seconds()) < 60
    assert client.list_devices_sync() == ["sensor-1"]
    assert client.device_exists_sync("sensor-1")
    assert client.count_devices_sync() == 1
    assert client.get_cache_info_sync().total_devices == 1
    assert client.check_health_sync().status == "healthy"
    assert client.delete_device_metadata_sync("sensor-1") is True
    with pytest.raises(DeviceNotFoundError):
        client.get_device_metadata_sync("sensor-1")
    assert client.get_device_metadata_sync("sensor-1", None) is None


def test_sync_batches_and_paging(client: CacheServiceClient) -> None:
    items = {f"dev-{i:02d}": {**PLAN, "n": i} for i in range(30)}
    assert client.store_many_device_metadata_sync(items) == 30
    assert client.list_devices_sync(limit=3, offset=10) == ["dev-10", "dev-11", "dev-12"]
    assert client.list_devices_sync(pattern="dev-2?", limit=2) == ["dev-20", "dev-21"]
    got = client.get_many_device_metadata_sync(["dev-01", "nope"])
    assert list(got) == ["dev-01"]
    assert got["dev-01"].additional_properties == {"n": 1}
    assert client.delete_many_device_metadata_sync(["dev-01", "dev-02", "nope"]) == 2


def test_store_failures_raise_and_write_nothing(client: CacheServiceClient) -> None:
    with pytest.raises(ValidationError, match="datatype_name: is required"):
        client.store_device_metadata("d", {"datatype_id": "t", "persist": True})
    with pytest.raises(ValidationError, match="persist"):
        client.store_device_metadata("d", {**PLAN, "persist": "yes"})
    with pytest.raises(ValidationError, match="device_id"):
        client.store_device_metadata("bad id", PLAN)
    with pytest.raises(ValidationError, match="last_updated"):
        client.store_device_metadata("d", {**PLAN, "last_updated": datetime(2026, 1, 1)})
    with pytest.raises(ValidationError, match="differs"):
        client.store_device_metadata("d", {**PLAN, "device_id": "other"})
    assert client.list_devices_sync() == []


async def test_conditional_stores_for_stream_writers(async_client: CacheServiceClient) -> None:
    client = async_client
    at = "2026-11-25T12:00:00Z"
    assert client.store_device_metadata("d", {**PLAN, "last_updated": at}, if_newer=True)
    assert not client.store_device_metadata("d", {**PLAN, "last_updated": at}, if_newer=True)
    assert not client.store_device_metadata_sync("d", {**PLAN, "last_updated": at}, if_newer=True)
    later = {**PLAN, "last_updated": "2026-11-25T12:00:01Z", "datatype_unit": "K"}
    assert not await client.store_device_metadata_async(
        "d", {**PLAN, "last_updated": "2026-11-25T11:00:00Z"}, if_newer=True
    )
    assert await client.store_device_metadata_async("d", later, if_newer=True)
    assert client.get_device_metadata_sync("d").datatype_unit == "K"
    batch = {"d": later, "e": {**PLAN, "last_updated": at}}
    assert client.store_many_device_metadata_sync(batch, if_newer=True) == 1
    assert await client.store_many_device_metadata(batch, if_newer=True) == 0
    assert await client.store_many_device_metadata(batch) == 2  # unconditional


async def test_async_api(async_client: CacheServiceClient) -> None:
    client = async_client
    assert await client.store_device_metadata_async("a", {**PLAN, "x": [1, 2]}) is True
    assert await client.store_many_device_metadata({"b": PLAN, "c": PLAN}) == 2
    assert (await client.get_device_metadata("a")).additional_properties == {"x": [1, 2]}
    assert await client.get_device_metadata("zz", default="fallback") == "fallback"
    assert await client.list_devices(limit=2) == ["a", "b"]
    assert await client.list_devices(pattern="[bc]") == ["b", "c"]
    assert set(await client.get_many_device_metadata(["a", "c", "q"])) == {"a", "c"}
    assert (await client.get_cache_info()).total_devices == 3
    assert (await client.check_health()).status == "healthy"
    assert await client.delete_device_metadata("a") is True
    assert await client.delete_many_device_metadata(["b", "c"]) == 2
    assert await client.count_devices() == 0
    assert not await client.device_exists("a")


async def test_sync_twins_work_from_a_running_loops_thread_pool(
    async_client: CacheServiceClient,
) -> None:
    await async_client.store_device_metadata_async("t", PLAN)
    loop = asyncio.get_running_loop()
    meta = await loop.run_in_executor(None, async_client.get_device_metadata_sync, "t")
    assert meta.device_id == "t"
    assert await loop.run_in_executor(None, async_client.list_devices_sync) == ["t"]


def _first_calls_at_once(client: CacheServiceClient, threads: int) -> list[object]:
    """Make ``client``'s first calls from ``threads`` threads at once; the repositories seen."""
    start = threading.Barrier(threads)
    seen: list[object] = []
    failures: list[BaseException] = []

    def first_call(n: int) -> None:
        start.wait()
        try:
            seen.append(client.repository)
            client.store_device_metadata(f"d{n}", PLAN)
        except BaseException as exc:  # reported below
            failures.append(exc)

    workers = [threading.Thread(target=first_call, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    return seen


@pytest.mark.parametrize("backend", ["memory", "redis", "cluster"])
def test_first_calls_from_many_threads_build_one_repository(
    request: pytest.FixtureRequest, backend: str
) -> None:
    # A fresh client's first calls, made at once from several threads, must build one
    # repository (one Redis client, one in-memory store): a second one built by a racing
    # thread would be closed (or dropped with what was written to it) under the other.
    prefix = f"race-{uuid.uuid4().hex[:8]}"
    if backend == "memory":
        url = f"memory://{prefix}"
    else:
        base: str = request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
        url = f"{base}?key_prefix={prefix}"
    threads = 8
    for _ in range(3):
        with CacheServiceClient.from_url(url) as client:
            seen = _first_calls_at_once(client, threads)
            assert len({id(repository) for repository in seen}) == 1
            assert client.count_devices_sync() == threads
            client.delete_many_device_metadata_sync([f"d{n}" for n in range(threads)])


def test_sync_twins_work_inside_a_running_loop_thread() -> None:
    async def inside() -> None:
        with CacheServiceClient.from_url("memory://") as client:
            client.store_device_metadata("x", PLAN)  # called while a loop runs in this thread
            assert client.get_device_metadata_sync("x").device_id == "x"

    asyncio.run(inside())


def test_memory_client_shares_data_between_sync_and_async() -> None:
    client = CacheServiceClient.from_url("memory://")
    client.store_device_metadata("shared", PLAN)

    async def read() -> str:
        async with client:
            return (await client.get_device_metadata("shared")).device_id

    assert asyncio.run(read()) == "shared"


def test_configure_validates_and_applies(client: CacheServiceClient) -> None:
    client.configure(metadata_ttl=0.3, socket_timeout=2.5)
    assert client.settings.metadata_ttl == 0.3
    assert client.settings.socket_timeout == 2.5
    client.store_device_metadata("short", PLAN)
    time.sleep(0.45)
    assert not client.device_exists_sync("short")
    with pytest.raises(ConfigurationError, match="configure\\(\\) socket_timeout: must be > 0"):
        client.configure(socket_timeout=-1)
    with pytest.raises(ConfigurationError, match="cannot change at run time"):
        client.configure(host="elsewhere")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="is not a number"):
        client.configure(metadata_ttl="soon")  # type: ignore[arg-type]


def test_a_new_socket_timeout_holds_for_every_later_call() -> None:
    # The client's connections are open (sync and async) when the timeout changes; every call
    # after configure() must give up after the new timeout, not the old 30 s.
    server = RedisServer(server_binary())
    server.start()
    admin = redis.Redis(port=server.port)
    try:
        client = CacheServiceClient.from_url(server.url, socket_timeout=30, retry_attempts=1)

        async def call() -> float:
            started = time.monotonic()
            with pytest.raises(BackendTimeoutError):
                await client.get_device_metadata("paused")
            return time.monotonic() - started

        def sync_call() -> float:
            started = time.monotonic()
            with pytest.raises(BackendTimeoutError):
                client.get_device_metadata_sync("paused")
            return time.monotonic() - started

        async def scenario() -> tuple[float, float]:
            assert client.check_health_sync().status == "healthy"
            assert (await client.check_health()).status == "healthy"
            client.configure(socket_timeout=0.3)
            admin.client_pause(4000, all=True)
            try:
                waits = sync_call(), await call()
            finally:
                admin.client_unpause()
            assert client.settings.socket_timeout == 0.3
            await client.store_device_metadata_async("after", PLAN)  # the new connections work
            assert client.device_exists_sync("after")
            await client.aclose()
            return waits

        sync_wait, async_wait = asyncio.run(scenario())
        assert sync_wait < 3, sync_wait  # the old timeout: 30 s (the pause: 4 s)
        assert async_wait < 3, async_wait
    finally:
        admin.close()
        server.stop()


def test_the_socket_timeout_of_a_callers_pool_is_the_callers(redis_url: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, socket_timeout=5)
    try:
        with CacheServiceClient(connection_pool=pool) as client:
            with pytest.raises(
                ConfigurationError, match=r"configure\(\) socket_timeout: .*connection_pool"
            ):
                client.configure(socket_timeout=1)
            assert client.settings.socket_timeout == 5.0  # unchanged: nothing half-applied
            client.configure(metadata_ttl=60)  # what does not touch the pool still works
            assert client.settings.metadata_ttl == 60
    finally:
        pool.disconnect()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": -1}, "argument port: must be between 1 and 65535, not -1"),
        ({"port": "x"}, "argument port: 'x' is not an integer"),
        ({"db": -2}, "argument db: must be >= 0"),
        ({"socket_timeout": 0}, "argument socket_timeout: must be > 0"),
        ({"metadata_ttl": -1}, "argument metadata_ttl"),
        ({"use_http": True}, "use_http needs http_url"),
        ({"bogus_option": 1}, "unknown setting 'bogus_option'"),
        ({"connection_pool": object()}, "argument connection_pool"),
    ],
)
def test_construction_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        CacheServiceClient(**kwargs)
    assert message in str(caught.value)


def test_explicit_arguments_beat_the_url_and_defaults_do_not() -> None:
    client = CacheServiceClient(url="redis://url-host:7000/3", db=5)
    assert (client.settings.host, client.settings.port, client.settings.db) == ("url-host", 7000, 5)


def test_from_env_and_from_file(tmp_path: Path) -> None:
    env = {"CACHE_SERVICE_URL": "memory://", "CACHE_SERVICE_METADATA_TTL": "60"}
    client = CacheServiceClient.from_env(environ=env)
    assert client.settings.backend == "memory"
    assert client.settings.metadata_ttl == 60
    path = tmp_path / "cache.toml"
    path.write_text('[cache_service]\nurl = "memory://"\nkey_prefix = "m"\n')
    client = CacheServiceClient.from_file(path, metadata_ttl=5)
    assert (client.settings.key_prefix, client.settings.metadata_ttl) == ("m", 5)
    assert CacheServiceClient.from_settings(client.settings).settings == client.settings


def test_secrets_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="cache_service_client"):
        client = CacheServiceClient(
            host="127.0.0.1",
            port=free_port(),
            password=SECRET,
            socket_timeout=0.3,
            retry_attempts=2,
            retry_backoff_base=0.01,
        )
        for text in (repr(client), str(client), repr(client.settings), str(client.settings)):
            assert SECRET not in text
        with pytest.raises(BackendConnectionError) as caught:
            client.get_device_metadata_sync("x")
        health = client.check_health_sync()
        client.close()
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert SECRET not in health.message
    assert SECRET not in str(health.details)
    assert caplog.records, "expected DEBUG records (creation, retries)"
    assert SECRET not in caplog.text
    with_url = CacheServiceClient.from_url(f"redis://user:{SECRET}@h:1/0")
    assert SECRET not in repr(with_url)
    assert "user:***@h:1" in repr(with_url)


@pytest.mark.parametrize(
    "url",
    [
        f"http://gw:8000/?http_auth_token={SECRET}",
        f"redis+sentinel://s:26379/mymaster?sentinel_password={SECRET}",
    ],
)
def test_secrets_in_url_query_options_are_never_shown(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="cache_service_client"):
        client = CacheServiceClient.from_url(url)
    assert "created" in caplog.text
    for text in (repr(client), str(client), repr(client.settings), caplog.text):
        assert SECRET not in text
    client.close()


def test_health_of_a_dead_port_is_unhealthy_within_the_timeout() -> None:
    client = CacheServiceClient(host="127.0.0.1", port=free_port(), socket_timeout=0.5)
    started = time.monotonic()
    health = client.check_health_sync()
    assert health.status == "unhealthy"
    assert time.monotonic() - started < 1.5
    client.close()


async def test_async_health_of_a_dead_port() -> None:
    async with CacheServiceClient(host="127.0.0.1", port=free_port(), socket_timeout=0.5) as c:
        started = time.monotonic()
        health = await c.check_health()
        assert health.status == "unhealthy"
        assert time.monotonic() - started < 1.5


def test_health_of_a_wrong_password_is_unhealthy() -> None:
    server = RedisServer(server_binary(), extra_args=("--requirepass", SECRET))
    server.start()
    try:
        with CacheServiceClient(port=server.port, host="127.0.0.1", password="wrong") as client:
            health = client.check_health_sync()
        assert health.status == "unhealthy"
        assert "authentication" in health.message.lower()
        assert SECRET not in health.message
    finally:
        server.stop()


def test_a_restarted_redis_is_recovered_without_user_action() -> None:
    server = RedisServer(server_binary())
    server.start()
    try:
        client = CacheServiceClient(host="127.0.0.1", port=server.port, socket_timeout=1.0)
        client.store_device_metadata("before", PLAN)
        server.restart()
        client.store_device_metadata("after", PLAN)  # the stale connection is replaced
        assert client.list_devices_sync() == ["after"]  # the server keeps nothing on disk
        client.close()
    finally:
        server.stop()


def test_container_builds_and_overrides() -> None:
    container = Container()
    container.settings.override(providers.Object(CacheServiceClient.from_url("memory://").settings))
    repo = container.repository()
    assert isinstance(repo, InstrumentedRepository)  # the [otel] extra is installed in tests
    assert isinstance(repo.repository, InMemoryDeviceMetadataRepository)
    assert repo.repository is container.backend_repository()
    fake = InMemoryDeviceMetadataRepository()
    with container.repository.override(fake):
        assert container.repository() is fake


def test_injected_repositories_are_used() -> None:
    sync_repo = InMemoryDeviceMetadataRepository()
    async_repo = AsyncInMemoryDeviceMetadataRepository(core=sync_repo)
    client = CacheServiceClient(repository=sync_repo, async_repository=async_repo)
    client.store_device_metadata("x", PLAN)
    assert sync_repo.get("x").device_id == "x"

    async def read() -> list[str]:
        return await client.list_devices()

    assert asyncio.run(read()) == ["x"]


def test_connection_pool_argument_is_used_and_left_open(
    redis_url: str, key_strategy: KeyStrategy
) -> None:
    pool = redis.ConnectionPool.from_url(redis_url)
    client = CacheServiceClient(connection_pool=pool, key_prefix=key_strategy.prefix)
    client.store_device_metadata("p", PLAN)
    client.close()
    assert redis.Redis(connection_pool=pool).exists(key_strategy.device_key("p")) == 1
    pool.disconnect()


def test_custom_key_strategy_and_retry(redis_url: str, key_strategy: KeyStrategy) -> None:
    policy = RetryPolicy(attempts=1)
    with CacheServiceClient.from_url(redis_url) as plain:
        client = CacheServiceClient(
            settings=plain.settings, key_strategy=key_strategy, retry=policy
        )
        client.store_device_metadata("k", PLAN)
        raw = redis.Redis.from_url(redis_url)
        assert raw.exists(key_strategy.device_key("k")) == 1
        raw.close()
        client.close()


def test_health_is_degraded_near_maxmemory(own_redis: RedisServer) -> None:
    raw = redis.Redis(port=own_redis.port)
    used = int(raw.info("memory")["used_memory"])
    raw.config_set("maxmemory", str(int(used * 1.02)))
    raw.close()
    with CacheServiceClient(host="127.0.0.1", port=own_redis.port) as client:
        health = client.check_health_sync()
    assert health.status == "degraded"
    assert "maxmemory" in health.message


def test_health_is_degraded_on_a_read_only_replica(own_redis: RedisServer) -> None:
    replica = RedisServer(
        server_binary(), extra_args=("--replicaof", "127.0.0.1", str(own_redis.port))
    )
    replica.start()
    try:
        with CacheServiceClient(host="127.0.0.1", port=replica.port) as client:
            health = client.check_health_sync()
        assert health.status == "degraded"
        assert "read-only" in health.message
        assert health.details["role"] == "slave"
    finally:
        replica.stop()


@pytest.mark.parametrize(
    ("acl", "status", "message"),
    [
        # May run every command, on keys of another application only.
        ({"keys": ["other:*"], "categories": ["+@all"]}, "unhealthy", "cannot read"),
        # May read the cache's keys, but neither write nor run scripts.
        (
            {"keys": ["device*"], "categories": ["+@all", "-@write", "-@scripting"]},
            "degraded",
            "read-only access",
        ),
        ({"keys": ["device*"], "categories": ["+@all"]}, "healthy", "PING ok"),
    ],
    ids=["no-keys", "read-only", "full"],
)
async def test_health_notices_missing_permissions(
    own_redis: RedisServer, acl: dict[str, Any], status: str, message: str
) -> None:
    admin = redis.Redis(port=own_redis.port)
    admin.acl_setuser("service", enabled=True, passwords=["+pw"], **acl)
    admin.close()
    client = CacheServiceClient(
        host="127.0.0.1", port=own_redis.port, username="service", password="pw"
    )
    for health in (client.check_health_sync(), await client.check_health()):
        assert health.status == status, health
        assert message in health.message
    await client.aclose()


def test_health_on_a_slow_server_takes_about_one_round_trip(own_redis: RedisServer) -> None:
    # 0.4 s per round trip, socket_timeout 0.5: a check on a ready connection is one round trip
    # (it took three, 1.2 s, before); a server slower than the timeout is unhealthy about as
    # fast as the timeout says.
    with DelayProxy(own_redis.port, delay=0.2) as proxy:
        client = CacheServiceClient(host="127.0.0.1", port=proxy.port, socket_timeout=0.5)
        assert client.check_health_sync().status == "degraded"  # connects, then checks
        started = time.monotonic()
        health = client.check_health_sync()
        elapsed = time.monotonic() - started
        assert health.status == "degraded"
        assert "slow" in health.message
        assert 0.4 <= elapsed < 0.75, elapsed
        client.close()
    with DelayProxy(own_redis.port, delay=0.5) as proxy:
        client = CacheServiceClient(
            host="127.0.0.1", port=proxy.port, socket_timeout=0.5, retry_attempts=1
        )
        started = time.monotonic()
        health = client.check_health_sync()
        elapsed = time.monotonic() - started
        assert health.status == "unhealthy"
        assert elapsed < 1.5, elapsed
        client.close()


def test_health_is_degraded_when_slow(own_redis: RedisServer) -> None:
    with CacheServiceClient(host="127.0.0.1", port=own_redis.port, health_slow_ms=0.000001) as c:
        health = c.check_health_sync()
    assert health.status == "degraded"
    assert "slow" in health.message


async def facade(
    flavour: Flavour, client: CacheServiceClient, name: str, *args: Any, **kw: Any
) -> Any:
    """The facade's method ``name`` (its async name) in ``flavour``: ``name`` or ``name_sync``."""
    return await flavour.run(
        getattr(client, name if flavour.is_async else f"{name}_sync")(*args, **kw)
    )


async def test_query_devices_and_repair(flavour: Flavour, url: str) -> None:
    client = CacheServiceClient.from_url(url)
    try:
        await facade(
            flavour,
            client,
            "store_many_device_metadata",
            {
                f"d{i}": {**PLAN, "datatype_id": ("t", "h")[i % 2], "persist": i < 4}
                for i in range(8)
            },
        )
        page = await facade(flavour, client, "query_devices", datatype_id="t", limit=2)
        assert [m.device_id for m in page.items] == ["d0", "d2"]
        rest = await facade(
            flavour, client, "query_devices", datatype_id="t", limit=2, cursor=page.next_cursor
        )
        assert [m.device_id for m in rest.items] == ["d4", "d6"]
        assert rest.next_cursor is None
        query = DeviceQuery(persist=True, sort="last_updated", descending=True)
        assert len((await facade(flavour, client, "query_devices", query)).items) == 4
        assert [
            m.device_id
            for m in (await facade(flavour, client, "query_devices", persist=False)).items
        ] == [
            "d4",
            "d5",
            "d6",
            "d7",
        ]
        assert (await facade(flavour, client, "query_devices", limit=3)).total == 8
        # The typed methods themselves: mypy flags both calls (these ignores would be "unused"
        # if it did not), and at run time they are refused; the plan's typo (datatype) is not
        # taken as matching every device.
        wrong: list[tuple[str, Callable[[], Any]]] = (
            [
                ("limit", lambda: client.query_devices(limit="many")),  # type: ignore[arg-type]
                ("datatype", lambda: client.query_devices(datatype="co2")),  # type: ignore[call-arg]
            ]
            if flavour.is_async
            else [
                ("limit", lambda: client.query_devices_sync(limit="many")),  # type: ignore[arg-type]
                ("datatype", lambda: client.query_devices_sync(datatype="co2")),  # type: ignore[call-arg]
            ]
        )
        for field, call in wrong:
            with pytest.raises(ValidationError, match=field):
                await flavour.run(call())
        with pytest.raises(ValidationError, match="not both"):
            await facade(flavour, client, "query_devices", query, limit=3)
        assert (await facade(flavour, client, "repair_indexes")).scanned == 8
    finally:
        if flavour.is_async:
            await client.aclose()
        else:
            client.close()


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"datatype": "temp"}, "datatype"),  # a typo of datatype_id must not match everything
        ({"datatype_id": "temp", "colour": "red"}, "colour"),
        ({"datatype_id": "lone\ud800"}, "datatype_id"),
        ({"sort": "lone\ud800"}, "sort"),
        ({"descending": "lone\ud800"}, "descending"),
        ({"pattern": "lone\ud800"}, "pattern"),
    ],
    ids=repr,
)
async def test_query_keywords_are_checked(
    async_client: CacheServiceClient, filters: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await async_client.query_devices(**filters)
    assert caught.value.field == field
    with pytest.raises(ValidationError) as caught:
        async_client.query_devices_sync(**filters)
    assert caught.value.field == field


@pytest.mark.parametrize("batch", [0, None, 2.5], ids=repr)
async def test_facade_batches_must_be_iterables(
    async_client: CacheServiceClient, batch: Any
) -> None:
    client = async_client
    calls: list[tuple[Callable[[Any], Any], Callable[[Any], Any], str]] = [
        (client.store_many_device_metadata_sync, client.store_many_device_metadata, "items"),
        (client.get_many_device_metadata_sync, client.get_many_device_metadata, "device_ids"),
        (
            client.delete_many_device_metadata_sync,
            client.delete_many_device_metadata,
            "device_ids",
        ),
    ]
    for sync_call, async_call, field in calls:
        with pytest.raises(ValidationError, match="must be an iterable") as caught:
            sync_call(batch)
        assert caught.value.field == field
        with pytest.raises(ValidationError, match="must be an iterable") as caught:
            await async_call(batch)
        assert caught.value.field == field
    assert client.count_devices_sync() == 0


def test_cluster_and_sentinel_options_pick_the_backend() -> None:
    assert CacheServiceClient(cluster=True).settings.backend == "cluster"
    assert CacheServiceClient(sentinel_service="mymaster").settings.backend == "sentinel"
    assert CacheServiceClient.from_url("redis+cluster://h:7000").settings.cluster is True
    with pytest.raises(ConfigurationError, match="only database 0"):
        CacheServiceClient.from_url("redis+cluster://h:7000/2")
    with pytest.raises(ConfigurationError, match="needs /service-name"):
        CacheServiceClient.from_url("redis+sentinel://h:26379")


def test_http_mode_through_the_gateway() -> None:
    token = "gateway-" + SECRET
    with Gateway(auth_token=token) as gateway:
        client = CacheServiceClient(use_http=True, http_url=gateway.url, http_auth_token=token)
        assert client.settings.backend == "http"
        assert token not in repr(client)
        assert client.store_device_metadata("h1", {**PLAN, "site": "lab"}) is True
        assert client.get_device_metadata_sync("h1").additional_properties == {"site": "lab"}
        assert client.list_devices_sync() == ["h1"]
        assert client.check_health_sync().status == "healthy"

        async def run() -> list[str]:
            async with CacheServiceClient.from_url(
                gateway.url + "?http_timeout=3", http_auth_token=token
            ) as other:
                await other.store_device_metadata_async("h2", PLAN)
                return await other.list_devices()

        assert asyncio.run(run()) == ["h1", "h2"]
        wrong = CacheServiceClient(use_http=True, http_url=gateway.url, http_auth_token="nope")
        with pytest.raises(AuthenticationError):
            wrong.get_device_metadata_sync("h1")
        assert wrong.check_health_sync().status == "unhealthy"
        wrong.close()
        client.close()


@pytest.mark.parametrize("cancelled", [[0], list(range(8))], ids=["first", "all"])
async def test_a_cancelled_first_call_affects_no_other_call(url: str, cancelled: list[int]) -> None:
    # Concurrent first calls share the lazy initialisation of the async repository: cancelling
    # one caller (or all) while it waits must not cancel it for the others or for later calls.
    async with CacheServiceClient.from_url(url) as client:
        calls = [asyncio.ensure_future(client.device_exists(f"dev-{i}")) for i in range(8)]
        await asyncio.sleep(0)
        for i in cancelled:
            calls[i].cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, result in enumerate(results):
            if i in cancelled and calls[i].cancelled():
                continue
            assert result is False, (i, result)
        assert await client.store_device_metadata_async("after", PLAN) is True
        assert await client.device_exists("after") is True


async def test_configure_and_close_on_a_cluster(
    cluster_url: str, key_strategy: KeyStrategy
) -> None:
    # A new socket timeout means new cluster clients; close() and aclose() close every client
    # the facade opened, the replaced ones included.
    client = CacheServiceClient.from_url(
        cluster_url, key_prefix=key_strategy.prefix, cluster_buckets=4
    )
    client.store_device_metadata("before", PLAN)
    assert await client.device_exists("before")
    first = client.container
    client.configure(socket_timeout=0.7)
    assert client.container is not first
    assert client.container.settings().socket_timeout == 0.7
    client.store_device_metadata("after", PLAN)
    assert await client.device_exists("after")
    assert client.delete_many_device_metadata_sync(["before", "after"]) == 2
    await client.aclose()
    for container in (first, client.container):
        assert not container.cluster_client.initialized
        assert not container.async_cluster_client.initialized


def test_an_unreachable_sentinel_fails_as_fast_as_the_settings_say() -> None:
    # redis-py retried each sentinel connection three times with backoff (6-9 s here).
    client = CacheServiceClient(
        host="127.0.0.1", port=free_port(), sentinel_service="mymaster", socket_timeout=0.3,
        retry_attempts=1,
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(BackendConnectionError):
        client.get_device_metadata_sync("dev-1")
    assert time.monotonic() - started < 2
    assert client.check_health_sync().status == "unhealthy"
    client.close()


async def test_an_unreachable_cluster_is_a_connection_error(flavour: Flavour) -> None:
    # redis-py's cluster client raises RedisClusterException, not a RedisError, when no node
    # answers while it maps the cluster (the sync client does so when it is made).
    client = CacheServiceClient(url=f"redis+cluster://127.0.0.1:{free_port()}", retry_attempts=1)
    try:
        get = client.get_device_metadata if flavour.is_async else client.get_device_metadata_sync
        with pytest.raises(BackendConnectionError, match="cannot be connected"):
            await flavour.run(get("dev-1"))
    finally:
        await client.aclose()


@pytest.mark.parametrize("http_url", ["ftp://gw", "http://", "http://gw/?a=1", "gw:8000"])
def test_a_bad_gateway_url_fails_at_construction(http_url: str) -> None:
    with pytest.raises(ConfigurationError, match="http_url"):
        CacheServiceClient(use_http=True, http_url=http_url)


@pytest.mark.parametrize(
    ("make", "shown"),
    [
        (lambda: CacheServiceClient(url="redis://h:1/0", port=6380), "redis://h:6380/0"),
        (lambda: CacheServiceClient.from_url("redis://u:pw@h:1/2"), "redis://u:***@h:1/2"),
        (lambda: CacheServiceClient.from_url("rediss://[::1]:6380/0"), "rediss://[::1]:6380/0"),
        (lambda: CacheServiceClient.from_url("redis+cluster://h:7000"), "redis+cluster://h:7000"),
        (
            lambda: CacheServiceClient.from_url("redis+sentinel://:pw@s:26379/main"),
            "redis+sentinel://:***@s:26379/main",
        ),
        (lambda: CacheServiceClient.from_url("unix:///tmp/r.sock?db=3"), "unix:///tmp/r.sock?db=3"),
        (lambda: CacheServiceClient(), "redis://localhost:6379/0"),
    ],
)
def test_repr_shows_where_the_client_really_connects(
    make: Callable[[], CacheServiceClient], shown: str
) -> None:
    assert repr(make()).startswith(f"CacheServiceClient({shown!r}, ")


def test_the_library_logger_prints_nothing_without_a_handler() -> None:
    # A corrupted entry is logged at WARNING; with no handler configured by the application,
    # Python's last-resort handler must not print it on stderr.
    script = (
        "import logging\n"
        "from cache_service_client import InMemoryDeviceMetadataRepository as R\n"
        "r = R()\n"
        "r.inject_raw('bad', b'not json')\n"
        "r.get_many(['bad'])\n"
        "logging.getLogger('cache_service_client').warning('visible?')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    names = {h.__class__ for h in logging.getLogger("cache_service_client").handlers}
    assert logging.NullHandler in names


def test_memory_name_is_one_store_for_the_whole_process() -> None:
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    writer = CacheServiceClient.from_url(f"memory://{name}")
    reader = CacheServiceClient.from_env(environ={"CACHE_SERVICE_URL": f"memory://{name}"})
    loner = CacheServiceClient.from_url("memory://")
    other_prefix = CacheServiceClient.from_url(f"memory://{name}?key_prefix=other")
    writer.store_device_metadata("d", PLAN)
    assert reader.get_device_metadata_sync("d").datatype_id == "temp"
    assert asyncio.run(reader.device_exists("d"))  # the async side shares it too
    assert not loner.device_exists_sync("d")  # plain memory:// stays private
    assert not other_prefix.device_exists_sync("d")  # other key naming: other data, as in Redis
    repository = InMemoryDeviceMetadataRepository.shared(name)
    assert repository.exists("d")

    def write(worker: int) -> None:
        for i in range(200):
            writer.store_device_metadata(f"w{worker}-{i}", PLAN)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reader.count_devices_sync() == 801
    assert len(reader.list_devices_sync(pattern="w*")) == 800
    with pytest.raises(ConfigurationError, match="holds json values"):
        CacheServiceClient.from_url(f"memory://{name}?codec=msgpack").count_devices_sync()
    InMemoryDeviceMetadataRepository.drop_shared(name)
    assert CacheServiceClient.from_url(f"memory://{name}").count_devices_sync() == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CacheServiceClient(memory_store="x"), "memory_store needs the memory backend"),
        (lambda: CacheServiceClient.from_url("memory://x", memory_store=""), "must not be empty"),
        (lambda: InMemoryDeviceMetadataRepository.shared(""), "non-empty"),
    ],
)
def test_bad_memory_store_names_are_configuration_errors(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


# -- newcomer frictions -------------------------------------------------------------


def _own_prefix(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}key_prefix=t26-{uuid.uuid4().hex[:10]}"


async def test_awaiting_a_sync_method_fails_before_any_io(redis_url: str) -> None:
    # store_device_metadata is the plan's sync method: awaited by mistake, it used to write
    # (blocking the loop) and then raise TypeError. Now nothing is written, and the error names
    # the method to await.
    async with CacheServiceClient.from_url(_own_prefix(redis_url)) as client:
        with pytest.raises(AsyncUsageError, match=r"store_device_metadata_async") as info:
            await client.store_device_metadata("dev-1", PLAN)  # type: ignore[misc]
        assert isinstance(info.value, TypeError)  # what the mistake raised before, still caught
        assert "nothing was written" in str(info.value)
        assert not await client.device_exists("dev-1")
        with pytest.raises(AsyncUsageError, match=r"await client\.aclose\(\)"):
            await client.close()  # type: ignore[func-returns-value, misc]
        assert await client.store_device_metadata_async("dev-1", PLAN)

        # Legitimate uses keep working: a call without await (blocking, on purpose), the
        # explicit _sync twin, a thread, sync code the loop runs (a callback, a Jupyter cell),
        # `with` in a coroutine.
        assert client.store_device_metadata("dev-0", PLAN)
        assert client.store_device_metadata_sync("dev-2", PLAN)
        assert await asyncio.to_thread(client.store_device_metadata, "dev-3", PLAN)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        loop.call_soon(lambda: done.set_result(client.store_device_metadata("dev-4", PLAN)))
        assert await done
        with client:
            assert client.count_devices_sync() == 5
        client.close()
        assert await client.count_devices() == 5


def test_sync_methods_work_from_sync_code_as_before(redis_url: str) -> None:
    with CacheServiceClient.from_url(_own_prefix(redis_url)) as client:
        assert client.store_device_metadata("dev-1", PLAN) is True
        client.close()
        assert client.get_device_metadata_sync("dev-1").datatype_id == "temp"
    client.close()


async def test_an_async_generator_is_async_code_too() -> None:
    client = CacheServiceClient(url="memory://")

    async def stream() -> AsyncIterator[bool]:
        yield await client.store_device_metadata("dev-1", PLAN)  # type: ignore[misc]

    with pytest.raises(AsyncUsageError):
        async for _ in stream():
            pass
    assert not client.device_exists_sync("dev-1")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_bad_item_of_a_mapping_batch_names_its_id(redis_url: str, mode: str) -> None:
    good = {**PLAN, "last_updated": "2026-01-01T00:00:00Z"}
    cases = [
        ({"ok": good, "dev-7": {**PLAN, "persist": "yes"}}, "['dev-7'].persist"),
        ({"ok": good, "dev-8": 3}, "['dev-8']"),
        ({"ok": good, "bad id": good}, "['bad id'].device_id"),
        ({"ok": good, "dev-9": {**PLAN, "device_id": "other"}}, "['dev-9'].device_id"),
    ]
    async with CacheServiceClient.from_url(_own_prefix(redis_url)) as client:

        async def store(items: Any) -> int:
            if mode == "sync":
                return client.store_many_device_metadata_sync(items)
            return await client.store_many_device_metadata(items)

        for items, field in cases:
            with pytest.raises(ValidationError) as info:
                await store(items)
            assert info.value.field == field
            assert str(info.value).startswith(f"{field}: ")
            assert await client.count_devices() == 0  # nothing of the batch was written


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    """A server of this module's own that requires a password."""
    with RedisServer(server_binary(), extra_args=("--requirepass", SECRET)) as server:
        yield server


async def test_a_server_that_needs_a_password_says_so(password_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{password_server.port}/0?retry_attempts=1"
    async with CacheServiceClient.from_url(url) as client:
        failures: list[BaseException] = []
        for call in (
            lambda: client.get_device_metadata_sync("dev-1"),
            lambda: client.store_device_metadata_sync("dev-1", PLAN),
        ):
            with pytest.raises(AuthenticationError) as info:
                call()
            failures.append(info.value)
        for coroutine in (client.get_device_metadata("dev-1"), client.count_devices()):
            with pytest.raises(AuthenticationError) as info:
                await coroutine
            failures.append(info.value)
        # The sync report: the async client at the redis-py floor reports a refused AUTH of a
        # health check as a closed connection ("unreachable").
        health = client.check_health_sync()
    for failure in failures:
        # What is wrong and what to set come first; redis-py's words ("HELLO must be called
        # with the client already authenticated ...") only at the end.
        guidance = str(failure).partition("the server said:")[0]
        assert "authentication failed" in guidance
        assert "requires a password" in guidance
        assert "CACHE_SERVICE_PASSWORD" in guidance  # what to set
        assert "HELLO" not in guidance
        assert "NOAUTH" not in guidance
    assert "CACHE_SERVICE_PASSWORD" in health.message
    with (
        CacheServiceClient.from_url(url, password="wrong") as client,
        pytest.raises(AuthenticationError, match="refused: check the password setting"),
    ):
        client.count_devices_sync()
    with CacheServiceClient.from_url(url, password=SECRET) as client:
        assert client.count_devices_sync() == 0
