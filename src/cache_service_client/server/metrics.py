"""The gateway's Prometheus metrics, served at ``/metrics`` in the text exposition format.

Written here rather than taken from prometheus-client: three metric families need no
dependency, and the gateway keeps running with only the ``[server]`` extra. The event loop is
the only writer, so the counters need no lock.

- ``cache_service_gateway_requests_total`` (counter): requests answered, by ``method``,
  ``route`` (the route's template, e.g. ``/v1/devices/{device_id}``; ``unmatched`` for paths
  of no route) and ``status``.
- ``cache_service_gateway_request_duration_seconds`` (histogram): from the request's arrival
  to the end of its answer, by ``method`` and ``route``.
- ``cache_service_gateway_backend_errors_total`` (counter): requests that failed because of
  the backend (a :class:`~cache_service_client.BackendError` or a stored value that cannot be
  decoded), by ``error_type``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from time import perf_counter
from typing import Final

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BUCKETS", "CONTENT_TYPE", "GatewayMetrics"]

#: The media type of the text exposition format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: The latency histogram's upper bounds, in seconds.
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_PREFIX = "cache_service_gateway_"
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
_UNMATCHED = "unmatched"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{name}="{_label(value)}"' for name, value in pairs) + "}"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one: above every bound
        self.sum = 0.0


class GatewayMetrics:
    """The gateway's counters and latency histogram, and their text exposition."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str], int] = {}
        self._durations: dict[tuple[str, str], _Histogram] = {}
        self._backend_errors: dict[str, int] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        method = method if method in _METHODS else "other"
        key = (method, route, str(status))
        self._requests[key] = self._requests.get(key, 0) + 1
        histogram = self._durations.get((method, route))
        if histogram is None:
            histogram = self._durations[(method, route)] = _Histogram()
        histogram.counts[bisect_left(BUCKETS, seconds)] += 1
        histogram.sum += seconds

    def backend_error(self, error_type: str) -> None:
        """Count one request that failed because of the backend."""
        self._backend_errors[error_type] = self._backend_errors.get(error_type, 0) + 1

    def render(self) -> str:
        """The metrics in the text exposition format (version 0.0.4)."""
        lines = [
            f"# HELP {_PREFIX}requests_total Requests answered, by method, route and status.",
            f"# TYPE {_PREFIX}requests_total counter",
        ]
        for (method, route, status), count in sorted(self._requests.items()):
            labels = _labels([("method", method), ("route", route), ("status", status)])
            lines.append(f"{_PREFIX}requests_total{labels} {count}")
        name = f"{_PREFIX}request_duration_seconds"
        lines += [
            f"# HELP {name} Time from a request's arrival to the end of its answer, in seconds.",
            f"# TYPE {name} histogram",
        ]
        for (method, route), histogram in sorted(self._durations.items()):
            base = [("method", method), ("route", route)]
            cumulative = 0
            for bound, count in zip((*BUCKETS, math.inf), histogram.counts, strict=True):
                cumulative += count
                bucket = _labels([*base, ("le", _number(bound))])
                lines.append(f"{name}_bucket{bucket} {cumulative}")
            lines.append(f"{name}_sum{_labels(base)} {histogram.sum!r}")
            lines.append(f"{name}_count{_labels(base)} {cumulative}")
        lines += [
            f"# HELP {_PREFIX}backend_errors_total Requests failed by the backend, by error type.",
            f"# TYPE {_PREFIX}backend_errors_total counter",
        ]
        for error_type, count in sorted(self._backend_errors.items()):
            labels = _labels([("error_type", error_type)])
            lines.append(f"{_PREFIX}backend_errors_total{labels} {count}")
        return "\n".join(lines) + "\n"


class _MetricsMiddleware:
    """Pure ASGI middleware that counts every HTTP request, routed or not, authorised or not.

    Args:
        app: The application below (the gateway's authentication and routes).
        metrics: Where the requests are counted.
        routes: The gateway's routes, to name the route of a request that never reached its
            endpoint (refused for its token, or of no route).

    """

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics, routes: list[Route]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.templates = {route.endpoint: route.path for route in routes}

    def _route(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        template = self.templates.get(endpoint) if endpoint is not None else None
        if template is not None:
            return template
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return route.path
        return _UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``scope`` through the application below, counting an HTTP request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = self._route(scope).replace(":csc_device_id}", "}")
            self.metrics.observe(scope["method"], route, status, perf_counter() - started)
