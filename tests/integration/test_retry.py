"""Tests of RetryPolicy: plain functions first, then real Redis servers that die, hang or refuse.

No Redis is mocked: the integration tests start servers of their own (tests/redis_server.py) and
use redis-py clients whose own retry is off, so every attempt seen here is the policy's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import backoff
import pytest
import redis
import redis.asyncio
from redis import exceptions as rex
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache_service_client import (
    AsyncRedisDeviceMetadataRepository,
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    ConfigurationError,
    DataCorruptionError,
    DeviceMetadata,
    DeviceNotFoundError,
    KeyStrategy,
    RedisDeviceMetadataRepository,
    ValidationError,
)
from cache_service_client.retry import RetryPolicy
from tests import backends
from tests.backends import PLAIN, Flavour
from tests.redis_server import RedisServer, free_port, server_binary

LOGGER = "cache_service_client.retry"
SECRET = "pa55-w0rd-never-logged"


def meta(device_id: str) -> DeviceMetadata:
    """The suite's factory (tests/backends.py), plain: no unit, no properties."""
    return backends.meta(device_id, **PLAIN, last_updated=datetime(2026, 1, 2, tzinfo=timezone.utc))


def fast(attempts: int, *, deadline: float | None = 10.0) -> RetryPolicy:
    """A policy with millisecond waits."""
    return RetryPolicy(attempts=attempts, deadline=deadline, backoff_base=0.001, backoff_max=0.005)


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The "retrying in" records of the retry logger (give-up records left out)."""
    return [r for r in caplog.records if r.name == LOGGER and "retrying in" in r.getMessage()]


def logger_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)


class Script:
    """A plain function that raises the scripted errors in turn, then returns ``value``."""

    def __init__(self, *errors: Exception, value: str = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value

    async def coro(self) -> str:
        return self()


class Always:
    """A plain function that always fails with a new BackendConnectionError."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    def __call__(self) -> str:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        raise BackendConnectionError(f"refused #{self.calls}")

    async def coro(self) -> str:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        raise BackendConnectionError(f"refused #{self.calls}")


NOT_RETRYABLE: list[Exception] = [
    AuthenticationError("authentication failed: WRONGPASS"),
    ValidationError("device_id", "must not be empty"),
    DataCorruptionError("device:a", "not JSON"),
    DeviceNotFoundError("a"),
    BackendError("Redis error: OOM command not allowed"),
    ValueError("not even ours"),
]
NOT_RETRYABLE_IDS = [type(e).__name__ for e in NOT_RETRYABLE]


# --- construction -------------------------------------------------------------------------------


def test_defaults_repr_equality_and_hash() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.deadline, policy.backoff_base, policy.backoff_max) == (
        3,
        10.0,
        0.05,
        1.0,
    )
    assert policy.jitter is True
    assert repr(policy) == (
        "RetryPolicy(attempts=3, deadline=10.0, backoff_base=0.05, backoff_max=1.0, jitter=True)"
    )
    assert policy == RetryPolicy(attempts=3, deadline=10, backoff_base=0.05)
    assert hash(policy) == hash(RetryPolicy())
    assert policy != RetryPolicy(jitter=False)
    assert policy != "RetryPolicy()"
    assert RetryPolicy.disabled().attempts == 1
    assert RetryPolicy.disabled() == RetryPolicy(attempts=1)
    assert RetryPolicy(deadline=None).deadline is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": 1.5},
        {"attempts": True},
        {"deadline": 0},
        {"deadline": -1.0},
        {"deadline": float("inf")},
        {"backoff_base": -0.1},
        {"backoff_max": float("nan")},
        {"backoff_max": "1"},
    ],
)
def test_invalid_arguments_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    (name,) = kwargs
    with pytest.raises(ConfigurationError, match=name):
        RetryPolicy(**kwargs)


def test_is_retryable() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(BackendConnectionError("x"))
    assert policy.is_retryable(BackendTimeoutError("x"))
    for error in NOT_RETRYABLE:
        assert not policy.is_retryable(error)


