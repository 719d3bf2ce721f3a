"""A TCP proxy on a free loopback port that delays every byte by a fixed time, each way.

Put it between a client and a real ``redis-server`` to get a slow server: with ``delay=0.2``
every round trip takes 0.4 s more, whatever the command. With ``jitter`` each chunk waits a
random extra 0 to ``jitter`` seconds. Bytes keep their order and nothing is throttled: a chunk
read at time t is written at t + delay (+ its jitter, but never before the chunk ahead of it).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["DelayProxy", "TcpProxy"]


_P = TypeVar("_P", bound="TcpProxy")


class TcpProxy:
    """A TCP proxy on a free loopback port, run by an event loop in a thread of its own.

    Forwards each client connection to ``upstream``; a subclass says what flows each way
    (:meth:`_pipes`). Use it as a context manager; :attr:`port` is set once it listens. On exit
    every pipe is cancelled and every socket closed in the proxy's own loop.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def _pipes(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> list[Coroutine[Any, Any, None]]:
        """What carries the bytes of one connection: client to server and back."""
        raise NotImplementedError

    def __enter__(self: _P) -> _P:
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the {type(self).__name__} did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        pumps: set[asyncio.Task[None]] = set()
        writers: list[asyncio.StreamWriter] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                writer.close()
                return
            writers.append(up_writer)
            for pipe in self._pipes(reader, writer, up_reader, up_writer):
                task = asyncio.create_task(pipe)
                pumps.add(task)
                task.add_done_callback(pumps.discard)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(pumps):
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            # Every socket is closed here, in this loop, not later by the garbage collector.
            for writer in writers:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


class DelayProxy(TcpProxy):
    """Forwards ``127.0.0.1:<port>`` to ``upstream_port`` with ``delay`` seconds each way.

    Use it as a context manager; :attr:`port` is set once it listens.
    """

    def __init__(
        self,
        upstream_port: int,
        delay: float,
        upstream_host: str = "127.0.0.1",
        *,
        jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(upstream_port, upstream_host)
        self.delay = delay
        self.jitter = jitter
        self._random = random.Random(seed)

    def _pipes(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> list[Coroutine[Any, Any, None]]:
        return [self._pump(reader, up_writer), self._pump(up_reader, writer)]

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                sink.write(chunk)
                await sink.drain()

        sender = asyncio.create_task(deliver())
        last_due = 0.0
        try:
            while True:
                chunk = await source.read(65536)
                due = time.monotonic() + self.delay + self._random.uniform(0, self.jitter)
                last_due = max(last_due, due)  # bytes never overtake each other
                queue.put_nowait((last_due, chunk))
                if not chunk:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            sender.cancel()
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            sink.close()
