"""The async repository wrapper that reports every call (the sync one is generated from it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, Concatenate

from cache_service_client.repository.base import AsyncDeviceMetadataRepository, _AsyncForwarding
from cache_service_client.telemetry import P, T, _error_type, _Instrumented, _quiet

__all__ = ["AsyncInstrumentedRepository"]


class AsyncInstrumentedRepository(_Instrumented[AsyncDeviceMetadataRepository], _AsyncForwarding):
    """An :class:`~cache_service_client.AsyncDeviceMetadataRepository` that reports every call.

    Each protocol method's call is a span (kind CLIENT) and a measurement of
    ``db.client.operation.duration``; see :mod:`cache_service_client.telemetry`. The span is
    current (the parent of spans started below it) from the call until it returns, in the
    calling task only. An ``unhealthy`` answer of ``health`` is reported as a failed operation
    (``error.type`` from its ``details["error"]``), though the call itself returns it as
    usual; ``close`` is not reported. Other attributes (``ttl``, ``key_strategy``,
    ``client``, ...) are the wrapped repository's.

    Args:
        repository: The repository to report on.
        system: ``db.system.name`` (``"redis"``).
        server_address: ``server.address``: the host (or Unix socket path); None: not set.
        server_port: ``server.port``; None: not set.
        namespace: ``db.namespace`` (a Redis database number, as text); None: not set.
        tracer_provider: Where spans go; None: the global provider (configured by the
            application at any time, before or after this wrapper is built).
        meter_provider: Where measurements go; None: the global provider.

    Attributes:
        repository: The wrapped repository.

    Raises:
        ConfigurationError: opentelemetry-api is not installed.
    """

    __slots__ = ()

    async def _forward(
        self,
        method: Callable[Concatenate[Any, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        call: Callable[..., Awaitable[T]] = getattr(self.repository, method.__name__)
        if _quiet(self):  # nothing is configured to receive spans or measurements
            return await call(*args, **kwargs)
        op, span, call_args, token = self._begin(method.__name__, args)
        started = perf_counter()
        try:
            result = await call(*call_args, **kwargs)
        except BaseException as exc:
            self._end(op, span, token, started, _error_type(exc), exc)
            raise
        self._done(op, span, token, started, result)
        return result

    async def close(self) -> None:
        """Close the wrapped repository (not reported)."""
        await self.repository.close()
