"""Checks run on the write path, before any backend command is sent.

msgspec checks types and constraints only when decoding, and writes NaN as ``null``; so metadata
built in Python is checked here explicitly, and every failure is a :class:`ValidationError`
naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeGuard

import msgspec

from cache_service_client.exceptions import ValidationError
from cache_service_client.models import AwareDatetime, DeviceMetadata

MAX_DEVICE_ID_LENGTH = 256
MAX_NESTING = 32
#: The longest TTL accepted, in seconds (100 years): expiry times stay exact in Lua's doubles.
MAX_TTL = 100 * 365 * 86400
#: The longest glob pattern accepted, in UTF-8 bytes: room for any device id with its glob
#: characters escaped plus a suffix pattern, while compiling the matcher stays cheap (about
#: 50 ms for the costliest pattern of this length).
MAX_PATTERN_BYTES = 2048
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def datetime_from_ms(ms: float) -> datetime:
    """Return the UTC datetime of ``ms`` milliseconds since the epoch."""
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime) -> int:
    """Return ``value`` as whole milliseconds since the epoch (rounded toward -inf)."""
    delta = value - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def validate_device_id(device_id: object, field: str = "device_id") -> str:
    """Return ``device_id`` if it is a valid id, else raise :class:`ValidationError`.

    A valid id is a str of 1-256 printable characters with no whitespace (so no control,
    format or separator characters). Glob characters (``* ? [ ] \\``) are allowed.
    """
    if type(device_id) is not str:
        raise ValidationError(field, f"must be a str, not {type(device_id).__name__}")
    if not device_id:
        raise ValidationError(field, "must not be empty")
    if len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise ValidationError(
            field, f"is {len(device_id)} characters long; at most {MAX_DEVICE_ID_LENGTH} allowed"
        )
    # isprintable() is False for every control, format, surrogate and separator character
    # except the ASCII space, which is checked separately.
    if not device_id.isprintable() or " " in device_id:
        bad = next(ch for ch in device_id if ch == " " or not ch.isprintable())
        raise ValidationError(
            field, f"{device_id!r} contains {bad!r}: no whitespace or control characters allowed"
        )
    return device_id


def check_batch(items: object, field: str, what: str) -> Iterable[Any]:
    """Return ``items`` if it can be iterated as a batch of ``what``, else raise.

    A single str or bytes is refused too: iterating it would give its characters.
    """
    if isinstance(items, (str, bytes)):
        raise ValidationError(field, f"must be an iterable of {what}, not a single str")
    if not isinstance(items, Iterable):
        raise ValidationError(field, f"must be an iterable of {what}, not {type(items).__name__}")
    return items


def validate_device_ids(device_ids: Iterable[str], field: str = "device_ids") -> list[str]:
    """Validate every id of a batch and return them as a list, duplicates removed, order kept."""
    seen: dict[str, None] = {}
    for index, device_id in enumerate(check_batch(device_ids, field, "ids")):
        # The common case costs no error name: it is only formatted for an invalid id.
        if (
            type(device_id) is str
            and 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH
            and device_id.isprintable()
            and " " not in device_id
        ):
            seen[device_id] = None
        else:
            seen[validate_device_id(device_id, f"{field}[{index}]")] = None
    return list(seen)


def check_flag(value: object, field: str) -> bool:
    """Return ``value`` if it is a bool, else raise :class:`ValidationError` naming ``field``."""
    if type(value) is not bool:
        raise ValidationError(field, f"must be a bool, not {type(value).__name__}")
    return value


def check_text(value: str, field: str) -> None:
    """Raise :class:`ValidationError` if ``value`` cannot be encoded as UTF-8 (lone surrogates)."""
    # Lone surrogates cannot be encoded as UTF-8; ASCII text (the common case) skips the check.
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise ValidationError(
                field, f"{value!r} contains a lone surrogate, which is not valid text"
            ) from exc


def _check_str(value: object, field: str, *, optional: bool = False, empty: bool = True) -> None:
    if value is None and optional:
        return
    if type(value) is not str:
        expected = "a str or None" if optional else "a str"
        raise ValidationError(field, f"must be {expected}, not {type(value).__name__}")
    if not empty and not value:
        raise ValidationError(field, "must not be empty")
    check_text(value, field)


def _check_json(value: Any, field: str, depth: int) -> None:
    kind = type(value)
    if kind is str:
        check_text(value, field)
        return
    if kind is bool or value is None:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValidationError(field, f"integer {value} is outside the 64-bit range")
        return
    if kind is float:
        if not math.isfinite(value):
            raise ValidationError(field, f"{value!r} is not a finite number")
        return
    if depth >= MAX_NESTING:
        raise ValidationError(field, f"nesting deeper than {MAX_NESTING} levels")
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValidationError(field, f"key {key!r} must be a str")
            check_text(key, field)
            _check_json(item, f"{field}.{key}", depth + 1)
        return
    if kind is list or kind is tuple:
        for index, item in enumerate(value):
            _check_json(item, f"{field}[{index}]", depth + 1)
        return
    raise ValidationError(
        field,
        f"{kind.__name__} is not JSON-compatible (use str, int, float, bool, None, list, dict)",
    )


def _text_ok(value: str) -> bool:
    """True when ``value`` is valid text (what :func:`check_text` accepts)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _json_ok(value: Any, depth: int) -> bool:
    """True when :func:`_check_json` accepts ``value``; no error names are built.

    Scalars inside containers are checked inline, so a flat dict costs one call.
    """
    kind = type(value)
    if kind is dict:
        if depth >= MAX_NESTING:
            return False
        for key in value:
            if type(key) is not str or not (key.isascii() or _text_ok(key)):
                return False
        items = value.values()
    elif kind is list or kind is tuple:
        if depth >= MAX_NESTING:
            return False
        items = value
    elif kind is str:
        return value.isascii() or _text_ok(value)
    elif kind is bool or value is None:
        return True
    elif kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    elif kind is float:
        return bool(value - value == 0.0)  # inf - inf and nan - nan are nan
    else:
        return False
    for item in items:
        kind = type(item)
        if kind is str:
            if not (item.isascii() or _text_ok(item)):
                return False
        elif kind is bool or item is None:
            pass
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif kind is float:
            if item - item != 0.0:
                return False
        elif not _json_ok(item, depth + 1):
            return False
    return True


