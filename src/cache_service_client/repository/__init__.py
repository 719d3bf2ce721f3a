"""Repositories: the interfaces and their in-memory and Redis implementations."""

from cache_service_client.repository.base import (
    AsyncDeviceMetadataRepository,
    DeviceMetadataRepository,
    InlineAsyncRepository,
)
from cache_service_client.repository.memory import (
    AsyncInMemoryDeviceMetadataRepository,
    InMemoryDeviceMetadataRepository,
)
from cache_service_client.repository.near import (
    AsyncNearCachedDeviceMetadataRepository,
    NearCache,
    NearCachedDeviceMetadataRepository,
)
from cache_service_client.repository.redis import (
    AsyncRedisDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
)

__all__ = [
    "AsyncDeviceMetadataRepository",
    "AsyncInMemoryDeviceMetadataRepository",
    "AsyncNearCachedDeviceMetadataRepository",
    "AsyncRedisDeviceMetadataRepository",
    "DeviceMetadataRepository",
    "InMemoryDeviceMetadataRepository",
    "InlineAsyncRepository",
    "NearCache",
    "NearCachedDeviceMetadataRepository",
    "RedisDeviceMetadataRepository",
]
