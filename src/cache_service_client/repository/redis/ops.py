"""What a flow asks a driver to do: one command, one Lua script call, or one pipeline.

Flows are generators that yield these operations and receive the replies (or, at the same
``yield``, the translated :class:`~cache_service_client.CacheServiceError`). They import nothing
from redis, so they are tested with scripted replies and run unchanged by the sync and the async
driver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "Arg",
    "Command",
    "Flow",
    "LuaScript",
    "Op",
    "Pipeline",
    "ScanBatch",
    "ScriptCall",
    "knows_retries",
    "retry_aware",
]

T = TypeVar("T")
F = TypeVar("F")

Arg = str | bytes | int | float
"""A command or script argument."""


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command.

    Attributes:
        args: The command and its arguments, e.g. ``("GET", "device:a")``.
        key: The key to name in errors about this command (e.g. WRONGTYPE), if any.
        broadcast: For a keyless command: on Redis Cluster, run it on every primary (the reply
            is then ``{node: reply}``, or merged by redis-py); on one node, no difference.
    """

    args: tuple[Arg, ...]
    key: str | None = None
    broadcast: bool = False


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A server-side script, run with EVALSHA (loaded on first use).

    Attributes:
        name: Named in errors.
        source: The Lua source.
        sha: Its SHA1 digest, as EVALSHA wants it.

    """

    name: str
    source: str
    sha: str

    @classmethod
    def of(cls, name: str, source: str) -> LuaScript:
        """Build a script and compute its digest."""
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A call of a :class:`LuaScript` with its keys and arguments."""

    script: LuaScript
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Several commands or script calls sent in one round trip (per node, in a cluster).

    The reply is the list of their replies; a failed entry's reply is its translated exception,
    not a value.
    """

    commands: tuple[Command | ScriptCall, ...]
    transaction: bool = False


@dataclass(frozen=True, slots=True)
class ScanBatch:
    """One step of ``SCAN ... MATCH`` over the whole keyspace (every primary of a cluster).

    The reply is ``(next_position, keys)``; ``next_position`` is None when the scan is done.

    Attributes:
        pattern: The ``MATCH`` pattern.
        position: Where to go on: None to start, else the ``next_position`` of the last reply.
        count: The ``COUNT`` hint.
    """

    pattern: str
    position: Any = None
    count: int = 1000


Op = Command | ScriptCall | Pipeline | ScanBatch
Flow = Generator[Op, Any, T]
"""A Redis operation written once: yields :data:`Op` values and returns a ``T``."""


_RETRY_AWARE = "_csc_retry_aware"


def retry_aware(flow_fn: F) -> F:
    """Mark a flow function that a driver calls with ``retried=True`` on every later attempt.

    An attempt is retried after the one before failed, and that one may have done its work on the
    server anyway (its reply was lost when the connection dropped). A flow whose answer depends on
    what it finds stored (a conditional put finding its own update) needs to know.
    """
    setattr(flow_fn, _RETRY_AWARE, True)
    return flow_fn


def knows_retries(flow_fn: object) -> bool:
    """Whether ``flow_fn`` was marked with :func:`retry_aware`."""
    return getattr(flow_fn, _RETRY_AWARE, False) is True
