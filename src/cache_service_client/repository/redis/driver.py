"""Drivers: run flows against redis-py, sync or async, and translate its errors at one place.

The two drivers differ only by ``await``; what they run (the flows) is shared. A driver takes a
flow *function* and its arguments, not a flow, so that its
:class:`~cache_service_client.RetryPolicy` can build a fresh flow for every attempt.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from cache_service_client._attempt import is_retried_request
from cache_service_client.exceptions import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    CacheServiceError,
    DataCorruptionError,
    IndexLayoutError,
)
from cache_service_client.repository.redis.ops import (
    Command,
    Flow,
    Op,
    Pipeline,
    ScanBatch,
    ScriptCall,
    knows_retries,
)
from cache_service_client.retry import RetryPolicy

__all__ = ["DRIVER_ERRORS", "AsyncRedisDriver", "SyncRedisDriver", "translate_error"]

T = TypeVar("T")
P = ParamSpec("P")

_RETRYABLE_PREFIXES = ("READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
# redis-py strips the error code from these and raises a class of its own instead. Its cluster
# client raises ClusterError itself ("TTL exhausted.") when a command kept being redirected or
# answered TRYAGAIN, as a multi-key command in a migrating slot is until the migration ends.
_RETRYABLE_CLASSES = (
    rex.ReadOnlyError,
    rex.BusyLoadingError,
    rex.MasterDownError,
    rex.TryAgainError,
    rex.ClusterError,  # ClusterDownError included
)
#: What redis-py raises: its RedisError classes, and the cluster client's RedisClusterException,
#: which is not one of them ("Redis Cluster cannot be connected ..." when no node answers while
#: it maps the cluster, as after every node dropped its connections).
DRIVER_ERRORS: tuple[type[Exception], ...] = (rex.RedisError, rex.RedisClusterException)
_AUTH_PREFIXES = (
    "NOAUTH",
    "WRONGPASS",
    "ERR AUTH",
    "ERR invalid password",
    # A server that requires a password answers a command of more than ten arguments (a
    # script call) from a client that sent none with this instead of NOAUTH.
    "Protocol error: unauthenticated",
)
# Redis 6 puts the place in the script in front of a script's error, whether the script raised
# it ("Error running script (call to f_<sha>): @user_script:17: user_script:17: LAYOUT ...")
# or a command it called did ("...: @user_script:72: @user_script: 72: -READONLY ..."); Redis 7
# answers with the error itself.
_SCRIPT_PLACE = re.compile(
    r"^Error running script \(call to f_[0-9a-f]+\): @user_script:\d+: "
    r"(?:@user_script: \d+: -|user_script:\d+: )"
)
# What a script's command answers when the ACL denies it a key or the command: Redis 6.2 and 7
# word it "The user executing the script can't access at least one of the keys ..." (or "can't
# run this command or subcommand"), Valkey 8 "ACL failure in script: No permissions to access a
# key" (or "User u has no permissions to run the 'zadd' command").
_SCRIPT_ACL_DENIALS = (
    "can't access at least one of the keys",
    "can't run this command",
    "ACL failure in script",
    "NOPERM",
)


def _from_redis_py(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside redis-py (its innermost frame is in a redis module)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module == "redis" or module.startswith("redis.")


def _cluster_slip(exc: Exception) -> bool:
    """redis-py's cluster client failing on a node it does not know (its issue #4015).

    A read of a key already migrated to a primary that owns no slot yet (the first reshard
    onto a new node) is redirected there with ASK; redis-py looks the node up in its map,
    finds nothing and raises ``AttributeError`` on None. Retrying is right: once the slot is
    the new node's, redis-py follows MOVED and maps the node.
    """
    return isinstance(exc, AttributeError) and _from_redis_py(exc)


def _attempts(
    flow_fn: Callable[..., Flow[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[], Flow[T]]:
    """Build a fresh flow per attempt; one marked ``retry_aware`` learns which attempts retry.

    Inside :func:`~cache_service_client._attempt.retried_request` (the gateway serving a
    request repeated after a lost answer) the first attempt retries too.
    """
    aware = knows_retries(flow_fn)
    started = aware and is_retried_request()

    def attempt() -> Flow[T]:
        nonlocal started
        retried, started = started, True
        if retried and aware:
            return flow_fn(*args, **kwargs, retried=True)
        return flow_fn(*args, **kwargs)

    return attempt


def _where(op: Op | None) -> str:
    if isinstance(op, Command):
        return f" (key {op.key!r})" if op.key else f" ({op.args[0]!s})"
    if isinstance(op, ScriptCall):
        return f" (script {op.script.name!r})"
    return ""


def translate_error(exc: Exception, op: Op | None = None) -> CacheServiceError:
    """Map a redis-py exception to this library's hierarchy, chained to the original."""
    message = _SCRIPT_PLACE.sub("", str(exc), count=1)
    error: CacheServiceError
    if isinstance(exc, AttributeError):  # only what _cluster_slip lets through
        error = BackendConnectionError(
            f"Redis Cluster redirected{_where(op)} to a node the client has not mapped yet "
            f"(a slot moving to a new primary; redis-py issue #4015): {message}"
        )
    elif isinstance(exc, rex.NoPermissionError) or (
        isinstance(exc, rex.ResponseError)
        and (
            message.startswith("NOPERM")
            or (isinstance(op, ScriptCall) and any(d in message for d in _SCRIPT_ACL_DENIALS))
        )
    ):
        error = AuthenticationError(f"permission denied{_where(op)}: {message}")
    elif isinstance(
        exc,
        (rex.AuthenticationError, rex.AuthenticationWrongNumberOfArgsError),
    ) or (isinstance(exc, rex.RedisError) and message.startswith(_AUTH_PREFIXES)):
        # Without credentials, redis-py's words ("HELLO must be called ...", "NOAUTH ...",
        # "Authentication required.") do not say what to do: say it (the cause keeps them).
        if message.startswith(
            ("NOAUTH", "HELLO must be called", "Authentication required", "Protocol error: unauth")
        ):
            message = (
                "the server requires a password and none was sent: set the password setting "
                "(CACHE_SERVICE_PASSWORD, password=..., or redis://:PASSWORD@host in the URL; "
                f"username too for an ACL user); the server said: {message}"
            )
        else:
            message = f"password (or username) refused: check the password setting: {message}"
        error = AuthenticationError(f"authentication failed{_where(op)}: {message}")
    elif isinstance(exc, rex.ResponseError) and message.startswith("LAYOUT "):
        error = IndexLayoutError(message.removeprefix("LAYOUT ") + _where(op))
    elif isinstance(exc, rex.TimeoutError):
        error = BackendTimeoutError(f"Redis did not answer in time{_where(op)}: {message}")
    elif isinstance(exc, rex.ConnectionError) or (  # BusyLoadingError included
        isinstance(exc, rex.RedisClusterException) and "cannot be connected" in message
    ):
        error = BackendConnectionError(f"Redis connection failed{_where(op)}: {message}")
    elif (
        isinstance(exc, _RETRYABLE_CLASSES)
        or message.startswith(_RETRYABLE_PREFIXES)
        # A script met a key already moved away: its slot is migrating; try again after it.
        # Redis 7 says "... non local key ...", Valkey 8 "Unable to execute command 'mget' in
        # script because undeclared keys were accessed during rehashing of the slot".
        or "non local key" in message
        or "accessed during rehashing of the slot" in message
    ):
        error = BackendConnectionError(f"Redis is unavailable{_where(op)}: {message}")
    elif message.startswith("WRONGTYPE") and isinstance(op, Command) and op.key:
        error = DataCorruptionError(op.key, "holds a value of another Redis type (WRONGTYPE)")
    else:
        error = BackendError(f"Redis error{_where(op)}: {message}")
    error.__cause__ = exc
    error.__suppress_context__ = True
    return error


