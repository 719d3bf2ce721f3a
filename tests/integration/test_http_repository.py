"""The HTTP repositories (sync and async) against the gateway, over real loopback sockets.

The behaviours run against the gateway backed by memory and by the session's Redis; error
mapping and retries are also checked against scripted answers (``httpx.MockTransport``), and
redirects against a second local server.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from cache_service_client import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    CacheServiceError,
    ConfigurationError,
    DataCorruptionError,
    DeviceMetadata,
    DeviceNotFoundError,
    DeviceQuery,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    PartialWriteError,
    RepairReport,
    RetryPolicy,
    ValidationError,
)
from cache_service_client.repository.http import (
    AsyncHttpDeviceMetadataRepository,
    HttpDeviceMetadataRepository,
)
from cache_service_client.server import wire
from tests.backends import NOW, Backend, Flavour, meta
from tests.http_gateway import (  # noqa: F401 - http_backend is a fixture
    CONTRACT_TOKEN,
    HTTP_BACKENDS,
    Gateway,
    http_backend,
    http_repositories,
)
from tests.redis_server import free_port

FAST_RETRY = RetryPolicy(attempts=3, backoff_base=0.0, jitter=False)


@pytest.fixture(params=HTTP_BACKENDS)
async def backend(
    request: pytest.FixtureRequest, key_strategy: KeyStrategy
) -> AsyncIterator[Backend]:
    async with http_backend(request, request.param, key_strategy) as http:
        yield http


# -- behaviour through the gateway, memory and Redis behind it --------------------------------

ODD_IDS = [
    "a/b",
    "/lead",
    "trail/",
    "a//b",
    "q?x=1&y=2",
    "h#frag",
    "p%2Fq",
    "%",
    "%zz",
    "[x]",
    "*",
    ".",
    "..",
    "...",
    "./x",
    "a+b",
    "a;b=c",
    "back\\slash",
    "~tilde",
    "{tag}",
    "ünïcödé-中文-🙂",
    "x" * 256,
]


async def test_odd_ids_round_trip_as_one_path_segment(backend: Backend) -> None:
    repo = backend.repo
    for device_id in ODD_IDS:
        await repo.put(meta(device_id))
    for device_id in ODD_IDS:
        assert await repo.get(device_id) == meta(device_id)
        assert await repo.exists(device_id)
    assert await repo.list_ids() == sorted(ODD_IDS, key=lambda s: s.encode())
    assert set(await repo.get_many(ODD_IDS)) == set(ODD_IDS)
    for device_id in ODD_IDS:
        assert await repo.delete(device_id) is True
    assert await repo.count() == 0


async def test_missing_device(backend: Backend) -> None:
    with pytest.raises(DeviceNotFoundError) as caught:
        await backend.repo.get("a/nope")
    assert isinstance(caught.value, KeyError)
    assert caught.value.device_id == "a/nope"
    assert await backend.repo.exists("a/nope") is False
    assert await backend.repo.delete("a/nope") is False


async def test_batches(backend: Backend) -> None:
    repo = backend.repo
    items = [meta(f"dev/{i:03d}", additional_properties={"i": i}) for i in range(120)]
    assert await repo.put_many(items) == 120
    result = await repo.get_many_detailed(["z", "dev/005", "a", "dev/119", "dev/005"])
    assert result.found == {"dev/005": items[5], "dev/119": items[119]}
    assert result.missing == ["z", "a"]
    assert result.corrupted == {}
    assert await repo.put_many([meta("d", datatype_name="one"), meta("d", datatype_name="2")]) == 1
    assert (await repo.get("d")).datatype_name == "2"
    assert await repo.delete_many(["dev/000", "dev/001", "nope", "dev/000"]) == 2
    assert await repo.count() == 119
    assert await repo.put_many([]) == 0
    assert await repo.get_many([]) == {}
    assert await repo.delete_many([]) == 0


PATTERNS = [
    None,
    "*",
    "a+*",
    "* *",
    "*&*",
    "*=*",
    "*#*",
    "*%*",
    "*[?]*",
    "\\**",
    "ü*",
    "*/*",
    "[^a]*",
    "a?c",
    "",
]


async def test_list_ids_patterns_and_paging_match_the_in_memory_reference(
    backend: Backend,
) -> None:
    ids = ["a+b", "a b", "x&y", "k=v", "h#1", "p%q", "q?r", "*star", "ü1", "a/b", "abc", "zz"]
    ids += [f"dev-{i:02d}" for i in range(30)]
    reference = InMemoryDeviceMetadataRepository()
    # Ids cannot hold a space; the gateway must still carry a pattern with one.
    ids.remove("a b")
    reference.put_many([meta(i) for i in ids])
    await backend.repo.put_many([meta(i) for i in ids])
    for pattern in PATTERNS:
        for limit, offset in [(None, None), (5, 0), (5, 7), (0, 3), (100, 40), (None, 2)]:
            expected = reference.list_ids(pattern=pattern, limit=limit, offset=offset)
            got = await backend.repo.list_ids(pattern=pattern, limit=limit, offset=offset)
            assert got == expected, (pattern, limit, offset)


async def test_count_info_and_health(backend: Backend) -> None:
    items = [meta(f"d{i}", last_updated=NOW + timedelta(minutes=i)) for i in range(5)]
    await backend.repo.put_many(items)
    assert await backend.repo.count() == 5
    info = await backend.repo.info()
    assert info.total_devices == 5
    assert info.oldest_entry_timestamp == NOW.replace(microsecond=123000)
    assert info.newest_entry_timestamp == NOW.replace(microsecond=123000) + timedelta(minutes=4)
    assert info.backend in ("memory", "redis")
    health = await backend.repo.health()
    assert health.status == "healthy"
    assert health.latency_ms is not None
    assert health.details["gateway"].startswith("http://127.0.0.1:")
    assert "backend_latency_ms" in health.details


async def test_corrupted_values_name_the_key(backend: Backend) -> None:
    await backend.repo.put_many([meta("victim"), meta("fine")])
    backend.backdoor.set_raw("victim", b"not json")
    key = backend.keys.device_key("victim")
    with pytest.raises(DataCorruptionError) as caught:
        await backend.repo.get("victim")
    assert caught.value.key == key
    result = await backend.repo.get_many_detailed(["victim", "fine"])
    assert set(result.found) == {"fine"}
    assert result.corrupted["victim"].key == key
    assert await backend.repo.exists("victim")


async def test_query_pages_and_repair(backend: Backend) -> None:
    items = [
        meta(f"q/{i:02d}", datatype_id=("a", "b")[i % 2], last_updated=NOW + timedelta(seconds=i))
        for i in range(25)
    ]
    await backend.repo.put_many(items)
    query: DeviceQuery | None = DeviceQuery(datatype_id="a", sort="last_updated", limit=4)
    seen: list[str] = []
    while query is not None:
        page = await backend.repo.query(query)
        seen += [m.device_id for m in page.items]
        cursor = page.next_cursor
        query = None if cursor is None else msgspec.structs.replace(query, cursor=cursor)
    assert seen == [f"q/{i:02d}" for i in range(0, 25, 2)]
    first = await backend.repo.query(DeviceQuery(limit=3))
    assert first.items == items[:3]
    assert first.total == 25
    with pytest.raises(ValidationError) as caught:  # judged by the gateway
        await backend.repo.query(DeviceQuery(limit=3, cursor="garbage!"))
    assert caught.value.field == "cursor"
    with pytest.raises(ValidationError) as caught:  # judged here, before any request
        await backend.repo.query(DeviceQuery(updated_after=datetime(2026, 1, 1)))
    assert caught.value.field == "updated_after"
    report = await backend.repo.repair()
    assert isinstance(report, RepairReport)
    assert report.corrupted == []


async def test_client_ttl_is_sent_with_writes(backend: Backend) -> None:
    backend.repo.ttl = 0.25  # type: ignore[attr-defined]
    await backend.repo.put_many([meta("short-1"), meta("short-2")])
    await backend.repo.put(meta("short-3"))
    backend.repo.ttl = None  # type: ignore[attr-defined]
    await backend.repo.put(meta("forever"))
    assert await backend.repo.count() == 4
    await asyncio.sleep(0.4)
    assert await backend.repo.list_ids() == ["forever"]


# -- validation happens before any request ---------------------------------------------------


@pytest.fixture
def nowhere() -> Iterator[HttpDeviceMetadataRepository]:
    """A repository pointing at a closed port: any request would fail with a connection error."""
    repo = HttpDeviceMetadataRepository(
        f"http://127.0.0.1:{free_port()}", retry=RetryPolicy.disabled(), trust_env=False
    )
    try:
        yield repo
    finally:
        repo.close()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda r: r.get(""), "device_id"),
        (lambda r: r.get("a b"), "device_id"),
        (lambda r: r.get(123), "device_id"),
        (lambda r: r.exists("lone\ud800"), "device_id"),
        (lambda r: r.delete("x" * 257), "device_id"),
        (lambda r: r.put(meta("d", persist=1)), "persist"),
        (lambda r: r.put(meta("d", additional_properties={"x": float("nan")})), "x"),
        (lambda r: r.put({"device_id": "d"}), "metadata"),
        (lambda r: r.put_many([meta("ok"), meta("bad", last_updated=datetime(2026, 1, 1))]), "[1]"),
        (lambda r: r.get_many("single-string"), "device_ids"),
        (lambda r: r.delete_many(["ok", "a b"]), "device_ids[1]"),
        (lambda r: r.list_ids(limit=-1), "limit"),
        (lambda r: r.list_ids(pattern=b"x*"), "pattern"),
        (lambda r: r.query(DeviceQuery(limit=0)), "limit"),
        (lambda r: r.query({"limit": 5}), "query"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    nowhere: HttpDeviceMetadataRepository,
    call: Callable[[HttpDeviceMetadataRepository], object],
    field: str,
) -> None:
    with pytest.raises(ValidationError) as caught:
        call(nowhere)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"base_url": "ftp://h"}, "http"),
        ({"base_url": "http://"}, "host"),
        ({"base_url": "http://h:99999"}, "valid"),
        ({"base_url": "http://h/?q=1"}, "query"),
        ({"base_url": 5}, "str"),
        ({"auth_token": "has space"}, "auth_token"),
        ({"auth_token": "tökén"}, "auth_token"),
        ({"auth_token": ""}, "auth_token"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"max_connections": 0}, "max_connections"),
    ],
)
def test_bad_configuration(arguments: dict[str, Any], message: str) -> None:
    arguments.setdefault("base_url", "http://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match=message):
        HttpDeviceMetadataRepository(**arguments)
    with pytest.raises(ConfigurationError, match=message):
        AsyncHttpDeviceMetadataRepository(**arguments)


def test_repr_masks_the_token_and_url_credentials() -> None:
    repo = HttpDeviceMetadataRepository(
        "http://user:url-secret@127.0.0.1:1/prefix/", auth_token="s3cr3t-token"
    )
    try:
        shown = repr(repo)
        assert "s3cr3t-token" not in shown
        assert "url-secret" not in shown
        assert "auth_token=***" in shown
        assert repo.base_url == "http://user:url-secret@127.0.0.1:1/prefix"
    finally:
        repo.close()


def test_ttl_setting() -> None:
    repo = HttpDeviceMetadataRepository("http://127.0.0.1:1")
    try:
        assert repo.ttl == "server"
        repo.ttl = 0
        assert repo.ttl is None
        repo.ttl = 60
        assert repo.ttl == 60.0
        with pytest.raises(ValidationError):
            repo.ttl = -1
        repo.ttl = "server"
        assert repo.ttl == "server"
    finally:
        repo.close()


# -- error mapping and retries, with scripted answers ---------------------------------------


class Script:
    """Answers requests from a list (the last answer repeats) and records them."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        # A fresh response each time: a response's stream is read once, and sync or async.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def error(status: int, code: str, message: str = "m", **extra: Any) -> httpx.Response:
    body = wire.ErrorBody(error=code, message=message, **extra)
    return httpx.Response(status, content=msgspec.json.encode(body), headers=JSON_HEADERS)


