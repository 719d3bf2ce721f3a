"""A fake clock, and the faults that :class:`FaultyRepository` and its async twin inject.

The wrappers themselves are in ``_faults_async.py`` (and, generated from it, ``_faults_sync.py``).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from cache_service_client.exceptions import BackendConnectionError, BackendError

__all__ = ["OPERATIONS", "FakeClock", "Faults"]

#: The repository operations a fault can be aimed at.
OPERATIONS = frozenset(
    {"get", "get_many", "get_many_detailed", "put", "put_many", "delete", "delete_many",
     "exists", "list_ids", "count", "query", "repair", "info", "health"}
)  # fmt: skip


class FakeClock:
    """A clock that moves only when told: ``clock()`` returns its time in seconds.

    Give it to the in-memory repository (``InMemoryDeviceMetadataRepository(clock=clock)``)
    to test expiry without sleeping: ``clock.advance(86400)`` and the TTL has passed.

    Args:
        start: The time it shows first, in seconds since the epoch (default: now).
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current fake time, in seconds since the epoch."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("a clock does not go back; use set() to jump")
        with self._lock:
            self._now += seconds

    def set(self, when: float | datetime) -> None:
        """Jump to ``when``: seconds since the epoch, or an aware datetime."""
        self._now = when.timestamp() if isinstance(when, datetime) else float(when)

    def now(self) -> datetime:
        """The current fake time as an aware UTC datetime."""
        return datetime.fromtimestamp(self._now, timezone.utc)


class Faults:
    """What a :class:`FaultyRepository` (or its async twin) does to the calls it passes on.

    Every setting holds until changed or :meth:`clear`-ed; the context managers undo theirs at
    the end of the block. Thread-safe; :attr:`calls` records every operation attempted.

    Attributes:
        calls: The operations called so far, in order (``["put", "get", ...]``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down = False
        self._latency: dict[str, float] = {}
        self._errors: dict[str, tuple[BackendError, int | None]] = {}
        self.calls: list[str] = []

    def clear(self) -> None:
        """End every fault: no outage, no latency, no errors (the call log stays)."""
        with self._lock:
            self._down = False
            self._latency.clear()
            self._errors.clear()

    def start_outage(self) -> None:
        """Take the backend down: every call raises a connection error, health is unhealthy.

        The error is :class:`~cache_service_client.BackendConnectionError`, as when the backend
        is unreachable.
        """
        self._down = True

    def end_outage(self) -> None:
        """The backend is back."""
        self._down = False

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The backend is down inside the block."""
        self.start_outage()
        try:
            yield
        finally:
            self.end_outage()

    def add_latency(self, seconds: float, operations: Iterable[str] | None = None) -> None:
        """Delay the given operations (all by default) by ``seconds`` each."""
        for name in self._names(operations):
            self._latency[name] = float(seconds)

    @contextmanager
    def latency(self, seconds: float, operations: Iterable[str] | None = None) -> Iterator[None]:
        """Delay calls inside the block (see :meth:`add_latency`)."""
        names = self._names(operations)
        self.add_latency(seconds, names)
        try:
            yield
        finally:
            for name in names:
                self._latency.pop(name, None)

    def fail(
        self,
        operations: Iterable[str] | str,
        error: BackendError | None = None,
        *,
        times: int | None = None,
    ) -> None:
        """Make the given operations raise ``error`` (``times`` times, or until cleared).

        Args:
            operations: An operation name (``"put"``) or several.
            error: What to raise; default a
                :class:`~cache_service_client.BackendConnectionError`. Any
                :class:`~cache_service_client.BackendError` fits (timeouts, authentication).
            times: Fail this many calls, then pass again; None: every call.
        """
        names = self._names([operations] if isinstance(operations, str) else operations)
        chosen = error if error is not None else BackendConnectionError("injected failure")
        with self._lock:
            for name in names:
                self._errors[name] = (chosen, times)

    def _names(self, operations: Iterable[str] | None) -> list[str]:
        names = sorted(OPERATIONS) if operations is None else list(operations)
        unknown = [name for name in names if name not in OPERATIONS]
        if unknown:
            raise ValueError(f"unknown operations {unknown}; choose from {sorted(OPERATIONS)}")
        return names

    def before(self, operation: str) -> float:
        """Record a call; raise its fault, if any; return the delay to apply first."""
        with self._lock:
            self.calls.append(operation)
            delay = self._latency.get(operation, 0.0)
            if self._down:
                raise BackendConnectionError(f"injected outage ({operation})")
            planned = self._errors.get(operation)
            if planned is not None:
                error, left = planned
                if left is not None:
                    if left <= 1:
                        del self._errors[operation]
                    else:
                        self._errors[operation] = (error, left - 1)
                raise copy.copy(error)  # a fresh one each time: no traceback piles up
        return delay
