"""Start a throw-away Redis Cluster (three masters) on free loopback ports for the tests.

No redis-cli is needed: the nodes are joined with CLUSTER MEET and given their slots with
CLUSTER ADDSLOTS through redis-py.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import redis

from tests.redis_server import RedisServer, command, find_redis_server, free_port

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
class RedisClusterProcess:
    """Three (or more) cluster-enabled redis-server processes forming one cluster."""

    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

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
        binary = find_redis_server()
        for _ in range(self.masters):
            node = RedisServer(
                binary,
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
                command(client, "CLUSTER", "MEET", "127.0.0.1", self.ports[0])
            share = SLOTS // self.masters
            for index, client in enumerate(clients):
                first = index * share
                last = SLOTS - 1 if index == self.masters - 1 else first + share - 1
                command(client, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
            deadline = time.monotonic() + timeout
            while True:
                states = [command(c, "CLUSTER", "INFO") for c in clients]
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