JSON_HEADERS = {"content-type": "application/json"}
GOOD = httpx.Response(200, content=msgspec.json.encode(meta("d")), headers=JSON_HEADERS)


def scripted_sync(script: Script) -> HttpDeviceMetadataRepository:
    client = httpx.Client(transport=httpx.MockTransport(script))
    return HttpDeviceMetadataRepository(
        "http://gateway.test", auth_token="tok", client=client, retry=FAST_RETRY
    )


def scripted_async(script: Script) -> AsyncHttpDeviceMetadataRepository:
    client = httpx.AsyncClient(transport=httpx.MockTransport(script))
    return AsyncHttpDeviceMetadataRepository(
        "http://gateway.test", auth_token="tok", client=client, retry=FAST_RETRY
    )


MAPPING: list[tuple[httpx.Response | Exception, type[Exception], int]] = [
    (error(401, "unauthorized"), AuthenticationError, 1),
    (error(403, "forbidden"), AuthenticationError, 1),
    (error(404, "device_not_found", device_id="d"), DeviceNotFoundError, 1),
    (error(404, "not_found"), BackendError, 1),
    (httpx.Response(404, text="<html>no</html>"), BackendError, 1),
    (error(422, "validation_error", "persist: bad", field="persist"), ValidationError, 1),
    (error(413, "payload_too_large"), ValidationError, 1),
    (error(500, "data_corruption", "not json", key="device:d"), DataCorruptionError, 1),
    (error(500, "internal_error"), BackendError, 1),
    (error(502, "backend_error"), BackendError, 1),
    (httpx.Response(502, text="bad gateway"), BackendConnectionError, 3),
    (error(503, "backend_unavailable"), BackendConnectionError, 3),
    (error(503, "backend_timeout"), BackendTimeoutError, 3),
    (httpx.Response(504), BackendTimeoutError, 3),
    (httpx.Response(429), BackendConnectionError, 3),
    (httpx.Response(307, headers={"location": "http://elsewhere.test/x"}), BackendError, 1),
    (httpx.Response(200, content=b"{not json", headers=JSON_HEADERS), DataCorruptionError, 1),
    (
        httpx.Response(200, content=msgspec.json.encode(meta("other")), headers=JSON_HEADERS),
        DataCorruptionError,
        1,
    ),
    (httpx.ConnectError("refused"), BackendConnectionError, 3),
    (httpx.RemoteProtocolError("server disconnected"), BackendConnectionError, 3),
    (httpx.ReadTimeout("slow"), BackendTimeoutError, 3),
    (httpx.PoolTimeout("busy"), BackendTimeoutError, 3),
]


