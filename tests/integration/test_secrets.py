"""Every secret, from every source, stays out of everything a user or a log can see.

The secret settings (password, username + password, the gateway's token, the Sentinel password)
are given through every source (argument, environment, TOML file, URL userinfo, URL query). For
each, the test looks at repr and str of the client and its settings, the DEBUG log of creating it
and of a failing call, the failing call's exception (message, repr and formatted traceback, with
every chained cause), the health report, configuration errors, and the gateway's error bodies.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff

from cache_service_client import (
    AsyncRedisDeviceMetadataRepository,
    CacheServiceClient,
    CacheServiceError,
    ConfigurationError,
    RetryPolicy,
)
from tests.http_gateway import Gateway
from tests.redis_server import RedisServer, free_port, server_binary

SECRET = "Zq9-top-secret-Xv"
FAST: dict[str, Any] = {"socket_timeout": 0.3, "retry_attempts": 1, "http_timeout": 0.5}
ONE_ATTEMPT = RetryPolicy(attempts=1)
NO_RETRY = redis.asyncio.retry.Retry(NoBackoff(), 0)

# (name, backend settings besides the secret, the secret's setting)
SECRETS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("password", {"host": "127.0.0.1"}, {"password": SECRET}),
    ("username+password", {"host": "127.0.0.1"}, {"username": "svc", "password": SECRET}),
    ("http token", {"use_http": True}, {"http_auth_token": SECRET}),
    (
        "sentinel password",
        {"host": "127.0.0.1", "sentinel_service": "mymaster"},
        {"sentinel_password": SECRET},
    ),
]


def _url_for(name: str, port: int, source: str) -> str:
    """The same settings as one URL, the secret in its userinfo or in its query."""
    userinfo = source == "url-userinfo"
    if name == "password":
        return f"redis://:{SECRET}@127.0.0.1:{port}/0"
    if name == "username+password":
        return f"redis://svc:{SECRET}@127.0.0.1:{port}/0"
    if name == "http token":
        if userinfo:  # credentials in the gateway's URL (sent as HTTP basic auth)
            return f"http://{SECRET}@127.0.0.1:{port}/"
        return f"http://127.0.0.1:{port}/?http_auth_token={SECRET}"
    if userinfo:  # the master's password, next to the Sentinel address
        return f"redis+sentinel://:{SECRET}@127.0.0.1:{port}/mymaster"
    return f"redis+sentinel://127.0.0.1:{port}/mymaster?sentinel_password={SECRET}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else f'"{value}"'


def _build(source: str, name: str, tmp_path: Path) -> CacheServiceClient:
    """A client for a dead port with secret ``name`` given through ``source``."""
    _, backend, secret = next(s for s in SECRETS if s[0] == name)
    port = free_port()
    settings: dict[str, Any] = {**backend, **secret}
    if settings.get("use_http"):
        settings = {"http_url": f"http://127.0.0.1:{port}", **settings}
    else:
        settings["port"] = port
    if source == "argument":
        return CacheServiceClient(**settings, **FAST)
    if source == "env":
        environ = {f"CACHE_SERVICE_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                   for k, v in {**settings, **FAST}.items()}  # fmt: skip
        return CacheServiceClient.from_env(environ=environ)
    if source == "toml":
        path = tmp_path / "cache.toml"
        lines = [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
        path.write_text("[cache_service]\n" + "\n".join(lines) + "\n")
        return CacheServiceClient.from_file(path, **FAST)
    return CacheServiceClient.from_url(_url_for(name, port, source), **FAST)


def _shown(exc: BaseException) -> str:
    """Everything a log or a crash would print about ``exc``: message, repr, traceback."""
    return "\n".join(
        [
            str(exc),
            repr(exc),
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        ]
    )


SOURCES = ["argument", "env", "toml", "url-userinfo", "url-query"]


# A Redis password in a URL's query is refused (test_configuration_errors_never_show_a_secret).
CASES = [
    (name, source)
    for name, _, _ in SECRETS
    for source in SOURCES
    if not (source == "url-query" and "password" in name and name != "sentinel password")
]


@pytest.mark.parametrize(("name", "source"), CASES)
def test_a_secret_is_never_shown(
    source: str, name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="cache_service_client"):
        client = _build(source, name, tmp_path)
        seen = [repr(client), str(client), repr(client.settings), str(client.settings)]
        seen.append(str(client.settings.to_dict()))
        with pytest.raises(CacheServiceError) as caught:
            client.get_device_metadata_sync("dev-1")
        seen.append(_shown(caught.value))
        health = client.check_health_sync()
        seen += [health.message, str(health.details)]
        client.close()
    seen.append(caplog.text)
    assert caplog.records, "expected DEBUG records"
    for text in seen:
        assert SECRET not in text


BAD_SETTING: list[Callable[[], object]] = [
    lambda: CacheServiceClient(host="h", port=-1, password=SECRET),
    lambda: CacheServiceClient(http_auth_token=SECRET, use_http=True, http_url="ftp://x"),
    lambda: CacheServiceClient.from_url(f"redis://u:{SECRET}@h:1/0?socket_timeout=soon"),
    lambda: CacheServiceClient.from_url(f"redis://h:1/0?password={SECRET}"),
    lambda: CacheServiceClient.from_url(f"http://gw:1/?http_auth_token={SECRET}&colour=red"),
    lambda: CacheServiceClient.from_env(
        environ={"CACHE_SERVICE_PASSWORD": SECRET, "CACHE_SERVICE_DB": "first"}
    ),
    lambda: CacheServiceClient.from_env(
        environ={"CACHE_SERVICE_URL": f"redis://:{SECRET}@h:notaport/0"}
    ),
]


@pytest.mark.parametrize("make", BAD_SETTING)
def test_configuration_errors_never_show_a_secret(make: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make()
    assert SECRET not in _shown(caught.value)


def test_gateway_error_bodies_never_show_a_secret() -> None:
    # The gateway's own token, a wrong token sent to it, and the password of the Redis behind
    # it (unreachable, then refused) never appear in an answer.
    server = RedisServer(server_binary(), extra_args=("--requirepass", "the-real-one"))
    server.start()
    options: dict[str, Any] = {"password": SECRET, "socket_timeout": 0.3, "retry": NO_RETRY}
    behind = {
        "unreachable": redis.asyncio.Redis(port=free_port(), **options),
        "refused": redis.asyncio.Redis(port=server.port, **options),
    }
    try:
        with (
            Gateway(auth_token=SECRET) as gateway,
            httpx.Client(base_url=gateway.url, trust_env=False) as http,
        ):
            for headers in ({}, {"Authorization": f"Bearer {SECRET}x"}):
                answer = http.get("/v1/devices/dev-1", headers=headers)
                assert answer.status_code == 401
                assert SECRET not in answer.text
                assert SECRET not in str(answer.headers)
            for state, client in behind.items():
                repository = AsyncRedisDeviceMetadataRepository(client, retry=ONE_ATTEMPT)
                with gateway.serving(repository):
                    auth = {"Authorization": f"Bearer {SECRET}"}
                    for answer in (
                        http.get("/v1/devices/dev-1", headers=auth),
                        http.get("/health", headers=auth),
                        http.post("/v1/devices:query", json={}, headers=auth),
                    ):
                        assert answer.status_code >= 500, (state, answer.text)
                        assert SECRET not in answer.text, state
    finally:
        server.stop()
