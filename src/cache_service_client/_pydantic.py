"""Pydantic support for the library's msgspec models, without importing pydantic.

Pydantic, and so FastAPI, asks a type it does not know for ``__get_pydantic_core_schema__``.
The models inherit it from :class:`PydanticSupport`, so a
:class:`~cache_service_client.DeviceMetadata` (or a ``Page[DeviceMetadata]``, a
:class:`~cache_service_client.CacheInfo`, ...) can be a FastAPI response model, a request body
or a field of a pydantic model:

- validation keeps an instance as it is and converts anything else with :func:`msgspec.convert`
  (device metadata is then checked like every write), so pydantic reports a bad value as a
  validation error (a FastAPI request body: 422);
- JSON output is what msgspec encodes (the gateway's JSON);
- the JSON Schema is msgspec's, with nested models inlined.

pydantic is imported only when it asks.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["PydanticSupport"]


class PydanticSupport:
    """Mixin for msgspec Structs: pydantic validates, serialises and documents them."""

    __slots__ = ()

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """The pydantic core schema of ``source`` (this class or a parametrised generic)."""
        from pydantic_core import core_schema

        origin = typing.get_origin(source) or source

        def validate(value: Any) -> Any:
            if isinstance(value, origin):
                return value
            try:
                converted = msgspec.convert(value, source)
            except msgspec.ValidationError as exc:
                raise ValueError(str(exc)) from None
            return _checked(converted)

        def json_schema(_core: Any, _handler: Any) -> dict[str, Any]:
            return json_schema_of(source)

        return core_schema.no_info_plain_validator_function(
            validate,
            # A named definition: FastAPI documents it once, under components/schemas.
            ref=f"{origin.__module__}.{_name(source)}:{id(source)}",
            serialization=core_schema.plain_serializer_function_ser_schema(
                msgspec.to_builtins, when_used="json"
            ),
            metadata={"pydantic_js_functions": [json_schema]},
        )


def _name(source: Any) -> str:
    """``DeviceMetadata``, or ``Page[DeviceMetadata]`` for a parametrised generic."""
    args = typing.get_args(source)
    if not args:
        return str(source.__qualname__)
    origin = typing.get_origin(source)
    return f"{origin.__qualname__}[{', '.join(_name(arg) for arg in args)}]"


def _checked(value: Any) -> Any:
    """Run the library's own checks on converted device metadata (as a write would)."""
    from cache_service_client._validation import validate_metadata
    from cache_service_client.models import DeviceMetadata

    if isinstance(value, DeviceMetadata):
        return validate_metadata(value)
    return value


def json_schema_of(source: Any) -> dict[str, Any]:
    """Return msgspec's JSON Schema of ``source``, every ``$ref`` replaced by what it names."""
    (schema,), components = msgspec.json.schema_components([source], ref_template="{name}")
    inlined: dict[str, Any] = _inline(schema, components.__getitem__)
    return inlined


def _inline(node: Any, definition: Callable[[str], Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(definition(ref), definition)
        return {key: _inline(value, definition) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definition) for item in node]
    return node
