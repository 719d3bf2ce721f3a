"""The competitors' models: pydantic v2 and redis-om (both optional, from the ``bench`` and
``bench-redis-om`` dependency groups).

Import this module only after checking :func:`have_pydantic` / :func:`have_redis_om`; the
runner reports a group's competitor as skipped when its library is missing.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime
from typing import Any, Literal

from cache_service_client import DeviceMetadata


def have_pydantic() -> bool:
    """True when pydantic v2 is importable."""
    if importlib.util.find_spec("pydantic") is None:
        return False
    import pydantic

    return str(pydantic.VERSION).startswith("2.")


def have_redis_om() -> bool:
    """True when redis-om is importable."""
    return importlib.util.find_spec("redis_om") is not None


def pydantic_model() -> Any:
    """The pydantic v2 twin of :class:`DeviceMetadata` (same fields, same wire format)."""
    from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

    class PydanticDevice(BaseModel):
        model_config = ConfigDict(frozen=True)

        v: Literal[1] = 1
        device_id: str
        datatype_id: str
        datatype_name: str
        datatype_unit: str | None = None
        persist: bool
        last_updated: AwareDatetime
        additional_properties: dict[str, Any] = Field(default_factory=dict)

    return PydanticDevice


def to_pydantic(model: Any, metadata: DeviceMetadata) -> Any:
    """The same device as a pydantic model instance."""
    return model(**metadata.to_dict())


def redis_om_model(client: Any, prefix: str) -> Any:
    """A redis-om ``HashModel`` twin of :class:`DeviceMetadata`, stored through ``client``.

    A HashModel holds flat fields only, so ``additional_properties`` is a JSON string field;
    the benchmark decodes it after ``get`` so that every candidate returns the same information.
    The device id is the primary key. ``client`` must have ``decode_responses=True``.
    """
    from redis_om import HashModel

    class OmDevice(HashModel, index=True):  # type: ignore[call-arg]
        datatype_id: str
        datatype_name: str
        datatype_unit: str | None = None
        persist: bool
        last_updated: datetime
        additional_properties: str = "{}"

        class Meta:
            global_key_prefix = prefix
            model_key_prefix = "device"

    OmDevice._meta.database = client
    return OmDevice


def to_redis_om(model: Any, metadata: DeviceMetadata) -> Any:
    """The same device as a redis-om model instance."""
    return model(
        pk=metadata.device_id,
        datatype_id=metadata.datatype_id,
        datatype_name=metadata.datatype_name,
        datatype_unit=metadata.datatype_unit,
        persist=metadata.persist,
        last_updated=metadata.last_updated,
        additional_properties=json.dumps(metadata.additional_properties, separators=(",", ":")),
    )


def module_versions() -> dict[str, str]:
    """Versions of the optional libraries that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("pydantic", "redis-om", "matplotlib"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
