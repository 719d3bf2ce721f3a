"""OpenTelemetry spans and metrics for every repository operation (the ``[otel]`` extra).

:class:`InstrumentedRepository` and :class:`AsyncInstrumentedRepository` wrap any repository:
each call of a protocol method becomes one span of kind CLIENT named after the method
(``get``, ``get_many``, ``put``, ``list_ids``, ``query``, ``health``, ...; followed by the
database or the server when known), with the database-client semantic conventions
(``db.system.name``, ``db.operation.name``, ``server.address``, ``server.port``,
``db.namespace``, ``db.operation.batch.size``, ``error.type``), and one measurement of the
``db.client.operation.duration`` histogram (seconds). A failed call also sets the span's
status to ERROR and records the exception on it. The retry layer counts retried attempts on
``cache_service_client.retries``.

The container (and so :class:`~cache_service_client.CacheServiceClient`) wraps every
repository it builds when opentelemetry-api is installed and the ``telemetry`` setting is on
(the default); see :func:`instrument_from_settings`. Without an SDK configured by the
application, spans and measurements are no-ops that cost well under a microsecond per call.
Without opentelemetry-api, nothing is wrapped and this module still imports; only building a
wrapper raises :class:`~cache_service_client.ConfigurationError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, Generic, ParamSpec, TypeVar
from urllib.parse import urlsplit

from cache_service_client import _otel
from cache_service_client.config import Settings
from cache_service_client.exceptions import ConfigurationError, DeviceNotFoundError
from cache_service_client.models import DeviceMetadata, HealthStatus
from cache_service_client.repository.base import (
    AsyncDeviceMetadataRepository,
    DeviceMetadataRepository,
)

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

if _otel.AVAILABLE:
    from opentelemetry import trace as _otel_trace_api
    from opentelemetry.metrics import _internal as _otel_metrics_api

    # Without a configured provider a span is a no-op that still costs about a microsecond to
    # start (the no-op tracer looks up the current context), more than the rest of the
    # instrumentation together, and a measurement is dropped by the API's proxy instrument;
    # so while the API's global providers are unset (and the wrapper was given none of its
    # own) a call starts no span, and with neither provider set it measures nothing either:
    # it is a plain call. The API keeps each provider in a module global; should a release
    # rename one, the wrappers take it as set: correct, only slower.
    _API_GLOBALS = _otel_trace_api.__dict__
    _METRICS_GLOBALS = _otel_metrics_api.__dict__
    from opentelemetry.context import attach as _attach
    from opentelemetry.context import detach as _detach
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    _CLIENT = SpanKind.CLIENT
    _ERROR = StatusCode.ERROR

__all__ = [
    "AVAILABLE",
    "DURATION_BUCKETS",
    "OPERATION_DURATION",
    "RETRIES",
    "AsyncInstrumentedRepository",
    "InstrumentedRepository",
    "instrument_from_settings",
]

#: Whether opentelemetry-api is installed (the ``[otel]`` extra).
AVAILABLE: Final = _otel.AVAILABLE
#: The name of the duration histogram of repository operations.
OPERATION_DURATION: Final = _otel.OPERATION_DURATION
#: The name of the retry counter.
RETRIES: Final = _otel.RETRIES
#: The duration histogram's bucket boundaries, in seconds (advice to the SDK).
DURATION_BUCKETS: Final = _otel.DURATION_BUCKETS

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R", DeviceMetadataRepository, AsyncDeviceMetadataRepository)

_OPERATIONS = (
    "get",
    "get_many",
    "get_many_detailed",
    "put",
    "put_many",
    "delete",
    "delete_many",
    "exists",
    "list_ids",
    "count",
    "query",
    "repair",
    "info",
    "health",
)
_BATCHES = frozenset({"get_many", "get_many_detailed", "put_many", "delete_many"})
# What a batch argument may not be (the repositories refuse these; they are not counted).
_NOT_BATCHES = (str, bytes, dict, DeviceMetadata)
# db.system.name of each backend: a well-known value for Redis, the library's own otherwise.
_SYSTEMS = {
    "redis": "redis",
    "cluster": "redis",
    "sentinel": "redis",
    "memory": "cache_service_client.memory",
    "http": "cache_service_client.gateway",
}


class _Operation:
    """The span name and attributes of one operation, computed once per wrapper."""

    __slots__ = ("batch", "health", "metric_attributes", "name", "span_attributes", "span_name")

    def __init__(self, name: str, target: str | None, base: Mapping[str, str | int]) -> None:
        self.name = name
        self.span_name = name if target is None else f"{name} {target}"
        self.batch = name in _BATCHES
        self.health = name == "health"
        self.metric_attributes: dict[str, str | int] = {**base, "db.operation.name": name}
        # db.system is the name older conventions (and back ends) know.
        self.span_attributes: dict[str, str | int] = {
            **self.metric_attributes,
            "db.system": str(base["db.system.name"]),
        }


def _quiet(wrapper: _Instrumented[Any]) -> bool:
    """Whether a call of ``wrapper`` reports nowhere: no provider given, none set globally."""
    return (
        wrapper._quiet
        and _API_GLOBALS.get("_TRACER_PROVIDER", True) is None
        and _METRICS_GLOBALS.get("_METER_PROVIDER", True) is None
    )


def _error_type(exc: BaseException) -> str | None:
    """``error.type`` of an exception; None for an answer that is no failure (not found)."""
    if isinstance(exc, DeviceNotFoundError):
        return None
    return type(exc).__qualname__


class _Instrumented(Generic[R]):
    """What both wrappers share: the operations' attributes, the instruments, forwarding."""

    __slots__ = ("_duration", "_ops", "_quiet", "_traced", "_tracer", "repository")

    def __init__(
        self,
        repository: R,
        *,
        system: str = "redis",
        server_address: str | None = None,
        server_port: int | None = None,
        namespace: str | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if not _otel.AVAILABLE:  # pragma: no cover - without the [otel] extra
            raise ConfigurationError(
                "telemetry needs the [otel] extra (opentelemetry-api is not installed): "
                "pip install 'cache-service-client[otel]'"
            )
        self.repository: R = repository
        base: dict[str, str | int] = {"db.system.name": system}
        target = None
        if namespace is not None:
            base["db.namespace"] = namespace
            target = namespace
        if server_address is not None:
            base["server.address"] = server_address
            if server_port is not None:
                base["server.port"] = server_port
            if target is None:
                target = (
                    server_address if server_port is None else f"{server_address}:{server_port}"
                )
        self._ops = {name: _Operation(name, target, base) for name in _OPERATIONS}
        self._tracer: Tracer = _otel.tracer(tracer_provider)
        self._traced = tracer_provider is not None
        self._quiet = tracer_provider is None and meter_provider is None
        self._duration: Histogram = _otel.meter(meter_provider).create_histogram(
            _otel.OPERATION_DURATION,
            unit="s",
            description="Duration of the library's repository operations.",
            explicit_bucket_boundaries_advisory=_otel.DURATION_BUCKETS,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.repository!r})"

    @property
    def attributes(self) -> dict[str, str | int]:
        """The attributes every span and measurement has (``db.system.name``, the server...)."""
        attributes = dict(self._ops["get"].metric_attributes)
        del attributes["db.operation.name"]
        return attributes

    def __getattr__(self, name: str) -> Any:
        # Everything else (key_strategy, retry, client, codec, ...) is the wrapped one's; not
        # the wrapper's own slots, which are unset only in a copy that skipped __init__.
        if name.startswith("__") or name in _Instrumented.__slots__:
            raise AttributeError(name)
        return getattr(self.repository, name)

    @property
    def ttl(self) -> float | None:
        """The wrapped repository's TTL in seconds (settable, when it has one)."""
        ttl: float | None = getattr(self.repository, "ttl")  # noqa: B009 - not in the protocol
        return ttl

    @ttl.setter
    def ttl(self, value: float | None) -> None:
        setattr(self.repository, "ttl", value)  # noqa: B010

    def _begin(
        self, name: str, args: tuple[Any, ...]
    ) -> tuple[_Operation, Span | None, tuple[Any, ...], Token[Context] | None]:
        """The operation of a call, and its span (made current) when spans are recorded.

        For a batch, the span counts the items (a one-shot iterator is read into a list,
        which the repository then reads again).
        """
        op = self._ops[name]
        if not self._traced and _API_GLOBALS.get("_TRACER_PROVIDER", True) is None:
            return op, None, args, None
        span = self._tracer.start_span(op.span_name, kind=_CLIENT, attributes=op.span_attributes)
        if op.batch and span.is_recording():
            items = args[0]
            if isinstance(items, Iterator):
                items = list(items)
                args = (items, *args[1:])
            if hasattr(items, "__len__") and not isinstance(items, _NOT_BATCHES):
                size = len(items)
                if size >= 2:  # the conventions call a batch of one no batch
                    span.set_attribute("db.operation.batch.size", size)
        # opentelemetry-api 1.30 annotates attach() as returning object; later, Token[Context]
        return op, span, args, _attach(set_span_in_context(span))  # type: ignore[return-value, unused-ignore]

    def _done(
        self,
        op: _Operation,
        span: Span | None,
        token: Token[Context] | None,
        started: float,
        result: object,
    ) -> None:
        """End a call that returned ``result`` (an unhealthy status counts as a failure)."""
        if span is None and not op.health:
            self._duration.record(perf_counter() - started, op.metric_attributes)
        else:
            self._end(op, span, token, started, _result_error(result) if op.health else None)

    def _end(
        self,
        op: _Operation,
        span: Span | None,
        token: Token[Context] | None,
        started: float,
        error_type: str | None,
        exc: BaseException | None = None,
    ) -> None:
        """Record the duration and end the span, as failed when ``error_type`` is set."""
        duration = perf_counter() - started
        if token is not None:
            _detach(token)
        if error_type is None:
            self._duration.record(duration, op.metric_attributes)
        else:
            self._duration.record(duration, {**op.metric_attributes, "error.type": error_type})
        if span is None:
            return
        if error_type is not None and span.is_recording():
            span.set_attribute("error.type", error_type)
            if exc is not None:
                span.record_exception(exc)
                message = f"{error_type}: {exc}"
            else:
                message = error_type
            span.set_status(Status(_ERROR, message))
        span.end()


