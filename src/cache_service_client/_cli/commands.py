"""The ``devcache`` commands that read and write single devices, lists and figures."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from cache_service_client._cli._common import (
    DEVICE_COLUMNS,
    ERROR,
    JSON_CODEC,
    NOT_FOUND,
    OK,
    client,
    device_row,
    error,
    fields_table,
    note,
    pages,
    table,
    write,
    write_json,
)
from cache_service_client.exceptions import ValidationError
from cache_service_client.models import SCHEMA_VERSION, DeviceMetadata, Page

#: Exit code of ``health`` by status: a probe's view (0 healthy, 1 degraded, 2 unhealthy).
HEALTH_EXIT = {"healthy": OK, "degraded": NOT_FOUND, "unhealthy": ERROR}
#: Devices per page that ``list`` fetches when it streams every id (the largest query page).
LIST_PAGE = 1000


def emit(args: argparse.Namespace, value: Any, text: str) -> None:
    """Write ``value`` as JSON with ``--json``, else ``text``."""
    if args.json:
        write_json(value)
    else:
        write(text)


def run_get(args: argparse.Namespace) -> int:
    """``devcache get ID``: one device; exit code 1 when it is not stored."""
    with client(args) as cache:
        metadata = cache.get_device_metadata_sync(args.device_id, None)
    if metadata is None:
        error(f"device {args.device_id!r} not found")
        return NOT_FOUND
    if args.json:
        write(JSON_CODEC.encode(metadata) + b"\n")
    else:
        write(fields_table(metadata))
    return OK


def _read_metadata(text: str | bytes, source: str) -> dict[str, Any]:
    """The JSON object of ``put``, without the schema tag a ``get --json`` carries."""
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ValidationError(source, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError(source, f"must be a JSON object, not {type(data).__name__}")
    if data.get("v") == SCHEMA_VERSION:
        del data["v"]
    return data


def run_put(args: argparse.Namespace) -> int:
    """``devcache put ID [JSON|-]``: store one device from a JSON object (or stdin)."""
    if args.metadata in (None, "-"):
        data = _read_metadata(sys.stdin.buffer.read(), "stdin")
    else:
        data = _read_metadata(args.metadata, "JSON")
    with client(args) as cache:
        written = cache.store_device_metadata(args.device_id, data, if_newer=args.if_newer)
    if args.json:
        write_json({"device_id": args.device_id, "written": written})
    elif written:
        write(f"stored {args.device_id}\n")
    else:
        write(f"not stored {args.device_id}: the stored metadata is as new or newer\n")
    return OK


def run_delete(args: argparse.Namespace) -> int:
    """``devcache delete ID...``: exit code 1 when none of the ids was stored."""
    with client(args) as cache:
        deleted = cache.delete_many_device_metadata_sync(args.device_ids)
    emit(args, {"deleted": deleted}, f"deleted {deleted} of {len(set(args.device_ids))} devices\n")
    return OK if deleted else NOT_FOUND


def run_list(args: argparse.Namespace) -> int:
    """``devcache list``: device ids in order, one a line (``--json``: an array).

    With ``--limit``, one call; without it the ids are streamed page by page through a query's
    cursor (constant memory at any fleet size), ``--offset`` skipping the first ones.
    """
    with client(args) as cache:
        if args.limit is not None:
            ids = cache.list_devices_sync(
                limit=args.limit, offset=args.offset, pattern=args.pattern
            )
            if args.json:
                write_json(ids)
            elif ids:
                write("\n".join(ids) + "\n")
            return OK
        skip = args.offset
        listed = 0
        if args.json:
            write("[")
        for page in pages(cache, {"pattern": args.pattern, "limit": LIST_PAGE}):
            page_ids = [m.device_id for m in page.items[skip:]]
            skip = max(0, skip - len(page.items))
            if not page_ids:
                continue
            if args.json:
                write(("," if listed else "") + ",".join(map(_json_text, page_ids)))
            else:
                write("\n".join(page_ids) + "\n")
            listed += len(page_ids)
        if args.json:
            write("]\n")
    return OK


def _json_text(text: str) -> str:
    return msgspec.json.encode(text).decode()


def _query_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "datatype_id": args.datatype,
        "persist": args.persist,
        "updated_after": args.updated_after,
        "updated_before": args.updated_before,
        "pattern": args.pattern,
        "sort": args.sort,
        "descending": args.desc,
        "limit": args.limit,
        "cursor": args.cursor,
    }


def run_query(args: argparse.Namespace) -> int:
    """``devcache query``: one page (its cursor on stderr, or in the JSON), or ``--all`` pages."""
    fields = _query_fields(args)
    with client(args) as cache:
        if not args.all:
            page: Page[DeviceMetadata] = cache.query_devices_sync(**fields)
            if args.json:
                write_json(page)
            else:
                write(table(DEVICE_COLUMNS, map(device_row, page.items)))
                if page.next_cursor is not None:
                    note(f"more: --cursor {page.next_cursor}")
            return OK
        # Every page, streamed: a JSON document written as it goes, or one table.
        encode = JSON_CODEC.encode
        count = 0
        if args.json:
            write(b'{"items":[')
        for page in pages(cache, fields):
            if args.json:
                separator = b"," if count else b""
                if page.items:
                    write(separator + b",".join(map(encode, page.items)))
            else:
                headers = DEVICE_COLUMNS if count == 0 else None
                write(table(headers, map(device_row, page.items)))
            count += len(page.items)
    if args.json:
        write(b'],"next_cursor":null,"total":' + str(count).encode() + b"}\n")
    return OK


def run_count(args: argparse.Namespace) -> int:
    """``devcache count``: how many devices are stored."""
    with client(args) as cache:
        count = cache.count_devices_sync()
    emit(args, {"count": count}, f"{count}\n")
    return OK


def run_info(args: argparse.Namespace) -> int:
    """``devcache info``: the cache figures."""
    with client(args) as cache:
        info = cache.get_cache_info_sync()
    emit(args, info, fields_table(info))
    return OK


def run_health(args: argparse.Namespace) -> int:
    """``devcache health``: exit code 0 healthy, 1 degraded, 2 unhealthy (a probe)."""
    with client(args) as cache:
        health = cache.check_health_sync()
    rows: list[tuple[str, Any]] = [
        (name, getattr(health, name)) for name in ("status", "message", "latency_ms", "timestamp")
    ]
    rows += [(f"  {name}", value) for name, value in health.details.items()]
    emit(args, health, table(None, rows))
    return HEALTH_EXIT[health.status]
