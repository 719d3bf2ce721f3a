"""Drivers: run HTTP flows with httpx, sync or async, and translate failures at one place.

The two drivers differ only by ``await``; what they run (the flows) is shared, and so are the
building of requests and the reading of answers (:class:`_Driver`). Each call is retried on its
own through the :class:`~cache_service_client.RetryPolicy` (connection failures, timeouts, 503),
unless its endpoint says it is not (a repair, the health check). An error answer or a transport
failure is raised into the flow at its ``yield``, which is how ``health()`` reports it instead.

Connections are pooled and kept alive, with a queue in front of the pool. Redirects are never
followed, so the bearer token only ever goes to the configured origin.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import ssl
import threading
from typing import Any, Generic, TypeVar, cast

import httpx

from cache_service_client._attempt import RETRY_ATTEMPT_HEADER, is_retried_request
from cache_service_client.config import check_http_url, mask_url
from cache_service_client.exceptions import (
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    CacheServiceError,
    ConfigurationError,
)
from cache_service_client.repository.http.ops import Call, Flow, Reply
from cache_service_client.rest import wire
from cache_service_client.retry import RetryPolicy

__all__ = ["AsyncHttpDriver", "SyncHttpDriver"]

T = TypeVar("T")
C = TypeVar("C", httpx.Client, httpx.AsyncClient)

_JSON = "application/json"
_ONCE = RetryPolicy.disabled()


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"argument {name}: must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"argument {name}: must be a finite number > 0, not {value!r}")
    return float(value)


def _limits(max_connections: int) -> httpx.Limits:
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise ConfigurationError("argument max_connections: must be an int")
    if max_connections < 1:
        raise ConfigurationError("argument max_connections: must be at least 1")
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


def _resume(
    flow: Flow[T], reply: Reply | None, error: Exception | None
) -> tuple[Call[Any] | None, T | None]:
    """Resume ``flow`` with a reply or an error: its next call, or no call and its result."""
    try:
        return (flow.send(reply) if error is None else flow.throw(error)), None  # type: ignore[arg-type]
    except StopIteration as stop:
        return None, stop.value


class _Driver(Generic[C]):
    """The gateway's address and credentials, one client, requests built and answers read.

    Args: those of the repositories (see
    :class:`~cache_service_client.repository.http.HttpDeviceMetadataRepository`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth_token: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        client: C | None,
        max_connections: int,
        verify: bool | ssl.SSLContext,
        trust_env: bool,
    ) -> None:
        self.base_url = check_http_url(base_url, "argument base_url")
        self.shown_url = mask_url(self.base_url)
        token = None if auth_token is None else wire.check_token(auth_token)
        self.timeout = _check_positive("timeout", timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        self.headers = {"Accept": _JSON}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self.has_token = token is not None
        limits = _limits(max_connections)
        # Loading the CA bundle takes some 30 ms; a plain http:// gateway never needs it (no
        # redirect is followed, so no request can go to an https:// address either).
        tls = verify if self.base_url.lower().startswith("https:") else False
        options = {"timeout": self.timeout, "limits": limits, "verify": tls, "trust_env": trust_env}
        self.owns_client = client is None
        self.client: C = self._open(client, max_connections, options)

    def _open(self, client: C | None, max_connections: int, options: dict[str, Any]) -> C:
        """The client to use (``client``, else a new one) and the queue in front of its pool."""
        raise NotImplementedError

    def _where(self, call: Call[Any]) -> str:
        return f"{call.endpoint.method} {self.shown_url}{call.path}"

    def _policy(self, call: Call[Any]) -> RetryPolicy:
        return self.retry if call.endpoint.retried else _ONCE

    def _request(self, call: Call[Any], attempt: int = 1) -> httpx.Request:
        """The request of ``call``; a retried ``attempt`` (2, 3, ...) says so in a header.

        The gateway then treats a write stored by the attempt whose answer was lost as this
        one's (see :data:`~cache_service_client._attempt.RETRY_ATTEMPT_HEADER`).
        """
        headers = self.headers
        if attempt == 1 and is_retried_request():  # a gateway in front retries its request
            attempt = 2
        if call.body is not None or attempt > 1:
            headers = {**headers}
            if call.body is not None:
                headers["Content-Type"] = _JSON
            if attempt > 1:
                headers[RETRY_ATTEMPT_HEADER] = str(attempt)
        return self.client.build_request(
            call.endpoint.method,
            self.base_url + call.path,
            params=call.params,
            content=call.body,
            headers=headers,
            timeout=self.timeout,
        )

    def _transport_error(self, exc: httpx.HTTPError, call: Call[Any]) -> CacheServiceError:
        where = self._where(call)
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeoutError(
                f"{where}: no answer from the gateway within {self.timeout:g} s "
                f"({type(exc).__name__})"
            )
        return BackendConnectionError(f"{where}: {type(exc).__name__}: {exc}")

    def _reply(self, call: Call[Any], response: httpx.Response) -> Reply:
        """The answer to ``call``; raises the error an error answer stands for."""
        endpoint = call.endpoint
        status = response.status_code
        reply = Reply(status, response.headers, response.content, self._where(call))
        if 200 <= status < 300 or status in endpoint.read_statuses:
            return reply
        if 300 <= status < 400:
            target = mask_url(response.headers.get("location", "?"))
            raise BackendError(
                f"{reply.where}: the gateway answered {status} with a redirect to {target!r}; "
                "redirects are not followed (set http_url to the final address)"
            )
        # A 404 device_not_found is about the call's device where the endpoint answers it.
        device_id = call.device_id if "device_not_found" in endpoint.errors else None
        raise reply.error(device_id, endpoint.argument)


class SyncHttpDriver(_Driver[httpx.Client]):
    """Runs flows with an ``httpx.Client``; calls beyond the pool wait, up to the timeout."""

    def _open(
        self, client: httpx.Client | None, max_connections: int, options: dict[str, Any]
    ) -> httpx.Client:
        self._slots = threading.BoundedSemaphore(max_connections)
        return client if client is not None else httpx.Client(**options)

    def run(self, flow: Flow[T]) -> T:
        """Run ``flow`` to completion: each of its calls answered, or its error raised in it."""
        call, result = _resume(flow, None, None)
        while call is not None:
            call, result = _resume(flow, *self._answer(call))
        return cast(T, result)

    def _answer(self, call: Call[Any]) -> tuple[Reply | None, Exception | None]:
        attempts = itertools.count(1)
        try:
            reply = self._policy(call).call(
                lambda: self._exchange(call, next(attempts)), operation=call.endpoint.name
            )
        except Exception as exc:
            return None, exc
        return reply, None

    def _exchange(self, call: Call[Any], attempt: int) -> Reply:
        request = self._request(call, attempt)
        if not self._slots.acquire(timeout=self.timeout):
            raise BackendTimeoutError(
                f"{self._where(call)}: no free connection within {self.timeout:g} s"
            )
        try:
            response = self.client.send(request, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, call) from exc
        finally:
            self._slots.release()
        return self._reply(call, response)

    def close(self) -> None:
        """Close the pooled connections (not those of a client passed in)."""
        if self.owns_client:
            self.client.close()


class AsyncHttpDriver(_Driver[httpx.AsyncClient]):
    """Runs flows with an ``httpx.AsyncClient``.

    A cancelled call closes its connection, so no answer is ever left for the next caller.
    """

    def _open(
        self, client: httpx.AsyncClient | None, max_connections: int, options: dict[str, Any]
    ) -> httpx.AsyncClient:
        # Bound to the event loop of its first use, like the client itself.
        self._slots = asyncio.Semaphore(max_connections)
        return client if client is not None else httpx.AsyncClient(**options)

    async def run(self, flow: Flow[T]) -> T:
        """Run ``flow`` to completion: each of its calls answered, or its error raised in it."""
        call, result = _resume(flow, None, None)
        while call is not None:
            call, result = _resume(flow, *await self._answer(call))
        return cast(T, result)

    async def _answer(self, call: Call[Any]) -> tuple[Reply | None, Exception | None]:
        attempts = itertools.count(1)
        try:
            reply = await self._policy(call).call_async(
                lambda: self._exchange(call, next(attempts)), operation=call.endpoint.name
            )
        except Exception as exc:
            return None, exc
        return reply, None

    async def _exchange(self, call: Call[Any], attempt: int) -> Reply:
        request = self._request(call, attempt)
        # No timeout on the queue in front of the pool: every call ahead is bounded by the
        # timeout (or cancelled), so the wait is too.
        async with self._slots:
            try:
                response = await self.client.send(request, follow_redirects=False)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, call) from exc
        return self._reply(call, response)

    async def close(self) -> None:
        """Close the pooled connections (not those of a client passed in)."""
        if self.owns_client:
            await self.client.aclose()