# --- sync unit tests ----------------------------------------------------------------------------


async def attempt(
    flavour: Flavour, policy: RetryPolicy, script: Script | Always, *, operation: str = "get"
) -> str:
    """``policy.call`` (sync) or ``policy.call_async`` (async) of ``script`` as ``operation``."""
    if flavour.is_async:
        return await policy.call_async(script.coro, operation=operation)
    return policy.call(script, operation=operation)


async def test_first_attempt_success_is_a_plain_call(
    flavour: Flavour, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_backoff(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backoff machinery must not start on success")

    monkeypatch.setattr(backoff, "on_exception", no_backoff)
    script = Script()
    assert await attempt(flavour, RetryPolicy(), script) == "ok"
    assert script.calls == 1
    assert logger_records(caplog) == []


@pytest.mark.parametrize(
    "errors",
    [
        [BackendConnectionError("1"), BackendTimeoutError("2"), BackendConnectionError("3")],
        [BackendTimeoutError("1"), BackendConnectionError("2"), BackendTimeoutError("3")],
    ],
    ids=["connection-last", "timeout-last"],
)
async def test_retries_up_to_attempts_then_raises_the_last_error(
    flavour: Flavour, errors: list[Exception]
) -> None:
    script = Script(*errors)
    with pytest.raises(type(errors[2])) as info:
        await attempt(flavour, fast(3), script)
    assert info.value is errors[2]
    assert script.calls == 3


@pytest.mark.parametrize(
    "errors",
    [
        [BackendConnectionError("down"), BackendTimeoutError("slow")],
        [BackendConnectionError("down"), BackendConnectionError("down")],
    ],
    ids=["mixed", "same"],
)
async def test_succeeds_after_transient_failures(flavour: Flavour, errors: list[Exception]) -> None:
    script = Script(*errors, value="done")
    assert await attempt(flavour, fast(3), script) == "done"
    assert script.calls == 3


@pytest.mark.parametrize("error", NOT_RETRYABLE, ids=NOT_RETRYABLE_IDS)
async def test_never_retries_other_errors(
    flavour: Flavour, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(error)
    with pytest.raises(type(error)) as info:
        await attempt(flavour, fast(5), script)
    assert info.value is error
    assert script.calls == 1
    assert logger_records(caplog) == []


def test_disabled_policy_makes_one_attempt() -> None:
    script = Script(BackendConnectionError("down"))
    with pytest.raises(BackendConnectionError):
        RetryPolicy.disabled().call(script, operation="get")
    assert script.calls == 1


@pytest.mark.parametrize("error", NOT_RETRYABLE, ids=NOT_RETRYABLE_IDS)
def test_a_definite_error_after_a_retry_ends_the_call(error: Exception) -> None:
    script = Script(BackendConnectionError("down"), error)
    with pytest.raises(type(error)) as info:
        fast(5).call(script, operation="get")
    assert info.value is error
    assert script.calls == 2


async def test_honours_the_deadline(flavour: Flavour) -> None:
    always = Always()
    policy = RetryPolicy(attempts=1000, deadline=0.3, backoff_base=0.01, backoff_max=0.05)
    started = time.monotonic()
    with pytest.raises(BackendConnectionError) as info:
        await attempt(flavour, policy, always)
    elapsed = time.monotonic() - started
    assert 0.3 - 0.05 - 0.02 <= elapsed < 0.3 + 0.08
    assert 5 < always.calls < 1000
    assert str(info.value) == f"refused #{always.calls}"  # the last error, unchanged


def overslept_policy() -> RetryPolicy:
    """A policy whose first wait (0.05 s) fits its deadline (0.2 s) with room to spare."""
    return RetryPolicy(attempts=10, deadline=0.2, backoff_base=0.05, backoff_max=0.05, jitter=False)


def assert_gave_up_at_the_deadline(
    caplog: pytest.LogCaptureFixture, error: BaseException, always: Always
) -> None:
    assert always.calls == 1  # no attempt started after the deadline
    assert type(error) is BackendConnectionError
    assert str(error) == "refused #1"  # the last attempt's error, unchanged
    gave_up = [r.getMessage() for r in logger_records(caplog) if "giving up" in r.getMessage()]
    assert gave_up == [
        "get: giving up after attempt 1 of 10 (deadline reached): "
        "BackendConnectionError: refused #1"
    ]


def test_a_wait_that_overshoots_the_deadline_ends_with_the_last_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda seconds: real_sleep(seconds + 0.2))
    always = Always()
    with pytest.raises(BackendConnectionError) as info:
        overslept_policy().call(always, operation="get")
    assert_gave_up_at_the_deadline(caplog, info.value, always)


def test_a_sync_retry_that_would_end_after_the_deadline_is_not_started() -> None:
    # Sync attempts cannot be cut off: each takes 0.2 s here (as a socket timeout would). No
    # retry starts that, taking as long as the attempt before, would end after the deadline,
    # so the call ends by the deadline (it used to overrun it by up to one attempt).
    slow = Always(delay=0.2)
    policy = RetryPolicy(attempts=100, deadline=0.5, backoff_base=0.01, backoff_max=0.02)
    started = time.monotonic()
    with pytest.raises(BackendConnectionError) as info:
        policy.call(slow, operation="get")
    elapsed = time.monotonic() - started
    assert elapsed <= 0.5 * 1.1, elapsed
    assert slow.calls == 2  # a third would have run from about 0.42 s to 0.62 s
    assert str(info.value) == "refused #2"  # the last attempt's error, unchanged


def test_the_deadline_counts_the_first_attempt() -> None:
    always = Always(delay=0.2)
    with pytest.raises(BackendConnectionError):
        fast(5, deadline=0.15).call(always, operation="get")
    assert always.calls == 1


@pytest.mark.parametrize(
    ("attempts", "ceiling", "waits"),
    [(6, 0.04, [0.01, 0.02, 0.04, 0.04, 0.04]), (5, 0.03, [0.01, 0.02, 0.03, 0.03])],
)
async def test_backoff_delays_grow_and_are_capped(
    flavour: Flavour,
    caplog: pytest.LogCaptureFixture,
    attempts: int,
    ceiling: float,
    waits: list[float],
) -> None:
    policy = RetryPolicy(
        attempts=attempts, deadline=None, backoff_base=0.01, backoff_max=ceiling, jitter=False
    )
    with pytest.raises(BackendConnectionError):
        await attempt(flavour, policy, Always())
    logged = [r.__dict__["retry_wait"] for r in retry_records(caplog)]
    assert logged == pytest.approx(waits)


def test_jitter_draws_waits_below_the_computed_ones(caplog: pytest.LogCaptureFixture) -> None:
    policy = RetryPolicy(attempts=6, deadline=None, backoff_base=0.004, backoff_max=0.01)
    with pytest.raises(BackendConnectionError):
        policy.call(Always(), operation="get")
    waits = [r.__dict__["retry_wait"] for r in retry_records(caplog)]
    assert len(waits) == 5
    for wait, ceiling in zip(waits, [0.004, 0.008, 0.01, 0.01, 0.01], strict=True):
        assert 0 <= wait <= ceiling


async def test_every_retry_is_logged_at_info(
    flavour: Flavour, caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(BackendConnectionError("connection refused"), BackendTimeoutError("slow"))
    await attempt(flavour, fast(3), script, operation="list_ids")
    records = retry_records(caplog)
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    first, second = (r.getMessage() for r in records)
    assert first.startswith("list_ids: attempt 1 of 3 failed with BackendConnectionError: ")
    assert "connection refused" in first
    assert "retrying in" in first
    assert second.startswith("list_ids: attempt 2 of 3 failed with BackendTimeoutError: slow")
    assert [r.__dict__["retry_attempt"] for r in records] == [1, 2]
    assert {r.__dict__["retry_operation"] for r in records} == {"list_ids"}
    # The reconnection that worked is logged too, at INFO.
    (recovered,) = [r for r in logger_records(caplog) if "succeeded" in r.getMessage()]
    assert recovered.levelno == logging.INFO
    assert recovered.getMessage() == "list_ids: attempt 3 of 3 succeeded after BackendTimeoutError"
    assert recovered.__dict__["retry_attempt"] == 3
    assert recovered.__dict__["retry_error"] == "BackendTimeoutError"


def test_giving_up_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(BackendConnectionError):
        fast(2).call(Always(), operation="get")
    records = logger_records(caplog)
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert (
        records[1].getMessage().startswith("get: giving up after attempt 2 of 2 (out of attempts)")
    )
    assert records[1].__dict__["retry_attempt"] == 2
    assert records[1].__dict__["retry_operation"] == "get"


# --- async unit tests ---------------------------------------------------------------------------


async def test_async_wait_that_overshoots_the_deadline_ends_with_the_last_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_sleep = asyncio.sleep

    async def oversleep(seconds: float) -> None:
        await real_sleep(seconds + 0.2)

    monkeypatch.setattr(asyncio, "sleep", oversleep)
    always = Always()
    with pytest.raises(BackendConnectionError) as info:
        await overslept_policy().call_async(always.coro, operation="get")
    assert_gave_up_at_the_deadline(caplog, info.value, always)


async def test_async_bounds_a_hung_retry_attempt_by_the_deadline() -> None:
    first = BackendConnectionError("connection lost")
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise first
        await asyncio.sleep(10)  # hangs
        return "never"

    started = time.monotonic()
    with pytest.raises(BackendTimeoutError) as info:
        await fast(5, deadline=0.3).call_async(attempt, operation="get")
    assert time.monotonic() - started < 0.3 + 0.08
    assert calls == 2
    assert "get: deadline of 0.3 s exceeded in attempt 2 of 5" in str(info.value)
    assert "connection lost" in str(info.value)
    assert info.value.__cause__ is first


async def test_async_cancellation_is_not_retried_nor_converted() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BackendConnectionError("down")
        await asyncio.sleep(10)
        return "never"

    task = asyncio.create_task(fast(5, deadline=5).call_async(attempt, operation="get"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 2


async def test_one_retry_and_its_success_are_logged_at_info(
    flavour: Flavour, caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(BackendConnectionError("connection refused"))
    await attempt(flavour, fast(3), script, operation="count")
    (record,) = retry_records(caplog)
    assert record.levelno == logging.INFO
    assert logger_records(caplog)[-1].getMessage() == (
        "count: attempt 2 of 3 succeeded after BackendConnectionError"
    )
    assert record.getMessage().startswith(
        "count: attempt 1 of 3 failed with BackendConnectionError: connection refused"
    )


# --- secrets never reach the logs ---------------------------------------------------------------

NO_RETRY = Retry(NoBackoff(), 0)


@pytest.mark.parametrize("user", ["user", ""], ids=["user-and-password", "password-only"])
async def test_retry_logs_never_show_the_password(
    flavour: Flavour, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://{user}:{SECRET}@127.0.0.1:{port}/0"
    client: Any
    repo: Any
    if flavour.is_async:
        client = redis.asyncio.Redis.from_url(
            url, retry=AsyncRetry(NoBackoff(), 0), socket_connect_timeout=1
        )
        repo = AsyncRedisDeviceMetadataRepository(client, close_client=True, retry=fast(3))
    else:
        client = redis.Redis.from_url(url, retry=NO_RETRY, socket_connect_timeout=1)
        repo = RedisDeviceMetadataRepository(client, close_client=True, retry=fast(3))
    try:
        calls: list[Callable[[], Any]] = [
            lambda: repo.get("sensor-1"),
            lambda: repo.put(meta("sensor-1")),
        ]
        for call in calls:
            caplog.clear()
            with pytest.raises(BackendConnectionError):
                await flavour.run(call())
            assert len(retry_records(caplog)) == 2
            assert SECRET not in caplog.text
            for record in caplog.records:
                assert SECRET not in repr(record.__dict__)
    finally:
        await flavour.run(repo.close())


# --- repositories -------------------------------------------------------------------------------


def test_repository_retry_is_the_default_policy_unless_given() -> None:
    client = redis.Redis(retry=NO_RETRY)
    try:
        assert RedisDeviceMetadataRepository(client).retry == RetryPolicy()
        policy = RetryPolicy(attempts=7)
        repo = RedisDeviceMetadataRepository(client, retry=policy)
        assert repo.retry is policy
        assert "retry=RetryPolicy(attempts=7" in repr(repo)
        with pytest.raises(AttributeError):
            repo.retry = RetryPolicy()  # type: ignore[misc]
    finally:
        client.close()


# --- real servers -------------------------------------------------------------------------------


def sync_client(port: int, *, password: str | None = None, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        retry=NO_RETRY,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def async_client(
    port: int, *, password: str | None = None, timeout: float = 2.0
) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        retry=AsyncRetry(NoBackoff(), 0),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


@pytest.fixture(scope="module")
def binary() -> str:
    return server_binary()


@pytest.fixture
def fresh_server(binary: str) -> Iterator[Callable[..., RedisServer]]:
    """Start servers of this test's own; every one is stopped at the end."""
    started: list[RedisServer] = []

    def start(*extra_args: str) -> RedisServer:
        server = RedisServer(binary, extra_args=extra_args)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


class Restartable:
    """A redis-server that can be terminated and started again on the same port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.server: RedisServer | None = None
        self.timers: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self) -> None:
        server = RedisServer(self.binary, port=self.port)
        self.server = server
        server.start()

    def kill(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def start_later(self, delay: float) -> None:
        def run() -> None:
            time.sleep(delay)
            try:
                self.start()
            except BaseException as exc:  # reported by the test, not lost in the thread
                self.errors.append(exc)

        thread = threading.Thread(target=run)
        self.timers.append(thread)
        thread.start()

    def close(self) -> None:
        for thread in self.timers:
            thread.join()
        self.kill()
        assert not self.errors, self.errors


@pytest.fixture
def restartable(binary: str) -> Iterator[Restartable]:
    server = Restartable(binary)
    try:
        server.start()
        yield server
    finally:
        server.close()


def test_sync_repository_survives_a_redis_restart(
    restartable: Restartable, caplog: pytest.LogCaptureFixture
) -> None:
    policy = RetryPolicy(attempts=50, deadline=5.0, backoff_base=0.02, backoff_max=0.1)
    repo = RedisDeviceMetadataRepository(
        sync_client(restartable.port), close_client=True, retry=policy
    )
    try:
        repo.put(meta("a"))
        # Restarted before the next call: the pooled connection is stale.
        restartable.kill()
        restartable.start()
        assert repo.exists("a") is False  # no persistence: the data went with the process
        # Down when the call starts, back 0.3 s later: the retries reconnect.
        restartable.kill()
        restartable.start_later(0.3)
        started = time.monotonic()
        repo.put(meta("b"))
        assert time.monotonic() - started >= 0.2
        assert repo.get("b") == meta("b")
        assert retry_records(caplog)
        assert all(
            r.__dict__["retry_error"] == "BackendConnectionError" for r in retry_records(caplog)
        )
    finally:
        repo.close()


async def test_async_repository_survives_a_redis_restart(
    restartable: Restartable, caplog: pytest.LogCaptureFixture
) -> None:
    policy = RetryPolicy(attempts=50, deadline=5.0, backoff_base=0.02, backoff_max=0.1)
    repo = AsyncRedisDeviceMetadataRepository(
        async_client(restartable.port), close_client=True, retry=policy
    )
    try:
        await repo.put(meta("a"))
        restartable.kill()
        restartable.start()
        # The stale pooled connection fails ("closed by server"); the retry reconnects.
        assert await repo.exists("a") is False
        assert len(retry_records(caplog)) == 1
        restartable.kill()
        restartable.start_later(0.3)
        started = time.monotonic()
        await repo.put(meta("b"))
        assert time.monotonic() - started >= 0.2
        assert await repo.get("b") == meta("b")
        assert len(retry_records(caplog)) > 1
    finally:
        await repo.close()


def pause(server: RedisServer, milliseconds: int) -> None:
    admin = sync_client(server.port)
    try:
        admin.client_pause(milliseconds, all=True)
    finally:
        admin.close()


# A paused server is hung for every client: with ALL, even CLIENT UNPAUSE from another
# connection waits for the pause to end (Redis 7.0), so the tests stop their own server instead.


def test_sync_hung_redis_fails_with_a_timeout_within_the_deadline(
    fresh_server: Callable[..., RedisServer],
) -> None:
    server = fresh_server()
    policy = RetryPolicy(deadline=1.0)
    repo = RedisDeviceMetadataRepository(
        sync_client(server.port, timeout=0.3), close_client=True, retry=policy
    )
    try:
        assert repo.count() == 0  # a pooled connection, ready before the pause
        pause(server, 3000)
        started = time.monotonic()
        with pytest.raises(BackendTimeoutError):
            repo.get("a")
        assert time.monotonic() - started < 1.5
    finally:
        repo.close()


async def test_async_hung_redis_fails_with_a_timeout_within_the_deadline(
    fresh_server: Callable[..., RedisServer],
) -> None:
    server = fresh_server()
    policy = RetryPolicy(deadline=1.0)
    repo = AsyncRedisDeviceMetadataRepository(
        async_client(server.port, timeout=0.3), close_client=True, retry=policy
    )
    try:
        assert await repo.count() == 0
        pause(server, 3000)
        started = time.monotonic()
        with pytest.raises(BackendTimeoutError):
            await repo.get("a")
        assert time.monotonic() - started < 1.5
    finally:
        await repo.close()


@pytest.fixture(scope="module")
def busy_server(binary: str) -> Iterator[RedisServer]:
    # lua-time-limit: BUSY replies after 50 ms (busy-reply-threshold is its 7.0 name).
    server = RedisServer(binary, extra_args=("--lua-time-limit", "50"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


class BusyScript:
    """Runs an endless Lua script from a thread and kills it (SCRIPT KILL) when told."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.errors: list[BaseException] = []
        self.hog = threading.Thread(target=self._hog)
        self.killer: threading.Thread | None = None

    def _hog(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, retry=NO_RETRY)
        try:
            client.eval("while true do end", 0)
        except rex.ResponseError as exc:  # "Script killed by user with SCRIPT KILL..."
            if "SCRIPT KILL" not in str(exc):
                self.errors.append(exc)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            client.close()

    def start(self) -> None:
        """Start the script and wait until the server answers BUSY."""
        self.hog.start()
        probe = sync_client(self.port)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    probe.ping()
                except rex.ResponseError as exc:
                    if str(exc).startswith("BUSY"):
                        return
                    raise
                time.sleep(0.01)
            raise AssertionError("the server never answered BUSY")
        finally:
            probe.close()

    def kill_later(self, delay: float) -> None:
        def run() -> None:
            time.sleep(delay)
            client = sync_client(self.port)
            try:
                client.script_kill()
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                client.close()

        self.killer = threading.Thread(target=run)
        self.killer.start()

    def join(self) -> None:
        if self.killer is not None:
            self.killer.join()
        self.hog.join(timeout=5)
        assert not self.hog.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def busy(busy_server: RedisServer) -> Iterator[BusyScript]:
    script = BusyScript(busy_server.port)
    try:
        yield script
    finally:
        if script.hog.is_alive() and script.killer is None:
            script.kill_later(0)
        script.join()


def test_sync_busy_is_retried_until_the_script_is_killed(
    busy_server: RedisServer, busy: BusyScript, caplog: pytest.LogCaptureFixture
) -> None:
    key_strategy = KeyStrategy("busy-sync")
    policy = RetryPolicy(attempts=100, deadline=5.0, backoff_base=0.02, backoff_max=0.05)
    repo = RedisDeviceMetadataRepository(
        sync_client(busy_server.port), key_strategy=key_strategy, close_client=True, retry=policy
    )
    try:
        busy.start()
        busy.kill_later(0.3)
        started = time.monotonic()
        repo.put(meta("a"))
        assert time.monotonic() - started >= 0.2
        busy.join()
        assert repo.get("a") == meta("a")
        messages = [r.getMessage() for r in retry_records(caplog)]
        assert messages
        assert all("BUSY" in m for m in messages)
    finally:
        repo.close()


async def test_async_busy_is_retried_until_the_script_is_killed(
    busy_server: RedisServer, busy: BusyScript, caplog: pytest.LogCaptureFixture
) -> None:
    key_strategy = KeyStrategy("busy-async")
    policy = RetryPolicy(attempts=100, deadline=5.0, backoff_base=0.02, backoff_max=0.05)
    repo = AsyncRedisDeviceMetadataRepository(
        async_client(busy_server.port), key_strategy=key_strategy, close_client=True, retry=policy
    )
    try:
        busy.start()
        busy.kill_later(0.3)
        started = time.monotonic()
        assert await repo.exists("a") is False
        assert time.monotonic() - started >= 0.2
        await asyncio.to_thread(busy.join)
        messages = [r.getMessage() for r in retry_records(caplog)]
        assert messages
        assert all("BUSY" in m for m in messages)
    finally:
        await repo.close()


@pytest.fixture(scope="module")
def auth_server(binary: str) -> Iterator[RedisServer]:
    server = RedisServer(binary, extra_args=("--requirepass", SECRET))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("password", [None, "wrong-password"], ids=["none", "wrong"])
async def test_authentication_error_is_not_retried(
    flavour: Flavour,
    auth_server: RedisServer,
    password: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    connect: Any = async_client if flavour.is_async else sync_client
    repository: Any = (
        AsyncRedisDeviceMetadataRepository if flavour.is_async else RedisDeviceMetadataRepository
    )
    repo = repository(
        connect(auth_server.port, password=password),
        close_client=True,
        retry=RetryPolicy(attempts=5, backoff_base=0.2),
    )
    try:
        calls: list[Callable[[], Any]] = [lambda: repo.get("a"), lambda: repo.count()]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(AuthenticationError):
                await flavour.run(call())
            assert time.monotonic() - started < 0.5
        assert logger_records(caplog) == []
        assert SECRET not in caplog.text
    finally:
        await flavour.run(repo.close())


def test_health_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    repo = RedisDeviceMetadataRepository(
        sync_client(free_port()), close_client=True, retry=RetryPolicy(attempts=5)
    )
    try:
        started = time.monotonic()
        assert repo.health().status == "unhealthy"
        assert time.monotonic() - started < 0.5
        assert logger_records(caplog) == []
    finally:
        repo.close()


async def test_one_shot_iterators_survive_a_retry(
    restartable: Restartable,
) -> None:
    policy = RetryPolicy(attempts=50, deadline=5.0, backoff_base=0.02, backoff_max=0.1)
    repo = AsyncRedisDeviceMetadataRepository(
        async_client(restartable.port), close_client=True, retry=policy
    )
    try:
        restartable.kill()
        restartable.start_later(0.2)
        # Without a copy, the retry would find the generator spent and write nothing.
        assert await repo.put_many(meta(i) for i in ("a", "b")) == 2
        assert await repo.count() == 2
    finally:
        await repo.close()
