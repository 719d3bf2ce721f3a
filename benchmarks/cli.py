"""The ``devcache export`` / ``devcache import`` throughput against a local Redis.

``python -m benchmarks.cli [--devices 100000] [--batch 5000] [--url URL]`` loads N devices into
its own redis-server (or the database of ``--url``, which is FLUSHED), then times, through the
command's own entry point (in process, so that start-up is not counted):

- ``export -o FILE``: the whole fleet as JSON Lines, page by page with query cursors;
- ``import FILE`` into the emptied database: the validating pass, then batched ``put_many``;

and checks that the import reproduced the export byte for byte (an export of the imported
fleet). Devices per second each, the median of ``--rounds`` runs; target 50,000/s each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from benchmarks.report import cpu_model
from benchmarks.scale import devices
from benchmarks.server import RedisServer
from cache_service_client import CacheServiceClient
from cache_service_client.__main__ import main as devcache

#: Devices per second that export and import should reach each.
TARGET = 50_000


def _timed(argv: list[str]) -> float:
    """Run ``devcache argv`` in process; return its wall time, raising if it failed."""
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = devcache(argv)
    elapsed = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"devcache {' '.join(argv)} exited {code}: {err.getvalue()}")
    return elapsed


def measure(url: str, n: int, batch: int, rounds: int, workdir: Path) -> dict[str, float]:
    """Devices per second of export and import (medians of ``rounds``) on a fleet of ``n``."""
    raw = redis.Redis.from_url(url)
    raw.flushdb()
    with CacheServiceClient.from_url(url) as client:
        fleet = devices(n)
        for start in range(0, n, 5000):
            client.store_many_device_metadata_sync(fleet[start : start + 5000])
    exported, again = workdir / "fleet.jsonl", workdir / "again.jsonl"
    times: dict[str, list[float]] = {"export": [], "import": []}
    for _ in range(rounds):
        times["export"].append(_timed(["export", "--url", url, "-o", str(exported), "-q"]))
        raw.flushdb()
        times["import"].append(
            _timed(["import", str(exported), "--url", url, "--batch", str(batch), "-q"])
        )
    _timed(["export", "--url", url, "-o", str(again), "-q"])
    if exported.read_bytes() != again.read_bytes():
        raise RuntimeError("the import did not reproduce the export")
    lines = exported.read_bytes().count(b"\n")
    if lines != n:
        raise RuntimeError(f"exported {lines} lines, not {n}")
    raw.close()
    return {name: n / statistics.median(series) for name, series in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m benchmarks.cli [--devices N] [--batch N] [--url URL]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli", description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000, help="fleet size (100000)")
    parser.add_argument("--batch", type=int, default=1000, help="import batch size (1000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (3)")
    parser.add_argument("--url", help="use this Redis database instead: it is FLUSHED")
    parser.add_argument("--quick", action="store_true", help="2000 devices, one round")
    args = parser.parse_args(argv)
    n, rounds = (2000, 1) if args.quick else (args.devices, args.rounds)
    server = None if args.url else RedisServer()
    with contextlib.ExitStack() as stack:
        if server is not None:
            server.start()
            stack.callback(server.stop)
        url = args.url or (server.url if server else "")
        version = redis.Redis.from_url(url).info("server")["redis_version"]
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        rates = measure(url, n, args.batch, rounds, workdir)
    print(f"devcache export / import, {n:,} devices, Redis {version}, {cpu_model()}")
    print(f"median of {rounds} runs, import batch {args.batch}\n")
    print("| command | devices/s | target |\n|---|---|---|")
    for name, rate in rates.items():
        met = "met" if rate >= TARGET else "missed"
        print(f"| {name} | {rate:,.0f} | {TARGET:,} ({met}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
