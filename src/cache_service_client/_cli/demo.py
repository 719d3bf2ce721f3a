"""``devcache demo`` and ``devcache repair``.

The demo stores some thousands of synthetic devices, then shows single and batch reads, pattern
listing with paging, cache info and health, with timings. It runs on the in-memory backend by
default; ``--url redis://host:6379/0`` runs the same against Redis (under its own key prefix,
removed afterwards unless ``--keep``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TypeVar

from cache_service_client._version import __version__
from cache_service_client.client import CacheServiceClient, _address
from cache_service_client.config import DEFAULTS, Settings
from cache_service_client.models import DeviceMetadata, Page

T = TypeVar("T")

DATATYPES = [
    ("temp", "temperature", "C"),
    ("hum", "relative humidity", "%"),
    ("pres", "pressure", "hPa"),
    ("co2", "CO2 concentration", "ppm"),
    ("door", "door state", None),
]
SITES = ["berlin", "lisbon", "oslo", "tokyo"]


def synthetic_devices(count: int, seed: int) -> list[DeviceMetadata]:
    """Build ``count`` reproducible devices spread over sites and datatypes."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    devices = []
    for n in range(count):
        site = SITES[n % len(SITES)]
        datatype_id, name, unit = DATATYPES[rng.randrange(len(DATATYPES))]
        devices.append(
            DeviceMetadata(
                device_id=f"{site}-{datatype_id}-{n:06d}",
                datatype_id=datatype_id,
                datatype_name=name,
                datatype_unit=unit,
                persist=rng.random() < 0.7,
                last_updated=start + timedelta(seconds=rng.randrange(300 * 86400)),
                additional_properties={
                    "firmware": f"{rng.randrange(1, 4)}.{rng.randrange(10)}",
                    "floor": rng.randrange(12),
                    "calibrated": rng.random() < 0.5,
                },
            )
        )
    return devices


def timed(label: str, action: Callable[[], T], repeat: int = 1) -> T:
    """Run ``action`` ``repeat`` times and print the time per run."""
    started = time.perf_counter()
    result = action()
    for _ in range(repeat - 1):
        result = action()
    elapsed = time.perf_counter() - started
    per_call = elapsed / repeat
    unit = f"{per_call * 1e6:9.1f} µs" if per_call < 0.01 else f"{per_call * 1e3:9.2f} ms"
    times = f" (x{repeat})" if repeat > 1 else ""
    print(f"  {label:<44}{unit}{times}")
    return result


