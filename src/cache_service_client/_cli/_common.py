"""What every ``devcache`` command shares: settings, output, tables, progress and exit codes."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any, NoReturn

import msgspec

from cache_service_client.client import CacheServiceClient
from cache_service_client.codec import MetadataCodec
from cache_service_client.config import Settings, load_settings
from cache_service_client.models import AwareDatetime, DeviceMetadata, Page

#: Exit codes: success, nothing found (or "degraded" for ``health``), an error ("unhealthy").
OK, NOT_FOUND, ERROR = 0, 1, 2
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Exit code when the reader of stdout went away (128 + SIGPIPE), as shells report it.
BROKEN_PIPE = 141

#: The stored form of devices: the JSON codec's, whatever codec the cache itself uses.
JSON_CODEC = MetadataCodec("json")
_AWARE = msgspec.json.Decoder(AwareDatetime)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2), no usage dump."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line naming the command, and exit with code 2."""
        self.exit(ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def connection_options() -> Parser:
    """The options every command that talks to a cache takes (a parent parser)."""
    parent = Parser(add_help=False)
    group = parent.add_argument_group("connection (default: the CACHE_SERVICE_* settings)")
    group.add_argument("--url", help="the cache, e.g. redis://host:6379/0 or memory://")
    group.add_argument(
        "--socket-timeout", type=positive_float, metavar="S", help="seconds to wait for replies"
    )
    group.add_argument("--config", metavar="FILE", help="a TOML settings file")
    return parent


def json_option() -> Parser:
    """The ``--json`` option (a parent parser)."""
    parent = Parser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parent


def settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings a command runs with: its options over ``CACHE_SERVICE_*`` over ``--config``.

    Args:
        args: The parsed command line (``url``, ``socket_timeout``, ``config``).
        **overrides: Settings the command itself sets, below its options.
    """
    arguments = dict(overrides)
    if args.url is not None:
        arguments["url"] = args.url
    if args.socket_timeout is not None:
        arguments["socket_timeout"] = args.socket_timeout
    return load_settings(arguments=arguments, file=args.config)


def client(args: argparse.Namespace, **overrides: Any) -> CacheServiceClient:
    """A client built from :func:`settings`."""
    return CacheServiceClient.from_settings(settings(args, **overrides))


# -- argument types ----------------------------------------------------------------------------


def pages(cache: CacheServiceClient, fields: dict[str, Any]) -> Iterator[Page[DeviceMetadata]]:
    """Every page of the query ``fields`` (keyword arguments of ``query_devices_sync``), in order.

    Each page is fetched when the one before it has been handled, through the query's cursor:
    constant memory at any fleet size, and no device is skipped or repeated by writes between
    pages.
    """
    page = cache.query_devices_sync(**fields)
    yield page
    while page.next_cursor is not None:
        page = cache.query_devices_sync(**{**fields, "cursor": page.next_cursor})
        yield page


def positive_float(text: str) -> float:
    """An argument that must be a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text}")
    return value


def count_of(minimum: int) -> Any:
    """An argument type: an integer of at least ``minimum``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    convert.__name__ = "integer"
    return convert


def aware_time(text: str) -> datetime:
    """An argument that must be an RFC 3339 time with a timezone (``2026-01-31T12:00:00Z``)."""
    try:
        return _AWARE.decode(msgspec.json.encode(text))
    except (msgspec.DecodeError, UnicodeEncodeError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time with a timezone (e.g. 2026-01-31T12:00:00Z)"
        ) from None


# -- output ------------------------------------------------------------------------------------


def write(data: str | bytes) -> None:
    """Write ``data`` to stdout (bytes go to its buffer, after any text written before)."""
    if isinstance(data, str):
        sys.stdout.write(data)
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(data)


def write_json(value: Any) -> None:
    """Write ``value`` as one line of JSON (msgspec: structs, datetimes as RFC 3339)."""
    write(msgspec.json.encode(value) + b"\n")


def error(message: str) -> None:
    """Print ``message`` as one line on stderr."""
    first = " ".join(str(message).split())
    print(f"devcache: error: {first}", file=sys.stderr)


def note(message: str) -> None:
    """Print an informational line on stderr (stdout stays for data)."""
    print(message, file=sys.stderr)


def shown(value: Any) -> str:
    """How a table cell shows a value: times in RFC 3339, containers as JSON, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = msgspec.json.encode(value).decode()
    return text.strip('"') if isinstance(value, datetime) else text


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    """Align ``rows`` (and ``headers``) in columns two spaces apart; the last is not padded."""
    cells = [[shown(value) for value in row] for row in rows]
    if headers is not None:
        cells.insert(0, list(headers))
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]))
    return "\n".join(lines) + "\n"


def fields_table(struct: msgspec.Struct) -> str:
    """A two-column table of a struct's fields and values."""
    return table(None, [(name, getattr(struct, name)) for name in struct.__struct_fields__])


#: The columns of device tables (``query``).
DEVICE_COLUMNS = ("device_id", "datatype_id", "datatype_name", "unit", "persist", "last_updated")


def device_row(m: DeviceMetadata) -> tuple[Any, ...]:
    """A device as a row of :data:`DEVICE_COLUMNS`."""
    return (m.device_id, m.datatype_id, m.datatype_name, m.datatype_unit, m.persist, m.last_updated)


class Progress:
    """A ``\\r`` progress line on stderr, shown only when stderr is a terminal.

    Args:
        verb: What is being done (``"exported"``, ``"imported"``).
        total: How many items there are, when known.
        stream: Where to draw (stderr).
    """

    def __init__(self, verb: str, total: int | None = None, stream: IO[str] | None = None) -> None:
        self.verb = verb
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.perf_counter()
        self._last = 0.0

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.started

    def rate(self, done: int) -> float:
        """Items per second so far."""
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def update(self, done: int) -> None:
        """Redraw the line with ``done`` items (at most ten times a second)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1:
            return
        self._last = now
        of = f" of {self.total:,}" if self.total is not None else ""
        self.stream.write(f"\r{self.verb} {done:,}{of} devices ({self.rate(done):,.0f}/s)  ")
        self.stream.flush()

    def done(self) -> None:
        """End the line, so that what follows starts on a fresh one."""
        if self.enabled and self._last:
            self.stream.write("\n")
            self.stream.flush()
