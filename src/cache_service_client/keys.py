"""KeyStrategy: every Redis key name and SCAN pattern is made here, and nowhere else.

Layout for ``KeyStrategy(prefix="device", separator=":")``:

=========================  =========================================================
``device:<id>``            the device's encoded metadata (a string, with a TTL)
``device index:ids``       sorted set of all device ids (score 0, ordered by id)
``device index:expiry``    sorted set id -> expiry time in ms since the epoch
``device index:updated``   sorted set id -> ``last_updated`` in ms since the epoch
=========================  =========================================================

Index keys hold a space, which neither a prefix, a separator nor a device id may contain; so no
device key of any strategy can ever be an index key, and ``SCAN MATCH device:*`` finds exactly
the device values.
"""

from __future__ import annotations

from cache_service_client._glob import escape_glob
from cache_service_client.exceptions import ConfigurationError

__all__ = ["KeyStrategy"]


def _check_part(name: str, value: object) -> str:
    if type(value) is not str or not value:
        raise ConfigurationError(f"KeyStrategy {name}: must be a non-empty str, not {value!r}")
    if not value.isprintable() or " " in value:
        raise ConfigurationError(
            f"KeyStrategy {name}: {value!r} must not contain whitespace or control characters"
        )
    return value


class KeyStrategy:
    """Names the keys of one cache namespace.

    Args:
        prefix: First part of every key (``"device"``). No whitespace or control characters.
        separator: Put between the prefix and the device id (``":"``).

    The invariant ``device_key(id) == device_key_prefix + id`` holds and server-side scripts rely
    on it.

    """

    __slots__ = ("_device_prefix", "_index_prefix", "prefix", "separator")

    def __init__(self, prefix: str = "device", separator: str = ":") -> None:
        self.prefix = _check_part("prefix", prefix)
        self.separator = _check_part("separator", separator)
        self._device_prefix = prefix + separator
        self._index_prefix = f"{prefix} index{separator}"

    def __repr__(self) -> str:
        return f"KeyStrategy(prefix={self.prefix!r}, separator={self.separator!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeyStrategy)
            and other.prefix == self.prefix
            and other.separator == self.separator
        )

    def __hash__(self) -> int:
        return hash((KeyStrategy, self.prefix, self.separator))

    @property
    def device_key_prefix(self) -> str:
        """The part every device key starts with (``"device:"``)."""
        return self._device_prefix

    def device_key(self, device_id: str) -> str:
        """Return the key that holds ``device_id``'s metadata."""
        return self._device_prefix + device_id

    def device_keys(self, device_ids: list[str]) -> list[str]:
        """Return the keys of several devices, in order."""
        prefix = self._device_prefix
        return [prefix + device_id for device_id in device_ids]

    def is_device_key(self, key: str) -> bool:
        """True when ``key`` is a device key of this strategy."""
        return key.startswith(self._device_prefix) and len(key) > len(self._device_prefix)

    def device_id(self, key: str) -> str:
        """Return the device id stored under ``key``.

        Raises:
            ValueError: If ``key`` is not a device key of this strategy.

        """
        if not self.is_device_key(key):
            raise ValueError(f"{key!r} is not a device key of {self!r}")
        return key[len(self._device_prefix) :]

    def device_pattern(self, pattern: str | None = None) -> str:
        """Return a ``SCAN MATCH`` pattern for device keys whose id matches ``pattern``.

        The prefix and separator are escaped, so a prefix like ``t[1]`` never matches keys of
        prefix ``t1``; ``pattern`` itself is a Redis glob over device ids (None: all).
        """
        return escape_glob(self._device_prefix) + ("*" if pattern is None else pattern)

    def index_key(self, name: str) -> str:
        """Return the key of the index called ``name``."""
        return self._index_prefix + name

    @property
    def ids_index(self) -> str:
        """Sorted set of all device ids, lexicographically ordered."""
        return self._index_prefix + "ids"

    @property
    def expiry_index(self) -> str:
        """Sorted set of device ids scored by expiry time (ms since the epoch)."""
        return self._index_prefix + "expiry"

    @property
    def updated_index(self) -> str:
        """Sorted set of device ids scored by ``last_updated`` (ms since the epoch)."""
        return self._index_prefix + "updated"

    def index_keys(self) -> list[str]:
        """All index keys, in the order the server-side scripts expect them."""
        return [self.ids_index, self.expiry_index, self.updated_index]
