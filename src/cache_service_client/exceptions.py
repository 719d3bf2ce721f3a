"""Exceptions raised by cache-service-client.

Every error the library raises on purpose derives from :class:`CacheServiceError`::

    CacheServiceError
     +-- ConfigurationError            bad settings; names the source (argument, env var, file, URL)
     +-- ValidationError (ValueError)  bad device id or metadata; names the field
     +-- DeviceNotFoundError (KeyError)
     +-- DataCorruptionError           a stored value cannot be decoded; names the key
     +-- AsyncUsageError (TypeError)   a sync method awaited; names the async one to await
     +-- BackendError
          +-- BackendConnectionError   the backend cannot be reached (retried)
          +-- BackendTimeoutError      the backend did not answer in time (retried)
          +-- AuthenticationError      credentials refused (not retried)
          +-- IndexLayoutError         the indexes are in another layout version (run repair)
          +-- PartialWriteError        a batch over several buckets was written in part

Driver exceptions (redis-py's) are translated at one boundary and chained, so ``__cause__`` holds
the original. Messages never contain passwords or tokens.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "AsyncUsageError",
    "AuthenticationError",
    "BackendConnectionError",
    "BackendError",
    "BackendTimeoutError",
    "CacheServiceError",
    "ConfigurationError",
    "DataCorruptionError",
    "DeviceNotFoundError",
    "IndexLayoutError",
    "PartialWriteError",
    "ValidationError",
]


class CacheServiceError(Exception):
    """Base class of every error raised by cache-service-client."""


class ConfigurationError(CacheServiceError):
    """A setting is invalid; the message names its source and the setting."""


class ValidationError(CacheServiceError, ValueError):
    """A device id or metadata is invalid; raised before anything is sent to the backend.

    Attributes:
        field: Dotted path of the offending field (``"device_id"``,
            ``"additional_properties.gain"``, ``"[3].persist"`` in a batch).

    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class DeviceNotFoundError(CacheServiceError, KeyError):
    """No metadata is stored for the device (never stored, deleted or expired).

    Attributes:
        device_id: The id that was looked up.

    """

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        super().__init__(device_id)

    def __str__(self) -> str:
        return f"device {self.device_id!r} not found"


