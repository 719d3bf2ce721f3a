"""OpenTelemetry spans and metrics of the repositories, read back with the SDK's in-memory
exporters; on the memory backend and a real Redis, sync and async, failures included.

The wrappers take their providers as arguments here, so nothing global is configured in the
test session; one test runs a child process with the global providers set, as an application
configures them, to check what the container and the retry layer report there.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cache_service_client import (
    AsyncInMemoryDeviceMetadataRepository,
    AsyncRedisDeviceMetadataRepository,
    BackendConnectionError,
    CacheServiceClient,
    DeviceNotFoundError,
    DeviceQuery,
    InMemoryDeviceMetadataRepository,
    KeyStrategy,
    RedisDeviceMetadataRepository,
    RetryPolicy,
    ValidationError,
    _otel,
    settings_from_url,
)
from cache_service_client import telemetry as telemetry_module
from cache_service_client.telemetry import (
    AsyncInstrumentedRepository,
    InstrumentedRepository,
    instrument_from_settings,
)
from tests.backends import meta
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class Otel:
    """An SDK tracer provider and meter provider whose data the test reads back."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def durations(self) -> list[HistogramDataPoint]:
        """The data points of ``db.client.operation.duration``."""
        points: list[HistogramDataPoint] = []
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "cache_service_client"
                for metric in scope.metrics:
                    assert metric.name == "db.client.operation.duration"
                    assert metric.unit == "s"
                    points.extend(metric.data.data_points)  # type: ignore[arg-type, unused-ignore]
        return points

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    sdk = Otel()
    try:
        yield sdk
    finally:
        sdk.close()


def by_operation(points: list[HistogramDataPoint]) -> dict[tuple[str, str | None], int]:
    """Measurement counts by (operation, error.type)."""
    counts: dict[tuple[str, str | None], int] = {}
    for point in points:
        attributes = dict(point.attributes or {})
        error = attributes.get("error.type")
        key = (str(attributes["db.operation.name"]), None if error is None else str(error))
        counts[key] = counts.get(key, 0) + point.count
    return counts


def test_every_memory_operation_is_a_client_span_and_a_measurement(otel: Otel) -> None:
    core = InMemoryDeviceMetadataRepository()
    repo = InstrumentedRepository(core, system="memory", **otel.providers())
    assert repo.attributes == {"db.system.name": "memory"}
    repo.put(meta("a"))
    assert repo.put_many([meta("b"), meta("c")], if_newer=True) == 2
    assert repo.get("a") == meta("a")
    assert set(repo.get_many(iter(["a", "b", "x"]))) == {"a", "b"}
    assert repo.get_many_detailed(["a"]).missing == []
    assert repo.exists("a")
    assert repo.list_ids(pattern="[ab]", limit=5) == ["a", "b"]
    assert repo.count() == 3
    assert len(repo.query(DeviceQuery(limit=2)).items) == 2
    assert repo.info().total_devices == 3
    assert repo.health().status == "healthy"
    assert repo.repair().orphans_removed == 0
    assert repo.delete("a")
    assert repo.delete_many(["b", "c"]) == 2
    names = [span.name for span in otel.spans()]
    assert names == [
        "put",
        "put_many",
        "get",
        "get_many",
        "get_many_detailed",
        "exists",
        "list_ids",
        "count",
        "query",
        "info",
        "health",
        "repair",
        "delete",
        "delete_many",
    ]
    for span in otel.spans():
        assert span.kind is SpanKind.CLIENT
        assert span.status.status_code is StatusCode.UNSET
        assert span.attributes is not None
        assert span.attributes["db.operation.name"] == span.name
        assert span.attributes["db.system.name"] == span.attributes["db.system"] == "memory"
        assert "server.address" not in span.attributes
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "cache_service_client"
    batches = {s.name: (s.attributes or {}).get("db.operation.batch.size") for s in otel.spans()}
    # A generator is counted (and still read whole); a batch of one is no batch.
    assert batches["put_many"] == 2
    assert batches["get_many"] == 3
    assert batches["delete_many"] == 2
    assert batches["get_many_detailed"] is None
    assert batches["get"] is None
    counts = by_operation(otel.durations())
    assert counts == {(name, None): 1 for name in names}
    (point,) = [p for p in otel.durations() if (p.attributes or {})["db.operation.name"] == "get"]
    assert tuple(point.explicit_bounds) == telemetry_module.DURATION_BUCKETS
    assert 0 < point.sum < 1


