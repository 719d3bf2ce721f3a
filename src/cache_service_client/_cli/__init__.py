"""The ``devcache`` command line: the parser, the dispatch and the error boundary.

Every command that talks to a cache takes ``--url``, ``--socket-timeout`` and ``--config`` and
otherwise uses the ``CACHE_SERVICE_*`` settings, like the library. Exit codes: 0 success, 1 not
found (``health``: degraded), 2 error (``health``: unhealthy), 130 interrupted, 141 when the
reader of stdout went away. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from cache_service_client._cli import commands, demo, transfer
from cache_service_client._cli._common import (
    BROKEN_PIPE,
    ERROR,
    INTERRUPTED,
    Parser,
    aware_time,
    connection_options,
    count_of,
    error,
    json_option,
    settings,
)
from cache_service_client._planner import MAX_QUERY_LIMIT
from cache_service_client._version import __version__
from cache_service_client.exceptions import CacheServiceError
from cache_service_client.server import cli as gateway_cli

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _run_demo(args: argparse.Namespace) -> int:
    if args.devices < 1:
        args.parser.error("--devices must be at least 1")
    default = {} if args.config is not None else {"url": "memory://"}
    return demo.run_demo(settings(args, **default), args.devices, args.seed, args.keep)


def _run_repair(args: argparse.Namespace) -> int:
    overrides = {} if args.key_prefix is None else {"key_prefix": args.key_prefix}
    return demo.run_repair(settings(args, **overrides))


def build_parser() -> argparse.ArgumentParser:
    """The ``devcache`` argument parser, every command with its handler as ``handler``."""
    parser = Parser(
        prog="devcache",
        description="Operate a cache of IoT device metadata (Redis, Redis Cluster, Sentinel, "
        "the HTTP gateway or memory://).",
        epilog="Exit codes: 0 success, 1 not found (health: degraded), 2 error (health: "
        "unhealthy). See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection, json = connection_options(), json_option()

    def command(name: str, handler: Handler, help: str, *, output: bool = True) -> Parser:
        parents = [connection, json] if output else [connection]
        cmd: Parser = sub.add_parser(name, help=help, description=help, parents=parents)
        cmd.set_defaults(handler=handler, parser=cmd)
        return cmd

    get = command("get", commands.run_get, "print one device (exit code 1: not stored)")
    get.add_argument("device_id", metavar="ID")

    put = command("put", commands.run_put, "store one device from a JSON object")
    put.add_argument("device_id", metavar="ID")
    put.add_argument(
        "metadata",
        metavar="JSON",
        nargs="?",
        help="the metadata as for store_device_metadata (datatype_id, datatype_name, "
        "datatype_unit, persist, last_updated, additional_properties; other keys are kept as "
        "properties); '-' or none: read it from stdin",
    )
    put.add_argument(
        "--if-newer", action="store_true", help="write only over older stored metadata"
    )

    delete = command(
        "delete", commands.run_delete, "delete devices (exit code 1: none of them was stored)"
    )
    delete.add_argument("device_ids", metavar="ID", nargs="+")

    listing = command("list", commands.run_list, "print device ids in order, one a line")
    listing.add_argument("--pattern", metavar="P", help="a Redis glob over ids, e.g. 'oslo-*'")
    listing.add_argument("--limit", type=count_of(0), metavar="N", help="at most N ids")
    listing.add_argument("--offset", type=count_of(0), default=0, metavar="N", help="skip N ids")

    query = command("query", commands.run_query, "print a page of devices matching filters")
    query.add_argument("--datatype", metavar="D", help="only devices of this datatype id")
    query.add_argument(
        "--persist",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only devices whose values are (--persist) or are not (--no-persist) persisted",
    )
    query.add_argument(
        "--updated-after", type=aware_time, metavar="T", help="last_updated after T (RFC 3339)"
    )
    query.add_argument(
        "--updated-before", type=aware_time, metavar="T", help="last_updated before T"
    )
    query.add_argument("--pattern", metavar="P", help="a Redis glob over ids")
    query.add_argument(
        "--sort", choices=("device_id", "last_updated"), default="device_id", help="the order"
    )
    query.add_argument("--desc", action="store_true", help="sort the other way round")
    query.add_argument(
        "--limit",
        type=count_of(1),
        default=100,
        metavar="N",
        help=f"page size, 1 to {MAX_QUERY_LIMIT} (100)",
    )
    query.add_argument("--cursor", metavar="C", help="the cursor a previous page printed")
    query.add_argument("--all", action="store_true", help="follow the cursors to the last page")

    command("count", commands.run_count, "print how many devices are stored")
    command("info", commands.run_info, "print the cache figures")
    command(
        "health",
        commands.run_health,
        "check the backend; exit code 0 healthy, 1 degraded, 2 unhealthy",
    )

    export = command(
        "export",
        transfer.run_export,
        "write devices as JSON Lines, one a line as stored",
        output=False,
    )
    export.add_argument("--pattern", metavar="P", help="only ids matching this Redis glob")
    export.add_argument("--datatype", metavar="D", help="only devices of this datatype id")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default stdout)")
    export.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")

    load = command("import", transfer.run_import, "store devices from JSON Lines, validated first")
    load.add_argument("file", metavar="FILE", help="the JSON Lines file, or '-' for stdin")
    load.add_argument(
        "--batch", type=count_of(1), default=1000, metavar="N", help="devices per put_many (1000)"
    )
    load.add_argument(
        "--if-newer", action="store_true", help="write only over older stored metadata"
    )
    load.add_argument(
        "--skip-invalid", action="store_true", help="skip invalid lines instead of writing nothing"
    )
    load.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")

    repair = command(
        "repair",
        _run_repair,
        "rebuild the indexes from the stored values (safe while in use)",
        output=False,
    )
    repair.add_argument("--key-prefix", default=None, help="the key prefix (default: device)")

    show = command(
        "demo",
        _run_demo,
        "store synthetic devices and show what the client does (default: memory://)",
        output=False,
    )
    show.add_argument("--devices", type=int, default=5000, help="how many devices (default 5000)")
    show.add_argument("--seed", type=int, default=42, help="random seed of the synthetic data")
    show.add_argument("--keep", action="store_true", help="keep the demo devices in Redis")

    serve = sub.add_parser("serve", help="run the REST gateway ([server] extra)")
    gateway_cli.build_parser(serve)
    serve.set_defaults(handler=gateway_cli.run)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test's capture)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``devcache`` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        code = handler(args)
        sys.stdout.flush()
        return code
    except CacheServiceError as exc:
        error(str(exc))
        return ERROR
    except KeyboardInterrupt:
        error("interrupted")
        return INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        error(f"{where}{exc.strerror or exc}")
        return ERROR
    except Exception as exc:  # a bug: still one line, naming it
        error(f"unexpected {type(exc).__name__}: {exc}")
        return ERROR