class DataCorruptionError(CacheServiceError):
    """A stored value cannot be decoded into device metadata.

    Attributes:
        key: The backend key that holds the bad value.
        reason: What is wrong with it.

    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"corrupted value at key {key!r}: {reason}")


class AsyncUsageError(CacheServiceError, TypeError):
    """A sync method of the client was awaited, as if it were the async one.

    :meth:`~cache_service_client.CacheServiceClient.store_device_metadata` and
    :meth:`~cache_service_client.CacheServiceClient.close` are the original plan's sync methods,
    so ``await client.store_device_metadata(...)`` would write while blocking the event loop and
    then fail on the ``await``. Awaited, they raise this error instead, before any I/O; the
    message names the method to await (``store_device_metadata_async``, ``aclose``). Called
    without ``await`` they work anywhere, as before: in sync code, in threads, and (blocking the
    event loop) in a coroutine.

    Attributes:
        method: The sync method that was called.
        instead: The async method to await instead.

    """

    def __init__(self, method: str, instead: str) -> None:
        self.method = method
        self.instead = instead
        done, arguments, also = _ASYNC_USAGE.get(method, ("done", "...", ""))
        super().__init__(
            f"{method}() is a sync (blocking) method and was awaited: nothing "
            f"was {done}; await client.{instead}({arguments}) instead{also}"
        )


# method -> (what did not happen, the async call's arguments, a last remark)
_ASYNC_USAGE = {
    "store_device_metadata": ("written", "device_id, metadata", ""),
    "close": ("closed", "", ", which closes the sync connections too"),
}


class BackendError(CacheServiceError):
    """The backend failed to carry out an operation."""


class BackendConnectionError(BackendError):
    """The backend cannot be reached or the connection broke; safe to retry."""


class BackendTimeoutError(BackendError):
    """The backend did not answer in time; safe to retry."""


class AuthenticationError(BackendError):
    """The backend refused the credentials (or has none configured), or a permission; not retried.

    A permission the ACL denies reads ``permission denied (script 'put'): ...``, with the
    command and key the server names (Redis 7 names the key for the keys a script finds itself;
    for the keys it is given, the server says only that one of them is denied). The write it
    refused changed nothing.
    """


class IndexLayoutError(BackendError):
    """The cache's indexes are in an index layout version this library does not read.

    A cache indexed by an older release (layout 1) is rebuilt in the current layout by
    ``repair()`` (``devcache repair``), in place and while the cache is in use; until then every
    index read and write raises this error (plain reads of devices work). Not retried.
    """


class PartialWriteError(BackendError):
    """A batch write over several buckets was carried out in some of them and failed in others.

    A batch (``put_many``, ``delete_many``) whose devices live in several buckets (the nodes of
    a Redis Cluster, or the buckets of a :class:`~cache_service_client.KeyStrategy`, on one node
    too) runs one script per bucket. Before any of them writes, every bucket is asked whether it
    would refuse (an index key of the wrong type, a key the ACL denies or, on Redis 7 and
    Valkey, a command, a node already over maxmemory or with too few replicas, another index
    layout): such a refusal raises its own error and nothing is written. What fails only while
    writing (a node lost or failing over, a refusal that began in between, maxmemory reached by
    the batch's own earlier buckets, a command the ACL denies on Redis 6.2) fails its own
    buckets, and this error says what happened to each device; ``__cause__`` is the first
    bucket's error.

    Retried (by the :class:`~cache_service_client.RetryPolicy`, the whole batch again) when
    every failed bucket's error is: see :attr:`retryable`.

    Attributes:
        operation: ``"put_many"`` or ``"delete_many"``.
        done: The ids in the buckets that were carried out: each written (deleted), or left as
            it was by the write's own rule (not newer; not stored).
        failed: The ids in the buckets that failed. Where a bucket's error was a refusal,
            nothing of it changed; where it was a lost connection, a timeout or a permission
            denied (a :class:`BackendConnectionError`, :class:`BackendTimeoutError` or
            :class:`AuthenticationError` in :attr:`errors`, or no reply at all), its script may
            have run, in part: the outcome is unknown.
        count: What the carried-out buckets count (devices written, or deleted): the method's
            return value, had the batch been only ``done``.
        errors: The failed buckets' errors, in bucket order.

    """

    def __init__(
        self,
        operation: Literal["put_many", "delete_many"],
        *,
        done: list[str],
        failed: list[str],
        count: int,
        errors: list[BackendError],
    ) -> None:
        self.operation = operation
        self.done = done
        self.failed = failed
        self.count = count
        self.errors = errors
        first = str(errors[0]) if errors else "unknown error"
        lost = [outcome_unknown(e) for e in errors]
        if all(lost):
            outcome = "outcome unknown: they may have been written"
        elif any(lost):
            outcome = "not changed where refused, unknown where a connection was lost or a "
            outcome += "permission denied"
        else:
            outcome = "not changed"
        super().__init__(
            f"{operation}: {len(failed)} of {len(done) + len(failed)} devices failed ({outcome}); "
            f"the other {len(done)} were carried out ({count} counted); first error: {first}"
        )

    @property
    def retryable(self) -> bool:
        """Whether every failed bucket's error is one to retry (connection, timeout)."""
        return bool(self.errors) and all(isinstance(e, RETRYABLE_ERRORS) for e in self.errors)


#: The errors that say "try again later" (the :class:`~cache_service_client.RetryPolicy`
#: retries them).
RETRYABLE_ERRORS: tuple[type[BackendError], ...] = (BackendConnectionError, BackendTimeoutError)


def outcome_unknown(error: BaseException) -> bool:
    """Whether a write that failed with ``error`` may have been carried out all the same.

    So it may after a lost connection or a timeout (the script may have run), and after a
    permission denied once a batch's check pass passed (Redis 6.2 cannot ask the ACL about a
    command beforehand, and a script stops at the command denied, after the writes before it).
    """
    return isinstance(error, (*RETRYABLE_ERRORS, AuthenticationError))