def _script_args(call: ScriptCall) -> tuple[Any, ...]:
    return (len(call.keys), *call.keys, *call.args)


def _queue(pipe: Any, op: Pipeline) -> None:
    queue: Callable[..., Any] = pipe.execute_command
    for entry in op.commands:
        if isinstance(entry, ScriptCall):
            queue("EVALSHA", entry.script.sha, *_script_args(entry))
        else:
            queue(*entry.args)


def _unloaded(replies: list[Any], op: Pipeline) -> list[int]:
    """Positions of script calls that failed because the script was not loaded (NOSCRIPT)."""
    return [
        i
        for i, (reply, entry) in enumerate(zip(replies, op.commands, strict=True))
        if isinstance(entry, ScriptCall) and isinstance(reply, rex.NoScriptError)
    ]


def _pipeline_replies(replies: list[Any], op: Pipeline) -> list[Any]:
    return [
        translate_error(reply, command) if isinstance(reply, Exception) else reply
        for reply, command in zip(replies, op.commands, strict=True)
    ]


def _scan_command(op: ScanBatch) -> tuple[Any, ...]:
    cursor = 0 if op.position is None else op.position
    return ("SCAN", cursor, "MATCH", op.pattern, "COUNT", op.count)


def _cluster_scan_reply(cursors: dict[str, int], keys: list[Any]) -> tuple[Any, list[Any]]:
    remaining = {name: cursor for name, cursor in cursors.items() if int(cursor) != 0}
    return (remaining or None), list(keys)