async def test_async_memory_operations_and_the_current_span(otel: Otel) -> None:
    inner = AsyncInstrumentedRepository(
        AsyncInMemoryDeviceMetadataRepository(), system="memory", **otel.providers()
    )
    # Wrapped twice: the inner call's span is a child of the outer one, so the span of a call
    # is current while it runs (spans that redis-py or httpx instrumentation start nest).
    outer = AsyncInstrumentedRepository(inner, system="outer", **otel.providers())
    await outer.put(meta("a"))
    assert await outer.get("a") == meta("a")
    with pytest.raises(DeviceNotFoundError):
        await outer.get("missing")
    inner_get, outer_get = otel.spans()[2:4]
    assert (inner_get.attributes or {})["db.system.name"] == "memory"
    assert inner_get.parent is not None
    assert outer_get.context is not None
    assert inner_get.parent.span_id == outer_get.context.span_id
    # Not found is an answer, not a failure.
    missing = otel.spans()[-1]
    assert missing.status.status_code is StatusCode.UNSET
    assert "error.type" not in (missing.attributes or {})
    assert outer.ttl == inner.ttl == 86400
    outer.ttl = 60
    assert getattr(inner.repository, "ttl") == 60  # noqa: B009
    await outer.close()


def test_validation_errors_are_error_spans(otel: Otel) -> None:
    repo = InstrumentedRepository(InMemoryDeviceMetadataRepository(), **otel.providers())
    with pytest.raises(ValidationError):
        repo.get("")
    with pytest.raises(ValidationError):
        repo.put_many("not a batch")  # type: ignore[arg-type]
    get, put_many = otel.spans()
    for span in (get, put_many):
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "ValidationError"
        assert span.status.description is not None
        assert span.status.description.startswith("ValidationError: ")
        (event,) = span.events
        assert event.name == "exception"
        assert str((event.attributes or {})["exception.type"]).endswith("ValidationError")
    assert "db.operation.batch.size" not in (put_many.attributes or {})
    assert by_operation(otel.durations()) == {
        ("get", "ValidationError"): 1,
        ("put_many", "ValidationError"): 1,
    }


def test_redis_operations_carry_the_server(
    otel: Otel, redis_url: str, redis_client: redis.Redis, key_strategy: KeyStrategy
) -> None:
    settings = settings_from_url(redis_url)
    base = RedisDeviceMetadataRepository(redis_client, key_strategy=key_strategy)
    repo = InstrumentedRepository(
        base,
        server_address=settings.host,
        server_port=settings.port,
        namespace=str(settings.db),
        **otel.providers(),
    )
    repo.put_many([meta("r1"), meta("r2"), meta("r3")])
    assert repo.get("r2") == meta("r2")
    assert repo.list_ids() == ["r1", "r2", "r3"]
    put_many, get, list_ids = otel.spans()
    assert get.name == f"get {settings.db}"
    assert dict(get.attributes or {}) == {
        "db.system.name": "redis",
        "db.system": "redis",
        "db.operation.name": "get",
        "db.namespace": str(settings.db),
        "server.address": settings.host,
        "server.port": settings.port,
    }
    assert (put_many.attributes or {})["db.operation.batch.size"] == 3
    assert list_ids.status.status_code is StatusCode.UNSET
    assert repo.key_strategy is key_strategy  # other attributes are the repository's
    with pytest.raises(AttributeError):
        _ = repo.no_such_attribute
    with pytest.raises(AttributeError):
        _ = object.__new__(InstrumentedRepository).repository  # no recursion on a bare copy
    assert by_operation(otel.durations()) == {
        ("put_many", None): 1,
        ("get", None): 1,
        ("list_ids", None): 1,
    }


