"""Unit tests of the layered application: the repository is overridden with the in-memory one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from cache_service_client import AsyncInMemoryDeviceMetadataRepository, DeviceMetadata
from examples.layered_app.application import Application, handle, main
from examples.layered_app.services import Reading, ReadingLabeller

NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)


def device(device_id: str, unit: str | None, persist: bool) -> DeviceMetadata:
    return DeviceMetadata(
        device_id=device_id,
        datatype_id="t",
        datatype_name="temperature",
        datatype_unit=unit,
        persist=persist,
        last_updated=NOW,
    )


@pytest.fixture
def fake() -> AsyncInMemoryDeviceMetadataRepository:
    return AsyncInMemoryDeviceMetadataRepository()


@pytest.fixture
def application(fake: AsyncInMemoryDeviceMetadataRepository) -> Iterator[Application]:
    app = Application()
    app.wire(modules=["examples.layered_app.application"])
    with app.cache.async_repository.override(fake):
        yield app
    app.unwire()


async def test_handler_labels_known_devices(
    application: Application, fake: AsyncInMemoryDeviceMetadataRepository
) -> None:
    await fake.put_many([device("s1", "C", True), device("s2", None, False)])
    lines = await handle([Reading("s1", 21.5), Reading("s2", 3.0), Reading("nope", 1.0)])
    assert lines == ["s1: 21.5 C (temperature)", "s2: 3.0 (temperature)"]


async def test_service_alone_with_the_fake(fake: AsyncInMemoryDeviceMetadataRepository) -> None:
    await fake.put_many(
        [device("a-1", "C", True), device("a-2", "C", False), device("b-1", "C", True)]
    )
    labeller = ReadingLabeller(fake)
    assert await labeller.devices_to_persist("a-*") == ["a-1"]
    assert await labeller.devices_to_persist() == ["a-1", "b-1"]


async def test_main_runs_on_the_in_memory_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CACHE_SERVICE_URL", "memory://")
    await main()
    assert capsys.readouterr().out == "sensor-1: 21.5 C (temperature)\n"