def scripted(flavour: Flavour, script: Script) -> Any:
    """A repository of ``flavour`` answered by ``script``."""
    return scripted_async(script) if flavour.is_async else scripted_sync(script)


async def close_scripted(flavour: Flavour, repo: Any) -> None:
    """Close the httpx client of a scripted repository (the caller's client: not closed by it)."""
    await flavour.run(repo.client.aclose() if flavour.is_async else repo.client.close())


@pytest.mark.parametrize(("answer", "expected", "attempts"), MAPPING, ids=repr)
async def test_error_mapping(
    flavour: Flavour, answer: httpx.Response | Exception, expected: type[Exception], attempts: int
) -> None:
    script = Script(answer)
    repo = scripted(flavour, script)
    with pytest.raises(expected) as caught:
        await flavour.run(repo.get("d"))
    assert type(caught.value) is expected or expected is BackendError
    assert len(script.requests) == attempts
    if expected is DeviceNotFoundError:
        assert caught.value.device_id == "d"  # type: ignore[attr-defined]
    if expected is ValidationError:
        assert caught.value.field in ("persist", "metadata")  # type: ignore[attr-defined]
    if expected is DataCorruptionError and isinstance(answer, httpx.Response):
        expected_key = "device:d" if answer.status_code == 500 else "GET http://gateway.test"
        assert caught.value.key.startswith(expected_key)  # type: ignore[attr-defined]
    await close_scripted(flavour, repo)


