"""The one retry layer: :class:`RetryPolicy`, built on the ``backoff`` library.

Only errors that say "try again later" are retried:
:class:`~cache_service_client.BackendConnectionError` (connection refused or lost, ``LOADING``,
``BUSY``, ``READONLY`` during a failover, ``MASTERDOWN``, ``TRYAGAIN``, ...) and
:class:`~cache_service_client.BackendTimeoutError`, and a
:class:`~cache_service_client.PartialWriteError` whose failed buckets failed so (the batch
is written again whole: what its first attempt wrote is written again).
Authentication, validation, corruption, not-found and any other backend error (out of memory,
unknown command, ...) are raised at once.

The first attempt is a plain call; the ``backoff`` machinery only starts when it fails with a
retryable error, so a call that succeeds costs nothing more than a function call. Retries wait
with exponential backoff (``backoff_base * 2**n``, capped at ``backoff_max``), with full jitter
by default, and stop after ``attempts`` tries or when the ``deadline`` would be passed.

redis-py's own retry must be switched off on the clients this policy guards (the library's
container does so), otherwise the attempts of both layers multiply.

Every retry is a reconnection (the failed attempt's connection is dropped, the next attempt
opens a new one) and is logged at INFO on the ``cache_service_client.retry`` logger with the
operation, the attempt, the wait and the error (class and message; messages never contain
secrets, and call arguments are never logged); so is the outcome: the attempt that succeeded
after retries, or giving up. The records also carry ``retry_operation``, ``retry_attempt``,
``retry_attempts`` and ``retry_error`` attributes for structured logging (and ``retry_wait``
on a retry). With the ``[otel]`` extra, every retry also counts on the
``cache_service_client.retries`` counter (by ``db.operation.name`` and ``error.type``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, TypeVar, cast

import backoff
from backoff.types import Details

from cache_service_client._otel import record_retry
from cache_service_client.config import DEFAULTS
from cache_service_client.exceptions import (
    RETRYABLE_ERRORS,
    BackendTimeoutError,
    ConfigurationError,
    PartialWriteError,
)

__all__ = ["RetryPolicy"]

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("cache_service_client.retry")


class _Call:
    """The state of one retried call: its deadline and the error of the last attempt."""

    __slots__ = (
        "attempts",
        "deadline_at",
        "first_error",
        "last_error",
        "last_took",
        "operation",
        "tries",
    )

    def __init__(
        self,
        operation: str,
        attempts: int,
        deadline_at: float | None,
        first_error: Exception,
        first_took: float,
    ) -> None:
        self.operation = operation
        self.attempts = attempts
        self.deadline_at = deadline_at
        # The first attempt ran outside backoff; it is replayed as backoff's first try.
        self.first_error: Exception | None = first_error
        self.last_error: Exception = first_error
        # How long the last failed attempt took (sync calls: the next one is expected to take
        # as long, and is not started when it would end after the deadline).
        self.last_took = first_took
        self.tries = 1

    def next_attempt(self) -> None:
        """Count an attempt; the first time, raise the first attempt's error instead.

        Replaying it lets backoff count the first attempt as its own first try.

        Raises:
            _DeadlineReached: The deadline passed during the wait before this attempt (a sleep
                can overshoot the wait it was asked for): no attempt starts after it.

        """
        error, self.first_error = self.first_error, None
        if error is not None:
            raise error
        if self.deadline_at is not None and time.monotonic() >= self.deadline_at:
            raise _DeadlineReached
        self.tries += 1


class _DeadlineReached(Exception):
    """Ends backoff's loop when the deadline passed between attempts (never reaches a caller)."""


