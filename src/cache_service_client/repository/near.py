"""Near cache: hot reads served from the process, kept right by Redis's invalidations.

A :class:`NearCache` holds decoded :class:`~cache_service_client.DeviceMetadata` (and ids found
missing) in a bounded LRU. One tracking connection per server (per primary on a cluster) runs
``CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX <device key prefix>`` and listens on
``__redis__:invalidate``, so Redis reports every write, delete and expiry of a device key by any
client; the entry is dropped as the report arrives. The rules that keep it right:

- A read that overlapped an invalidation of one of its keys is not cached: each read takes a
  token per key before it asks Redis, an invalidation (or a flush) takes the tokens of its keys
  away, and the reply is cached only where the token is still the read's own.
- When a tracking connection is lost, or the cluster's slots or the Sentinel master change, the
  whole cache is flushed, and nothing is cached until every tracking connection is back.
- An entry never outlives its key's TTL in Redis: a read asks for the PTTL in the same round
  trip, and the entry expires on the client's monotonic clock measured from before the read.
- A tracking connection silent for :data:`HEARTBEAT` seconds is sent a PING; without an answer
  within as long again it counts as lost (a dead peer is found within two heartbeats).

:class:`NearCachedDeviceMetadataRepository` and its async twin wrap a Redis repository; the
container builds them when ``near_cache_size`` > 0.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import msgspec

from cache_service_client.exceptions import ConfigurationError, DeviceNotFoundError
from cache_service_client.models import (
    BatchGetResult,
    DeviceMetadata,
    HealthStatus,
    NearCacheStats,
)
from cache_service_client.repository.base import (
    replayable,
)

if TYPE_CHECKING:
    from cache_service_client.keys import KeyStrategy
    from cache_service_client.repository.redis import (
        AsyncRedisDeviceMetadataRepository,
        RedisDeviceMetadataRepository,
    )

__all__ = [
    "ABSENT",
    "HEARTBEAT",
    "POLL",
    "AsyncNearCachedDeviceMetadataRepository",
    "Connection",
    "Endpoint",
    "NearCache",
    "NearCachedDeviceMetadataRepository",
    "Tracking",
]

logger = logging.getLogger("cache_service_client.near_cache")

#: The channel Redis sends invalidation messages on (RESP2, with REDIRECT).
INVALIDATE_CHANNEL = "__redis__:invalidate"
#: Seconds of silence on a tracking connection before it is sent a PING; as long again without
#: an answer and it counts as lost.
HEARTBEAT = 1.0
#: Seconds between topology checks (cluster slots, Sentinel master).
POLL = 1.0
#: How often a tracking thread looks up from its socket to see whether it should stop.
_TICK = 0.05
#: A PING in RESP, as the watchdog sends it on a tracking connection's socket.
_PING = b"*1\r\n$4\r\nPING\r\n"
#: Reconnection backoff of a tracking connection: first delay and longest delay, in seconds.
_BACKOFF = (0.05, 1.0)

Endpoint = tuple[str, int] | str
"""A server to track: ``(host, port)``, or a Unix socket path."""


def _shown_endpoint(endpoint: Endpoint) -> str:
    """``host:port``, or a Unix socket's path: how logs and stats name a tracked server."""
    return endpoint if isinstance(endpoint, str) else f"{endpoint[0]}:{endpoint[1]}"


class Connection(Protocol):
    """What a tracking connection needs of a redis-py connection (``redis.Connection``)."""

    def connect(self) -> None:
        """Open the connection (and authenticate)."""

    def disconnect(self) -> None:
        """Close it."""

    def send_command(self, *args: Any) -> None:
        """Send one command."""

    def read_response(self) -> Any:
        """Read one reply (an error reply is raised)."""

    def can_read(self, timeout: float) -> bool:
        """Whether a reply arrives within ``timeout`` seconds."""


