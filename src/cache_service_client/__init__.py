"""Fast, typed, reliable access to cached IoT device metadata in Redis.

Applications use :class:`CacheServiceClient`; layered applications depend on
:class:`DeviceMetadataRepository` (or its async twin) and get a Redis or in-memory implementation
injected; see the documentation for the architecture.
"""

import logging

from cache_service_client._version import __version__
from cache_service_client.client import CacheServiceClient
from cache_service_client.codec import CodecFormat, MetadataCodec
from cache_service_client.config import (
    Settings,
    load_settings,
    settings_from_env,
    settings_from_file,
    settings_from_url,
)
from cache_service_client.exceptions import (
    AsyncUsageError,
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendTimeoutError,
    CacheServiceError,
    ConfigurationError,
    DataCorruptionError,
    DeviceNotFoundError,
    IndexLayoutError,
    PartialWriteError,
    ValidationError,
)
from cache_service_client.keys import KeyStrategy
from cache_service_client.models import (
    SCHEMA_VERSION,
    BatchGetResult,
    CacheInfo,
    DeviceMetadata,
    DeviceQuery,
    HealthState,
    HealthStatus,
    NearCacheStats,
    Page,
    QueryFields,
    RepairReport,
)
from cache_service_client.repository import (
    AsyncDeviceMetadataRepository,
    AsyncInMemoryDeviceMetadataRepository,
    AsyncNearCachedDeviceMetadataRepository,
    AsyncRedisDeviceMetadataRepository,
    DeviceMetadataRepository,
    InlineAsyncRepository,
    InMemoryDeviceMetadataRepository,
    NearCache,
    NearCachedDeviceMetadataRepository,
    RedisDeviceMetadataRepository,
)
from cache_service_client.retry import RetryPolicy

__all__ = [
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

# A library leaves handlers to the application: without one configured, nothing is printed
# (not even WARNING records, which Python's last-resort handler would show on stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())
