"""Tests of write-path validation: ids, metadata fields, from_dict, TTLs and paging."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cache_service_client import DeviceMetadata, MetadataCodec, ValidationError
from cache_service_client._validation import (
    MAX_TTL,
    validate_device_id,
    validate_device_ids,
    validate_metadata,
    validate_paging,
    validate_ttl,
)

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def make(**changes: Any) -> DeviceMetadata:
    fields: dict[str, Any] = {
        "device_id": "sensor-1",
        "datatype_id": "temp",
        "datatype_name": "Temperature",
        "datatype_unit": "C",
        "persist": True,
        "last_updated": WHEN,
        "additional_properties": {},
    }
    fields.update(changes)
    return DeviceMetadata(**fields)


def nested_lists(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# --- validate_device_id --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device_id",
    [
        "a",
        "x" * 256,
        "sensor-1",
        "*",
        "a*b?c[d]e\\f",
        "[^a-z]",
        "日本語",
        "é",
        "🌡️",
        "a:b/c.d_e-f",
        "~!@#$%^&()+={}|;'\",<>",
    ],
)
def test_valid_device_ids(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id


@pytest.mark.parametrize(
    "device_id",
    [
        "",
        "x" * 257,
        " ",
        "a b",
        " a",
        "a ",
        "a\tb",
        "a\nb",
        "a\rb",
        "a\x00b",
        "a\x7fb",
        "a\x85b",
        "a\u00a0b",
        "a\u2028b",
        "a\u2029b",
        "a\u3000b",
        "a\u200bb",
        "a\u200db",  # zero-width joiner: a format character, not printable
        "a\ufeffb",
        "a\ud800b",  # lone surrogate
        "\udfff",
    ],
)
def test_invalid_device_ids(device_id: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_device_id(device_id)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.field == "device_id"
    assert str(error).startswith("device_id: ")


@pytest.mark.parametrize("device_id", [None, 1, 1.5, b"abc", bytearray(b"a"), ["a"], object()])
def test_non_str_device_ids(device_id: object) -> None:
    with pytest.raises(ValidationError, match=r"^device_id: must be a str") as info:
        validate_device_id(device_id)
    assert info.value.field == "device_id"


def test_str_subclass_is_rejected() -> None:
    class Id(str):
        pass

    with pytest.raises(ValidationError, match="must be a str"):
        validate_device_id(Id("a"))


def test_device_id_error_uses_the_given_field_name() -> None:
    with pytest.raises(ValidationError) as info:
        validate_device_id("a b", "ids[3]")
    assert info.value.field == "ids[3]"


def test_validate_device_ids_dedupes_in_order_and_names_the_index() -> None:
    assert validate_device_ids(iter(["b", "a", "b", "c", "a"])) == ["b", "a", "c"]
    assert validate_device_ids([]) == []
    with pytest.raises(ValidationError) as info:
        validate_device_ids(["a", "b", ""])
    assert info.value.field == "device_ids[2]"
    with pytest.raises(ValidationError, match="single str"):
        validate_device_ids("abc")


# --- validate_metadata ---------------------------------------------------------------------------


def test_valid_metadata_is_returned_unchanged() -> None:
    metadata = make(additional_properties={"a": [1, 2.5, None, True, "x", {"b": []}]})
    assert validate_metadata(metadata) is metadata


def test_not_metadata() -> None:
    with pytest.raises(ValidationError, match=r"^metadata: must be a DeviceMetadata") as info:
        validate_metadata({"device_id": "a"})
    assert info.value.field == "metadata"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"device_id": ""}, "device_id"),
        ({"device_id": "a b"}, "device_id"),
        ({"device_id": 5}, "device_id"),
        ({"datatype_id": None}, "datatype_id"),
        ({"datatype_id": ""}, "datatype_id"),
        ({"datatype_id": 3}, "datatype_id"),
        ({"datatype_name": None}, "datatype_name"),
        ({"datatype_name": b"name"}, "datatype_name"),
        ({"datatype_unit": 1}, "datatype_unit"),
        ({"datatype_unit": b"C"}, "datatype_unit"),
        ({"persist": 1}, "persist"),
        ({"persist": 0}, "persist"),
        ({"persist": None}, "persist"),
        ({"persist": "true"}, "persist"),
        ({"last_updated": "2024-05-06T07:08:09Z"}, "last_updated"),
        ({"last_updated": 1714979289}, "last_updated"),
        ({"last_updated": None}, "last_updated"),
        ({"last_updated": datetime(2024, 5, 6, 7, 8, 9)}, "last_updated"),
        ({"additional_properties": None}, "additional_properties"),
        ({"additional_properties": [1]}, "additional_properties"),
        ({"additional_properties": "x"}, "additional_properties"),
    ],
)
def test_invalid_fields_are_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_metadata(make(**changes))
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_naive_datetime_message_says_so() -> None:
    with pytest.raises(ValidationError, match="naive"):
        validate_metadata(make(last_updated=datetime(2024, 5, 6, 7, 8, 9)))


def test_empty_datatype_name_and_no_unit_are_allowed() -> None:
    validate_metadata(make(datatype_name="", datatype_unit=None))


def test_field_prefix_inside_a_batch() -> None:
    with pytest.raises(ValidationError) as info:
        validate_metadata(make(persist=1), "[3]")
    assert info.value.field == "[3].persist"


@pytest.mark.parametrize(
    "tz",
    [
        timezone(timedelta(hours=2)),
        timezone(timedelta(hours=-5, minutes=-30)),
        ZoneInfo("Europe/Berlin"),
        ZoneInfo("UTC"),
    ],
)
def test_aware_datetime_is_normalised_to_utc_without_shifting(tz: Any) -> None:
    local = datetime(2024, 7, 1, 12, 0, 0, 250000, tzinfo=tz)
    checked = validate_metadata(make(last_updated=local))
    assert checked.last_updated.tzinfo is timezone.utc
    assert checked.last_updated == local  # the same instant
    assert checked.last_updated.timestamp() == local.timestamp()
    assert checked.device_id == "sensor-1"


def test_utc_datetime_is_kept_as_is() -> None:
    metadata = make(last_updated=WHEN)
    assert validate_metadata(metadata).last_updated is WHEN


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"a": math.nan}, "additional_properties.a"),
        ({"a": math.inf}, "additional_properties.a"),
        ({"a": -math.inf}, "additional_properties.a"),
        ({"a": [0, 1, {"b": math.nan}]}, "additional_properties.a[2].b"),
        ({"x": {"y": {"z": [[math.inf]]}}}, "additional_properties.x.y.z[0][0]"),
        ({"a": (1, math.nan)}, "additional_properties.a[1]"),
        ({"a": {1: "x"}}, "additional_properties.a"),
        ({2: "x"}, "additional_properties"),
        ({None: "x"}, "additional_properties"),
        ({"a": {1, 2}}, "additional_properties.a"),
        ({"a": [b"bytes"]}, "additional_properties.a[0]"),
        ({"a": object()}, "additional_properties.a"),
        ({"a": WHEN}, "additional_properties.a"),
        ({"a": 2**64}, "additional_properties.a"),
        ({"a": [-(2**63) - 1]}, "additional_properties.a[0]"),
        ({"a": 10**100}, "additional_properties.a"),
    ],
)
def test_bad_additional_properties_name_the_path(props: dict[Any, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_metadata(make(additional_properties=props))
    assert info.value.field == field


def test_non_str_key_is_named_in_the_message() -> None:
    with pytest.raises(ValidationError, match="key 1 must be a str"):
        validate_metadata(make(additional_properties={"a": {1: "x"}}))


def test_64_bit_integer_bounds_are_accepted_and_encodable() -> None:
    metadata = make(additional_properties={"max": 2**64 - 1, "min": -(2**63)})
    validate_metadata(metadata)
    for fmt in ("json", "msgpack"):
        codec = MetadataCodec(fmt)
        assert codec.decode("k", codec.encode(metadata)) == metadata


def test_nesting_limit() -> None:
    # additional_properties itself is the first of the 32 allowed levels.
    ok = make(additional_properties={"a": nested_lists(31)})
    validate_metadata(ok)
    assert MetadataCodec().decode("k", MetadataCodec().encode(ok)) == ok
    with pytest.raises(ValidationError, match="nesting deeper than 32") as info:
        validate_metadata(make(additional_properties={"a": nested_lists(40)}))
    assert info.value.field.startswith("additional_properties.a[0][0]")


def test_deep_nesting_does_not_hit_the_recursion_limit() -> None:
    with pytest.raises(ValidationError, match="nesting"):
        validate_metadata(make(additional_properties={"a": nested_lists(100_000)}))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"datatype_name": "bad\ud800"}, "datatype_name"),
        ({"datatype_id": "\udc00"}, "datatype_id"),
        ({"datatype_unit": "\ud800"}, "datatype_unit"),
        ({"additional_properties": {"a": ["\ud800"]}}, "additional_properties.a[0]"),
        ({"additional_properties": {"\ud800": 1}}, "additional_properties"),
        ({"additional_properties": {"a": {"b": "x\udfff"}}}, "additional_properties.a.b"),
    ],
)
def test_lone_surrogates_in_strings_are_rejected_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError, match="surrogate") as info:
        validate_metadata(make(**changes))
    assert info.value.field == field


def test_non_ascii_text_is_accepted() -> None:
    validate_metadata(
        make(datatype_name="Température", datatype_unit="µg/m³", additional_properties={"ü": "✓"})
    )


# --- DeviceMetadata.from_dict --------------------------------------------------------------------


def base_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "device_id": "sensor-1",
        "datatype_id": "temp",
        "datatype_name": "Temperature",
        "persist": False,
    }
    data.update(changes)
    return data


def test_from_dict_keeps_unknown_keys_in_additional_properties() -> None:
    metadata = DeviceMetadata.from_dict(
        base_dict(
            location="B7",
            gain=2.5,
            additional_properties={"gain": 3, "other": [1]},
            last_updated=WHEN,
        )
    )
    assert metadata.additional_properties == {"location": "B7", "gain": 3, "other": [1]}
    assert metadata.datatype_unit is None
    assert metadata.last_updated == WHEN
    codec = MetadataCodec()
    assert codec.decode("k", codec.encode(metadata)) == metadata


def test_from_dict_device_id_from_argument() -> None:
    data = base_dict()
    del data["device_id"]
    assert DeviceMetadata.from_dict(data, "dev-9").device_id == "dev-9"
    assert DeviceMetadata.from_dict(base_dict(), "sensor-1").device_id == "sensor-1"


def test_from_dict_device_id_mismatch() -> None:
    with pytest.raises(ValidationError, match="differs") as info:
        DeviceMetadata.from_dict(base_dict(), "other")
    assert info.value.field == "device_id"


@pytest.mark.parametrize("missing", ["device_id", "datatype_id", "datatype_name", "persist"])
def test_from_dict_missing_required_field_is_named(missing: str) -> None:
    data = base_dict()
    del data[missing]
    with pytest.raises(ValidationError, match="is required") as info:
        DeviceMetadata.from_dict(data)
    assert info.value.field == missing


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"device_id": "a b"}, "device_id"),
        ({"persist": "yes"}, "persist"),
        ({"datatype_id": ""}, "datatype_id"),
        ({"last_updated": "not a date"}, "last_updated"),
        ({"last_updated": "2024-05-06T07:08:09"}, "last_updated"),
        ({"last_updated": 1714979289}, "last_updated"),
        ({"additional_properties": [1, 2]}, "additional_properties"),
        ({"extra": math.nan}, "additional_properties.extra"),
    ],
)
def test_from_dict_invalid_fields(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        DeviceMetadata.from_dict(base_dict(**changes))
    assert info.value.field == field


def test_from_dict_not_a_mapping() -> None:
    with pytest.raises(ValidationError) as info:
        DeviceMetadata.from_dict([("device_id", "a")])  # type: ignore[arg-type]
    assert info.value.field == "metadata"


def test_from_dict_last_updated_defaults_to_now_utc() -> None:
    before = datetime.now(timezone.utc)
    metadata = DeviceMetadata.from_dict(base_dict())
    after = datetime.now(timezone.utc)
    assert metadata.last_updated.tzinfo is timezone.utc
    assert before <= metadata.last_updated <= after


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-06T07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)),
        ("2024-05-06T09:08:09+02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)),
        (
            "2024-05-06T07:08:09.5-01:30",
            datetime(2024, 5, 6, 8, 38, 9, 500000, tzinfo=timezone.utc),
        ),
    ],
)
def test_from_dict_accepts_rfc3339_strings(text: str, expected: datetime) -> None:
    metadata = DeviceMetadata.from_dict(base_dict(last_updated=text))
    assert metadata.last_updated == expected
    assert metadata.last_updated.tzinfo is timezone.utc


def test_to_dict_round_trips_through_from_dict() -> None:
    metadata = make(additional_properties={"a": 1})
    assert DeviceMetadata.from_dict(metadata.to_dict()) == metadata


# --- validate_ttl --------------------------------------------------------------------------------


@pytest.mark.parametrize(("ttl", "expected"), [(None, None), (0, None), (0.0, None)])
def test_ttl_meaning_no_expiry(ttl: object, expected: None) -> None:
    assert validate_ttl(ttl) is expected


@pytest.mark.parametrize(
    ("ttl", "expected"), [(1, 1.0), (0.001, 0.001), (2.5, 2.5), (86400, 86400.0)]
)
def test_valid_ttls(ttl: float, expected: float) -> None:
    result = validate_ttl(ttl)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    "ttl",
    [-1, -0.5, -1e-9, math.nan, math.inf, -math.inf, True, False, "5", b"5", [5], 0.0009, 1e-6],
)
def test_invalid_ttls(ttl: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate_ttl(ttl)
    assert info.value.field == "ttl"


def test_ttl_field_name() -> None:
    with pytest.raises(ValidationError) as info:
        validate_ttl(-1, "metadata_ttl")
    assert info.value.field == "metadata_ttl"


@pytest.mark.parametrize("ttl", [10**400, 1e300, MAX_TTL + 1, MAX_TTL * 1.5])
def test_huge_ttls_are_rejected(ttl: float) -> None:
    with pytest.raises(ValidationError) as info:
        validate_ttl(ttl)
    assert info.value.field == "ttl"


def test_largest_ttl_is_accepted() -> None:
    assert validate_ttl(MAX_TTL) == float(MAX_TTL)


# --- validate_paging -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((None, None, None), (None, 0, None)),
        ((0, 0, "*"), (0, 0, "*")),
        ((10, 5, "a?[bc]"), (10, 5, "a?[bc]")),
        ((None, 3, ""), (None, 3, "")),
    ],
)
def test_valid_paging(
    args: tuple[object, object, object], expected: tuple[int | None, int, str | None]
) -> None:
    assert validate_paging(*args) == expected


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1, None, None), "limit"),
        ((1.0, None, None), "limit"),
        ((True, None, None), "limit"),
        (("5", None, None), "limit"),
        ((None, -1, None), "offset"),
        ((None, 1.5, None), "offset"),
        ((None, False, None), "offset"),
        ((None, None, b"a*"), "pattern"),
        ((None, None, 5), "pattern"),
        ((None, None, "a\ud800*"), "pattern"),
    ],
)
def test_invalid_paging(args: tuple[object, object, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_paging(*args)
    assert info.value.field == field