def _scan_reply(reply: Any) -> tuple[Any, list[Any]]:
    cursor, keys = reply
    cursor = int(cursor)
    return (None if cursor == 0 else cursor), list(keys)


class SyncRedisDriver:
    """Runs flows against a sync ``redis.Redis`` client.

    Args:
        client: The redis-py client; its own retry should be off (``Retry(NoBackoff(), 0)``).
        retry: Retries transient failures of a whole flow; None: no retry.

    """

    __slots__ = ("_call", "_cluster", "client", "retry")

    def __init__(
        self, client: redis.Redis | RedisCluster, retry: RetryPolicy | None = None
    ) -> None:
        self.client = client
        self._cluster = isinstance(client, RedisCluster)
        self.retry = retry if retry is not None else RetryPolicy.disabled()
        self._call: Callable[..., Any] = client.execute_command

    def run(self, flow_fn: Callable[P, Flow[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``flow_fn(*args, **kwargs)`` to completion, retried by the policy.

        Each attempt builds a fresh flow, so a retried flow starts from its beginning; a flow
        function marked ``retry_aware`` gets ``retried=True`` on every attempt but the first.

        Args:
            flow_fn: A flow function, e.g. ``flows.get``.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            The flow's result.

        """
        attempt = _attempts(flow_fn, args, kwargs)
        return self.retry.call(lambda: self._run_once(attempt()), operation=flow_fn.__name__)

    def _run_once(self, flow: Flow[T]) -> T:
        """Run ``flow`` to completion once; errors are thrown into it at its ``yield``."""
        reply: Any = None
        error: CacheServiceError | None = None
        while True:
            try:
                op = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            try:
                reply, error = self._execute(op), None
            except DRIVER_ERRORS as exc:
                reply, error = None, translate_error(exc, op)
            except AttributeError as exc:
                if not (self._cluster and _cluster_slip(exc)):
                    raise
                reply, error = None, translate_error(exc, op)

    def _execute(self, op: Op) -> Any:
        if isinstance(op, Command):
            if op.broadcast and self._cluster:
                return self._call(*op.args, target_nodes=RedisCluster.PRIMARIES)
            return self._call(*op.args)
        if isinstance(op, ScriptCall):
            try:
                return self._call("EVALSHA", op.script.sha, *_script_args(op))
            except rex.NoScriptError:
                return self._call("EVAL", op.script.source, *_script_args(op))
        if isinstance(op, ScanBatch):
            if not self._cluster:
                return _scan_reply(self._call(*_scan_command(op)))
            cluster: Any = self.client
            if op.position is None:
                cursors, keys = cluster.scan(match=op.pattern, count=op.count)
                return _cluster_scan_reply(cursors, keys)
            cursors, keys = {}, []
            for name, cursor in op.position.items():
                node = cluster.get_node(node_name=name)
                step, data = cluster.scan(cursor, op.pattern, op.count, target_nodes=node)
                cursors.update(step)
                keys += data
            return _cluster_scan_reply(cursors, keys)
        pipe = self.client.pipeline(transaction=op.transaction)
        _queue(pipe, op)
        replies = list(pipe.execute(raise_on_error=False))
        for i in _unloaded(replies, op):
            call = op.commands[i]
            assert isinstance(call, ScriptCall)
            try:
                replies[i] = self._call("EVAL", call.script.source, *_script_args(call))
            except DRIVER_ERRORS as exc:
                replies[i] = exc
        return _pipeline_replies(replies, op)


class AsyncRedisDriver:
    """Runs flows against an async ``redis.asyncio.Redis`` client.

    redis-py closes a connection whose call was cancelled mid-reply, so a cancelled flow never
    leaves a reply behind for the next caller on that connection.


    Args:
        client: The redis-py client; its own retry should be off (``Retry(NoBackoff(), 0)``).
        retry: Retries transient failures of a whole flow; None: no retry.

    """

    __slots__ = ("_call", "_cluster", "client", "retry")

    def __init__(
        self, client: redis.asyncio.Redis | AsyncRedisCluster, retry: RetryPolicy | None = None
    ) -> None:
        self.client = client
        self._cluster = isinstance(client, AsyncRedisCluster)
        self.retry = retry if retry is not None else RetryPolicy.disabled()
        self._call: Callable[..., Awaitable[Any]] = client.execute_command

    async def run(self, flow_fn: Callable[P, Flow[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``flow_fn(*args, **kwargs)`` to completion, retried by the policy.

        Each attempt builds a fresh flow, so a retried flow starts from its beginning; a flow
        function marked ``retry_aware`` gets ``retried=True`` on every attempt but the first.

        Args:
            flow_fn: A flow function, e.g. ``flows.get``.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            The flow's result.

        """
        attempt = _attempts(flow_fn, args, kwargs)
        return await self.retry.call_async(
            lambda: self._run_once(attempt()), operation=flow_fn.__name__
        )

    async def _run_once(self, flow: Flow[T]) -> T:
        """Run ``flow`` to completion once; errors are thrown into it at its ``yield``."""
        reply: Any = None
        error: CacheServiceError | None = None
        while True:
            try:
                op = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            try:
                reply, error = await self._execute(op), None
            except DRIVER_ERRORS as exc:
                reply, error = None, translate_error(exc, op)
            except AttributeError as exc:
                if not (self._cluster and _cluster_slip(exc)):
                    raise
                reply, error = None, translate_error(exc, op)

    async def _execute(self, op: Op) -> Any:
        if isinstance(op, Command):
            if op.broadcast and self._cluster:
                return await self._call(*op.args, target_nodes=AsyncRedisCluster.PRIMARIES)
            return await self._call(*op.args)
        if isinstance(op, ScriptCall):
            try:
                return await self._call("EVALSHA", op.script.sha, *_script_args(op))
            except rex.NoScriptError:
                return await self._call("EVAL", op.script.source, *_script_args(op))
        if isinstance(op, ScanBatch):
            if not self._cluster:
                return _scan_reply(await self._call(*_scan_command(op)))
            cluster: Any = self.client
            if op.position is None:
                cursors, keys = await cluster.scan(match=op.pattern, count=op.count)
                return _cluster_scan_reply(cursors, keys)
            cursors, keys = {}, []
            for name, cursor in op.position.items():
                node = cluster.get_node(node_name=name)
                step, data = await cluster.scan(cursor, op.pattern, op.count, target_nodes=node)
                cursors.update(step)
                keys += data
            return _cluster_scan_reply(cursors, keys)
        pipe = self.client.pipeline(transaction=op.transaction)
        _queue(pipe, op)
        replies = list(await pipe.execute(raise_on_error=False))
        for i in _unloaded(replies, op):
            call = op.commands[i]
            assert isinstance(call, ScriptCall)
            try:
                replies[i] = await self._call("EVAL", call.script.source, *_script_args(call))
            except DRIVER_ERRORS as exc:
                replies[i] = exc
        return _pipeline_replies(replies, op)
