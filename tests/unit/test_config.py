"""Settings from every source, their precedence, their errors, and masked secrets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from cache_service_client import (
    CacheServiceClient,
    ConfigurationError,
    Settings,
    load_settings,
    settings_from_env,
    settings_from_file,
    settings_from_url,
)
from cache_service_client.config import mask_url

SECRET = "s3cr3t-pa55"


def test_defaults_match_the_plan() -> None:
    s = Settings()
    assert (s.host, s.port, s.password, s.db, s.socket_timeout, s.metadata_ttl) == (
        "localhost",
        6379,
        None,
        0,
        5.0,
        86400,
    )
    assert (s.use_http, s.http_url, s.http_timeout, s.http_auth_token) == (False, None, 10.0, None)
    assert s.backend == "redis"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:1234/3", {"host": "h", "port": 1234, "db": 3, "ssl": False}),
        ("redis://h", {"host": "h", "port": 6379, "db": 0}),
        (f"redis://:{SECRET}@h/0", {"password": SECRET, "username": None}),
        (f"redis://user:{SECRET}@h/0", {"password": SECRET, "username": "user"}),
        ("redis://u%40x:p%2Fw@h/0", {"password": "p/w", "username": "u@x"}),
        ("rediss://h:6380", {"ssl": True, "ssl_cert_reqs": "required", "port": 6380}),
        ("rediss://h?ssl_cert_reqs=none", {"ssl": True, "ssl_cert_reqs": "none"}),
        ("unix:///run/redis.sock?db=2", {"unix_socket_path": "/run/redis.sock", "db": 2}),
        ("memory://", {"backend": "memory"}),
        ("redis://[::1]:7000/1", {"host": "::1", "port": 7000, "db": 1}),
        (
            "redis://h/0?socket_timeout=0.5&metadata_ttl=60&key_prefix=meta&max_connections=7",
            {
                "socket_timeout": 0.5,
                "metadata_ttl": 60.0,
                "key_prefix": "meta",
                "max_connections": 7,
            },
        ),
    ],
)
def test_url_parts(url: str, expected: dict[str, Any]) -> None:
    settings = settings_from_url(url)
    for name, value in expected.items():
        assert getattr(settings, name) == value, name
    assert settings.url == url


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://h", "unsupported scheme 'ftp'"),
        ("redis://h/abc", "database 'abc' is not an integer"),
        ("redis://h:99999", "not a valid URL"),
        ("redis://h/0?socket_timeout=fast", "socket_timeout: 'fast' is not a number"),
        ("redis://h/0?bogus=1", "unknown or unsupported query option 'bogus'"),
        ("unix://", "needs a socket path"),
        ("redis://h/0?metadata_ttl=-5", "metadata_ttl: must be between 0"),
    ],
)
def test_bad_urls_name_the_problem(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match="URL") as caught:
        settings_from_url(url)
    assert fragment in str(caught.value)


def test_env_variables_one_per_setting() -> None:
    env = {
        "CACHE_SERVICE_HOST": "cache.internal",
        "CACHE_SERVICE_PORT": "6380",
        "CACHE_SERVICE_PASSWORD": SECRET,
        "CACHE_SERVICE_DB": "4",
        "CACHE_SERVICE_METADATA_TTL": "0",
        "CACHE_SERVICE_SSL": "yes",
        "CACHE_SERVICE_SOCKET_CONNECT_TIMEOUT": "",
        "CACHE_SERVICE_KEY_PREFIX": "meta",
        "UNRELATED": "x",
    }
    s = settings_from_env(environ=env)
    assert (s.host, s.port, s.password, s.db, s.metadata_ttl, s.ssl, s.key_prefix) == (
        "cache.internal",
        6380,
        SECRET,
        4,
        None,
        True,
        "meta",
    )
    assert s.socket_connect_timeout is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CACHE_SERVICE_PORT", "abc", "CACHE_SERVICE_PORT: 'abc' is not an integer"),
        ("CACHE_SERVICE_PORT", "0", "CACHE_SERVICE_PORT: must be between 1 and 65535, not 0"),
        ("CACHE_SERVICE_DB", "-1", "CACHE_SERVICE_DB: must be >= 0, not -1"),
        ("CACHE_SERVICE_SSL", "maybe", "CACHE_SERVICE_SSL: 'maybe' is not a boolean"),
        ("CACHE_SERVICE_SOCKET_TIMEOUT", "0", "CACHE_SERVICE_SOCKET_TIMEOUT: must be > 0"),
        (
            "CACHE_SERVICE_SOCKET_TIMEOUT",
            "nan",
            "CACHE_SERVICE_SOCKET_TIMEOUT: nan is not a finite",
        ),
        ("CACHE_SERVICE_CODEC", "xml", "CACHE_SERVICE_CODEC: 'xml' is not one of json, msgpack"),
        ("CACHE_SERVICE_URL", "ftp://x", "CACHE_SERVICE_URL ftp://x: unsupported scheme"),
        ("CACHE_SERVICE_BACKEND", "mongo", "CACHE_SERVICE_BACKEND: 'mongo' is not one of"),
    ],
)
def test_env_errors_name_variable_and_value(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings_from_env(environ={variable: value})
    assert message in str(caught.value)


def test_env_prefix_is_configurable() -> None:
    s = settings_from_env("APP_CACHE_", environ={"APP_CACHE_PORT": "7", "CACHE_SERVICE_PORT": "8"})
    assert s.port == 7


def test_toml_top_level_and_table(tmp_path: Path) -> None:
    top = tmp_path / "top.toml"
    top.write_text('host = "a"\nport = 1\n[other_tool]\nx = 1\n')
    assert (settings_from_file(top).host, settings_from_file(top).port) == ("a", 1)
    table = tmp_path / "table.toml"
    table.write_text('title = "app"\n[cache_service]\nhost = "b"\nmetadata_ttl = 30\nssl = true\n')
    s = settings_from_file(table)
    assert (s.host, s.metadata_ttl, s.ssl) == ("b", 30.0, True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('port = "abc"', "port: 'abc' is not an integer"),
        ("port = 1.5", "port: 1.5 is not an integer"),
        ("ssl = 1", "ssl: 1 is not a boolean"),
        ("colour = 1", "unknown setting 'colour'"),
        ("[cache_service]\nbogus = 1", "unknown setting 'bogus'"),
        ("port = ", "not valid TOML"),
        ("cache_service = 3", "[cache_service] must be a table"),
    ],
)
def test_toml_errors_name_file_and_setting(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigurationError) as caught:
        settings_from_file(path)
    assert f"file {path}" in str(caught.value)
    assert message in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        settings_from_file(tmp_path / "nope.toml")


def test_precedence_arguments_env_file_url(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[cache_service]\nurl = "redis://file-host:1/1"\nport = 2\ndb = 2\nkey_prefix = "file"\n'
    )
    env = {"CACHE_SERVICE_PORT": "3", "CACHE_SERVICE_KEY_PREFIX": "env"}
    s = load_settings(arguments={"key_prefix": "arg"}, env=env, file=path)
    assert s.host == "file-host"  # only the URL says it
    assert s.db == 2  # the file beats the URL
    assert s.port == 3  # env beats the file
    assert s.key_prefix == "arg"  # arguments beat everything
    env_url = {"CACHE_SERVICE_URL": "redis://env-host:9/5"}
    s = load_settings(env=env_url, file=path)
    assert (s.host, s.port, s.db) == ("env-host", 2, 2)  # file values still beat URL parts
    assert s.url == "redis://env-host:9/5"


def test_argument_errors_and_types() -> None:
    with pytest.raises(ConfigurationError, match="argument port: must be between 1 and 65535"):
        load_settings(arguments={"port": -1}, env=False)
    with pytest.raises(ConfigurationError, match="argument port: '6379' is not an integer"):
        load_settings(arguments={"port": "6379"}, env=False)
    with pytest.raises(ConfigurationError, match="argument persist_everything: unknown setting"):
        load_settings(arguments={"persist_everything": True}, env=False)
    with pytest.raises(ConfigurationError, match="use_http needs http_url"):
        load_settings(arguments={"use_http": True}, env=False)
    assert load_settings(arguments={"socket_timeout": 2}, env=False).socket_timeout == 2.0


def test_replace_validates() -> None:
    s = Settings()
    assert s.replace(metadata_ttl=5).metadata_ttl == 5
    with pytest.raises(ConfigurationError, match="configure\\(\\) socket_timeout: must be > 0"):
        s.replace("configure()", socket_timeout=0)


def test_secrets_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    s = settings_from_url(f"redis://admin:{SECRET}@h:1/0", http_auth_token=SECRET + "-token")
    for text in (repr(s), str(s), str(s.to_dict())):
        assert SECRET not in text
        assert "***" in text
    assert s.to_dict(masked=False)["password"] == SECRET
    with pytest.raises(ConfigurationError) as caught:
        settings_from_env(environ={"CACHE_SERVICE_PASSWORD": SECRET, "CACHE_SERVICE_PORT": "x"})
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        settings_from_url(f"redis://:{SECRET}@h/0?socket_timeout=bad")
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(arguments={"password": 12345}, env=False)
    assert "12345" not in str(caught.value)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").debug("settings %r", s)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        f"http://gw:8000/?http_auth_token={SECRET}",
        f"redis+sentinel://s:26379/mymaster?sentinel_password={SECRET}",
    ],
)
def test_secrets_in_url_query_options_are_never_shown(url: str) -> None:
    s = settings_from_url(url)
    assert SECRET in str(s.to_dict(masked=False))
    for text in (repr(s), str(s), str(s.to_dict())):
        assert SECRET not in text
        assert "=***" in text
    with pytest.raises(ConfigurationError) as caught:
        settings_from_url(f"{url}&socket_timeout=bad")
    assert SECRET not in str(caught.value)


def test_a_password_query_option_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigurationError, match="unsupported query option 'password'") as caught:
        settings_from_url(f"redis://h:1/0?password={SECRET}")
    assert SECRET not in str(caught.value)
    assert "password=***" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:pw@h/0", "redis://user:***@h/0"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("https://token@api.example/x?y=1", "https://***@api.example/x?y=1"),
        ("redis://user:pw@[::1]:7/0", "redis://user:***@[::1]:7/0"),
        (
            "http://gw:8/?http_auth_token=t0k&http_timeout=2",
            "http://gw:8/?http_auth_token=***&http_timeout=2",
        ),
        (
            "redis+sentinel://s:1/m?sentinel_password=pw",
            "redis+sentinel://s:1/m?sentinel_password=***",
        ),
        ("redis://:pw@h/0?db=1&password=pw&x", "redis://:***@h/0?db=1&password=***&x"),
        ("redis://h/0?pass%77ord=pw&password", "redis://h/0?pass%77ord=***&password"),
        ("redis://h/0?socket_timeout=1", "redis://h/0?socket_timeout=1"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_the_typed_keyword_sets_follow_the_settings() -> None:
    # The TypedDicts that type **options / **overrides must name every setting exactly once.
    from cache_service_client.config import ClientOptions, RuntimeSettings, Settings, SettingsFields

    fields = set(Settings.__struct_fields__)
    assert set(SettingsFields.__optional_keys__) == fields - {"url"}
    plan = {"host", "port", "password", "db", "socket_timeout", "metadata_ttl", "use_http"}
    plan |= {"http_url", "http_timeout", "http_auth_token", "url"}
    assert set(ClientOptions.__optional_keys__) == fields - plan
    assert set(RuntimeSettings.__optional_keys__) == {"metadata_ttl", "socket_timeout"}


def test_telemetry_setting_from_every_source(tmp_path: Path) -> None:
    assert Settings().telemetry is True
    assert settings_from_env(environ={"CACHE_SERVICE_TELEMETRY": "off"}).telemetry is False
    assert settings_from_url("redis://h/0?telemetry=false").telemetry is False
    file = tmp_path / "cache.toml"
    file.write_text("[cache_service]\ntelemetry = false\n", encoding="utf-8")
    assert settings_from_file(file).telemetry is False
    with pytest.raises(
        ConfigurationError, match="CACHE_SERVICE_TELEMETRY: 'maybe' is not a boolean"
    ):
        settings_from_env(environ={"CACHE_SERVICE_TELEMETRY": "maybe"})


@pytest.mark.parametrize(
    ("make", "source"),
    [
        (lambda: CacheServiceClient(key_prefix="a\ud800"), "argument key_prefix"),
        (
            lambda: CacheServiceClient.from_url("memory://x").configure(metadata_ttl="\ud800"),  # type: ignore[arg-type]
            "configure() metadata_ttl",
        ),
        (
            lambda: load_settings(env={"CACHE_SERVICE_KEY_PREFIX": "\udcff"}),
            "CACHE_SERVICE_KEY_PREFIX",
        ),
    ],
)
def test_a_lone_surrogate_in_any_source_is_a_configuration_error(make: Any, source: str) -> None:
    with pytest.raises(ConfigurationError, match="not valid text") as caught:
        make()
    assert str(caught.value).startswith(f"{source}: ")
