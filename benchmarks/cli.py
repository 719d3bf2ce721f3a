"""The ``devcache export`` / ``devcache import`` throughput against a local Redis.

``python -m benchmarks.cli [--devices 100000] [--batch 5000] [--url URL]`` loads N devices into
its own redis-server (or the database of ``--url``, which is FLUSHED), then times, through the
command's own entry point (in process, so that start-up is not counted):

- ``export -o FILE``: the whole fleet as JSON Lines, page by page with query cursors;
- ``import FILE`` into the emptied database: the validating pass, then batched ``put_many``;

and checks that the import reproduced the export byte for byte (an export of the imported
fleet). Devices per second each, the median of ``--rounds`` runs; target 50,000/s each.

Each round also times a floor of bare redis-py commands on the same data, interleaved with the
command's runs, so that the ratio says what the machine alone does not:

- export floor: ``SCAN`` the device keys, ``MGET`` them 1000 at a time, write each value as a
  line (no order, no cursor, no decoding);
- import floor: read the file's lines and pipeline one ``SET key line EX ttl`` per device, a
  pipeline per batch (no validation, no indexes, no atomicity).
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

import msgspec
import redis

from benchmarks.report import cpu_model
from benchmarks.scale import devices
from benchmarks.server import add_server_argument, server_for, server_name
from cache_service_client import CacheServiceClient, KeyStrategy
from cache_service_client.__main__ import main as devcache
from cache_service_client.config import DEFAULTS

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


class _Id(msgspec.Struct):
    device_id: str


def _export_floor(raw: redis.Redis, keys: KeyStrategy, out: Path) -> float:
    """Time the bare export: SCAN the device keys, MGET them, write the values as lines."""

    def write(chunk: list[bytes]) -> None:
        values = [value for value in raw.mget(chunk) if isinstance(value, bytes)]
        handle.write(b"\n".join(values) + b"\n")

    started = time.perf_counter()
    with out.open("wb") as handle:
        chunk: list[bytes] = []
        for key in raw.scan_iter(match=keys.device_pattern(), count=1000):
            chunk.append(key)
            if len(chunk) == 1000:
                write(chunk)
                chunk = []
        if chunk:
            write(chunk)
    return time.perf_counter() - started


def _import_floor(raw: redis.Redis, keys: KeyStrategy, source: Path, batch: int) -> float:
    """Time the bare import: one pipelined ``SET key line EX ttl`` per line, ``batch`` a time."""
    ttl = int(DEFAULTS.metadata_ttl or 0) or None
    decode = msgspec.json.Decoder(_Id).decode
    started = time.perf_counter()
    with source.open("rb") as handle:
        pipe = raw.pipeline(transaction=False)
        for number, line in enumerate(handle, 1):
            pipe.set(keys.device_key(decode(line).device_id), line.rstrip(b"\n"), ex=ttl)
            if not number % batch:
                pipe.execute()
        pipe.execute()
    return time.perf_counter() - started


def measure(url: str, n: int, batch: int, rounds: int, workdir: Path) -> dict[str, float]:
    """Devices per second of export and import and their floors (medians of ``rounds``).

    On a fleet of ``n``; keys ``export``, ``import``, ``export floor``, ``import floor``.
    """
    raw = redis.Redis.from_url(url)
    raw.flushdb()
    keys = KeyStrategy()
    with CacheServiceClient.from_url(url) as client:
        fleet = devices(n)
        for start in range(0, n, 5000):
            client.store_many_device_metadata_sync(fleet[start : start + 5000])
    exported, again = workdir / "fleet.jsonl", workdir / "again.jsonl"
    floor_file = workdir / "floor.jsonl"
    times: dict[str, list[float]] = {
        "export": [],
        "import": [],
        "export floor": [],
        "import floor": [],
    }
    for _ in range(rounds):
        times["export"].append(_timed(["export", "--url", url, "-o", str(exported), "-q"]))
        times["export floor"].append(_export_floor(raw, keys, floor_file))
        raw.flushdb()
        times["import floor"].append(_import_floor(raw, keys, exported, batch))
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
    add_server_argument(parser)
    args = parser.parse_args(argv)
    n, rounds = (2000, 1) if args.quick else (args.devices, args.rounds)
    server = None if args.url else server_for(args.server)
    with contextlib.ExitStack() as stack:
        if server is not None:
            server.start()
            stack.callback(server.stop)
        url = args.url or (server.url if server else "")
        with redis.Redis.from_url(url) as raw:
            version = server_name(raw.info("server"))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        rates = measure(url, n, args.batch, rounds, workdir)
    print(f"devcache export / import, {n:,} devices, {version}, {cpu_model()}")
    print(f"median of {rounds} runs, import batch {args.batch}\n")
    print("| command | devices/s | bare redis-py floor | of the floor | target |")
    print("|---|---|---|---|---|")
    for name in ("export", "import"):
        rate, floor = rates[name], rates[f"{name} floor"]
        met = "met" if rate >= TARGET else "missed"
        print(f"| {name} | {rate:,.0f} | {floor:,.0f} | {rate / floor:.2f}x | {TARGET:,} ({met}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