def metadata_ok(metadata: object) -> TypeGuard[DeviceMetadata]:
    """True when :func:`validate_metadata` would return ``metadata`` itself, unchanged.

    The write path's fast check: no error names are formatted and nothing is copied. It is
    False for anything the full check would reject, and also for valid metadata that the
    full check would change (a ``last_updated`` in another timezone than ``timezone.utc``).
    """
    if type(metadata) is not DeviceMetadata:
        return False
    device_id = metadata.device_id
    datatype_id = metadata.datatype_id
    name = metadata.datatype_name
    unit = metadata.datatype_unit
    updated = metadata.last_updated
    props = metadata.additional_properties
    return (
        type(device_id) is str
        and 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH
        and device_id.isprintable()
        and " " not in device_id
        and type(datatype_id) is str
        and datatype_id != ""
        and (datatype_id.isascii() or _text_ok(datatype_id))
        and type(name) is str
        and (name.isascii() or _text_ok(name))
        and (unit is None or (type(unit) is str and (unit.isascii() or _text_ok(unit))))
        and type(metadata.persist) is bool
        and type(updated) is datetime
        and updated.tzinfo is timezone.utc
        and type(props) is dict
        and _json_ok(props, 0)
    )


def validate_metadata(metadata: object, field: str = "metadata") -> DeviceMetadata:
    """Check every field of ``metadata`` and return it with ``last_updated`` in UTC.

    Args:
        metadata: What the caller wants to store.
        field: Prefix for field names in errors (e.g. ``"[3]"`` inside a batch).

    Raises:
        ValidationError: Naming the first offending field.

    """
    if metadata_ok(metadata):
        return metadata
    return _validate_metadata(metadata, field)


