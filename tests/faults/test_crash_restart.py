"""SIGKILL and restart a real redis-server under a writer that keeps a ledger of acknowledged
writes: none may be lost or go stale, and the same client objects must carry on."""

from __future__ import annotations

import asyncio
import threading
import time

from cache_service_client import CacheServiceClient, CacheServiceError
from tests.redis_server import RedisServer, server_binary

DEVICES = 200
CRASHES = 5
# Every acknowledged write is on disk before Redis answers, so a SIGKILL loses none of them.
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")
PLAN = {"datatype_id": "t", "datatype_name": "n", "persist": True}


class Writer:
    """Writes device ``i % DEVICES`` with ``n = i``, recording what was acknowledged."""

    def __init__(self, client: CacheServiceClient) -> None:
        self.client = client
        self.ledger: dict[str, int] = {}
        self.acknowledged = 0
        self.failed = 0
        self.last_ack = time.monotonic()
        self.stop = threading.Event()

    def write(self, i: int) -> bool:
        device = f"dev-{i % DEVICES:03d}"
        try:
            self.client.store_device_metadata(device, {**PLAN, "n": i})
        except CacheServiceError:
            self.failed += 1
            return False
        self.ledger[device] = i
        self.acknowledged += 1
        self.last_ack = time.monotonic()
        return True

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            self.write(i)
            i += 1


def test_no_acknowledged_write_is_lost_over_crashes_and_the_client_recovers() -> None:
    server = RedisServer(server_binary(), extra_args=DURABLE)
    server.start()
    client = CacheServiceClient.from_url(
        server.url, socket_timeout=0.5, retry_deadline=10.0, retry_attempts=100
    )
    async_client = CacheServiceClient.from_url(server.url, socket_timeout=0.5, retry_deadline=10.0)
    writer = Writer(client)
    thread = threading.Thread(target=writer.run)
    recoveries: list[float] = []
    try:
        thread.start()
        for _ in range(CRASHES):
            time.sleep(0.6)
            server.crash()
            down = time.monotonic()
            time.sleep(0.1)
            server.start()
            before = writer.acknowledged
            while writer.acknowledged == before:
                time.sleep(0.005)
            recoveries.append(writer.last_ack - down)
        time.sleep(0.3)
    finally:
        writer.stop.set()
        thread.join()
    try:
        assert writer.acknowledged > 0
        stored = client.get_many_device_metadata_sync(list(writer.ledger))
        lost = [d for d in writer.ledger if d not in stored]
        stale = [
            d
            for d, n in writer.ledger.items()
            if d in stored and stored[d].additional_properties["n"] < n
        ]
        assert (lost, stale) == ([], [])

        async def async_side() -> int:
            # The async client was created before the crashes; it still works afterwards.
            found = await async_client.get_many_device_metadata(list(writer.ledger))
            await async_client.aclose()
            return len(found)

        assert asyncio.run(async_side()) == len(writer.ledger)
        print(
            f"\ncrash/restart: {writer.acknowledged} acknowledged writes, {len(lost)} lost, "
            f"{len(stale)} stale, {writer.failed} failed calls, over {CRASHES} SIGKILL/restarts; "
            f"the same client wrote again {min(recoveries):.2f}-{max(recoveries):.2f} s after "
            f"each crash (0.1 s of it the server was down)"
        )
    finally:
        client.close()
        server.stop()