def _result_error(result: object) -> str | None:
    """``error.type`` of a health check's answer: an unhealthy status is a failure."""
    if not isinstance(result, HealthStatus):
        return None
    if result.status != "unhealthy":
        return None
    error = result.details.get("error")
    return error if isinstance(error, str) and error else "unhealthy"


# The wrappers: the async one is written in _telemetry_async.py, the sync one is generated
# from it (scripts/unasync.py). Both use this module's helpers, so they come after them.
from cache_service_client._telemetry_async import AsyncInstrumentedRepository  # noqa: E402
from cache_service_client._telemetry_sync import InstrumentedRepository  # noqa: E402


def _target(settings: Settings) -> tuple[str, str | None, int | None, str | None]:
    """``db.system.name``, ``server.address``, ``server.port`` and ``db.namespace``."""
    system = _SYSTEMS[settings.backend]
    if settings.backend == "memory":
        return system, None, None, None
    if settings.backend == "http":
        parts = urlsplit(settings.http_url or "")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None and parts.scheme in ("http", "https"):
            port = 443 if parts.scheme == "https" else 80
        return system, parts.hostname, port, None
    namespace = None if settings.backend == "cluster" else str(settings.db)
    if settings.unix_socket_path is not None:
        return system, settings.unix_socket_path, None, namespace
    return system, settings.host, settings.port, namespace


def instrument_from_settings(repository: T, settings: Settings) -> T:
    """Wrap a repository the container built, as ``settings`` describe it.

    Returns ``repository`` itself when opentelemetry-api is not installed or the
    ``telemetry`` setting is off; otherwise an :class:`InstrumentedRepository` (or, for an
    async repository, an :class:`AsyncInstrumentedRepository`) with the backend's
    ``db.system.name``, the server's address and port, and the database number.
    """
    if not _otel.AVAILABLE or not settings.telemetry:
        return repository
    system, address, port, namespace = _target(settings)
    options: dict[str, Any] = {
        "system": system,
        "server_address": address,
        "server_port": port,
        "namespace": namespace,
    }
    if inspect.iscoroutinefunction(getattr(repository, "get", None)):
        wrapped: Any = AsyncInstrumentedRepository(repository, **options)  # type: ignore[arg-type]
    else:
        wrapped = InstrumentedRepository(repository, **options)  # type: ignore[arg-type]
    return wrapped  # type: ignore[no-any-return]
