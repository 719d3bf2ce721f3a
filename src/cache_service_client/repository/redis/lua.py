"""The server-side scripts that keep values and indexes consistent.

Each script is a file of its own in ``scripts/`` (shipped in the package), run after the shared
helpers of ``scripts/prelude.lua`` it uses (only those: Lua builds every helper a script
defines on each call); ``{name}`` in a script's text is one of the constants below.

Every script works inside one bucket (one hash slot in Redis Cluster) and takes the bucket's
fixed index keys as ``KEYS[1..6]`` (ids, expiry, types, by-type, by-time, layout; see
:class:`~cache_service_client.KeyStrategy`), the bucket's device key prefix as ``ARGV[1]`` and
the prefix of its per-datatype time indexes as ``ARGV[2]``. Device keys are ``KEYS[7..]`` where
a script writes them; where a script finds ids in an index it forms their keys as
``ARGV[1] .. id`` (``KeyStrategy.device_key(id)`` is exactly that) and the time index of
datatype number ``n`` as ``ARGV[2] .. n``.

Every script first checks the bucket's index layout version (:data:`LAYOUT_VERSION`): indexes of
another version fail with a ``LAYOUT`` error (:class:`~cache_service_client.IndexLayoutError`)
before anything is read or written; a bucket without indexes gets the version with its first
write.

Expiry follows Redis: a key that expires at ``at`` ms is gone once the server time ``now > at``.
Values are written with ``PXAT`` and the same ``at`` goes into the expiry index, so index and
key agree to the millisecond.

Reads never write, so every read works on a read-only replica: the read scripts skip index
entries whose key is gone (and count from the expiry index, which tells the expired ones).
Writes remove them: every put that sets a TTL also removes up to :data:`PRUNE_PER_WRITE`
expired entries of its bucket, and ``repair`` removes the rest (and entries of keys deleted
behind the library's back).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from importlib.resources import files
from typing import Any, NamedTuple

from cache_service_client.repository.redis.ops import Arg, LuaScript

__all__ = [
    "COUNT",
    "DELETE",
    "FETCH_COST_RATIO",
    "INFO",
    "INFO_DONE",
    "LAYOUT_VERSION",
    "PRUNE_PER_WRITE",
    "PUT",
    "PUT_ONE",
    "RANGE",
    "REINDEX",
    "SWEEP",
    "TIME_RANGE",
    "TIME_SET",
    "WALK_BUDGET",
    "Bound",
    "InfoReply",
    "RangeReply",
    "SweepReply",
    "TimeRangeReply",
    "TimeSetReply",
    "delete_args",
    "info_args",
    "parse_info",
    "parse_range",
    "parse_sweep",
    "parse_time_range",
    "parse_time_set",
    "put_args",
    "range_args",
    "reindex_args",
    "score",
    "text",
    "texts",
    "time_range_args",
    "time_set_args",
    "value_digest",
]

#: Expired index entries a put with a TTL removes from its bucket, at most, with its writes.
PRUNE_PER_WRITE = 16
#: Index entries a walk script examines per call at least before it gives up looking for the
#: matches it was asked for (at most four times as many as the matches asked).
WALK_BUDGET = 512
#: How much more a time range sorted by id costs per entry when walked by id (each entry merged
#: and its score looked up) than when read whole and sorted on the server; measured on Redis
#: 7.0: the TIME_SET script reads a range whole up to sqrt(page x devices x this) entries.
FETCH_COST_RATIO = 6
#: The index layout version the scripts read and write.
LAYOUT_VERSION = 2

_SCRIPTS = files("cache_service_client.repository.redis") / "scripts"


def _source(name: str) -> str:
    return (_SCRIPTS / f"{name}.lua").read_text(encoding="utf-8")


_DEFINITION = re.compile(r"^local (?:function )?([A-Za-z_]\w*)")


def _helpers(prelude: str) -> tuple[str, list[tuple[str, str]]]:
    """Split the prelude into its heading and its definitions: (name, text with its comment).

    A definition starts at a line ``local [function] name`` at the start of a line, with the
    comment lines right above it.
    """
    lines = prelude.splitlines(keepends=True)
    starts: list[int] = []
    for i, line in enumerate(lines):
        if _DEFINITION.match(line):
            while i > 0 and lines[i - 1].startswith("--") and (not starts or i - 1 >= starts[-1]):
                i -= 1
            starts.append(i)
    heading = "".join(lines[: starts[0]])
    parts: list[tuple[str, str]] = []
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        text = "".join(lines[start:end])
        name = next(m.group(1) for line in lines[start:end] if (m := _DEFINITION.match(line)))
        parts.append((name, text))
    return heading, parts


def _uses(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text) is not None


def _with_helpers(body: str) -> str:
    """``body`` after the prelude's heading and the definitions it needs, in prelude order."""
    heading, parts = _helpers(_source("prelude"))
    needed = {name for name, _ in parts if _uses(body, name)}
    while True:  # and what those need
        more = {
            name
            for name, _ in parts
            for used, text in parts
            if used in needed and name not in needed and _uses(text.split("\n", 1)[-1], name)
        }
        if not more:
            break
        needed |= more
    return heading + "".join(text for name, text in parts if name in needed) + body


