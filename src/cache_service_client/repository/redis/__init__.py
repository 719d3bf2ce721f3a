"""Redis implementation: pure command flows, thin sync and async drivers, thin repositories."""

from cache_service_client.repository.redis.repository import (
    AsyncRedisDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
)

__all__ = ["AsyncRedisDeviceMetadataRepository", "RedisDeviceMetadataRepository"]
