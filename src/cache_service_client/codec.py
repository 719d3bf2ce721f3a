"""MetadataCodec: the one place where device metadata becomes bytes and back.

JSON is the default (readable in ``redis-cli``); MessagePack is an option for smaller values.
Encoders and decoders are built once per codec. Whatever cannot be decoded (not JSON, a wrong
schema, invalid UTF-8, nesting deeper than the decoder allows, a value of the wrong Redis type, or
a value stored under another device's key) becomes a :class:`DataCorruptionError` naming the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import msgspec

from cache_service_client.exceptions import DataCorruptionError, ValidationError
from cache_service_client.models import DeviceMetadata

__all__ = ["CodecFormat", "DecodedBatch", "MetadataCodec"]

#: How stored values are encoded, ``"json"`` or ``"msgpack"``; both carry the schema version.
CodecFormat = Literal["json", "msgpack"]


class MetadataCodec:
    """Encode and decode :class:`DeviceMetadata` for storage.

    Args:
        format: ``"json"`` (default) or ``"msgpack"``. Both carry the schema version.

    Values must have passed validation (see the repositories' ``put``); the codec does not
    re-check them, to keep the write path fast.

    """

    __slots__ = ("_decode", "_decoder", "_encode", "_encoder", "format")

    def __init__(self, format: CodecFormat = "json") -> None:
        self.format: CodecFormat = format
        self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder
        self._decoder: (
            msgspec.json.Decoder[DeviceMetadata] | msgspec.msgpack.Decoder[DeviceMetadata]
        )
        if format == "json":
            self._encoder = msgspec.json.Encoder()
            self._decoder = msgspec.json.Decoder(DeviceMetadata)
            # The JSON decoder takes str as well (replies of decode_responses clients).
            self._decode: Callable[[Any], DeviceMetadata] = self._decoder.decode
        elif format == "msgpack":
            self._encoder = msgspec.msgpack.Encoder()
            self._decoder = msgspec.msgpack.Decoder(DeviceMetadata)
            self._decode = _bytes_only(self._decoder.decode)
        else:
            raise ValueError(f"unknown codec format {format!r}; use 'json' or 'msgpack'")
        # Bound methods kept once: the hot paths below pay one attribute load, not two.
        self._encode: Callable[[DeviceMetadata], bytes] = self._encoder.encode

    def __repr__(self) -> str:
        return f"MetadataCodec(format={self.format!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MetadataCodec) and other.format == self.format

    def __hash__(self) -> int:
        return hash((MetadataCodec, self.format))

    def encode(self, metadata: DeviceMetadata) -> bytes:
        """Return the stored form of ``metadata``.

        Raises:
            ValidationError: If a string cannot be encoded as UTF-8 (a lone surrogate).

        """
        try:
            return self._encode(metadata)
        except _ENCODE_ERRORS as exc:
            raise _encode_error(metadata, exc) from exc

    def encode_many(self, items: Sequence[DeviceMetadata]) -> list[bytes]:
        """Return the stored form of every item, in order (one loop, no call per item).

        Raises:
            ValidationError: Naming the first device that cannot be encoded.

        """
        encode = self._encode
        try:
            return [encode(metadata) for metadata in items]
        except _ENCODE_ERRORS:
            pass
        return [self.encode(metadata) for metadata in items]  # raises, naming the device

    def decode(
        self, key: str, raw: bytes | bytearray | memoryview | str, device_id: str | None = None
    ) -> DeviceMetadata:
        """Decode the value stored at ``key``.

        Args:
            key: The backend key, named in errors.
            raw: The stored bytes (a str is accepted from clients that decode replies).
            device_id: When given, the decoded value must belong to this device.

        Raises:
            DataCorruptionError: If the value is not valid metadata of this codec's format.

        """
        try:
            metadata = self._decode(raw)
        except _DECODE_ERRORS as exc:
            raise self._decode_error(key, exc) from exc
        if device_id is not None and metadata.device_id != device_id:
            raise _foreign(key, metadata, device_id)
        return metadata

    def decode_many(
        self, keys: Sequence[str], raws: Sequence[Any], device_ids: Sequence[str]
    ) -> DecodedBatch:
        """Decode the values of a batch read (e.g. an MGET's replies), in one loop.

        Args:
            keys: The backend keys, named in errors.
            raws: Their values, in the same order; None where nothing was read.
            device_ids: The device each value must belong to, in the same order.

        Returns:
            The decoded metadata by device id, the ids whose value was None (in order), and a
            :class:`DataCorruptionError` by id for every value that could not be decoded or
            belongs to another device.

        """
        found: dict[str, DeviceMetadata] = {}
        nil: list[str] = []
        corrupted: dict[str, DataCorruptionError] = {}
        decode = self._decode
        for key, raw, device_id in zip(keys, raws, device_ids, strict=True):
            if raw is None:
                nil.append(device_id)
                continue
            try:
                metadata = decode(raw)
            except _DECODE_ERRORS as exc:
                error = self._decode_error(key, exc)
                error.__cause__ = exc
                corrupted[device_id] = error
                continue
            if metadata.device_id == device_id:
                found[device_id] = metadata
            else:
                corrupted[device_id] = _foreign(key, metadata, device_id)
        return DecodedBatch(found, nil, corrupted)

    def _decode_error(self, key: str, exc: BaseException) -> DataCorruptionError:
        if isinstance(exc, msgspec.ValidationError):
            return DataCorruptionError(key, f"not device metadata: {exc}")
        if isinstance(exc, msgspec.DecodeError):
            return DataCorruptionError(key, f"not valid {self.format}: {exc}")
        if isinstance(exc, RecursionError):
            return DataCorruptionError(key, "nested too deeply to decode")
        return DataCorruptionError(key, f"cannot be decoded: {exc}")


class DecodedBatch(NamedTuple):
    """What :meth:`MetadataCodec.decode_many` found, kept apart by outcome."""

    found: dict[str, DeviceMetadata]
    nil: list[str]
    corrupted: dict[str, DataCorruptionError]


# msgspec's own errors first; RecursionError for values nested beyond the stack; the rest for
# str input that is not valid text, or input of a type the decoder does not take.
_DECODE_ERRORS = (
    msgspec.ValidationError,
    msgspec.DecodeError,
    RecursionError,
    UnicodeError,
    TypeError,
    ValueError,
)
_ENCODE_ERRORS = (UnicodeEncodeError, msgspec.EncodeError, TypeError, OverflowError)


def _bytes_only(decode: Callable[[Any], DeviceMetadata]) -> Callable[[Any], DeviceMetadata]:
    """Wrap a msgpack decoder so that str input (a decode_responses client) is encoded first."""

    def decode_text_too(raw: Any) -> DeviceMetadata:
        return decode(raw.encode() if isinstance(raw, str) else raw)

    return decode_text_too


def _encode_error(metadata: DeviceMetadata, exc: Exception) -> ValidationError:
    return ValidationError("metadata", f"device {metadata.device_id!r} cannot be encoded: {exc}")


def _foreign(key: str, metadata: DeviceMetadata, device_id: str) -> DataCorruptionError:
    return DataCorruptionError(
        key, f"holds metadata of device {metadata.device_id!r}, not {device_id!r}"
    )
