"""Throw-away Redis topologies on free loopback ports: a three-master cluster, and Sentinel.

For tests of services that run against Redis Cluster or Sentinel: the processes are real
``redis-server`` (or ``valkey-server``) processes, of the binary the ``binary`` field names
(any kind of :func:`find_server`), nothing is mocked.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from cache_service_client.testing._server import (
    Processes,
    RedisServer,
    find_redis_server,
    free_port,
)

__all__ = ["RedisClusterServers", "RedisSentinelServers", "free_cluster_port"]


def _command(client: redis.Redis, *args: Any) -> Any:
    """``client.execute_command(*args)``, typed (redis-py leaves it untyped)."""
    return client.execute_command(*args)


SLOTS = 16384


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(200):
        port = free_port()
        if port <= 55535:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisClusterServers(Processes):
    """Three (or more) cluster-enabled server processes forming one Redis Cluster.

    Each master is a :class:`RedisServer` on a free loopback port whose cluster bus port is free
    too; they are joined with ``CLUSTER MEET`` and given even slot ranges with
    ``CLUSTER ADDSLOTS`` (no ``redis-cli`` needed). Use it as a context manager, or call
    :meth:`start` and :meth:`stop`.

    Args:
        masters: How many masters (and so slot ranges).
        binary: The server binary of every node (keyword only; default
            :func:`find_redis_server`): ``RedisClusterServers(binary=find_server("valkey"))``
            is a Valkey cluster.

    Attributes:
        nodes: The running nodes, in slot order.
    """

    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)
    binary: str = field(default_factory=find_redis_server, kw_only=True)

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one node (the client discovers the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        """The nodes' ports."""
        return [node.port for node in self.nodes]

    def start(self, timeout: float = 20.0) -> None:
        """Start the nodes, join them, assign the slots evenly and wait for ``cluster_state:ok``."""
        for _ in range(self.masters):
            node = RedisServer(
                self.binary,
                port=free_cluster_port(),
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "2000",
                ),
            )  # fmt: skip
            node.start()
            self.nodes.append(node)
        clients = [redis.Redis(port=port) for port in self.ports]
        try:
            for client in clients[1:]:
                _command(client, "CLUSTER", "MEET", "127.0.0.1", self.ports[0])
            share = SLOTS // self.masters
            for index, client in enumerate(clients):
                first = index * share
                last = SLOTS - 1 if index == self.masters - 1 else first + share - 1
                _command(client, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
            deadline = time.monotonic() + timeout
            while True:
                states = [_command(c, "CLUSTER", "INFO") for c in clients]
                texts = [s.decode() if isinstance(s, bytes) else str(s) for s in states]
                if all(
                    "cluster_state:ok" in t and "cluster_known_nodes:" + str(self.masters) in t
                    for t in texts
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not come up: {texts[0]}")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
        self.nodes.clear()


SERVICE = "mymaster"


@dataclass
class RedisSentinelServers(Processes):
    """A master, its replica and one sentinel watching them as ``mymaster``, for failover tests.

    Every process runs on a free loopback port; :attr:`url` is the ``redis+sentinel://`` URL of
    the service, and :meth:`failover` promotes the replica. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`. Every process runs ``binary`` (keyword only; default
    :func:`find_redis_server`), the sentinel as ``BINARY sentinel.conf --sentinel``:
    ``RedisSentinelServers(binary=find_server("valkey"))`` is Valkey's Sentinel.

    Attributes:
        master: The first master (after a failover, the replica's master).
        replica: The replica (after a failover, the master).
        sentinel_port: The sentinel's port.
    """

    master: RedisServer | None = None
    replica: RedisServer | None = None
    sentinel_port: int = field(default_factory=free_port)
    sentinel_process: subprocess.Popen[bytes] | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="csc-sentinel-"))
    binary: str = field(default_factory=find_redis_server, kw_only=True)

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the service."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def start(self, timeout: float = 20.0) -> None:
        """Start everything and wait until the sentinel knows the replica."""
        binary = self.binary
        self.master = RedisServer(binary)
        self.master.start()
        self.replica = RedisServer(
            binary, extra_args=("--replicaof", "127.0.0.1", str(self.master.port))
        )
        self.replica.start()
        config = Path(self.workdir, "sentinel.conf")
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
        )
        self.sentinel_process = subprocess.Popen(
            [binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=1.0)
        try:
            while True:
                try:
                    replicas = _command(sentinel, "SENTINEL", "REPLICAS", SERVICE)
                    if replicas and self._replica_synced():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the sentinel did not see the replica in time")
                time.sleep(0.1)
        finally:
            sentinel.close()

    def _replica_synced(self) -> bool:
        assert self.replica is not None
        with redis.Redis(port=self.replica.port) as replica:
            info = replica.info("replication")
        return bool(info.get("master_link_status") == "up")

    def failover(self, timeout: float = 20.0) -> int:
        """Make the sentinel promote the replica; return the new master's port."""
        assert self.replica is not None
        with redis.Redis(port=self.sentinel_port) as sentinel:
            _command(sentinel, "SENTINEL", "FAILOVER", SERVICE)
            deadline = time.monotonic() + timeout
            while True:
                _host, port = _command(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                if int(port) == self.replica.port:
                    with redis.Redis(port=self.replica.port) as promoted:
                        if promoted.info("replication").get("role") == "master":
                            return int(port)
                if time.monotonic() > deadline:
                    raise RuntimeError("the failover did not finish in time")
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop everything."""
        if self.sentinel_process is not None:
            self.sentinel_process.terminate()
            self.sentinel_process.wait(timeout=5)
        for server in (self.master, self.replica):
            if server is not None:
                server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