def test_every_error_code_has_one_row_and_the_gateways_answers_come_back_as_raised() -> None:
    assert set(typing.get_args(wire.ErrorCode)) == set(wire.ERRORS)
    raised: list[CacheServiceError] = [
        ValidationError("persist", "must be a bool"),
        DeviceNotFoundError("d"),
        DataCorruptionError("device:d", "not json"),
        BackendTimeoutError("slow"),
        BackendConnectionError("down"),
        PartialWriteError(
            "put_many", done=["a"], failed=["b"], count=1, errors=[BackendError("OOM")]
        ),
        BackendError("failed"),
    ]
    for exc in raised:
        answer = wire.error_response(exc)
        assert answer is not None
        assert answer.status == wire.ERRORS[answer.body.error].status
        back = wire.exception_for(wire.ErrorAnswer(answer.status, answer.body, "GET x", "d"))
        assert type(back) is type(exc), (exc, back)
        assert str(back) == str(exc) or isinstance(exc, BackendError)
    # The backend refusing the gateway's credentials is no 401 for the caller.
    answer = wire.error_response(AuthenticationError("NOAUTH"))
    assert answer is not None
    assert answer.status == 502
    assert wire.error_response(RuntimeError("bug")) is None


def test_a_partial_write_comes_back_with_what_was_done_and_is_retried_when_it_may_succeed() -> None:
    said = {"done": ["a", "c"], "failed": ["b"], "count": 2}
    refused = error(502, "partial_write", "put_many: 1 of 3 ...", **said, retryable=False)
    script = Script(refused)
    repo = scripted_sync(script)
    with pytest.raises(PartialWriteError) as caught:
        repo.put_many([meta("a"), meta("b"), meta("c")])
    assert (caught.value.operation, caught.value.done, caught.value.failed) == (
        "put_many",
        ["a", "c"],
        ["b"],
    )
    assert caught.value.count == 2
    assert not caught.value.retryable
    assert len(script.requests) == 1  # not retried
    lost = error(502, "partial_write", "delete_many: 1 of 3 ...", **said, retryable=True)
    script = Script(lost, httpx.Response(200, content=b'{"deleted": 3}', headers=JSON_HEADERS))
    repo = scripted_sync(script)
    assert repo.delete_many(["a", "b", "c"]) == 3  # retried whole
    assert len(script.requests) == 2


