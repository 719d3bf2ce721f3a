"""``devcache export`` and ``devcache import``: a fleet as JSON Lines, one device a line.

Export walks a query's cursor pages (constant memory at any fleet size) and writes each device
in the stored JSON form (the JSON codec's: ``{"v":1,"device_id":...}``). Import validates every
line before it writes anything (two passes: a file is read twice, stdin is spooled to a
temporary file in the first), then stores the devices with batched ``put_many`` calls. A line
without ``last_updated`` gets the time the import started, as ``put`` defaults it to now.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import msgspec

from cache_service_client._cli._common import (
    ERROR,
    JSON_CODEC,
    OK,
    Progress,
    client,
    error,
    note,
    pages,
    write_json,
)
from cache_service_client._validation import validate_metadata
from cache_service_client.client import CacheServiceClient
from cache_service_client.exceptions import CacheServiceError, ValidationError
from cache_service_client.models import SCHEMA_VERSION, DeviceMetadata

#: Devices per export page (the largest query page).
EXPORT_PAGE = 1000
#: Import batches in flight at once (their scripts queue on the server: no batch waits for the
#: client to prepare the next).
IN_FLIGHT = 2
#: Invalid lines listed one by one; the rest are counted.
SHOWN_ERRORS = 10


class _StrictMetadata(DeviceMetadata, frozen=True, forbid_unknown_fields=True, tag=SCHEMA_VERSION):
    """DeviceMetadata that refuses unknown top-level fields (an import must lose nothing)."""


_LINE = msgspec.json.Decoder(_StrictMetadata)
_BATCH = msgspec.json.Decoder(list[DeviceMetadata])
_AT = re.compile(r"^(.*?) - at `\$\.?(.*)`$")
_UNDATED = "Object missing required field `last_updated`"
_NAMED = re.compile(r"field `([^`]*)`")


# -- export ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """The buffer of stdout, or a temporary file beside ``path`` renamed to it once complete."""
    if path is None or path == "-":
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
        "wb", dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
    )
    try:
        with handle:
            yield handle
        os.replace(handle.name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def run_export(args: argparse.Namespace) -> int:
    """``devcache export``: every matching device, a JSON line each, page by page."""
    fields: dict[str, Any] = {
        "datatype_id": args.datatype,
        "pattern": args.pattern,
        "limit": EXPORT_PAGE,
    }
    encode = JSON_CODEC.encode
    exported = 0
    with client(args) as cache:
        walk = pages(cache, fields)
        first = next(walk)
        progress = Progress("exported", first.total)
        with _output(args.output) as out:
            for page in itertools.chain([first], walk):
                if page.items:
                    out.write(b"\n".join(map(encode, page.items)) + b"\n")
                    exported += len(page.items)
                    progress.update(exported)
        progress.done()
    if not args.quiet:
        where = "" if args.output in (None, "-") else f" to {args.output}"
        note(
            f"exported {exported:,} devices{where} in {progress.elapsed:.2f} s "
            f"({progress.rate(exported):,.0f}/s)"
        )
    return OK


# -- import ------------------------------------------------------------------------------------


def line_error(number: int, exc: Exception) -> str:
    """What is wrong with line ``number``, naming the field when there is one."""
    if isinstance(exc, msgspec.ValidationError):
        message = str(exc)
        at = _AT.match(message)
        if at is not None:
            field, message = at.group(2) or "$", at.group(1)
        else:
            named = _NAMED.search(message)
            field = named.group(1) if named is not None else "$"
        return f"line {number}: {field}: {message}"
    if isinstance(exc, msgspec.DecodeError):
        return f"line {number}: not valid JSON: {exc}"
    return f"line {number}: {exc}"


class Checked(msgspec.Struct, kw_only=True):
    """What the validating pass found.

    Attributes:
        lines: Lines read (blank ones included).
        devices: Valid device lines.
        invalid: Line numbers of invalid lines.
        undated: Line numbers of valid lines without ``last_updated`` (given the import's time).
        errors: Messages of the first invalid lines.
    """

    lines: int = 0
    devices: int = 0
    invalid: list[int] = msgspec.field(default_factory=list)
    undated: list[int] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)


def _dated(line: bytes, now: datetime) -> bytes | None:
    """``line`` (a JSON object without ``last_updated``) with ``last_updated`` = ``now``."""
    try:
        fields = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    if not isinstance(fields, dict):
        return None
    fields["last_updated"] = now
    return msgspec.json.encode(fields)


def check_lines(
    source: IO[bytes], spool: IO[bytes] | None = None, *, now: datetime | None = None
) -> Checked:
    """Validate every line of ``source`` (copying it to ``spool`` if given).

    A valid line is one JSON object with exactly the fields of a stored device (the ``"v"``
    schema tag optional; ``last_updated`` too, which defaults to ``now``, as in ``devcache
    put``), passing the write path's checks; blank lines are ignored.
    """
    if now is None:
        now = datetime.now(timezone.utc)
    checked = Checked()
    decode = _LINE.decode
    progress = Progress("validated")
    number = 0
    for number, line in enumerate(source, 1):
        if spool is not None:
            spool.write(line)
        if len(line) < 3 and not line.strip():
            continue
        try:
            try:
                validate_metadata(decode(line))
            except msgspec.ValidationError as exc:
                dated = _dated(line, now) if str(exc) == _UNDATED else None
                if dated is None:
                    raise
                validate_metadata(decode(dated))
                checked.undated.append(number)
        except (msgspec.ValidationError, msgspec.DecodeError, ValidationError) as exc:
            checked.invalid.append(number)
            if len(checked.errors) < SHOWN_ERRORS:
                checked.errors.append(line_error(number, exc))
            continue
        checked.devices += 1
        if not number & 0xFFF:
            progress.update(number)
    checked.lines = number
    progress.done()
    return checked


def _batches(
    source: IO[bytes], checked: Checked, size: int, now: datetime
) -> Iterator[list[DeviceMetadata]]:
    """The devices of the lines of ``source`` (validated before), ``size`` at a time."""
    skipped = set(checked.invalid)
    undated = set(checked.undated)
    lines: list[bytes] = []
    for number, line in enumerate(source, 1):
        if (skipped and number in skipped) or (len(line) < 3 and not line.strip()):
            continue
        if undated and number in undated:
            line = _dated(line, now) or line  # validated before: always dated
        lines.append(line)
        if len(lines) == size:
            yield _BATCH.decode(b"[" + b",".join(lines) + b"]")
            lines = []
    if lines:
        yield _BATCH.decode(b"[" + b",".join(lines) + b"]")


class Writer:
    """Batched ``put_many`` calls in order, with up to ``depth`` batches in flight.

    While the server runs one batch's script, the next batch is prepared (validated, encoded)
    and sent on another connection (a thread each): the client's work overlaps the server's.
    A batch that shares an id with one in flight waits for it, so the device's last line
    always wins, as with sequential writes.

    Args:
        cache: The client to write through.
        if_newer: Write each device only over older stored metadata.
        depth: Batches in flight at most (1: one call at a time, no threads).
        progress: Told the devices stored so far.
    """

    def __init__(
        self, cache: CacheServiceClient, *, if_newer: bool, depth: int, progress: Progress
    ) -> None:
        self.written = 0
        self.stored = 0
        self._cache = cache
        self._if_newer = if_newer
        self._depth = depth
        self._progress = progress
        self._pool = ThreadPoolExecutor(depth, "devcache-import") if depth > 1 else None
        self._flight: deque[tuple[Future[int], frozenset[str], int]] = deque()

    def _store(self, batch: list[DeviceMetadata]) -> int:
        return self._cache.store_many_device_metadata_sync(batch, if_newer=self._if_newer)

    def _count(self, written: int, size: int) -> None:
        self.written += written
        self.stored += size
        self._progress.update(self.stored)

    def put(self, batch: list[DeviceMetadata]) -> None:
        """Write ``batch`` after every earlier one that shares an id with it."""
        if self._pool is None:
            self._count(self._store(batch), len(batch))
            return
        ids = frozenset([m.device_id for m in batch])
        while self._flight and (
            len(self._flight) >= self._depth
            or any(not ids.isdisjoint(other) for _, other, _ in self._flight)
        ):
            self._wait()
        self._flight.append((self._pool.submit(self._store, batch), ids, len(batch)))

    def _wait(self) -> None:
        future, _, size = self._flight.popleft()
        self._count(future.result(), size)

    def finish(self) -> None:
        """Wait for every batch in flight; the first failure raises."""
        while self._flight:
            self._wait()

    def close(self) -> None:
        """Wait for the batches in flight, counting those that succeed, and stop the threads."""
        while self._flight:
            with contextlib.suppress(Exception):
                self._wait()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


@contextlib.contextmanager
def _input(path: str) -> Iterator[tuple[IO[bytes], IO[bytes] | None]]:
    """The source to validate and, for stdin, the spool that the writing pass reads."""
    if path == "-":
        with tempfile.TemporaryFile() as spool:
            yield sys.stdin.buffer, spool
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ValidationError("FILE", f"{path}: cannot be read ({exc.strerror})") from None
    with handle:
        yield handle, None


def run_import(args: argparse.Namespace) -> int:
    """``devcache import FILE|-``: validate every line, then write in batches."""
    now = datetime.now(timezone.utc)  # the last_updated of lines without one
    with _input(args.file) as (source, spool):
        checked = check_lines(source, spool, now=now)
        report = note if args.skip_invalid else error
        for message in checked.errors:
            report(f"devcache: skipped {message}" if args.skip_invalid else message)
        hidden = len(checked.invalid) - len(checked.errors)
        if hidden:
            report(f"... and {hidden:,} more invalid lines")
        if checked.invalid and not args.skip_invalid:
            error(
                f"{len(checked.invalid):,} invalid lines of {checked.lines:,}: nothing written "
                "(--skip-invalid writes the valid ones)"
            )
            return ERROR
        if checked.invalid and not checked.devices:
            error(
                f"{len(checked.invalid):,} invalid lines of {checked.lines:,}, none valid: "
                "nothing written"
            )
            return ERROR
        reread = spool if spool is not None else source
        reread.seek(0)
        progress = Progress("imported", checked.devices)
        with client(args) as cache:
            depth = 1 if cache.settings.backend == "memory" else IN_FLIGHT
            writer = Writer(cache, if_newer=args.if_newer, depth=depth, progress=progress)
            try:
                for batch in _batches(reread, checked, args.batch, now):
                    writer.put(batch)
                writer.finish()
            except CacheServiceError as exc:
                writer.close()
                progress.done()
                error(
                    f"{exc} (stopped after {writer.stored:,} of {checked.devices:,} devices, "
                    f"{writer.written:,} written)"
                )
                return ERROR
            finally:
                writer.close()
            progress.done()
    written = writer.written
    summary = {
        "lines": checked.lines,
        "devices": checked.devices,
        "written": written,
        "invalid": len(checked.invalid),
        "seconds": round(progress.elapsed, 3),
    }
    if args.json:
        write_json(summary)
    elif not args.quiet:
        skipped = f", {len(checked.invalid):,} invalid lines skipped" if checked.invalid else ""
        unchanged = checked.devices - written
        older = f", {unchanged:,} not newer" if args.if_newer and unchanged else ""
        note(
            f"imported {written:,} of {checked.devices:,} devices{older}{skipped} in "
            f"{progress.elapsed:.2f} s ({progress.rate(checked.devices):,.0f}/s)"
        )
    return OK