async def test_an_unreachable_server_is_an_error_span(otel: Otel) -> None:
    port = free_port()
    client = redis.asyncio.Redis(port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    repo = AsyncInstrumentedRepository(
        AsyncRedisDeviceMetadataRepository(client, retry=RetryPolicy.disabled()),
        server_address="127.0.0.1",
        server_port=port,
        **otel.providers(),
    )
    with pytest.raises(BackendConnectionError):
        await repo.get("a")
    health = await repo.health()
    assert health.status == "unhealthy"
    await client.aclose()
    get, check = otel.spans()
    assert get.status.status_code is StatusCode.ERROR
    assert (get.attributes or {})["error.type"] == "BackendConnectionError"
    assert [event.name for event in get.events] == ["exception"]
    # health() never raises; an unhealthy answer is reported as a failed operation.
    assert check.status.status_code is StatusCode.ERROR
    assert (check.attributes or {})["error.type"] == health.details["error"]
    assert check.events == ()
    assert set(by_operation(otel.durations())) == {
        ("get", "BackendConnectionError"),
        ("health", health.details["error"]),
    }


def test_the_container_wraps_every_backend_unless_told_not_to(redis_url: str) -> None:
    memory = CacheServiceClient.from_url("memory://")
    assert isinstance(memory.repository, InstrumentedRepository)
    assert memory.repository.attributes == {"db.system.name": "cache_service_client.memory"}
    off = CacheServiceClient.from_url("memory://?telemetry=false")
    assert isinstance(off.repository, InMemoryDeviceMetadataRepository)
    settings = settings_from_url(redis_url)
    with CacheServiceClient.from_url(redis_url) as on_redis:
        repo = on_redis.repository
        assert isinstance(repo, InstrumentedRepository)
        assert isinstance(repo.repository, RedisDeviceMetadataRepository)
        assert repo.attributes == {
            "db.system.name": "redis",
            "db.namespace": str(settings.db),
            "server.address": settings.host,
            "server.port": settings.port,
        }


@pytest.mark.parametrize(
    ("url", "attributes"),
    [
        (
            "unix:///run/redis.sock?db=2",
            {"db.system.name": "redis", "db.namespace": "2", "server.address": "/run/redis.sock"},
        ),
        (
            "https://gateway.internal/",
            {
                "db.system.name": "cache_service_client.gateway",
                "server.address": "gateway.internal",
                "server.port": 443,
            },
        ),
        (
            "redis+cluster://node-1:7000",
            {"db.system.name": "redis", "server.address": "node-1", "server.port": 7000},
        ),
    ],
)
def test_the_attributes_come_from_the_settings(url: str, attributes: dict[str, Any]) -> None:
    wrapped = instrument_from_settings(InMemoryDeviceMetadataRepository(), settings_from_url(url))
    assert isinstance(wrapped, InstrumentedRepository)
    assert wrapped.attributes == attributes


async def test_async_repositories_of_the_container_are_wrapped(redis_url: str) -> None:
    async with CacheServiceClient.from_url(redis_url) as client:
        repo = await client.get_async_repository()
        assert isinstance(repo, AsyncInstrumentedRepository)
        assert isinstance(repo.repository, AsyncRedisDeviceMetadataRepository)
        assert (await client.check_health()).status == "healthy"


def test_without_the_api_nothing_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_otel, "AVAILABLE", False)
    repo = InMemoryDeviceMetadataRepository()
    assert instrument_from_settings(repo, settings_from_url("memory://")) is repo
    assert isinstance(CacheServiceClient.from_url("memory://").repository, type(repo))


def test_without_a_provider_calls_start_no_span() -> None:
    # Nothing configures the global providers in the test session: the wrapper's fast path.
    repo = InstrumentedRepository(InMemoryDeviceMetadataRepository())
    repo.put(meta("a"))
    assert repo.get("a") == meta("a")
    with pytest.raises(ValidationError):
        repo.get("")


