"""Query planning shared by every backend: validation, index score ranges, cursors, filters.

The in-memory and the Redis repositories answer a :class:`DeviceQuery` from the same
:class:`QueryPlan`, so they agree on order, filters and cursors exactly. The index score of a
device (:func:`~cache_service_client.keys.score_of`) is defined with the key layout.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from cache_service_client._glob import compile_glob, literal_prefix
from cache_service_client._validation import check_text, datetime_to_ms, validate_paging
from cache_service_client.exceptions import ValidationError
from cache_service_client.keys import score_of
from cache_service_client.models import DeviceQuery

__all__ = ["MAX_QUERY_LIMIT", "QueryPlan", "plan_query"]

MAX_QUERY_LIMIT = 1000
_CURSOR_VERSION = 1


Position = tuple[str] | tuple[int, str]


@dataclass(frozen=True)
class QueryPlan:
    """A validated query, ready to run.

    Attributes:
        by_time: Sort by ``last_updated`` (score) rather than by id.
        descending: Walk the order backwards.
        datatype_id: Only this datatype, or None.
        persist: Only this persist flag, or None.
        lo: Lowest allowed score (inclusive), or None.
        hi: Highest allowed score (inclusive), or None.
        pattern: The id glob, or None.
        prefix: The pattern's literal prefix ("" without a pattern).
        limit: Page size.
        after: Where the previous page ended (exclusive), or None for the first page.
        fingerprint: Identifies the query's filters and order inside its cursors.
        matcher: Matches ids against the pattern (None: no pattern, or ``*``).
        prefix_only: The pattern is its literal prefix followed by ``*``: a walk of the ids
            index over the prefix range needs no matching.
    """

    by_time: bool
    descending: bool
    datatype_id: str | None
    persist: bool | None
    lo: int | None
    hi: int | None
    pattern: str | None
    prefix: str
    limit: int
    after: Position | None
    fingerprint: str
    matcher: Callable[[str], bool] | None
    prefix_only: bool = False

    def sort_key(self, device_id: str, score: int) -> Position:
        """The position of a device in this query's ascending order."""
        return (score, device_id) if self.by_time else (device_id,)

    def cursor(self, position: Position) -> str:
        """An opaque cursor resuming right after ``position``."""
        raw = msgspec.msgpack.encode([_CURSOR_VERSION, self.fingerprint, *position])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _fingerprint(query: DeviceQuery, lo: int | None, hi: int | None) -> str:
    parts = (query.sort, query.descending, query.datatype_id, query.persist, lo, hi, query.pattern)
    digest = hashlib.sha256(msgspec.msgpack.encode(list(parts))).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()


def _aware_ms(value: object, field: str) -> int:
    if not isinstance(value, datetime):
        raise ValidationError(field, f"must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValidationError(field, "naive datetime: give a timezone-aware one")
    return datetime_to_ms(value)


def plan_query(query: object) -> QueryPlan:
    """Validate ``query`` and plan it.

    Raises:
        ValidationError: Naming the offending field (``limit``, ``cursor``, ...).
    """
    if not isinstance(query, DeviceQuery):
        raise ValidationError("query", f"must be a DeviceQuery, not {type(query).__name__}")
    if query.sort not in ("device_id", "last_updated"):
        raise ValidationError("sort", f"must be 'device_id' or 'last_updated', not {query.sort!r}")
    if type(query.descending) is not bool:
        raise ValidationError("descending", "must be a bool")
    if type(query.limit) is not int or not 1 <= query.limit <= MAX_QUERY_LIMIT:
        raise ValidationError(
            "limit", f"must be an int from 1 to {MAX_QUERY_LIMIT}, not {query.limit!r}"
        )
    if query.datatype_id is not None and (
        type(query.datatype_id) is not str or not query.datatype_id
    ):
        raise ValidationError("datatype_id", "must be a non-empty str or None")
    if query.datatype_id is not None:
        check_text(query.datatype_id, "datatype_id")
    if query.persist is not None and type(query.persist) is not bool:
        raise ValidationError("persist", "must be a bool or None")
    validate_paging(None, None, query.pattern)
    lo = hi = None
    if query.updated_after is not None:
        lo = score_of(_aware_ms(query.updated_after, "updated_after") + 1, False)
    if query.updated_before is not None:
        hi = score_of(_aware_ms(query.updated_before, "updated_before") - 1, True)
    fingerprint = _fingerprint(query, lo, hi)
    by_time = query.sort == "last_updated"
    after: Position | None = None
    if query.cursor is not None:
        after = _decode_cursor(query.cursor, fingerprint, by_time)
    pattern = query.pattern
    prefix = literal_prefix(pattern) if pattern is not None else ""
    # "<literal prefix>*" needs no matching on a walk of the ids index from the prefix.
    prefix_only = pattern is not None and pattern == prefix + "*"
    return QueryPlan(
        by_time=by_time,
        descending=query.descending,
        datatype_id=query.datatype_id,
        persist=query.persist,
        lo=lo,
        hi=hi,
        pattern=pattern,
        prefix=prefix,
        limit=query.limit,
        after=after,
        fingerprint=fingerprint,
        matcher=compile_glob(pattern) if pattern is not None and pattern != "*" else None,
        prefix_only=prefix_only,
    )


def _decode_cursor(cursor: object, fingerprint: str, by_time: bool) -> Position:
    if type(cursor) is not str:
        raise ValidationError("cursor", "must be a str or None")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = msgspec.msgpack.decode(raw)
    except (ValueError, msgspec.DecodeError):
        raise ValidationError("cursor", "is not a cursor of this library") from None
    if not isinstance(decoded, list) or len(decoded) < 3 or decoded[0] != _CURSOR_VERSION:
        raise ValidationError("cursor", "is not a cursor of this library")
    if decoded[1] != fingerprint:
        raise ValidationError("cursor", "belongs to another query (filters or order differ)")
    if by_time:
        if len(decoded) == 4 and type(decoded[2]) is int and type(decoded[3]) is str:
            return (decoded[2], decoded[3])
    elif len(decoded) == 3 and type(decoded[2]) is str:
        return (decoded[2],)
    raise ValidationError("cursor", "is not a cursor of this library")