class _Absent:
    """The cached answer "no such device"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()
"""What :meth:`NearCache.lookup` returns for an id cached as "not found"."""
_FOREVER = math.inf


@dataclass(frozen=True)
class Tracking:
    """How a :class:`NearCache` reaches the servers whose invalidations it follows.

    Attributes:
        prefixes: The key prefixes to track (the device key prefix of every bucket).
        device_id: Maps a device key to its device id; raises ``ValueError`` for any other key.
        connect: Makes a new, unconnected redis-py connection to an endpoint (RESP2, replies
            as bytes).
        endpoints: The servers to track at first.
        discover: For a changing topology (cluster, Sentinel): returns the servers to track
            now and a value that changes whenever cached entries may have gone stale (the slot
            map, the master's address). None: ``endpoints`` never change.
        heartbeat: See :data:`HEARTBEAT`.
        poll: Seconds between calls of ``discover``.
    """

    prefixes: tuple[str, ...]
    device_id: Callable[[str], str]
    connect: Callable[[Endpoint], Connection]
    endpoints: tuple[Endpoint, ...]
    discover: Callable[[], tuple[tuple[Endpoint, ...], Any]] | None = None
    heartbeat: float = HEARTBEAT
    poll: float = POLL


class NearCache:
    """A bounded LRU of decoded devices, kept right by Redis client tracking.

    Thread-safe; shared by a client's sync and async repositories. Tracking starts when the
    cache is made (in background threads) and stops with :meth:`close`. Until every tracking
    connection is up, reads go to Redis and nothing is cached.

    Args:
        size: Entries held at most (>= 1).
        tracking: The servers to track and how.
    """

    def __init__(self, size: int, tracking: Tracking) -> None:
        if type(size) is not int or size < 1:
            raise ConfigurationError(f"near_cache_size: must be an int >= 1, not {size!r}")
        self._size = size
        self._tracking = tracking
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._loading: dict[str, object] = {}
        self._links: list[_Link] = []
        self._up: set[_Link] = set()
        self._connected = False
        self._hits = self._misses = self._invalidations = 0
        self._evictions = self._flushes = 0
        self._closed = threading.Event()
        self._topology: Any = None
        self._links = [_Link(self, endpoint) for endpoint in tracking.endpoints]
        for link in self._links:
            link.start()
        self._watchdog = threading.Thread(
            target=self._watch, name="cache_service_client near cache watchdog", daemon=True
        )
        self._watchdog.start()
        self._supervisor: threading.Thread | None = None
        if tracking.discover is not None:
            self._supervisor = threading.Thread(
                target=self._supervise, name="cache_service_client near cache topology", daemon=True
            )
            self._supervisor.start()

    def __repr__(self) -> str:
        return f"NearCache(size={self._size}, connected={self._connected})"

    @property
    def size(self) -> int:
        """Entries held at most."""
        return self._size

    @property
    def tracking(self) -> Tracking:
        """How this cache reaches the servers it tracks."""
        return self._tracking

    def tracked_endpoints(self) -> tuple[Endpoint, ...]:
        """The servers tracked now (on a cluster, every primary; through Sentinel, the master)."""
        with self._lock:
            return tuple(link._endpoint for link in self._links)

    @property
    def connected(self) -> bool:
        """Whether every tracking connection is up (entries are cached only then)."""
        return self._connected

    def stats(self) -> NearCacheStats:
        """The counters and the state, without I/O."""
        with self._lock:
            return NearCacheStats(
                size=self._size,
                entries=len(self._entries),
                hits=self._hits,
                misses=self._misses,
                invalidations=self._invalidations,
                evictions=self._evictions,
                flushes=self._flushes,
                connected=self._connected,
            )

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every tracking connection; True once they are."""
        deadline = time.monotonic() + timeout
        while not self._connected:
            if time.monotonic() >= deadline or self._closed.is_set():
                return False
            time.sleep(0.005)
        return True

    def __contains__(self, device_id: object) -> bool:
        """Whether an entry for ``device_id`` is held (not counted, not marked as used)."""
        with self._lock:
            entry = self._entries.get(device_id) if type(device_id) is str else None
            return entry is not None and entry[1] > time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)

    # -- reads -----------------------------------------------------------------------------

    def lookup(self, device_id: str) -> Any:
        """Return the cached device, :data:`ABSENT` for a cached "not found", or None."""
        if type(device_id) is not str:
            return None
        with self._lock:
            entry = self._entries.get(device_id)
            if entry is not None:
                if entry[1] > time.monotonic():
                    self._entries.move_to_end(device_id)
                    self._hits += 1
                    return entry[0]
                del self._entries[device_id]
            self._misses += 1
            return None

    def split(self, device_ids: list[str]) -> tuple[dict[str, Any], list[str]]:
        """Split validated ids into the cached answers (by id) and the ids to read from Redis."""
        cached: dict[str, Any] = {}
        rest: list[str] = []
        now = time.monotonic()
        with self._lock:
            entries = self._entries
            for device_id in device_ids:
                entry = entries.get(device_id)
                if entry is not None and entry[1] > now:
                    entries.move_to_end(device_id)
                    cached[device_id] = entry[0]
                    self._hits += 1
                    continue
                if entry is not None:
                    del entries[device_id]
                self._misses += 1
                rest.append(device_id)
        return cached, rest

    def begin(self, device_ids: list[str]) -> object | None:
        """Take a token for each id before reading them; None when nothing may be cached."""
        with self._lock:
            if not self._connected:
                return None
            token = object()
            for device_id in device_ids:
                self._loading[device_id] = token
            return token

    def finish(
        self,
        token: object | None,
        device_ids: list[str],
        result: BatchGetResult | None,
        pttls: list[int] | None,
        started: float,
    ) -> None:
        """Cache what a read found where its tokens survived; release them either way.

        Args:
            token: What :meth:`begin` returned.
            device_ids: The ids read, as given to :meth:`begin`.
            result: The reply; None when the read failed (only the tokens are released).
            pttls: Each id's PTTL reply, in order.
            started: ``time.monotonic()`` before the read was sent.
        """
        if token is None:
            return
        now = time.monotonic()
        with self._lock:
            loading = self._loading
            entries = self._entries
            for position, device_id in enumerate(device_ids):
                if loading.get(device_id) is not token:
                    continue
                del loading[device_id]
                if result is None or pttls is None:
                    continue
                value: Any = result.found.get(device_id)
                if value is None:
                    if device_id not in result.missing:
                        continue  # corrupted: never cached
                    value, deadline = ABSENT, _FOREVER
                else:
                    pttl = pttls[position]
                    if pttl == -1:
                        deadline = _FOREVER
                    elif pttl > 0:
                        deadline = started + pttl / 1000
                        if deadline <= now:
                            continue  # its TTL ran out while the reply came: never cached
                    else:
                        continue  # expired or gone since the value was read
                entries[device_id] = (value, deadline)
                entries.move_to_end(device_id)
            while len(entries) > self._size:
                entries.popitem(last=False)
                self._evictions += 1

    # -- invalidation ----------------------------------------------------------------------

    def invalidate(self, device_ids: Iterable[str]) -> None:
        """Drop the entries of ``device_ids`` (after a write of this process's own)."""
        with self._lock:
            for device_id in device_ids:
                self._entries.pop(device_id, None)
                self._loading.pop(device_id, None)

    def flush(self) -> None:
        """Drop every entry, and every read in flight's right to be cached."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._entries.clear()
        self._loading.clear()
        self._flushes += 1

    def _invalidated(self, keys: list[bytes] | None) -> None:
        """What a tracking connection heard: these keys changed (None: the database was flushed)."""
        if keys is None:
            logger.debug("near cache: Redis reported a flush of the database")
            self.flush()
            return
        device_id = self._tracking.device_id
        ids = []
        for key in keys:
            try:
                ids.append(device_id(key.decode()))
            except (UnicodeDecodeError, ValueError):
                continue
        with self._lock:
            self._invalidations += len(keys)
            for one in ids:
                self._entries.pop(one, None)
                self._loading.pop(one, None)

    # -- tracking connections --------------------------------------------------------------

    def _link_up(self, link: _Link) -> None:
        with self._lock:
            if link not in self._links:
                return
            self._up.add(link)
            self._connected = bool(self._links) and self._up.issuperset(self._links)
        logger.info("near cache: tracking %s", link.shown, extra={"near_cache_server": link.shown})

    def _link_down(self, link: _Link, error: BaseException | None) -> None:
        with self._lock:
            was_up = link in self._up
            self._up.discard(link)
            if link in self._links:
                self._connected = False
                if was_up:
                    self._flush_locked()
        if was_up and not self._closed.is_set():
            logger.info(
                "near cache: tracking connection to %s lost (%s); cache flushed, reconnecting",
                link.shown,
                error,
                extra={"near_cache_server": link.shown, "near_cache_error": repr(error)},
            )

    def _retarget(self, endpoints: tuple[Endpoint, ...]) -> None:
        """Track ``endpoints`` from now on: stop the other links, start the new ones.

        Nothing once the cache is closed; the new links start under the lock, so that
        :meth:`close` finds every link it takes started (and stops it).
        """
        links = [_Link(self, endpoint) for endpoint in endpoints]
        with self._lock:
            if self._closed.is_set():
                return
            old, self._links = self._links, links
            self._up.clear()
            self._connected = False
            self._flush_locked()
            for link in links:
                link.start()
        for link in old:
            link.stop()

    def _supervise(self) -> None:
        discover = self._tracking.discover
        assert discover is not None
        current = tuple(self._tracking.endpoints)
        first = True
        while first or not self._closed.wait(self._tracking.poll):
            first = False
            try:
                endpoints, topology = discover()
            except Exception as exc:  # the next poll tries again
                logger.debug("near cache: topology check failed: %s", exc)
                continue
            if not endpoints:
                continue
            if endpoints != current:
                logger.info(
                    "near cache: now tracking %s (topology changed)",
                    endpoints,
                    extra={"near_cache_servers": [_shown_endpoint(e) for e in endpoints]},
                )
                current = endpoints
                self._topology = topology
                self._retarget(endpoints)
            elif topology != self._topology:
                if self._topology is not None:
                    logger.info("near cache: topology changed; cache flushed")
                    self.flush()
                self._topology = topology

    def _watch(self) -> None:
        """Heartbeats of the tracking connections that block in recv (see the link class)."""
        heartbeat = self._tracking.heartbeat
        while not self._closed.wait(min(0.25, heartbeat / 4)):
            now = time.monotonic()
            for link in list(self._links):
                link.check(now, heartbeat)

    def close(self) -> None:
        """Stop tracking and drop every entry; reads through the cache then go to Redis."""
        self._closed.set()
        with self._lock:
            links, self._links = self._links, []
            self._up.clear()
            self._connected = False
            self._entries.clear()
            self._loading.clear()
        for link in links:
            link.stop()
        for link in links:
            link.join(timeout=1.0)
        if self._supervisor is not None:
            self._supervisor.join(timeout=self._tracking.poll + 1.0)
        self._watchdog.join(timeout=1.0)


class _Link(threading.Thread):
    """One tracking connection, reconnected with backoff until it is stopped.

    On a plain TCP or Unix socket the thread blocks in one ``recv`` without a timeout, so a
    report costs it a single wake-up (one wait for the GIL, which a busy reader holds for up to
    the interpreter's switch interval); the cache's watchdog thread sends the heartbeat PINGs
    and shuts the socket down when one goes unanswered. Over TLS, where one thread must not
    write while another reads, the thread polls its socket and pings by itself.
    """

    def __init__(self, cache: NearCache, endpoint: Endpoint) -> None:
        self.shown = _shown_endpoint(endpoint)
        super().__init__(name=f"cache_service_client near cache {self.shown}", daemon=True)
        self._cache = cache
        self._endpoint = endpoint
        self._stopped = threading.Event()
        self._sock: socket.socket | None = None  # while blocking in recv, for the watchdog
        self._heard = 0.0
        self._pinged: float | None = None
        self._reason: str | None = None

    def stop(self) -> None:
        self._stopped.set()
        self._interrupt()

    def _interrupt(self) -> None:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def check(self, now: float, heartbeat: float) -> None:
        """The watchdog's turn: PING a quiet connection, drop one that did not answer."""
        sock = self._sock
        if sock is None:
            return
        pinged = self._pinged
        if pinged is None:
            if now - self._heard > heartbeat:
                self._pinged = now
                try:
                    sock.sendall(_PING)
                except OSError:
                    self._interrupt()
        elif now - pinged > heartbeat:
            self._reason = f"no answer to PING within {heartbeat:g} s"
            self._interrupt()

    def run(self) -> None:
        failures = 0
        tracking = self._cache._tracking
        while not self._stopped.is_set():
            connection = None
            error: BaseException | None = None
            try:
                connection = tracking.connect(self._endpoint)
                connection.connect()
                self._subscribe(connection, tracking.prefixes)
                failures = 0
                self._cache._link_up(self)
                self._listen(connection, tracking.heartbeat)
            except Exception as exc:  # any failure: flush, then reconnect
                error = TimeoutError(self._reason) if self._reason else exc
                if failures == 0:
                    logger.debug("near cache: tracking %s failed: %s", self.shown, error)
            finally:
                self._sock = None
                self._reason = None
                self._cache._link_down(self, error)
                if connection is not None:
                    with contextlib.suppress(Exception):  # closing a broken socket
                        connection.disconnect()
            if failures == 3:
                logger.warning(
                    "near cache: cannot track %s (%s); reads go to Redis until it can",
                    self.shown,
                    error,
                    extra={"near_cache_server": self.shown, "near_cache_error": repr(error)},
                )
            failures += 1
            self._stopped.wait(min(_BACKOFF[1], _BACKOFF[0] * 2 ** min(failures, 10)))

    @staticmethod
    def _subscribe(connection: Connection, prefixes: tuple[str, ...]) -> None:
        connection.send_command("CLIENT", "ID")
        client_id = connection.read_response()
        options: list[str] = []
        for prefix in prefixes:
            options += ["PREFIX", prefix]
        connection.send_command(
            "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", *options
        )
        connection.read_response()
        connection.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
        reply = connection.read_response()
        if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
            raise ConnectionError(f"unexpected answer to SUBSCRIBE: {reply!r}")

    def _handle(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            self._cache._invalidated(reply[2])

    def _listen(self, connection: Connection, heartbeat: float) -> None:
        sock = getattr(connection, "_sock", None)
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            sock.settimeout(None)
            self._heard, self._pinged = time.monotonic(), None
            self._sock = sock
            if self._stopped.is_set():
                return
            while not self._stopped.is_set():
                reply = connection.read_response()
                self._heard, self._pinged = time.monotonic(), None
                self._handle(reply)
            return
        heard = time.monotonic()
        pinged: float | None = None
        while not self._stopped.is_set():
            if connection.can_read(timeout=_TICK):
                reply = connection.read_response()
                heard = time.monotonic()
                pinged = None
                self._handle(reply)
                continue
            now = time.monotonic()
            if pinged is not None:
                if now - pinged > heartbeat:
                    raise TimeoutError(f"no answer to PING within {heartbeat:g} s")
            elif now - heard > heartbeat:
                connection.send_command("PING")
                pinged = now


# -- repositories -------------------------------------------------------------------------------


def _nothing() -> BatchGetResult:
    return BatchGetResult(found={}, missing=[], corrupted={})


def _one(device_id: str, result: BatchGetResult) -> DeviceMetadata:
    """The device of a one-id read, or its error."""
    found = result.found.get(device_id)
    if found is not None:
        return found
    if device_id in result.corrupted:
        raise result.corrupted[device_id]
    raise DeviceNotFoundError(device_id)


def _combine(device_ids: list[str], cached: dict[str, Any], read: BatchGetResult) -> BatchGetResult:
    """One batch answer, in the order of ``device_ids``, from the cache's and Redis's parts."""
    if not cached:
        return read
    found: dict[str, DeviceMetadata] = {}
    missing: list[str] = []
    absent = set(read.missing)
    for device_id in device_ids:
        value = cached.get(device_id)
        if value is None:
            value = read.found.get(device_id)
            if value is None:
                if device_id in absent:
                    missing.append(device_id)
                continue
        if value is ABSENT:
            missing.append(device_id)
        else:
            found[device_id] = value
    return BatchGetResult(found=found, missing=missing, corrupted=read.corrupted)


def _written_ids(items: Any) -> list[str]:
    """The ids of the devices in a batch given to a write (whatever the batch holds)."""
    if isinstance(items, (str, bytes, Mapping, DeviceMetadata)) or not isinstance(items, Iterable):
        return []
    ids = []
    for item in items:
        device_id = item.device_id if isinstance(item, DeviceMetadata) else item
        if type(device_id) is str:
            ids.append(device_id)
    return ids


class _Read:
    """A read from Redis of ids the cache lacks, as a ``with`` block.

    The cache's tokens are taken on creation; the reply given to :meth:`done` is cached on
    leaving the block (nothing is, on an error).
    """

    __slots__ = ("_cache", "_device_ids", "_reply", "_started", "_token")

    def __init__(self, cache: NearCache, device_ids: list[str]) -> None:
        self._cache = cache
        self._device_ids = device_ids
        self._token = cache.begin(device_ids)
        self._started = time.monotonic()
        self._reply: tuple[BatchGetResult, list[int]] | None = None

    def __enter__(self) -> _Read:
        return self

    def done(self, reply: tuple[BatchGetResult, list[int]]) -> BatchGetResult:
        """Keep the reply of ``get_many_expiring`` (to cache on exit) and return its batch."""
        self._reply = reply
        return reply[0]

    def __exit__(self, *exc_info: object) -> None:
        result, pttls = self._reply if self._reply is not None else (None, None)
        self._cache.finish(self._token, self._device_ids, result, pttls, self._started)


class _Write:
    """A write, as a ``with`` block that gives the batch (a one-shot iterator copied).

    On leaving the block (returned or raised), the entries of the batch's devices are dropped.
    """

    __slots__ = ("_batch", "_cache")

    def __init__(self, cache: NearCache, batch: Iterable[Any]) -> None:
        self._cache = cache
        self._batch = replayable(batch)

    def __enter__(self) -> Any:
        return self._batch

    def __exit__(self, *exc_info: object) -> None:
        self._cache.invalidate(_written_ids(self._batch))


T = TypeVar("T")
R = TypeVar("R", "RedisDeviceMetadataRepository", "AsyncRedisDeviceMetadataRepository")


class _NearCached(Generic[R]):
    """What both near-cached repositories share.

    The attributes, and the wrapped repository's call of every method they do not override.
    """

    _inner: R
    _cache: NearCache

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r}, {self._cache!r})"

    @property
    def near_cache(self) -> NearCache:
        """The near cache in front of the repository."""
        return self._cache

    @property
    def key_strategy(self) -> KeyStrategy:
        """The wrapped repository's key strategy."""
        return self._inner.key_strategy

    @property
    def ttl(self) -> float | None:
        """The wrapped repository's TTL of new values; settable."""
        return self._inner.ttl

    @ttl.setter
    def ttl(self, value: float | None) -> None:
        self._inner.ttl = value

    def _forward(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        call: Callable[..., T] = getattr(self._inner, method.__name__)
        return call(*args, **kwargs)

    def _health(self, health: HealthStatus) -> HealthStatus:
        """``health`` with the near cache's state in ``details["near_cache"]``."""
        stats = msgspec.to_builtins(self._cache.stats())
        return msgspec.structs.replace(health, details={**health.details, "near_cache": stats})


# The near-cached repositories: the async one is written in _near_async.py, the sync one is
# generated from it (scripts/unasync.py). Both use this module's helpers, so they come last.
from cache_service_client.repository._near_async import (  # noqa: E402
    AsyncNearCachedDeviceMetadataRepository,
)
from cache_service_client.repository._near_sync import (  # noqa: E402
    NearCachedDeviceMetadataRepository,
)