def test_retries_reconnects_and_the_global_providers(redis_url: str, tmp_path: Path) -> None:
    # As an application does it: the global providers set at start, then a client. The retry
    # counter counts each retried attempt; the container's repositories report to the globals.
    script = textwrap.dedent(
        """
        import json, logging, sys
        from cache_service_client import CacheServiceClient

        early = CacheServiceClient.from_url("memory://")  # built before the providers are set
        early.count_devices_sync()  # reported nowhere

        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

        from cache_service_client import BackendConnectionError, CacheServiceClient

        early.count_devices_sync()  # reported: the providers are set now
        url, dead = sys.argv[1], sys.argv[2]
        with CacheServiceClient.from_url(url, key_prefix=sys.argv[3]) as client:
            client.store_device_metadata("a", {"datatype_id": "t", "datatype_name": "t",
                                               "datatype_unit": "C", "persist": True})
            client.get_device_metadata_sync("a")
        with CacheServiceClient.from_url(dead, retry_attempts=3, retry_backoff_base=0.001,
                                         retry_backoff_max=0.002) as client:
            try:
                client.count_devices_sync()
            except BackendConnectionError:
                pass
        out = {"spans": [[s.name, dict(s.attributes), s.status.status_code.name]
                         for s in exporter.get_finished_spans()], "metrics": {}}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out["metrics"][metric.name] = [
                        [dict(p.attributes), getattr(p, "value", None) or p.count]
                        for p in metric.data.data_points
                    ]
        print(json.dumps(out))
        """
    )
    dead = f"redis://127.0.0.1:{free_port()}/0"
    prefix = f"otel-{os.getpid()}"
    result = subprocess.run(
        [sys.executable, "-c", script, redis_url, dead, prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    out = json.loads(result.stdout)
    spans = out["spans"]
    assert [(name.split()[0], status) for name, _, status in spans] == [
        ("count", "UNSET"),
        ("put", "UNSET"),
        ("get", "UNSET"),
        ("count", "ERROR"),
    ]
    assert spans[0][1]["db.system.name"] == "cache_service_client.memory"
    assert spans[3][1]["error.type"] == "BackendConnectionError"
    assert spans[3][1]["server.address"] == "127.0.0.1"
    (retries,) = out["metrics"]["cache_service_client.retries"]
    assert retries == [{"db.operation.name": "count", "error.type": "BackendConnectionError"}, 2]
    durations = out["metrics"]["db.client.operation.duration"]
    operations = sorted(p[0]["db.operation.name"] for p in durations)
    assert operations == ["count", "count", "get", "put"]  # memory's and the dead server's
    redis.Redis.from_url(redis_url).delete(f"{prefix}:a")


def test_reconnects_are_logged_at_info_without_secrets(
    own_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-reconnect-pa55"
    admin = redis.Redis(port=own_redis.port)
    admin.config_set("requirepass", secret)
    caplog.set_level(logging.DEBUG, logger="cache_service_client")
    url = f"redis://:{secret}@127.0.0.1:{own_redis.port}/0"
    # A server that stops answering for 0.3 s: the first attempt times out (its connection
    # is dropped), the retry connects again and succeeds.
    with CacheServiceClient.from_url(
        url, socket_timeout=0.2, retry_backoff_base=0.001, retry_backoff_max=0.002
    ) as client:
        assert client.count_devices_sync() == 0
        admin.auth(secret)
        admin.client_pause(300)
        assert client.count_devices_sync() == 0
    admin.close()
    records = [r for r in caplog.records if r.name == "cache_service_client.retry"]
    assert {r.levelno for r in records} == {logging.INFO}
    retrying, recovered = records[0], records[-1]
    assert retrying.getMessage().startswith("count: attempt 1 of 3 failed with BackendTimeoutError")
    assert retrying.__dict__["retry_operation"] == "count"
    assert retrying.__dict__["retry_error"] == "BackendTimeoutError"
    assert recovered.getMessage().startswith("count: attempt ")
    assert recovered.getMessage().endswith(" of 3 succeeded after BackendTimeoutError")
    assert secret not in caplog.text
    for record in caplog.records:
        assert secret not in repr(record.__dict__)
