"""A write whose reply is lost: the server ran it, the connection dropped before the reply came.

The retry policy runs the write again. A conditional put (``if_newer=True``) then finds its own
update stored; it must still report it as written (``put`` True, ``put_many`` counting every
device once), or a consumer acting on "written" drops a real update. A proxy between the client
and a real ``redis-server`` forwards the script call, waits until the server's reply arrives
(the script ran), and drops the connection instead of passing the reply on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache_service_client import (
    AsyncDeviceMetadataRepository,
    AsyncInMemoryDeviceMetadataRepository,
    AsyncRedisDeviceMetadataRepository,
    DeviceMetadata,
    KeyStrategy,
    RedisDeviceMetadataRepository,
    RetryPolicy,
)
from cache_service_client._attempt import RETRY_ATTEMPT_HEADER
from cache_service_client.repository.http import (
    AsyncHttpDeviceMetadataRepository,
    HttpDeviceMetadataRepository,
)
from tests import backends
from tests.backends import PLAIN
from tests.delay_proxy import TcpProxy
from tests.http_gateway import Gateway
from tests.redis_server import RedisServer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
RETRY = RetryPolicy(attempts=3, backoff_base=0.01)


def meta(device_id: str, minutes: int = 0) -> DeviceMetadata:
    return backends.meta(device_id, **PLAIN, last_updated=NOW + timedelta(minutes=minutes))


class ReplyDropProxy(TcpProxy):
    """Forwards ``127.0.0.1:<port>`` to ``upstream_port``; once armed, loses one reply.

    After :meth:`arm`, the next chunk a client sends that ``starts`` (a script call: EVALSHA or
    EVAL) goes to the server; when the server's reply comes back (so the script ran) the proxy
    closes that client's connection without passing the reply on, unless the reply ``passes``
    (NOSCRIPT: the script did not run; its reply passes, the EVAL's is lost).
    :attr:`dropped` counts the lost replies.
    """

    def __init__(
        self,
        upstream_port: int,
        starts: Callable[[bytes], bool] = lambda chunk: b"EVAL" in chunk,
        passes: Callable[[bytes], bool] = lambda chunk: chunk.startswith(b"-NOSCRIPT"),
    ) -> None:
        super().__init__(upstream_port)
        self.dropped = 0
        self._armed = False
        self._starts, self._passes = starts, passes

    def arm(self) -> None:
        self._armed = True

    def _pipes(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> list[Coroutine[Any, Any, None]]:
        lose = asyncio.Event()  # set: the next reply on this connection is lost

        async def to_server() -> None:
            while chunk := await reader.read(65536):
                if self._armed and self._starts(chunk):
                    self._armed = False
                    lose.set()
                up_writer.write(chunk)
                await up_writer.drain()
            up_writer.close()

        async def to_client() -> None:
            while chunk := await up_reader.read(65536):
                if lose.is_set() and not self._passes(chunk):
                    self.dropped += 1
                    break
                writer.write(chunk)
                await writer.drain()
            writer.close()
            up_writer.close()

        return [to_server(), to_client()]


@pytest.fixture
def proxy(own_redis: RedisServer) -> Iterator[ReplyDropProxy]:
    with ReplyDropProxy(own_redis.port) as p:
        yield p


@pytest.fixture
def admin(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=own_redis.port)
    try:
        yield client
    finally:
        client.close()


BUCKETS = pytest.mark.parametrize("buckets", [1, 4], ids=["one-bucket", "four-buckets"])


def stored(admin: redis.Redis, keys: KeyStrategy, device_id: str) -> DeviceMetadata:
    return RedisDeviceMetadataRepository(admin, key_strategy=keys).get(device_id)


@BUCKETS
def test_a_conditional_put_whose_reply_was_lost_reports_its_write(
    proxy: ReplyDropProxy, admin: redis.Redis, buckets: int
) -> None:
    keys = KeyStrategy(buckets=buckets)
    client = redis.Redis(port=proxy.port, retry=Retry(NoBackoff(), 0))
    repo = RedisDeviceMetadataRepository(client, key_strategy=keys, retry=RETRY, close_client=True)
    try:
        repo.put_many([meta("a"), meta("b"), meta("c"), meta("d")])
        proxy.arm()
        assert repo.put(meta("a", minutes=1), if_newer=True) is True
        assert proxy.dropped == 1
        proxy.arm()
        batch = [meta(i, minutes=1) for i in ("b", "c", "d", "e")]
        assert repo.put_many(batch, if_newer=True) == 4
        assert proxy.dropped == 2
        # Without a lost reply, an update stored already is not written again.
        assert repo.put(meta("a", minutes=1), if_newer=True) is False
        assert repo.put_many(batch, if_newer=True) == 0
    finally:
        repo.close()
    for device_id in ("a", "b", "c", "d", "e"):
        assert stored(admin, keys, device_id) == meta(device_id, minutes=1)


@BUCKETS
async def test_an_async_conditional_put_whose_reply_was_lost_reports_its_write(
    proxy: ReplyDropProxy, admin: redis.Redis, buckets: int
) -> None:
    keys = KeyStrategy(buckets=buckets)
    client = redis.asyncio.Redis(port=proxy.port, retry=redis.asyncio.retry.Retry(NoBackoff(), 0))
    repo = AsyncRedisDeviceMetadataRepository(
        client, key_strategy=keys, retry=RETRY, close_client=True
    )
    try:
        await repo.put_many([meta("a"), meta("b"), meta("c"), meta("d")])
        proxy.arm()
        assert await repo.put(meta("a", minutes=1), if_newer=True) is True
        assert proxy.dropped == 1
        proxy.arm()
        batch = [meta(i, minutes=1) for i in ("b", "c", "d", "e")]
        assert await repo.put_many(batch, if_newer=True) == 4
        assert proxy.dropped == 2
        assert await repo.put(meta("a", minutes=1), if_newer=True) is False
    finally:
        await repo.close()
    for device_id in ("a", "b", "c", "d", "e"):
        assert stored(admin, keys, device_id) == meta(device_id, minutes=1)


def test_a_retried_put_still_refuses_an_older_update(
    proxy: ReplyDropProxy, admin: redis.Redis
) -> None:
    # The lost attempt wrote nothing (an older update): the retry finds a newer value, which is
    # not its own, and reports the update as not written.
    client = redis.Redis(port=proxy.port, retry=Retry(NoBackoff(), 0))
    repo = RedisDeviceMetadataRepository(client, retry=RETRY, close_client=True)
    try:
        repo.put(meta("a", minutes=5))
        proxy.arm()
        assert repo.put(meta("a", minutes=1), if_newer=True) is False
        assert proxy.dropped == 1
    finally:
        repo.close()
    assert stored(admin, KeyStrategy(), "a") == meta("a", minutes=5)


def answer_drop_proxy(gateway_port: int) -> ReplyDropProxy:
    """A proxy in front of the gateway that, once armed, loses the answer to one write request
    (PUT or POST): the gateway ran it, the client never hears."""
    return ReplyDropProxy(
        gateway_port,
        starts=lambda chunk: chunk.startswith((b"PUT ", b"POST ")),
        passes=lambda chunk: False,
    )


@pytest.mark.parametrize("behind", ["redis", "memory"])
def test_a_conditional_put_over_the_gateway_whose_answer_was_lost_reports_its_write(
    own_redis: RedisServer, admin: redis.Redis, behind: str
) -> None:
    # The answer lost is the gateway's: the HTTP repository sends the request again, marked as
    # a retry, and the gateway's repository counts its own stored update as written.
    with Gateway() as gateway:
        if behind == "redis":
            client = gateway.redis_client(f"redis://127.0.0.1:{own_redis.port}")
            target: AsyncDeviceMetadataRepository = AsyncRedisDeviceMetadataRepository(client)
        else:
            target = AsyncInMemoryDeviceMetadataRepository()
        with gateway.serving(target), answer_drop_proxy(gateway.port) as proxy:
            repo = HttpDeviceMetadataRepository(f"http://127.0.0.1:{proxy.port}", retry=RETRY)
            try:
                repo.put_many([meta("a"), meta("b"), meta("c")])
                proxy.arm()
                assert repo.put(meta("a", minutes=1), if_newer=True) is True
                assert proxy.dropped == 1
                proxy.arm()
                batch = [meta(i, minutes=1) for i in ("b", "c", "d")]
                assert repo.put_many(batch, if_newer=True) == 3
                assert proxy.dropped == 2
                # Without a lost answer, an update stored already is not written again.
                assert repo.put(meta("a", minutes=1), if_newer=True) is False
                assert repo.put_many(batch, if_newer=True) == 0
                # A retried older update is still refused.
                proxy.arm()
                assert repo.put(meta("a", minutes=-5), if_newer=True) is False
                assert proxy.dropped == 3
                for device_id in ("a", "b", "c", "d"):
                    assert repo.get(device_id) == meta(device_id, minutes=1)
            finally:
                repo.close()


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "-2", "2.0", "0x2", ""])
def test_a_malformed_retry_attempt_header_counts_as_none(value: str) -> None:
    # Anything but a plain small number: a first attempt (never a 5xx).
    with Gateway() as gateway:
        body = {"datatype_id": "t", "datatype_name": "t", "persist": False}
        body["last_updated"] = NOW.isoformat()
        headers = {RETRY_ATTEMPT_HEADER.encode(): value.encode("latin-1")}
        with httpx.Client(base_url=gateway.url) as http:
            first = http.put("/v1/devices/a?if_newer=true", json=body, headers=headers)
            again = http.put("/v1/devices/a?if_newer=true", json=body, headers=headers)
            retried = http.put(
                "/v1/devices/a?if_newer=true", json=body, headers={RETRY_ATTEMPT_HEADER: "2"}
            )
    assert (first.status_code, first.json()) == (200, {"stored": 1})
    assert (again.status_code, again.json()) == (200, {"stored": 0})  # a redelivery
    assert (retried.status_code, retried.json()) == (200, {"stored": 1})  # a retry


def test_a_gateway_in_front_of_another_passes_a_retry_on() -> None:
    # Gateway A serves an HTTP repository of gateway B: a retried request to A is a retried
    # request to B, so B counts the update it stored already as written.
    body = {"datatype_id": "t", "datatype_name": "t", "persist": False}
    body["last_updated"] = NOW.isoformat()
    with Gateway() as back, Gateway() as front:
        target = AsyncHttpDeviceMetadataRepository(back.url)
        with front.serving(target), httpx.Client(base_url=front.url) as http:
            assert http.put("/v1/devices/a?if_newer=true", json=body).json() == {"stored": 1}
            assert http.put("/v1/devices/a?if_newer=true", json=body).json() == {"stored": 0}
            retried = http.put(
                "/v1/devices/a?if_newer=true", json=body, headers={RETRY_ATTEMPT_HEADER: "2"}
            )
            assert retried.json() == {"stored": 1}
        front.run(target.close())
