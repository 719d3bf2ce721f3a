"""The OpenTelemetry API, when the ``[otel]`` extra installed it: names and shared instruments.

Imported by :mod:`cache_service_client.retry` and :mod:`cache_service_client.telemetry`; it
imports nothing of the library, and nothing of OpenTelemetry but its API. Without
opentelemetry-api, :data:`AVAILABLE` is False and :func:`record_retry` does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from cache_service_client._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Meter, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where the [otel] extra is not installed
    AVAILABLE = False

__all__ = [
    "AVAILABLE",
    "DURATION_BUCKETS",
    "INSTRUMENTATION_NAME",
    "OPERATION_DURATION",
    "RETRIES",
    "SCHEMA_URL",
    "meter",
    "record_retry",
    "tracer",
]

#: The instrumentation scope of every span and metric of the library.
INSTRUMENTATION_NAME: Final = "cache_service_client"
#: The semantic conventions the attribute names follow.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.33.0"
#: The duration histogram of repository operations (semantic conventions, in seconds).
OPERATION_DURATION: Final = "db.client.operation.duration"
#: The retry counter (one per retried attempt of a repository operation).
RETRIES: Final = "cache_service_client.retries"
#: The histogram's buckets, in seconds, as the conventions advise for database operations.
DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

_retries: Counter | None = None


def tracer(tracer_provider: TracerProvider | None = None) -> Tracer:
    """The library's tracer from ``tracer_provider`` (None: the global one, as a proxy).

    A tracer taken from the global provider before the application configures one follows the
    configured provider from then on, so it can be taken once, at construction.
    """
    return otel_trace.get_tracer(
        INSTRUMENTATION_NAME, __version__, tracer_provider, schema_url=SCHEMA_URL
    )


def meter(meter_provider: MeterProvider | None = None) -> Meter:
    """The library's meter from ``meter_provider`` (None: the global one, as a proxy)."""
    return otel_metrics.get_meter(
        INSTRUMENTATION_NAME, __version__, meter_provider, schema_url=SCHEMA_URL
    )


def record_retry(operation: str, error: BaseException) -> None:
    """Count one retry of ``operation`` after ``error`` on the global meter (no-op without it).

    Called from the retry layer's backoff hook, so only on the failure path.
    """
    global _retries
    if not AVAILABLE:  # pragma: no cover - without the [otel] extra
        return
    if _retries is None:
        _retries = meter().create_counter(
            RETRIES, unit="{retry}", description="Retried attempts of repository operations."
        )
    _retries.add(1, {"db.operation.name": operation, "error.type": type(error).__qualname__})