def test_validation_error_keeps_the_gateways_field_and_message() -> None:
    script = Script(
        error(
            422, "validation_error", "items[3].persist: Expected `bool`", field="items[3].persist"
        )
    )
    repo = scripted_sync(script)
    with pytest.raises(ValidationError) as caught:
        repo.put_many([meta("a")])
    assert caught.value.field == "items[3].persist"
    assert str(caught.value) == "items[3].persist: Expected `bool`"


@pytest.mark.parametrize("dropped", [httpx.ConnectError("x"), httpx.ReadError("x")], ids=repr)
async def test_retry_then_success(flavour: Flavour, dropped: Exception) -> None:
    script = Script(error(503, "backend_unavailable"), dropped, GOOD)
    repo = scripted(flavour, script)
    assert await flavour.run(repo.get("d")) == meta("d")
    assert len(script.requests) == 3
    await close_scripted(flavour, repo)


def test_every_idempotent_call_is_retried_and_repair_is_not() -> None:
    calls: list[Callable[[HttpDeviceMetadataRepository], object]] = [
        lambda r: r.get("d"),
        lambda r: r.get_many(["d"]),
        lambda r: r.put(meta("d")),
        lambda r: r.put_many([meta("d")]),
        lambda r: r.delete("d"),
        lambda r: r.delete_many(["d"]),
        lambda r: r.exists("d"),
        lambda r: r.list_ids(),
        lambda r: r.count(),
        lambda r: r.info(),
        lambda r: r.query(DeviceQuery()),
    ]
    for call in calls:
        script = Script(error(503, "backend_unavailable"))
        with pytest.raises(BackendConnectionError):
            call(scripted_sync(script))
        assert len(script.requests) == 3
    script = Script(error(503, "backend_unavailable"))
    with pytest.raises(BackendConnectionError):
        scripted_sync(script).repair()
    assert len(script.requests) == 1


def test_requests_on_the_wire() -> None:
    script = Script(httpx.Response(204))
    repo = scripted_sync(script)
    repo.ttl = 1.5
    repo.put(meta("a/b?c#d%e[f]*ü"))
    request = script.requests[0]
    assert request.method == "PUT"
    assert request.url.raw_path == b"/v1/devices/a%2Fb%3Fc%23d%25e%5Bf%5D%2A%C3%BC?ttl=1.5"
    assert request.headers["authorization"] == "Bearer tok"
    assert request.headers["content-type"] == "application/json"
    assert msgspec.json.decode(request.content)["device_id"] == "a/b?c#d%e[f]*ü"
    for device_id, path in [(".", b"/v1/devices/%2E"), ("..", b"/v1/devices/%2E%2E")]:
        script.answers = [httpx.Response(200, headers={"x-device-exists": "true"})]
        assert repo.exists(device_id)
        assert script.requests[-1].url.raw_path == path
        assert script.requests[-1].method == "HEAD"