def _script(name: str, **constants: int) -> LuaScript:
    """``scripts/<name>.lua`` after the prelude helpers it uses, ``{constant}`` replaced."""
    source = _with_helpers(_source(name))
    for constant, value in {"layout": LAYOUT_VERSION, **constants}.items():
        source = source.replace("{" + constant + "}", str(value))
    return LuaScript.of(name, source)


#: Write values and index entries (``if_newer`` too); returns how many devices were written.
PUT = _script("put", prune=PRUNE_PER_WRITE)
#: PUT for one device (the same arguments and reply), with less work per run.
PUT_ONE = _script("put_one", prune=PRUNE_PER_WRITE)
#: Delete values and their index entries; returns how many existed.
DELETE = _script("delete")
#: Walk one id-ordered block (of the ids or the by-type index) by id.
RANGE = _script("range", budget=WALK_BUDGET)
#: Walk a time index by (score, id) (queries sorted by ``last_updated``).
TIME_RANGE = _script("time_range", budget=WALK_BUDGET)
#: Plan a time range sorted by id: count it, and return it when it is small.
TIME_SET = _script("time_set", ratio=FETCH_COST_RATIO)
#: The bucket's live devices.
COUNT = _script("count")
#: The bucket's count and its lowest and highest live score.
INFO = _script("info")
#: Make the indexes agree with values a repair read.
REINDEX = _script("reindex")
#: Remove index entries whose device is gone from one index, a ZSCAN page at a time.
SWEEP = _script("sweep")


# -- calls and replies -------------------------------------------------------------------------
# One builder per script of its arguments after the bucket's two prefixes (ARGV[3..]), by
# keyword, and one parser of its reply. A client that decodes replies answers str, one that
# does not bytes: parsers take both.

Bound = str | bytes


def text(value: bytes | str) -> str:
    """A reply as str."""
    return value.decode() if isinstance(value, bytes) else value


def texts(values: list[Any]) -> list[str]:
    """:func:`text` of each value; a client decodes every reply or none, so one check does."""
    if values and isinstance(values[0], bytes):
        return [value.decode() for value in values]
    return list(values)


def score(value: bytes | str | int) -> int:
    """An index score from an integer reply, or as Redis prints it (``%.17g``)."""
    try:
        return int(value)
    except ValueError:
        return int(float(value))


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _bound(value: int | None, default: str) -> str:
    return default if value is None else str(value)


def _persist(value: bool | None) -> str:
    return "" if value is None else str(int(value))


