"""MetadataCodec: the one place where device metadata becomes bytes and back.

JSON is the default (readable in ``redis-cli``); MessagePack is an option for smaller values.
Encoders and decoders are built once per codec. Whatever cannot be decoded (not JSON, a wrong
schema, invalid UTF-8, nesting deeper than the decoder allows, a value of the wrong Redis type, or
a value stored under another device's key) becomes a :class:`DataCorruptionError` naming the key.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from cache_service_client.exceptions import DataCorruptionError, ValidationError
from cache_service_client.models import DeviceMetadata

__all__ = ["CodecFormat", "MetadataCodec"]

CodecFormat = Literal["json", "msgpack"]


class MetadataCodec:
    """Encode and decode :class:`DeviceMetadata` for storage.

    Args:
        format: ``"json"`` (default) or ``"msgpack"``. Both carry the schema version.

    Values must have passed validation (see the repositories' ``put``); the codec does not
    re-check them, to keep the write path fast.

    """

    __slots__ = ("_decoder", "_encoder", "format")

    def __init__(self, format: CodecFormat = "json") -> None:
        self.format: CodecFormat = format
        self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder
        self._decoder: (
            msgspec.json.Decoder[DeviceMetadata] | msgspec.msgpack.Decoder[DeviceMetadata]
        )
        if format == "json":
            self._encoder = msgspec.json.Encoder()
            self._decoder = msgspec.json.Decoder(DeviceMetadata)
        elif format == "msgpack":
            self._encoder = msgspec.msgpack.Encoder()
            self._decoder = msgspec.msgpack.Decoder(DeviceMetadata)
        else:
            raise ValueError(f"unknown codec format {format!r}; use 'json' or 'msgpack'")

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
            return self._encoder.encode(metadata)
        except (UnicodeEncodeError, msgspec.EncodeError, TypeError, OverflowError) as exc:
            raise ValidationError(
                "metadata", f"device {metadata.device_id!r} cannot be encoded: {exc}"
            ) from exc

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
            metadata = self._decoder.decode(raw.encode() if isinstance(raw, str) else raw)
        except msgspec.ValidationError as exc:
            raise DataCorruptionError(key, f"not device metadata: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise DataCorruptionError(key, f"not valid {self.format}: {exc}") from exc
        except RecursionError as exc:
            raise DataCorruptionError(key, "nested too deeply to decode") from exc
        except (UnicodeError, TypeError, ValueError) as exc:
            raise DataCorruptionError(key, f"cannot be decoded: {exc}") from exc
        if device_id is not None and metadata.device_id != device_id:
            raise DataCorruptionError(
                key, f"holds metadata of device {metadata.device_id!r}, not {device_id!r}"
            )
        return metadata
