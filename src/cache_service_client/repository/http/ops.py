"""What an HTTP flow asks for (a :class:`Call` of an endpoint) and gets back (a :class:`Reply`)."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from cache_service_client.exceptions import CacheServiceError
from cache_service_client.rest import wire
from cache_service_client.rest.endpoints import Endpoint

__all__ = ["Call", "Flow", "Reply"]

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to the gateway: an endpoint, the device its path names, its query and body.

    Attributes:
        endpoint: The endpoint called.
        device_id: The device of its path, for an endpoint whose path names one.
        params: Query parameters.
        body: The JSON body.

    """

    endpoint: Endpoint[T]
    device_id: str | None = None
    params: dict[str, str] | None = None
    body: bytes | None = None

    @property
    def path(self) -> str:
        """The request's path (the device id percent-encoded)."""
        return self.endpoint.path_of(self.device_id)


class Reply(NamedTuple):
    """The gateway's answer to a :class:`Call`: a 2xx, or a status the endpoint reads itself.

    Attributes:
        status: The status code.
        headers: The headers (names in any case).
        content: The body.
        where: The request, as messages name it (``GET http://gateway/v1/...``).

    """

    status: int
    headers: Mapping[str, str]
    content: bytes
    where: str

    def error(self, device_id: str | None = None, argument: str = "metadata") -> CacheServiceError:
        """The exception this answer stands for, as an error answer (see the error table)."""
        body = wire.error_body(self.headers.get("content-type", ""), self.content)
        return wire.exception_for(
            wire.ErrorAnswer(self.status, body, self.where, device_id, argument)
        )


#: A flow: yields calls, receives their replies (or has their errors raised at the ``yield``),
#: returns the operation's result.
Flow = Generator[Call[Any], Reply, T]
