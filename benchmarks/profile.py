"""Profile one benchmark case with cProfile: where does our candidate spend its time?

``python -m benchmarks.profile get`` runs our ``get`` (and, with ``--also raw``, the baseline)
under cProfile and prints the functions with the most own time. Cases: ``encode_one``,
``decode_one``, ``encode_batch``, ``decode_batch``, ``get``, ``put``, ``get_many``, ``put_many``,
``async_get``. A server of the kind ``--server`` names is started unless ``--url`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.server import RedisServer, add_server_argument, server_for
from benchmarks.workloads import (
    GETS_PER_TASK,
    TASKS,
    AsyncRedisWork,
    CodecWork,
    SyncRedisWork,
    run_prefix,
)

CODEC_CASES = ("encode_one", "decode_one", "encode_batch", "decode_batch")
SYNC_CASES = ("get", "put", "get_many", "put_many")
CASES = (*CODEC_CASES, *SYNC_CASES, "async_get")


def _report(name: str, fn: Callable[[], object], calls: int, top: int, sort: str) -> str:
    profiler = cProfile.Profile()
    for _ in range(3):
        fn()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    elapsed = time.perf_counter() - start
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    return f"=== {name}: {calls} calls, {elapsed / calls * 1e6:.1f} µs per call (profiled)\n" + (
        out.getvalue()
    )


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> Callable[[], object]:
    return lambda: loop.run_until_complete(fn())


def main(argv: Sequence[str] | None = None) -> int:
    """Profile a case and print the report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--calls", type=int, default=2000, help="calls to profile")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumtime)")
    parser.add_argument("--also", action="append", default=[], help="profile this key too")
    parser.add_argument("--url", help="use this Redis instead of starting a server")
    add_server_argument(parser)
    args = parser.parse_args(argv)
    keys = ["ours", *args.also]
    if args.case in CODEC_CASES:
        codec_fns = getattr(CodecWork(), args.case)()
        for key in keys:
            print(_report(f"{args.case} / {key}", codec_fns[key], args.calls, args.top, args.sort))
        return 0
    server: RedisServer | None = None
    url = args.url
    if url is None:
        server = server_for(args.server)
        server.start()
        url = server.url
    try:
        if args.case in SYNC_CASES:
            work = SyncRedisWork(url, run_prefix())
            try:
                fns = getattr(work, args.case)()
                for key in keys:
                    print(
                        _report(f"{args.case} / {key}", fns[key], args.calls, args.top, args.sort)
                    )
            finally:
                work.cleanup()
        else:
            loop = asyncio.new_event_loop()
            try:
                awork = loop.run_until_complete(AsyncRedisWork.create(url, run_prefix()))
                afns: dict[str, Callable[[], Any]] = awork.get()
                for key in keys:
                    print(
                        _report(
                            f"async_get / {key}",
                            _on_loop(loop, afns[key]),
                            max(1, args.calls // (TASKS * GETS_PER_TASK)),
                            args.top,
                            args.sort,
                        )
                    )
                loop.run_until_complete(awork.cleanup())
            finally:
                loop.close()
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