def validate_metadata_batch(
    items: Iterable[DeviceMetadata], *, newest: bool = False
) -> list[DeviceMetadata]:
    """Validate every item of a batch, naming ``[i].field`` on error.

    Of a duplicate id, the one sequential writes would leave stored wins, in the position of
    its last occurrence: the last one; with ``newest`` (conditional writes), the one with the
    latest ``last_updated`` in whole milliseconds, the first of equal ones. Error names are
    only formatted for an invalid item.
    """
    by_id: dict[str, DeviceMetadata] = {}
    for index, item in enumerate(check_batch(items, "items", "DeviceMetadata")):
        checked = item if metadata_ok(item) else _validate_metadata(item, f"[{index}]")
        device_id = checked.device_id
        kept = by_id.pop(device_id, None)
        if (
            newest
            and kept is not None
            and datetime_to_ms(kept.last_updated) >= datetime_to_ms(checked.last_updated)
        ):
            checked = kept
        by_id[device_id] = checked
    return list(by_id.values())


def _validate_metadata(metadata: object, field: str) -> DeviceMetadata:
    """The full check of :func:`validate_metadata`, naming the first offending field."""
    prefix = "" if field == "metadata" else f"{field}."
    if not isinstance(metadata, DeviceMetadata):
        raise ValidationError(field, f"must be a DeviceMetadata, not {type(metadata).__name__}")
    validate_device_id(metadata.device_id, f"{prefix}device_id")
    _check_str(metadata.datatype_id, f"{prefix}datatype_id", empty=False)
    _check_str(metadata.datatype_name, f"{prefix}datatype_name")
    _check_str(metadata.datatype_unit, f"{prefix}datatype_unit", optional=True)
    if type(metadata.persist) is not bool:
        raise ValidationError(
            f"{prefix}persist", f"must be a bool, not {type(metadata.persist).__name__}"
        )
    updated = metadata.last_updated
    if not isinstance(updated, datetime):
        raise ValidationError(
            f"{prefix}last_updated", f"must be a datetime, not {type(updated).__name__}"
        )
    offset = updated.utcoffset()
    if offset is None:
        raise ValidationError(
            f"{prefix}last_updated",
            "naive datetime: give a timezone-aware one (e.g. datetime.now(timezone.utc))",
        )
    props = metadata.additional_properties
    if type(props) is not dict:
        raise ValidationError(
            f"{prefix}additional_properties", f"must be a dict, not {type(props).__name__}"
        )
    _check_json(props, f"{prefix}additional_properties", 0)
    if updated.tzinfo is not timezone.utc:
        try:
            utc = updated.astimezone(timezone.utc)
        except OverflowError as exc:
            raise ValidationError(f"{prefix}last_updated", "out of range in UTC") from exc
        metadata = msgspec.structs.replace(metadata, last_updated=utc)
    return metadata


_REQUIRED = ("datatype_id", "datatype_name", "persist")
_OPTIONAL = ("datatype_unit", "last_updated", "additional_properties")
_AWARE_DATETIME = msgspec.json.Decoder(AwareDatetime)