def put_args(
    *,
    ttl_ms: int,
    if_newer: bool,
    devices: Iterable[tuple[str, bytes, str, int]],
    retried: bool = False,
    check: bool = False,
) -> tuple[Arg, ...]:
    """PUT: the TTL in ms (0: none), the if-newer flag, then (id, value, datatype, score) each.

    The flag is 0 (write), 1 (write only if newer) or 2 (only if newer, on a retried attempt:
    a stored value identical to the update counts as written, as an earlier attempt whose reply
    was lost wrote it); with ``check``, the same after a ``c``: only fail where the put would
    (PUT only).
    """
    flag = (2 if retried else 1) if if_newer else 0
    args: list[Arg] = [ttl_ms, f"c{flag}" if check else flag]
    for device in devices:
        args += device
    return tuple(args)


def delete_args(device_ids: Iterable[str], *, check: bool = False) -> tuple[Arg, ...]:
    """DELETE: the check flag (``c``: only fail where the delete would; else 0), then the ids."""
    return ("c" if check else 0, *device_ids)


def range_args(
    *,
    datatype_id: str | None,
    persist: bool | None,
    low: Bound,
    high: Bound,
    want: int,
    descending: bool,
    lo: int | None = None,
    hi: int | None = None,
    with_values: bool = False,
    with_total: bool = False,
) -> tuple[Arg, ...]:
    """RANGE's arguments.

    The blocks (of a datatype or all devices; one persist flag or both), the lex bounds, the
    matches wanted, the direction, the time score bounds, and whether the values and the
    bucket's count come too.
    """
    return (
        datatype_id or "",
        _persist(persist),
        low,
        high,
        want,
        _flag(descending),
        _bound(lo, "-inf"),
        _bound(hi, "+inf"),
        _flag(with_values),
        _flag(with_total),
    )


class RangeReply(NamedTuple):
    """RANGE's reply.

    Live ids in walk order, the last id examined (None: the range ended), their values (when
    asked) and the bucket's count (when asked).
    """

    ids: list[str]
    last: bytes | str | None
    values: list[Any]
    total: int | None


def parse_range(reply: Any) -> RangeReply:
    """Parse a RANGE reply."""
    total = None if reply[3] is None else int(reply[3])
    return RangeReply(texts(reply[0]), reply[1], list(reply[2]), total)


def time_range_args(
    *,
    datatype_id: str | None,
    lo: int | None,
    hi: int | None,
    after: tuple[int, str] | None,
    want: int,
    descending: bool,
    persist: bool | None,
    with_values: bool = False,
    with_total: bool = False,
) -> tuple[Arg, ...]:
    """TIME_RANGE's arguments.

    The time index (of a datatype, or of all devices), the score bounds, the (score, id) to
    resume after, the matches wanted, the direction, the persist filter, values and count.
    """
    after_score, after_id = ("", "") if after is None else after
    return (
        datatype_id or "",
        _bound(lo, "-inf"),
        _bound(hi, "+inf"),
        after_score,
        after_id,
        want,
        _flag(descending),
        _persist(persist),
        _flag(with_values),
        _flag(with_total),
    )


class TimeRangeReply(NamedTuple):
    """TIME_RANGE's reply.

    Live (id, score) entries in walk order, the last (score, id) examined (None: the range
    ended), their values (when asked) and the bucket's count (when asked).
    """

    entries: list[tuple[str, int]]
    last: tuple[int, str] | None
    values: list[Any]
    total: int | None


def parse_time_range(reply: Any) -> TimeRangeReply:
    """Parse a TIME_RANGE reply."""
    flat, last = reply[0], reply[1]
    entries = list(zip(texts(flat[0::2]), (score(s) for s in flat[1::2]), strict=True))
    resume = None if last is None else (score(last[0]), text(last[1]))
    total = None if reply[3] is None else int(reply[3])
    return TimeRangeReply(entries, resume, list(reply[2]), total)