def test_head_without_the_gateways_marker_is_no_answer() -> None:
    repo = scripted_sync(Script(httpx.Response(404)))  # e.g. a wrong base URL
    with pytest.raises(BackendError):
        repo.exists("d")
    repo = scripted_sync(Script(httpx.Response(404, headers={"x-device-exists": "false"})))
    assert repo.exists("d") is False


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (error(401, "unauthorized"), "unhealthy"),
        (httpx.ConnectError("refused"), "unhealthy"),
        (httpx.Response(200, content=b"[]", headers=JSON_HEADERS), "unhealthy"),
        (httpx.Response(500), "unhealthy"),
    ],
    ids=repr,
)
def test_health_never_raises(answer: httpx.Response | Exception, status: str) -> None:
    script = Script(answer)
    health = scripted_sync(script).health()
    assert health.status == status
    assert len(script.requests) == 1  # never retried


# -- real sockets: auth, connection failures, redirects, pooling, secrets --------------------


@pytest.fixture
def open_gateway() -> Iterator[Gateway]:
    with Gateway(auth_token="right-token") as gateway:
        yield gateway


def test_wrong_or_missing_token(open_gateway: Gateway) -> None:
    for token in ("wrong-token", None):
        repo = HttpDeviceMetadataRepository(open_gateway.url, auth_token=token, trust_env=False)
        with pytest.raises(AuthenticationError):
            repo.get("d")
        with pytest.raises(AuthenticationError):
            repo.exists("d")
        assert repo.health().status == "unhealthy"
        repo.close()
    repo = HttpDeviceMetadataRepository(open_gateway.url, auth_token="right-token", trust_env=False)
    assert repo.health().status == "healthy"
    repo.close()


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    retry = RetryPolicy(attempts=2, backoff_base=0.0)
    sync_repo = HttpDeviceMetadataRepository(url, retry=retry, trust_env=False)
    async_repo = AsyncHttpDeviceMetadataRepository(url, retry=retry, trust_env=False)
    with pytest.raises(BackendConnectionError):
        sync_repo.get("d")
    with pytest.raises(BackendConnectionError):
        await async_repo.count()
    assert sync_repo.health().status == "unhealthy"
    assert (await async_repo.health()).status == "unhealthy"
    sync_repo.close()
    await async_repo.close()


class Recorder:
    """An ASGI app that records every request and answers as told."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.seen.append(
            {
                "path": scope["path"],
                "raw_path": scope.get("raw_path"),
                "headers": dict(scope["headers"]),
                "client": scope.get("client"),
            }
        )
        headers = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def redirecting() -> Iterator[tuple[Gateway, Recorder, Recorder]]:
    """A gateway that redirects every request to a second local server; and both recorders."""
    elsewhere = Recorder(200)
    with Gateway(app=elsewhere) as other:
        here = Recorder(307, {"location": f"{other.url}/v1/devices/d"})
        with Gateway(app=here) as gateway:
            yield gateway, here, elsewhere


def check_no_token_went_elsewhere(here: Recorder, elsewhere: Recorder, requests: int) -> None:
    assert len(here.seen) == requests
    assert all(s["headers"][b"authorization"] == b"Bearer home-token" for s in here.seen)
    assert elsewhere.seen == []


async def test_redirects_are_not_followed_and_the_token_stays_home(
    flavour: Flavour, redirecting: tuple[Gateway, Recorder, Recorder]
) -> None:
    gateway, here, elsewhere = redirecting
    here.seen.clear()
    repository: Any = (
        AsyncHttpDeviceMetadataRepository if flavour.is_async else HttpDeviceMetadataRepository
    )
    client: Any = httpx.AsyncClient if flavour.is_async else httpx.Client
    following = client(follow_redirects=True, trust_env=False)
    repos = [
        repository(gateway.url, auth_token="home-token", trust_env=False),
        # Even a client that would follow redirects does not, for the repository.
        repository(gateway.url, auth_token="home-token", client=following),
    ]
    for repo in repos:
        with pytest.raises(BackendError, match="redirect") as caught:
            await flavour.run(repo.get("d"))
        assert "home-token" not in str(caught.value)
        await flavour.run(repo.close())
    await flavour.run(following.aclose() if flavour.is_async else following.close())
    check_no_token_went_elsewhere(here, elsewhere, 2)


class ConnectionCounter:
    """ASGI middleware counting the distinct client connections (address, port)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.clients: set[Any] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.clients.add(tuple(scope["client"]))
        await self.app(scope, receive, send)