def metadata_from_dict(
    data: Mapping[str, Any], device_id: str | None = None, *, now: datetime | None = None
) -> DeviceMetadata:
    """Build and validate :class:`DeviceMetadata` from a plain mapping.

    Known fields are taken by name; every other key is kept in ``additional_properties``
    (merged with an explicit ``additional_properties`` mapping, whose entries win).
    ``last_updated`` may be a timezone-aware datetime or an RFC 3339 string and defaults to
    ``now`` (the current UTC time).

    Args:
        data: The fields.
        device_id: The device's id; overrides ``data["device_id"]`` when both are given and
            equal, and is an error when they differ.
        now: Default for ``last_updated``.

    Raises:
        ValidationError: Naming the missing or offending field.

    """
    if not isinstance(data, Mapping):
        raise ValidationError("metadata", f"must be a mapping, not {type(data).__name__}")
    given = data.get("device_id")
    if device_id is None:
        if given is None:
            raise ValidationError("device_id", "is required")
        device_id = given
    elif given is not None and given != device_id:
        raise ValidationError(
            "device_id", f"{given!r} in the metadata differs from the argument {device_id!r}"
        )
    validate_device_id(device_id)
    for name in _REQUIRED:
        if name not in data:
            raise ValidationError(name, "is required")
    extra = {
        key: value
        for key, value in data.items()
        if key not in _REQUIRED and key not in _OPTIONAL and key != "device_id"
    }
    explicit = data.get("additional_properties", {})
    if not isinstance(explicit, Mapping):
        raise ValidationError(
            "additional_properties", f"must be a mapping, not {type(explicit).__name__}"
        )
    extra.update(explicit)
    updated = data.get("last_updated")
    if updated is None:
        updated = now if now is not None else datetime.now(timezone.utc)
    elif isinstance(updated, str):
        try:
            updated = _AWARE_DATETIME.decode(msgspec.json.encode(updated))
        except msgspec.DecodeError as exc:
            raise ValidationError("last_updated", f"{updated!r}: {exc}") from exc
    metadata = DeviceMetadata(
        device_id=device_id,
        datatype_id=data["datatype_id"],
        datatype_name=data["datatype_name"],
        datatype_unit=data.get("datatype_unit"),
        persist=data["persist"],
        last_updated=updated,
        additional_properties=extra,
    )
    return validate_metadata(metadata)


def validate_ttl(ttl: object, field: str = "ttl") -> float | None:
    """Return a TTL in seconds (None: no expiry) or raise :class:`ValidationError`.

    ``0`` and ``None`` both mean "no expiry"; otherwise the TTL must be a finite number of
    seconds of at least one millisecond.
    """
    if ttl is None:
        return None
    if type(ttl) is bool or not isinstance(ttl, (int, float)):
        raise ValidationError(field, f"must be a number of seconds or None, not {ttl!r}")
    if ttl < 0 or ttl > MAX_TTL or (type(ttl) is float and not math.isfinite(ttl)):
        raise ValidationError(
            field, f"must be a number of seconds from 0 to {MAX_TTL} (100 years), not {ttl!r}"
        )
    if ttl == 0:
        return None
    if ttl < 0.001:
        raise ValidationError(field, f"must be at least 0.001 seconds, not {ttl!r}")
    return float(ttl)


def validate_paging(
    limit: object, offset: object, pattern: object
) -> tuple[int | None, int, str | None]:
    """Check ``list_ids`` arguments and return them normalised (offset None becomes 0)."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValidationError("limit", f"must be an int >= 0 or None, not {limit!r}")
    if offset is None:
        offset = 0
    if type(offset) is not int or offset < 0:
        raise ValidationError("offset", f"must be an int >= 0 or None, not {offset!r}")
    if pattern is not None:
        if type(pattern) is not str:
            raise ValidationError("pattern", f"must be a str or None, not {type(pattern).__name__}")
        size = len(pattern)
        if size <= MAX_PATTERN_BYTES:  # else too long whatever its encoding
            try:
                size = len(pattern.encode())
            except UnicodeEncodeError as exc:
                raise ValidationError("pattern", "is not valid Unicode text") from exc
        if size > MAX_PATTERN_BYTES:
            raise ValidationError(
                "pattern", f"is longer than {MAX_PATTERN_BYTES} bytes (UTF-8); shorten it"
            )
    return limit, offset, pattern
