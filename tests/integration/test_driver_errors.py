"""Tests of the driver boundary: redis-py errors become ours, against scripted and real servers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from cache_service_client import (
    AsyncRedisDeviceMetadataRepository,
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    CacheServiceError,
    DataCorruptionError,
    DeviceMetadata,
    IndexLayoutError,
    KeyStrategy,
    MetadataCodec,
    RedisDeviceMetadataRepository,
    RetryPolicy,
)
from cache_service_client.repository.redis import flows, lua
from cache_service_client.repository.redis.driver import (
    AsyncRedisDriver,
    SyncRedisDriver,
    _cluster_slip,
    translate_error,
)
from cache_service_client.repository.redis.ops import Command, Flow, Op, Pipeline, ScriptCall
from tests.backends import Flavour
from tests.redis_server import RedisServer, free_port, server_binary

PASSWORD = "s3cret"
WRONG_PASSWORD = "n0t-the-s3cret-pw"
GET = Command(("GET", "device:a"), key="device:a")
MGET = Command(("MGET", "device:a", "device:b"))
PUT = ScriptCall(lua.PUT, ("i", "e", "u", "device:a"), (0, "a", b"{}", 0))


# --- translate_error -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (rex.AuthenticationError("invalid username-password pair"), AuthenticationError),
        (rex.AuthenticationWrongNumberOfArgsError("wrong number of args"), AuthenticationError),
        (rex.ResponseError("NOAUTH Authentication required."), AuthenticationError),
        (rex.ResponseError("WRONGPASS invalid username-password pair"), AuthenticationError),
        # A script call (more than ten arguments) without a password on a server that asks one.
        (
            rex.ResponseError("Protocol error: unauthenticated multibulk length"),
            AuthenticationError,
        ),
        (rex.ResponseError("ERR invalid password"), AuthenticationError),
        (rex.TimeoutError("Timeout reading from socket"), BackendTimeoutError),
        (rex.ConnectionError("Error 111 connecting. Connection refused."), BackendConnectionError),
        (rex.BusyLoadingError("Redis is loading the dataset in memory"), BackendConnectionError),
        (rex.MaxConnectionsError("Too many connections"), BackendConnectionError),
        (rex.ReadOnlyError("You can't write against a read only replica."), BackendConnectionError),
        (
            rex.ResponseError("READONLY You can't write against a read only replica."),
            BackendConnectionError,
        ),
        (
            rex.ResponseError("LOADING Redis is loading the dataset in memory"),
            BackendConnectionError,
        ),
        (rex.ResponseError("BUSY Redis is busy running a script."), BackendConnectionError),
        (rex.ResponseError("MASTERDOWN Link with MASTER is down"), BackendConnectionError),
        (
            rex.ResponseError("TRYAGAIN Multiple keys request during rehashing"),
            BackendConnectionError,
        ),
        # A script that meets a key of a migrating slot already moved away, as Redis 7 and as
        # Valkey 8 word it: retried until the migration ends.
        (
            rex.ResponseError(
                "Script attempted to access a non local key in a cluster node script: "
                "68a354326f7d628ee4c278f3963357ea86799dbd, on @user_script:73."
            ),
            BackendConnectionError,
        ),
        (
            rex.ResponseError(
                "Unable to execute command 'mget' in script because undeclared keys were "
                "accessed during rehashing of the slot script: "
                "68a354326f7d628ee4c278f3963357ea86799dbd, on @user_script:73."
            ),
            BackendConnectionError,
        ),
        (rex.ResponseError("ERR unknown command 'FOO'"), BackendError),
        (rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), BackendError),
        (rex.DataError("Invalid input of type: 'NoneType'"), BackendError),
        (rex.InvalidResponse("Protocol Error"), BackendError),
        (rex.RedisError("something"), BackendError),
        (
            rex.RedisClusterException(
                "Redis Cluster cannot be connected. Please provide at least one reachable node: "
                "Error while reading from 127.0.0.1:51329 : (104, 'Connection reset by peer')"
            ),
            BackendConnectionError,
        ),
        (
            rex.RedisClusterException("No way to dispatch this command to Redis Cluster."),
            BackendError,
        ),
    ],
)
@pytest.mark.parametrize("op", [GET, MGET, PUT, None], ids=["get", "mget", "script", "no-op"])
def test_translate_error_maps_the_exception_class(
    exc: Exception, expected: type[CacheServiceError], op: Op | None
) -> None:
    error = translate_error(exc, op)
    assert type(error) is expected
    assert error.__cause__ is exc
    assert error.__suppress_context__
    assert str(exc) in str(error)


def test_translate_error_names_where_it_happened() -> None:
    exc = rex.ConnectionError("refused")
    assert "(key 'device:a')" in str(translate_error(exc, GET))
    assert "(MGET)" in str(translate_error(exc, MGET))
    assert "(script 'put')" in str(translate_error(exc, PUT))
    assert "refused" in str(translate_error(exc, Pipeline((GET,))))


# Redis 6's words for errors inside a script (read off redis-server 6.2): the place in the
# script comes first.
REDIS_6_SCRIPT_ERRORS = [
    (
        "Error running script (call to f_b3fa22bcf79815d9b7abc668fa4455f4657d6ac0): "
        "@user_script:72: @user_script: 72: -READONLY You can't write against a read only "
        "replica.",
        BackendConnectionError,
        "READONLY You can't write",
    ),
    (
        "Error running script (call to f_88fcd970170dd05b3fc83c0be7be9638fb4f476a): "
        "@user_script:24: user_script:24: LAYOUT the indexes of this cache are in layout "
        "version 1; run repair to rebuild them in version 2",
        IndexLayoutError,
        "the indexes of this cache are in layout version 1; run repair",
    ),
]


@pytest.mark.parametrize(("message", "expected", "text"), REDIS_6_SCRIPT_ERRORS)
def test_redis_6_script_errors_are_read_past_the_place_in_the_script(
    message: str, expected: type[Exception], text: str
) -> None:
    error = translate_error(rex.ResponseError(message), PUT)
    assert type(error) is expected
    assert str(error).startswith(("Redis is unavailable (script 'put'): READONLY", text))
    assert text in str(error)


# What a command inside a script answers when the ACL denies it a key or the command, as each
# server words it (read off redis-server 6.2.14 and 7.0.15 and valkey-server 8.1.8).
SCRIPT_ACL_DENIALS = [
    "The user executing the script can't access at least one of the keys mentioned in the "
    "command arguments script: c4405665e2672efd2ccceafd285c5e8408445da0, on @user_script:1.",
    "The user executing the script can't run this command or subcommand script: "
    "c4405665e2672efd2ccceafd285c5e8408445da0, on @user_script:1.",
    "Error running script (call to f_c4405665e2672efd2ccceafd285c5e8408445da0): @user_script:1: "
    "@user_script: 1: The user executing the script can't access at least one of the keys "
    "mentioned in the command arguments",
    "ACL failure in script: No permissions to access a key script: "
    "4629697c5355fb98f1528a76317c367ea75b0ab3, on @user_script:58.",
    "ACL failure in script: User u has no permissions to run the 'zadd' command script: "
    "c4405665e2672efd2ccceafd285c5e8408445da0, on @user_script:1.",
]


@pytest.mark.parametrize(
    "message", SCRIPT_ACL_DENIALS, ids=["7-key", "7-cmd", "6-key", "valkey-key", "valkey-cmd"]
)
def test_an_acl_denial_inside_a_script_is_an_authentication_error(message: str) -> None:
    error = translate_error(rex.ResponseError(message), PUT)
    assert type(error) is AuthenticationError
    assert str(error).startswith("permission denied (script 'put'): ")
    # Outside a script the same words are the server's own error text, not a denial.
    assert type(translate_error(rex.ResponseError(message), GET)) is BackendError


def test_wrongtype_with_a_command_key_is_data_corruption_naming_the_key() -> None:
    exc = rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    error = translate_error(exc, GET)
    assert isinstance(error, DataCorruptionError)
    assert error.key == "device:a"
    assert "'device:a'" in str(error)
    assert "WRONGTYPE" in str(error)
    assert error.__cause__ is exc


@pytest.mark.parametrize("op", [MGET, PUT, None, Pipeline((GET,))])
def test_wrongtype_without_a_key_is_a_backend_error(op: Op | None) -> None:
    exc = rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    error = translate_error(exc, op)
    assert type(error) is BackendError
    assert error.__cause__ is exc


# redis-py strips these error codes from the message and raises a dedicated class, so the
# library's prefix checks ("MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOPERM") never see them.
@pytest.mark.parametrize(
    "exc",
    [
        rex.MasterDownError(
            "Link with MASTER is down and replica-serve-stale-data is set to 'no'."
        ),
        rex.TryAgainError("Multiple keys request during rehashing of slot"),
        rex.ClusterDownError("The cluster is down"),
        # The cluster client's own error when redirections and TRYAGAIN answers went on too long.
        rex.ClusterError("TTL exhausted."),
    ],
)
def test_redis_py_retryable_error_classes_are_connection_errors(exc: Exception) -> None:
    assert type(translate_error(exc, GET)) is BackendConnectionError


def test_redis_py_no_permission_error_is_an_authentication_error() -> None:
    exc = rex.NoPermissionError("this user has no permissions to run the 'get' command")
    assert type(translate_error(exc, GET)) is AuthenticationError


# --- real servers --------------------------------------------------------------------------------

NO_RETRY = Retry(NoBackoff(), 0)


def sync_client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        retry=NO_RETRY,
        socket_timeout=5,
        socket_connect_timeout=2,
    )


def async_client(port: int, password: str | None = None) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        socket_timeout=5,
        socket_connect_timeout=2,
    )


def context(prefix: str = "device") -> flows.FlowContext:
    return flows.FlowContext(keys=KeyStrategy(prefix), codec=MetadataCodec(), ttl_ms=None)


def make(device_id: str) -> DeviceMetadata:
    return DeviceMetadata(
        device_id=device_id,
        datatype_id="temp",
        datatype_name="Temperature",
        persist=True,
        last_updated=datetime(2024, 5, 6, tzinfo=timezone.utc),
    )


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    texts = [str(error), repr(error), str(error.__cause__), repr(error.__cause__)]
    for secret in secrets:
        for text in texts:
            assert secret not in text


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RedisServer]:
    """A redis-server of this module's own that requires PASSWORD.

    ``RedisServer.start`` waits for an unauthenticated PING, so the password is set after start.
    """
    server = RedisServer(server_binary())
    server.start()
    try:
        setup = sync_client(server.port)
        try:
            setup.config_set("requirepass", PASSWORD)
        finally:
            setup.close()
        yield server
    finally:
        server.stop()


@pytest.fixture
def closed_port() -> int:
    return free_port()


async def test_driver_on_a_closed_port(flavour: Flavour, closed_port: int) -> None:
    client = flavour_client(flavour, closed_port)
    try:
        driver = flavour_driver(flavour, client)
        with pytest.raises(BackendConnectionError) as info:
            await flavour.run(driver.run(flows.get, context(), "a"))
        assert isinstance(info.value.__cause__, rex.ConnectionError)
        for flow, args in [
            (flows.count, ()),
            (flows.get_many, (["a", "b"],)),
            (flows.put, (make("a"),)),
        ]:
            with pytest.raises(BackendConnectionError):
                await flavour.run(driver.run(flow, context(), *args))
    finally:
        await close_client(flavour, client)


async def test_repository_on_a_closed_port(flavour: Flavour, closed_port: int) -> None:
    repository: Any = (
        AsyncRedisDeviceMetadataRepository if flavour.is_async else RedisDeviceMetadataRepository
    )
    repo = repository(flavour_client(flavour, closed_port), close_client=True)
    try:
        calls: list[Callable[[], Any]] = [
            lambda: repo.get("a"),
            lambda: repo.put(make("a")),
            lambda: repo.exists("a"),
        ]
        for call in calls:
            with pytest.raises(BackendConnectionError):
                await flavour.run(call())
        status = await flavour.run(repo.health())
        assert status.status == "unhealthy"
        assert status.details["error"] == "BackendConnectionError"
    finally:
        await flavour.run(repo.close())


def test_password_in_url_is_not_in_connection_errors(closed_port: int) -> None:
    client = redis.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0", retry=NO_RETRY)
    try:
        with pytest.raises(BackendConnectionError) as info:
            SyncRedisDriver(client).run(flows.get, context(), "a")
        assert_no_secret(info.value, PASSWORD)
    finally:
        client.close()


def flavour_client(flavour: Flavour, port: int, password: str | None = None) -> Any:
    """A client of ``flavour`` (no retries of its own) for the server on ``port``."""
    return async_client(port, password) if flavour.is_async else sync_client(port, password)


def flavour_driver(flavour: Flavour, client: Any) -> Any:
    """The driver of ``flavour`` over ``client``."""
    return AsyncRedisDriver(client) if flavour.is_async else SyncRedisDriver(client)


async def close_client(flavour: Flavour, client: Any) -> None:
    await flavour.run(client.aclose() if flavour.is_async else client.close())


@pytest.mark.parametrize("password", [None, WRONG_PASSWORD], ids=["no-password", "wrong"])
async def test_authentication_refused(
    flavour: Flavour, auth_server: RedisServer, password: str | None
) -> None:
    client = flavour_client(flavour, auth_server.port, password)
    try:
        driver = flavour_driver(flavour, client)
        for flow, args in [(flows.get, ("a",)), (flows.count, ())]:
            with pytest.raises(AuthenticationError) as info:
                await flavour.run(driver.run(flow, context(), *args))
            assert isinstance(info.value.__cause__, rex.RedisError)
            assert_no_secret(info.value, PASSWORD, WRONG_PASSWORD)
        if not flavour.is_async:
            # The async client at the redis-py floor reports a refused AUTH of a health check
            # as a closed connection ("unreachable"); only the sync report is pinned here.
            status = await flavour.run(driver.run(flows.health, context()))
            assert status.status == "unhealthy"
            assert status.message.startswith("authentication failed")
            assert PASSWORD not in status.message
            assert WRONG_PASSWORD not in status.message
    finally:
        await close_client(flavour, client)


def test_repository_repr_does_not_show_the_password(auth_server: RedisServer) -> None:
    repo = RedisDeviceMetadataRepository(sync_client(auth_server.port, PASSWORD), close_client=True)
    try:
        assert PASSWORD not in repr(repo)
        assert repo.count() >= 0
    finally:
        repo.close()


def test_wrongtype_from_the_server_is_data_corruption(redis_client: redis.Redis) -> None:
    prefix = f"{uuid.uuid4().hex}-wrongtype"
    keys = KeyStrategy(prefix)
    key = keys.device_key("a")
    redis_client.rpush(key, b"x")
    try:
        driver = SyncRedisDriver(redis_client)
        with pytest.raises(DataCorruptionError) as info:
            driver.run(flows.get, context(prefix), "a")
        assert info.value.key == key
        assert isinstance(info.value.__cause__, rex.ResponseError)
        result = driver.run(flows.get_many, context(prefix), ["a", "b"])
        assert result.missing == ["b"]
        assert set(result.corrupted) == {"a"}
        assert result.corrupted["a"].key == key
    finally:
        redis_client.delete(key)


def test_acl_denied_command_is_an_authentication_error(auth_server: RedisServer) -> None:
    admin = sync_client(auth_server.port, PASSWORD)
    user = f"limited-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{PASSWORD}"],
        keys=["*"],
        categories=["+@all"],
        commands=["-get"],
    )
    limited = redis.Redis(
        host="127.0.0.1", port=auth_server.port, username=user, password=PASSWORD, retry=NO_RETRY
    )
    try:
        with pytest.raises(AuthenticationError):
            SyncRedisDriver(limited).run(flows.get, context(), "a")
    finally:
        limited.close()
        admin.acl_deluser(user)
        admin.close()


def _script_cached(client: redis.Redis, sha: str) -> bool:
    (cached,) = client.script_exists(sha)
    return bool(cached)


async def test_driver_reloads_flushed_scripts(flavour: Flavour, auth_server: RedisServer) -> None:
    client = flavour_client(flavour, auth_server.port, PASSWORD)
    admin = sync_client(auth_server.port, PASSWORD)
    ctx = context(f"{uuid.uuid4().hex}-noscript")
    try:
        driver = flavour_driver(flavour, client)
        assert await flavour.run(driver.run(flows.put, ctx, make("a"))) is True
        assert _script_cached(admin, lua.PUT_ONE.sha)
        admin.script_flush()
        assert not _script_cached(admin, lua.PUT_ONE.sha)
        assert await flavour.run(driver.run(flows.put, ctx, make("a"))) is True
        admin.script_flush()
        assert not _script_cached(admin, lua.PUT.sha)
        assert not _script_cached(admin, lua.COUNT.sha)
        # EVALSHA answers NOSCRIPT; the driver falls back to EVAL, which caches the script.
        assert await flavour.run(driver.run(flows.put_many, ctx, [make("b"), make("c")])) == 2
        assert await flavour.run(driver.run(flows.count, ctx)) == 3
        assert _script_cached(admin, lua.PUT.sha)
        assert _script_cached(admin, lua.COUNT.sha)
        assert await flavour.run(driver.run(flows.list_ids, ctx)) == ["a", "b", "c"]
        admin.script_flush()
        assert await flavour.run(driver.run(flows.delete, ctx, "a")) is True
        admin.script_flush()
        assert await flavour.run(driver.run(flows.delete_many, ctx, ["b", "c"])) == 2
        assert await flavour.run(driver.run(flows.count, ctx)) == 0
        assert _script_cached(admin, lua.COUNT.sha)
    finally:
        admin.flushdb()
        admin.close()
        await close_client(flavour, client)


def test_redis_pys_attribute_error_on_an_unmapped_node_is_a_retryable_connection_error(
    cluster_client: RedisCluster,
) -> None:
    """redis-py's cluster client fails on a node missing from its map (#4015).

    The real case (a reshard onto an empty primary) is reproduced in test_topologies; here,
    the same failure inside redis-py's code is told apart from one in the library's own.
    """
    try:
        cluster_client.get_redis_connection(None)  # type: ignore[arg-type]
    except AttributeError as exc:
        from_redis_py = exc
    assert _cluster_slip(from_redis_py)
    error = translate_error(from_redis_py)
    assert isinstance(error, BackendConnectionError)
    assert error.__cause__ is from_redis_py
    assert "redis-py issue #4015" in str(error)
    try:
        None.host  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        ours = exc
    assert not _cluster_slip(ours)


def test_an_attribute_error_of_the_librarys_own_is_not_contained(
    cluster_client: RedisCluster,
) -> None:
    def broken_flow() -> Flow[None]:
        yield Command(("PING",))
        raise AttributeError("a bug of ours")

    driver = SyncRedisDriver(cluster_client, RetryPolicy(attempts=3))
    with pytest.raises(AttributeError, match="a bug of ours"):
        driver.run(broken_flow)
