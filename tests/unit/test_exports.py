"""The public API: the package's ``__all__`` is pinned, and every module's exports resolve.

Adding or removing a public name is an API change: update ``EXPECTED`` and the CHANGELOG
together.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

import cache_service_client

EXPECTED = [
    "SCHEMA_VERSION",
    "AsyncDeviceMetadataRepository",
    "AsyncInMemoryDeviceMetadataRepository",
    "AsyncNearCachedDeviceMetadataRepository",
    "AsyncRedisDeviceMetadataRepository",
    "AsyncUsageError",
    "AuthenticationError",
    "BackendConnectionError",
    "BackendError",
    "BackendTimeoutError",
    "BatchGetResult",
    "CacheInfo",
    "CacheServiceClient",
    "CacheServiceError",
    "CodecFormat",
    "ConfigurationError",
    "DataCorruptionError",
    "DeviceMetadata",
    "DeviceMetadataRepository",
    "DeviceNotFoundError",
    "DeviceQuery",
    "HealthState",
    "HealthStatus",
    "InMemoryDeviceMetadataRepository",
    "IndexLayoutError",
    "InlineAsyncRepository",
    "KeyStrategy",
    "MetadataCodec",
    "NearCache",
    "NearCacheStats",
    "NearCachedDeviceMetadataRepository",
    "Page",
    "PartialWriteError",
    "QueryFields",
    "RedisDeviceMetadataRepository",
    "RepairReport",
    "RetryPolicy",
    "Settings",
    "ValidationError",
    "__version__",
    "load_settings",
    "settings_from_env",
    "settings_from_file",
    "settings_from_url",
]

PUBLIC_MODULES = [
    "cache_service_client",
    "cache_service_client.codec",
    "cache_service_client.config",
    "cache_service_client.container",
    "cache_service_client.exceptions",
    "cache_service_client.keys",
    "cache_service_client.models",
    "cache_service_client.repository",
    "cache_service_client.retry",
    "cache_service_client.telemetry",
    "cache_service_client.testing",
]


def test_the_package_exports_exactly_the_public_api() -> None:
    assert cache_service_client.__all__ == EXPECTED


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_exported_name_exists_and_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    for attribute in exported:
        value = getattr(module, attribute)  # raises when the export is missing
        if inspect.isclass(value) or inspect.isfunction(value):
            assert (getattr(value, "__doc__", None) or "").strip(), f"{name}.{attribute}"
