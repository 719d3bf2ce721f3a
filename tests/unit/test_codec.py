"""Tests of MetadataCodec: round trips, the wire form, and corrupt input of every kind."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

from cache_service_client import DataCorruptionError, DeviceMetadata, MetadataCodec
from cache_service_client.codec import CodecFormat

KEY = "device:sensor-1"
FORMATS: list[CodecFormat] = ["json", "msgpack"]
DEEP = 100_000


def make(**changes: Any) -> DeviceMetadata:
    fields: dict[str, Any] = {
        "device_id": "sensor-1",
        "datatype_id": "temp",
        "datatype_name": "Temperature",
        "datatype_unit": "°C",
        "persist": True,
        "last_updated": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
        "additional_properties": {},
    }
    fields.update(changes)
    return DeviceMetadata(**fields)


def valid_fields(**changes: Any) -> dict[str, Any]:
    """The JSON object of a valid stored value (with the schema version)."""
    fields: dict[str, Any] = {
        "v": 1,
        "device_id": "sensor-1",
        "datatype_id": "temp",
        "datatype_name": "Temperature",
        "datatype_unit": None,
        "persist": False,
        "last_updated": "2024-05-06T07:08:09Z",
        "additional_properties": {},
    }
    fields.update(changes)
    return fields


def assert_corruption(codec: MetadataCodec, raw: bytes | str, key: str = KEY) -> None:
    with pytest.raises(DataCorruptionError) as info:
        codec.decode(key, raw)
    error = info.value
    assert type(error) is DataCorruptionError
    assert error.key == key
    assert repr(key) in str(error)
    assert error.reason


# --- Round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "metadata",
    [
        make(),
        make(datatype_unit=None, persist=False),
        make(
            additional_properties={
                "location": {"building": "B7", "floor": 3, "coords": [1.5, -2.25, None]},
                "tags": ["a", ["nested", {"deep": [True, False]}], {}],
                "big": 2**64 - 1,
                "small": -(2**63),
                "empty_list": [],
                "unicode ключ ✓": "値 🌡️ \u00e9",
            }
        ),
        make(device_id="日本-🌡", datatype_name="Température ✓", datatype_unit="µg/m³"),
    ],
    ids=["plain", "no-unit", "nested-props", "unicode"],
)
def test_round_trip(fmt: CodecFormat, metadata: DeviceMetadata) -> None:
    codec = MetadataCodec(fmt)
    raw = codec.encode(metadata)
    assert isinstance(raw, bytes)
    decoded = codec.decode(KEY, raw, metadata.device_id)
    assert decoded == metadata
    assert decoded.last_updated.utcoffset() is not None


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_accepts_bytearray_and_memoryview(fmt: CodecFormat) -> None:
    codec = MetadataCodec(fmt)
    raw = codec.encode(make())
    assert codec.decode(KEY, bytearray(raw)) == make()
    assert codec.decode(KEY, memoryview(raw)) == make()


def test_json_is_the_default_format() -> None:
    assert MetadataCodec().format == "json"
    assert MetadataCodec() == MetadataCodec("json")


def test_json_wire_form_is_readable_and_versioned() -> None:
    raw = MetadataCodec().encode(make(additional_properties={"gain": 2}))
    assert b'"v":1' in raw
    text = raw.decode("utf-8")
    parsed = json.loads(text)
    assert parsed["v"] == 1
    assert parsed["device_id"] == "sensor-1"
    assert parsed["datatype_unit"] == "°C"
    assert parsed["persist"] is True
    assert parsed["last_updated"] == "2024-05-06T07:08:09.123456Z"
    assert parsed["additional_properties"] == {"gain": 2}


def test_msgpack_carries_the_schema_version() -> None:
    raw = MetadataCodec("msgpack").encode(make())
    assert msgspec.msgpack.decode(raw)["v"] == 1


def test_legacy_json_value_without_version_still_decodes() -> None:
    fields = valid_fields()
    del fields["v"]
    decoded = MetadataCodec().decode(KEY, json.dumps(fields).encode())
    assert decoded.device_id == "sensor-1"
    assert decoded.last_updated == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def test_legacy_msgpack_value_without_version_still_decodes() -> None:
    fields = valid_fields()
    del fields["v"]
    decoded = MetadataCodec("msgpack").decode(KEY, msgspec.msgpack.encode(fields))
    assert decoded.device_id == "sensor-1"


def test_legacy_value_without_optional_fields_decodes_with_defaults() -> None:
    fields = valid_fields()
    for name in ("v", "datatype_unit", "additional_properties"):
        del fields[name]
    decoded = MetadataCodec().decode(KEY, json.dumps(fields))
    assert decoded.datatype_unit is None
    assert decoded.additional_properties == {}


def test_str_input_from_decode_responses_clients() -> None:
    codec = MetadataCodec()
    text = codec.encode(make()).decode()
    assert codec.decode(KEY, text, "sensor-1") == make()


# --- Corrupt input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe",
        b"",
        "",
        b"{",
        b'{"v": 1, "device_id": ',
        b"null",
        b"[]",
        b'"x"',
        b"42",
        b"{}",
    ],
    ids=[
        "not-json",
        "bom-garbage",
        "empty-bytes",
        "empty-str",
        "open-brace",
        "truncated",
        "null",
        "list",
        "string",
        "number",
        "empty-object",
    ],
)
def test_undecodable_json_is_data_corruption(raw: bytes | str) -> None:
    assert_corruption(MetadataCodec(), raw)


def test_invalid_utf8_inside_a_string_is_data_corruption() -> None:
    raw = json.dumps(valid_fields(datatype_name="XX")).encode().replace(b"XX", b"a\xff\xfeb")
    assert_corruption(MetadataCodec(), raw)


@pytest.mark.parametrize("missing", ["device_id", "datatype_id", "datatype_name", "persist"])
def test_missing_required_field_is_data_corruption(missing: str) -> None:
    fields = valid_fields()
    del fields[missing]
    with pytest.raises(DataCorruptionError, match=missing):
        MetadataCodec().decode(KEY, json.dumps(fields).encode())


@pytest.mark.parametrize(
    "changes",
    [
        {"device_id": 7},
        {"datatype_id": None},
        {"datatype_name": ["x"]},
        {"datatype_unit": 3},
        {"persist": 1},
        {"persist": "true"},
        {"last_updated": 1714979289},
        {"last_updated": "yesterday"},
        {"additional_properties": []},
        {"additional_properties": "x"},
    ],
)
def test_wrong_types_are_data_corruption(changes: dict[str, Any]) -> None:
    assert_corruption(MetadataCodec(), json.dumps(valid_fields(**changes)).encode())


def test_naive_datetime_is_data_corruption() -> None:
    raw = json.dumps(valid_fields(last_updated="2024-05-06T07:08:09")).encode()
    with pytest.raises(DataCorruptionError, match="last_updated"):
        MetadataCodec().decode(KEY, raw)


@pytest.mark.parametrize("version", [99, 0, 2, "1", None])
def test_unknown_schema_version_is_data_corruption(version: object) -> None:
    assert_corruption(MetadataCodec(), json.dumps(valid_fields(v=version)).encode())


def test_json_nested_too_deeply_is_data_corruption() -> None:
    raw = json.dumps(valid_fields(additional_properties={"x": 0})).encode()
    assert raw.count(b'{"x": 0}') == 1
    deep = b'{"x": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    assert_corruption(MetadataCodec(), raw.replace(b'{"x": 0}', deep))


def test_msgpack_nested_too_deeply_is_data_corruption() -> None:
    codec = MetadataCodec("msgpack")
    raw = codec.encode(make(additional_properties={"x": 0}))
    tail = b"\x81\xa1x\x00"  # {"x": 0}, the last field
    assert raw.endswith(tail)
    deep = raw[: -len(tail)] + b"\x81\xa1x" + b"\x91" * DEEP + b"\x90"
    assert_corruption(codec, deep)


@pytest.mark.parametrize(
    "raw",
    [b"\xc1", b"\xc1\xc1\xc1", b"\x92\x01\x02", b"\xde\xad\xbe\xef", b"", b"\x81", b"hello"],
)
def test_msgpack_garbage_is_data_corruption(raw: bytes) -> None:
    assert_corruption(MetadataCodec("msgpack"), raw)


def test_json_value_given_to_msgpack_codec_is_data_corruption() -> None:
    assert_corruption(MetadataCodec("msgpack"), MetadataCodec("json").encode(make()))


def test_msgpack_value_given_to_json_codec_is_data_corruption() -> None:
    assert_corruption(MetadataCodec("json"), MetadataCodec("msgpack").encode(make()))


def test_str_given_to_msgpack_codec_is_data_corruption() -> None:
    assert_corruption(MetadataCodec("msgpack"), "not bytes")


@pytest.mark.parametrize("fmt", FORMATS)
def test_str_with_a_lone_surrogate_is_data_corruption(fmt: CodecFormat) -> None:
    text = json.dumps(valid_fields(datatype_name="XX")).replace("XX", "\ud800")
    assert_corruption(MetadataCodec(fmt), text)


@pytest.mark.parametrize("fmt", FORMATS)
def test_value_of_another_device_is_data_corruption(fmt: CodecFormat) -> None:
    codec = MetadataCodec(fmt)
    raw = codec.encode(make(device_id="other"))
    with pytest.raises(DataCorruptionError) as info:
        codec.decode(KEY, raw, "sensor-1")
    assert info.value.key == KEY
    assert "'other'" in str(info.value)
    assert "'sensor-1'" in str(info.value)
    # Without the expectation the same bytes decode fine.
    assert codec.decode(KEY, raw).device_id == "other"


def test_corruption_error_is_chained_to_the_decoder_error() -> None:
    with pytest.raises(DataCorruptionError) as info:
        MetadataCodec().decode(KEY, b"not json")
    assert isinstance(info.value.__cause__, msgspec.DecodeError)


# --- Construction, equality, repr ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xml", "JSON", "", "msgpack ", None, 1])
def test_unknown_format_raises_value_error(fmt: Any) -> None:
    with pytest.raises(ValueError, match="codec format"):
        MetadataCodec(fmt)


def test_equality_hash_and_repr() -> None:
    json_a, json_b, packed = MetadataCodec("json"), MetadataCodec("json"), MetadataCodec("msgpack")
    assert json_a == json_b
    assert hash(json_a) == hash(json_b)
    assert json_a != packed
    assert json_a != "json"
    assert len({json_a, json_b, packed}) == 2
    assert repr(json_a) == "MetadataCodec(format='json')"
    assert repr(packed) == "MetadataCodec(format='msgpack')"