def time_set_args(
    *,
    datatype_id: str | None,
    lo: int | None,
    hi: int | None,
    persist: bool | None,
    page: int,
    small: int,
    prefix: str = "",
    after: str | None = None,
    descending: bool = False,
    want: int,
    with_values: bool = False,
) -> tuple[Arg, ...]:
    """TIME_SET's arguments.

    The time index, the score bounds, the persist filter, the page size (limit + 1), the least
    range size that is read whole; then, for a range read whole, the literal id prefix, the id to
    go on after, the direction, how many matches to return and whether the values come too.
    """
    return (
        datatype_id or "",
        _bound(lo, "-inf"),
        _bound(hi, "+inf"),
        _persist(persist),
        page,
        small,
        prefix,
        "" if after is None else after,
        _flag(descending),
        want,
        _flag(with_values),
    )


class TimeSetReply(NamedTuple):
    """TIME_SET's reply.

    The entries in the range; whether it was read whole (else walk by id: the rest is empty);
    then its live matching ids in walk order, the last id examined (None: the range ended) and
    their values (when asked).
    """

    in_range: int
    whole: bool
    ids: list[str]
    last: bytes | str | None
    values: list[Any]


def parse_time_set(reply: Any) -> TimeSetReply:
    """Parse a TIME_SET reply."""
    in_range, whole, ids, last, values = reply
    return TimeSetReply(int(in_range), bool(int(whole)), texts(ids), last, list(values))


#: An end of the time index INFO is not to search again (its answer is known).
INFO_DONE = "done"


def info_args(
    *,
    budget: int,
    low: tuple[Arg, Arg] | None = None,
    high: tuple[Arg, Arg] | None = None,
    search_low: bool = True,
    search_high: bool = True,
) -> tuple[Arg, ...]:
    """INFO: the entries to examine from each end, and where to go on from at each end.

    ``low`` / ``high``: the (score, id) an earlier call examined last at that end (None: from
    the end itself); ``search_low`` / ``search_high`` False: leave that end out.
    """
    args: list[Arg] = [budget]
    for search, resume in ((search_low, low), (search_high, high)):
        if not search:
            args += [INFO_DONE, ""]
        elif resume is None:
            args += ["", ""]
        else:
            args += resume
    return tuple(args)


class InfoReply(NamedTuple):
    """INFO's reply: the bucket's live devices, and its lowest and highest live time score.

    ``low_next`` / ``high_next``: when that end's budget ran out before it found a live entry
    or the end of the index, the (score, id) to go on from (its score is then None).
    """

    devices: int
    lowest: int | None
    highest: int | None
    low_next: tuple[Bound, Bound] | None = None
    high_next: tuple[Bound, Bound] | None = None


def _resume(value: Any) -> tuple[Bound, Bound] | None:
    return None if not value else (value[0], value[1])


def parse_info(reply: Any) -> InfoReply:
    """Parse an INFO reply."""
    devices, low, high, *rest = reply
    low_next, high_next = [*rest, None, None][:2]
    return InfoReply(
        int(devices),
        None if low is None else int(text(low)),
        None if high is None else int(text(high)),
        _resume(low_next),
        _resume(high_next),
    )


def value_digest(value: bytes | str) -> str:
    """The SHA-1 of a stored value in hex, as the server's ``redis.sha1hex`` gives it."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()


def reindex_args(devices: Iterable[tuple[str, str, int, str]]) -> tuple[Arg, ...]:
    """REINDEX: (id, datatype, score, :func:`value_digest` of the value) of each device read.

    REINDEX leaves a device alone whose value is no longer the one read.
    """
    return tuple(part for device in devices for part in device)


class SweepReply(NamedTuple):
    """SWEEP's reply: the ZSCAN cursor to go on from ("0": done) and the entries removed."""

    cursor: str
    removed: int


def parse_sweep(reply: Any) -> SweepReply:
    """Parse a SWEEP reply."""
    return SweepReply(text(reply[0]), int(reply[1]))
