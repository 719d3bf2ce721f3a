"""Whether the call being made repeats one whose outcome was lost (a retried request).

A conditional put (``if_newer=True``) that finds its own update stored reports it as written
only on a retried attempt: the attempt before, whose reply was lost, wrote it. Within one
process the retry policy knows which attempt retries (the Redis drivers pass ``retried=True``).
Across the HTTP gateway the lost reply is the gateway's answer: the HTTP repository marks a
retried request with the :data:`RETRY_ATTEMPT_HEADER` header, and the gateway runs it inside
:func:`retried_request`, which the repositories behind it consult through
:func:`is_retried_request`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["RETRY_ATTEMPT_HEADER", "is_retried_request", "retried_request"]

#: The header of an HTTP request that repeats one whose answer was lost: the attempt, from 2.
RETRY_ATTEMPT_HEADER = "Csc-Retry-Attempt"

_RETRIED: ContextVar[bool] = ContextVar("cache_service_client_retried_request", default=False)


@contextlib.contextmanager
def retried_request() -> Iterator[None]:
    """Run the calls inside as the retry of a request whose outcome was lost."""
    token = _RETRIED.set(True)
    try:
        yield
    finally:
        _RETRIED.reset(token)


def is_retried_request() -> bool:
    """Whether the calls being made retry a request whose outcome was lost."""
    return _RETRIED.get()