def run_demo(settings: Settings, count: int, seed: int, keep: bool) -> int:
    """Run the demo with ``settings`` (under a key prefix of its own); return the exit code."""
    prefix = DEFAULTS.key_prefix if settings.backend == "memory" else "devcache-demo"
    where = _address(settings)
    print(f"cache-service-client {__version__} demo on {where} ({count} devices)\n")
    with CacheServiceClient.from_settings(settings.replace(key_prefix=prefix)) as client:
        health = client.check_health_sync()
        print(f"health: {health.status} ({health.message})")
        if health.status == "unhealthy":
            return 2
        devices = synthetic_devices(count, seed)
        ids = [device.device_id for device in devices]
        print("\nwrites")
        for start in range(0, count, 1000):
            batch = devices[start : start + 1000]
            label = f"store_many ({len(batch)} devices, atomic)"
            timed(label, partial(client.store_many_device_metadata_sync, batch))
        plain = {
            "datatype_id": "temp",
            "datatype_name": "temperature",
            "datatype_unit": "C",
            "persist": True,
            "installed_by": "demo",  # unknown keys are kept
        }
        store = partial(client.store_device_metadata, "lab-probe-1", plain)
        print(f"    -> {timed('store_device_metadata (a plain dict)', store)}")

        print("\nreads")
        get = partial(client.get_device_metadata_sync, ids[7])
        probe = timed("get_device_metadata_sync", get, 1000)
        print(
            f"    -> {probe.device_id}: {probe.datatype_name} [{probe.datatype_unit}], "
            f"persist={probe.persist}, {probe.additional_properties}"
        )
        lab = client.get_device_metadata_sync("lab-probe-1")
        print(f"    -> lab-probe-1 additional_properties: {lab.additional_properties}")
        sample = random.Random(seed).sample(ids, min(100, count))
        get_many = partial(client.get_many_device_metadata_sync, sample)
        found = timed(f"get_many_device_metadata_sync ({len(sample)} ids)", get_many, 20)
        print(f"    -> {len(found)} found")
        missing = client.get_device_metadata_sync("no-such-device", None)
        print(f"    -> get of an unknown id with default=None: {missing}")

        print("\nlisting (Redis glob patterns, sorted, paged)")
        for number in range(3):
            listing = partial(
                client.list_devices_sync, limit=5, offset=5 * number, pattern="oslo-temp-*"
            )
            listed = timed(f"list_devices('oslo-temp-*', limit=5, page {number})", listing)
            print(f"    -> {listed}")
        listing = partial(client.list_devices_sync, limit=5, pattern="*-door-*[13579]")
        odd = timed("list_devices('*-door-*[13579]', limit=5)", listing)
        print(f"    -> {odd}")

        print("\nqueries (indexed filters, sort, cursor pages)")
        newest_co2 = partial(
            client.query_devices_sync, datatype_id="co2", sort="last_updated", descending=True
        )
        page: Page[DeviceMetadata] = timed(
            "query_devices(co2, newest first, limit 100)", newest_co2
        )
        print(f"    -> {[m.device_id for m in page.items[:3]]} ... ({len(page.items)} items)")
        follow = partial(newest_co2, cursor=page.next_cursor)
        page = timed("  next page (cursor)", follow)
        print(f"    -> {[m.device_id for m in page.items[:3]]} ...")
        persisted = partial(client.query_devices_sync, persist=True, pattern="tokyo-*", limit=5)
        page = timed("query_devices(persist, 'tokyo-*', limit 5)", persisted)
        print(f"    -> {[m.device_id for m in page.items]}")

        print("\nasync API: cache info, health, 500 concurrent gets")
        asyncio.run(_async_part(client, ids, remove=not keep and prefix != DEFAULTS.key_prefix))
    return 0


async def _async_part(client: CacheServiceClient, ids: Sequence[str], *, remove: bool) -> None:
    async with client:  # closes the client's connections when done
        info = await client.get_cache_info()
        print(
            f"  get_cache_info(): {info.total_devices} devices, {info.memory_usage_bytes} bytes,"
            f" oldest {info.oldest_entry_timestamp}, newest {info.newest_entry_timestamp}"
        )
        health = await client.check_health()
        latency = "n/a" if health.latency_ms is None else f"{health.latency_ms:.3f} ms"
        print(f"  check_health(): {health.status}, {health.message} (latency {latency})")
        rng = random.Random(1)
        wanted = [rng.choice(ids) for _ in range(500)]
        started = time.perf_counter()
        results = await asyncio.gather(*(client.get_device_metadata(i) for i in wanted))
        elapsed = time.perf_counter() - started
        if [r.device_id for r in results] != wanted:
            raise RuntimeError("a reply went to the wrong caller")
        print(f"  {'500 x get_device_metadata (gather)':<44}{elapsed * 1e3:9.2f} ms")
        if remove:
            deleted = await client.delete_many_device_metadata([*ids, "lab-probe-1"])
            print(f"\nremoved the {deleted} demo devices (use --keep to keep them)")


def run_repair(settings: Settings) -> int:
    """Rebuild the indexes of the cache ``settings`` name and print the report."""
    with CacheServiceClient.from_settings(settings) as client:
        started = time.perf_counter()
        report = client.repair_indexes_sync()
        elapsed = time.perf_counter() - started
    print(f"repaired {_address(settings)} in {elapsed:.2f} s")
    print(f"  device keys scanned:    {report.scanned}")
    print(f"  devices (re)indexed:    {report.indexed}")
    print(f"  orphan entries removed: {report.orphans_removed}")
    print(f"  corrupted values:       {len(report.corrupted)}")
    for key in report.corrupted[:20]:
        print(f"    {key}")
    if len(report.corrupted) > 20:
        print(f"    ... and {len(report.corrupted) - 20} more")
    return 0