async def test_connections_are_pooled_and_kept_alive() -> None:
    from cache_service_client.server import create_app

    gateway = Gateway()
    counter = ConnectionCounter(create_app(gateway.switch))
    gateway.app = counter
    with gateway:
        sync_repo = HttpDeviceMetadataRepository(gateway.url, trust_env=False)
        for i in range(20):
            sync_repo.put(meta(f"d{i}"))
            sync_repo.get(f"d{i}")
        assert len(counter.clients) == 1
        sync_repo.close()
        counter.clients.clear()
        async_repo = AsyncHttpDeviceMetadataRepository(
            gateway.url, max_connections=4, trust_env=False
        )
        for _ in range(3):
            await asyncio.gather(*(async_repo.get(f"d{i}") for i in range(20)))
        assert 1 <= len(counter.clients) <= 4
        await async_repo.close()


async def test_cancelled_calls_leave_no_answer_behind(open_gateway: Gateway) -> None:
    async_repo, sync_repo = http_repositories(open_gateway, max_connections=8)
    ids = [f"dev-{i:02d}" for i in range(30)]
    sync_repo.put_many([meta(i, additional_properties={"n": i}) for i in ids])
    wanted = ids * 4
    tasks = [asyncio.ensure_future(async_repo.get(i)) for i in wanted]
    await asyncio.sleep(0)
    for task in tasks[::7]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for device_id, result in zip(wanted, results, strict=True):
        if not isinstance(result, asyncio.CancelledError):
            assert isinstance(result, DeviceMetadata)
            assert result.additional_properties["n"] == device_id
    got = await asyncio.gather(*(async_repo.get(i) for i in ids))
    assert [g.device_id for g in got] == ids
    sync_repo.close()
    await async_repo.close()


def test_the_token_never_shows(open_gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    token = "right-token"
    wrong = "wrong-but-secret-token"
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    good = HttpDeviceMetadataRepository(
        open_gateway.url, auth_token=token, retry=FAST_RETRY, trust_env=False
    )
    bad = HttpDeviceMetadataRepository(
        open_gateway.url, auth_token=wrong, retry=FAST_RETRY, trust_env=False
    )
    down = HttpDeviceMetadataRepository(
        f"http://127.0.0.1:{free_port()}", auth_token=token, retry=FAST_RETRY, trust_env=False
    )
    good.put(meta("d"))
    good.get("d")
    attempts: list[tuple[HttpDeviceMetadataRepository, Callable[[Any], object]]] = [
        (good, lambda r: r.get("missing")),
        (bad, lambda r: r.get("d")),
        (down, lambda r: r.get("d")),
        (good, lambda r: r.put(meta("d", persist=1))),
    ]
    for repo, call in attempts:
        with pytest.raises(CacheServiceError) as caught:
            call(repo)
        texts += [str(caught.value), repr(caught.value)]
        texts += traceback.format_exception(caught.value)
        texts.append(repr(repo.health()))
    texts += [repr(good), repr(bad), repr(down)]
    texts += [record.getMessage() for record in caplog.records]
    assert caplog.records  # httpx and the retry layer did log
    for text in texts:
        assert token not in text
        assert wrong not in text
    for repo in (good, bad, down):
        repo.close()


def test_injected_client_is_not_closed(open_gateway: Gateway) -> None:
    client = httpx.Client(trust_env=False)
    repo = HttpDeviceMetadataRepository(open_gateway.url, auth_token="right-token", client=client)
    assert repo.count() == 0
    repo.close()
    assert not client.is_closed
    client.close()
    owned = HttpDeviceMetadataRepository(open_gateway.url, auth_token="right-token")
    owned.close()
    assert owned.client.is_closed
