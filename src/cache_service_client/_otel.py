"""The OpenTelemetry API, when the ``[otel]`` extra installed it: names and shared instruments.

Imported by :mod:`cache_service_client.retry` and :mod:`cache_service_client.telemetry`; it
imports nothing of the library, and nothing of OpenTelemetry but its API. Without
opentelemetry-api, :data:`AVAILABLE` is False and :func:`record_retry` does nothing.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Final

from cache_service_client._version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from opentelemetry.metrics import CallbackOptions, Counter, Meter, MeterProvider, Observation
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
    "NEAR_CACHE_COUNTERS",
    "OPERATION_DURATION",
    "RETRIES",
    "SCHEMA_URL",
    "meter",
    "observe_near_cache",
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

#: The near cache's counters (observed from its stats, never counted on the hot path):
#: metric name -> (NearCacheStats field, unit, description).
NEAR_CACHE_COUNTERS: Final = {
    "cache_service_client.near_cache.hits": ("hits", "{read}", "Reads served from the process."),
    "cache_service_client.near_cache.misses": ("misses", "{read}", "Reads that went to Redis."),
    "cache_service_client.near_cache.invalidations": (
        "invalidations",
        "{key}",
        "Keys Redis reported changed.",
    ),
    "cache_service_client.near_cache.evictions": (
        "evictions",
        "{entry}",
        "Entries dropped to stay within the size.",
    ),
    "cache_service_client.near_cache.flushes": (
        "flushes",
        "{flush}",
        "Times the whole near cache was dropped.",
    ),
}
#: The near cache's entries held now (a gauge).
NEAR_CACHE_ENTRIES: Final = "cache_service_client.near_cache.entries"

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


def observe_near_cache(
    cache: Any,
    attributes: dict[str, str | int],
    meter_provider: MeterProvider | None = None,
) -> None:
    """Report a near cache's counters and entries as observable instruments.

    The instruments read ``cache.stats()`` (a :class:`~cache_service_client.NearCacheStats`)
    when a metric reader collects, so a hit costs nothing more; they hold the cache weakly (a
    cache that is gone reports nothing). Each cache's series carry ``attributes`` (its server,
    and a number telling the caches of one process apart).
    """
    if not AVAILABLE:  # pragma: no cover - without the [otel] extra
        return
    library_meter = meter(meter_provider)
    held = weakref.ref(cache)

    def reading(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            alive = held()
            if alive is None:
                return []
            return [otel_metrics.Observation(getattr(alive.stats(), field), attributes)]

        return callback

    for name, (field, unit, description) in NEAR_CACHE_COUNTERS.items():
        library_meter.create_observable_counter(
            name, callbacks=[reading(field)], unit=unit, description=description
        )
    library_meter.create_observable_gauge(
        NEAR_CACHE_ENTRIES,
        callbacks=[reading("entries")],
        unit="{entry}",
        description="Entries the near cache holds.",
    )