class RetryPolicy:
    """Retries transient backend failures with capped exponential backoff and jitter.

    A policy is immutable, cheap to share between repositories and threads, and compares equal
    to another policy with the same settings.

    Deadline: ``deadline`` bounds a whole call, all attempts and waits included. No wait is
    taken that would end after it, and no attempt starts after it (should a wait overshoot);
    either way the caller gets the error of the last attempt, unchanged. Only in
    :meth:`call_async` can the deadline also end an attempt in progress: a retry attempt still
    running when the deadline passes is cancelled, and the call raises
    :class:`~cache_service_client.BackendTimeoutError`, chained to the error of the attempt
    before it. A sync attempt cannot be interrupted (it ends when the client's socket timeout
    fires), so :meth:`call` starts no retry that, taking as long as the attempt before it,
    would end after the deadline: attempts that fail fast (connection refused) go on until the
    deadline, attempts that time out stop in time, and a sync call overruns the deadline only
    when an attempt takes longer than the one before it. The first attempt is a plain call,
    bounded by the socket timeout only (in both flavours), so that successful calls pay nothing
    for the policy.

    Args:
        attempts: Tries per call, the first included (1: no retry).
        deadline: Seconds a call may take in total, all attempts and waits included; None: no
            bound other than ``attempts``.
        backoff_base: Wait before the second attempt, in seconds; each later wait doubles.
        backoff_max: Cap of a single wait, in seconds.
        jitter: Wait a random time between 0 and the computed wait ("full jitter"), so that
            clients that failed together do not retry together.

    Raises:
        ConfigurationError: An argument is out of range.

    Example:
        >>> policy = RetryPolicy(attempts=5, deadline=2.0)
        >>> policy.call(lambda: 42, operation="answer")
        42

    """

    __slots__ = ("_attempts", "_backoff_base", "_backoff_max", "_deadline", "_jitter")

    def __init__(
        self,
        *,
        attempts: int = DEFAULTS.retry_attempts,
        deadline: float | None = DEFAULTS.retry_deadline,
        backoff_base: float = DEFAULTS.retry_backoff_base,
        backoff_max: float = DEFAULTS.retry_backoff_max,
        jitter: bool = True,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigurationError(
                f"argument attempts: must be an integer >= 1, not {attempts!r}"
            )
        if deadline is not None and not _is_number(deadline, positive=True):
            raise ConfigurationError(
                f"argument deadline: must be a finite number > 0 or None, not {deadline!r}"
            )
        if not _is_number(backoff_base):
            raise ConfigurationError(
                f"argument backoff_base: must be a finite number >= 0, not {backoff_base!r}"
            )
        if not _is_number(backoff_max):
            raise ConfigurationError(
                f"argument backoff_max: must be a finite number >= 0, not {backoff_max!r}"
            )
        self._attempts = attempts
        self._deadline = None if deadline is None else float(deadline)
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self._jitter = bool(jitter)

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """Return a policy that never retries (one attempt per call)."""
        return cls(attempts=1)

    @property
    def attempts(self) -> int:
        """Tries per call, the first included."""
        return self._attempts

    @property
    def deadline(self) -> float | None:
        """Seconds a call may take in total; None: unbounded."""
        return self._deadline

    @property
    def backoff_base(self) -> float:
        """Wait before the second attempt, in seconds (doubles for each later attempt)."""
        return self._backoff_base

    @property
    def backoff_max(self) -> float:
        """Cap of a single wait, in seconds."""
        return self._backoff_max

    @property
    def jitter(self) -> bool:
        """Whether waits are drawn at random between 0 and the computed wait."""
        return self._jitter

    def _key(self) -> tuple[int, float | None, float, float, bool]:
        return (self._attempts, self._deadline, self._backoff_base, self._backoff_max, self._jitter)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(attempts={self._attempts!r}, deadline={self._deadline!r}, "
            f"backoff_base={self._backoff_base!r}, backoff_max={self._backoff_max!r}, "
            f"jitter={self._jitter!r})"
        )

    def is_retryable(self, exc: BaseException) -> bool:
        """Return True if ``exc`` is worth another attempt.

        Args:
            exc: An error raised by an attempt.

        Returns:
            True for :class:`~cache_service_client.BackendConnectionError` and
            :class:`~cache_service_client.BackendTimeoutError`, and for a
            :class:`~cache_service_client.PartialWriteError` whose failures are all such;
            False for everything else.

        """
        if isinstance(exc, PartialWriteError):
            return exc.retryable
        return isinstance(exc, RETRYABLE_ERRORS)

    def call(self, fn: Callable[[], T], *, operation: str) -> T:
        """Call ``fn`` until it succeeds, fails for good, runs out of attempts or of time.

        Args:
            fn: Makes one attempt; called again for each retry, so it must start afresh.
            operation: Names the operation in log records (e.g. ``"get"``).

        Returns:
            What ``fn`` returned.

        Raises:
            Exception: The error of the last attempt, unchanged: a non-retryable error at once,
                a retryable one when attempts or time ran out.

        """
        started = time.monotonic() if self._deadline is not None else 0.0
        try:
            return fn()
        except Exception as exc:
            if self._attempts == 1 or not self.is_retryable(exc):
                raise
            state = self._start(operation, started, exc)

        def attempt() -> T:
            state.next_attempt()
            began = time.monotonic()
            try:
                return fn()
            except Exception:
                state.last_took = time.monotonic() - began
                raise

        try:
            result = self._retrying(state, attempt, predict=True)()
        except _DeadlineReached:
            pass
        else:
            _log_recovered(state)
            return result
        raise state.last_error  # outside the except block: its context stays its own

    async def call_async(self, fn: Callable[[], Awaitable[T]], *, operation: str) -> T:
        """Await ``fn()`` until it succeeds, fails for good, runs out of attempts or of time.

        Retry attempts are cancelled when the deadline passes (redis-py's asyncio connections
        disconnect on cancellation, so no reply is left behind for the next caller).

        Args:
            fn: Makes one attempt; called again for each retry, so it must start afresh.
            operation: Names the operation in log records (e.g. ``"get"``).

        Returns:
            What ``fn()`` returned.

        Raises:
            BackendTimeoutError: The deadline passed while a retry attempt was running; chained
                to the error of the attempt before it.
            Exception: Otherwise the error of the last attempt, unchanged: a non-retryable
                error at once, a retryable one when attempts ran out or the deadline passed
                between attempts.

        """
        started = time.monotonic() if self._deadline is not None else 0.0
        try:
            return await fn()
        except Exception as exc:
            if self._attempts == 1 or not self.is_retryable(exc):
                raise
            state = self._start(operation, started, exc)

        async def attempt() -> T:
            state.next_attempt()
            if state.deadline_at is None:
                return await fn()
            return await self._bounded(fn, state)

        try:
            result = await self._retrying(state, attempt)()
        except _DeadlineReached:
            pass
        else:
            _log_recovered(state)
            return result
        raise state.last_error  # outside the except block: its context stays its own

    # -- the slow path: only reached after a retryable failure ---------------------------------

    def _start(self, operation: str, started: float, error: Exception) -> _Call:
        deadline_at = None if self._deadline is None else started + self._deadline
        took = time.monotonic() - started if self._deadline is not None else 0.0
        return _Call(operation, self._attempts, deadline_at, error, took)

    def _retrying(
        self, state: _Call, attempt: Callable[[], R], *, predict: bool = False
    ) -> Callable[[], R]:
        """Wrap ``attempt`` in backoff's retry loop, for one call (on the failure path only).

        With ``predict`` (sync calls, whose attempts cannot be cut off), no wait is taken after
        which the next attempt, were it to take as long as the last one, would end after the
        deadline.
        """

        def on_backoff(details: Details) -> None:
            info = cast(Mapping[str, Any], details)
            error: Exception = info["exception"]
            state.last_error = error
            record_retry(state.operation, error)
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s: attempt %d of %d failed with %s: %s; retrying in %.3f s",
                    state.operation,
                    info["tries"],
                    state.attempts,
                    type(error).__name__,
                    error,
                    info["wait"],
                    extra={
                        "retry_operation": state.operation,
                        "retry_attempt": info["tries"],
                        "retry_attempts": state.attempts,
                        "retry_wait": info["wait"],
                        "retry_error": type(error).__name__,
                    },
                )

        def on_giveup(details: Details) -> None:
            info = cast(Mapping[str, Any], details)
            error: Exception = info["exception"]
            tries: int = info["tries"]
            if isinstance(error, _DeadlineReached):
                error, tries = state.last_error, state.tries
            elif not self.is_retryable(error):
                return  # a definite answer (e.g. not found) after a retry is no failure to log
            logger.info(
                "%s: giving up after attempt %d of %d (%s): %s: %s",
                state.operation,
                tries,
                state.attempts,
                "out of attempts" if tries >= state.attempts else "deadline reached",
                type(error).__name__,
                error,
                extra={
                    "retry_operation": state.operation,
                    "retry_attempt": tries,
                    "retry_attempts": state.attempts,
                    "retry_error": type(error).__name__,
                },
            )

        decorate = backoff.on_exception(
            lambda: self._waits(state, predict),
            Exception,
            max_tries=self._attempts,
            jitter=None,  # applied in _waits, which must know the real wait to keep the deadline
            giveup=lambda exc: not self.is_retryable(exc),
            on_backoff=on_backoff,
            on_giveup=on_giveup,
            logger=None,
        )
        return decorate(attempt)

    def _waits(self, state: _Call, predict: bool) -> Generator[float, None, None]:
        """Yield the waits between attempts; stop (backoff then gives up) at the deadline.

        With ``predict``, also stop when the next attempt, taking as long as the last one,
        would end after the deadline.
        """
        delays = backoff.expo(base=2, factor=self._backoff_base, max_value=self._backoff_max)
        next(delays)  # backoff's generators start with an empty yield
        yield 0.0  # our own empty yield: backoff primes the generator with send(None)
        for raw in delays:
            delay = raw or 0.0  # backoff 2.2.0 annotates its waits as optional; none is None
            wait = backoff.full_jitter(delay) if self._jitter else delay
            if state.deadline_at is not None:
                ends = time.monotonic() + wait + (state.last_took if predict else 0.0)
                if ends >= state.deadline_at:
                    return
            yield wait

    async def _bounded(self, fn: Callable[[], Awaitable[T]], state: _Call) -> T:
        """Await one retry attempt, cancelled when the call's deadline passes."""
        assert state.deadline_at is not None
        remaining = state.deadline_at - time.monotonic()
        if remaining <= 0:
            raise _DeadlineReached  # passed since next_attempt() looked: no attempt started
        if sys.version_info >= (3, 11):
            scope = asyncio.timeout(remaining)
            try:
                async with scope:
                    return await fn()
            except TimeoutError:
                if not scope.expired():
                    raise
                raise self._expired(state) from state.last_error
        else:  # pragma: no cover - Python 3.10
            try:
                return await asyncio.wait_for(fn(), remaining)
            except asyncio.TimeoutError:
                raise self._expired(state) from state.last_error

    def _expired(self, state: _Call) -> BackendTimeoutError:
        error = BackendTimeoutError(
            f"{state.operation}: deadline of {self._deadline:g} s exceeded in attempt "
            f"{state.tries} of {state.attempts}; last error: "
            f"{type(state.last_error).__name__}: {state.last_error}"
        )
        error.__cause__ = state.last_error
        error.__suppress_context__ = True
        return error


def _log_recovered(state: _Call) -> None:
    """Log at INFO that a retried call succeeded: the backend is reachable again."""
    logger.info(
        "%s: attempt %d of %d succeeded after %s",
        state.operation,
        state.tries,
        state.attempts,
        type(state.last_error).__name__,
        extra={
            "retry_operation": state.operation,
            "retry_attempt": state.tries,
            "retry_attempts": state.attempts,
            "retry_error": type(state.last_error).__name__,
        },
    )


def _is_number(value: object, *, positive: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not math.isfinite(value):
        return False
    return value > 0 if positive else value >= 0
