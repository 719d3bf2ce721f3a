"""Start a master, a replica and a sentinel on free loopback ports, for failover tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.redis_server import RedisServer, command, find_redis_server, free_port

SERVICE = "mymaster"


@dataclass
class SentinelSetup:
    """One master, one replica, one sentinel watching them as ``mymaster``."""

    master: RedisServer | None = None
    replica: RedisServer | None = None
    sentinel_port: int = field(default_factory=free_port)
    sentinel_process: subprocess.Popen[bytes] | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="csc-sentinel-"))

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the service."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def start(self, timeout: float = 20.0) -> None:
        """Start everything and wait until the sentinel knows the replica."""
        binary = find_redis_server()
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
                    replicas = command(sentinel, "SENTINEL", "REPLICAS", SERVICE)
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
            command(sentinel, "SENTINEL", "FAILOVER", SERVICE)
            deadline = time.monotonic() + timeout
            while True:
                _host, port = command(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
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
