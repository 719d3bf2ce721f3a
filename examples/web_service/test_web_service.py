"""Both web services under their framework's test client, on a shared in-memory store.

The apps build their client from ``CACHE_SERVICE_URL``; a second client on the same
``memory://`` name plays the writer that fills the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from litestar.testing import TestClient as LitestarTestClient

from cache_service_client import CacheServiceClient, InMemoryDeviceMetadataRepository
from examples.web_service import fastapi_app, litestar_app

STORE = "web-service-example"
CO2 = {
    "datatype_id": "co2",
    "datatype_name": "carbon dioxide",
    "datatype_unit": "ppm",
    "persist": True,
    "last_updated": "2026-11-25T12:00:00Z",
}


@pytest.fixture
def writer(monkeypatch: pytest.MonkeyPatch) -> Iterator[CacheServiceClient]:
    monkeypatch.setenv("CACHE_SERVICE_URL", f"memory://{STORE}")
    with CacheServiceClient(url=f"memory://{STORE}") as client:
        yield client
    InMemoryDeviceMetadataRepository.drop_shared(STORE)


@pytest.fixture(params=["fastapi", "litestar"])
def http(request: pytest.FixtureRequest, writer: CacheServiceClient) -> Iterator[Any]:
    if request.param == "fastapi":
        with TestClient(fastapi_app.app) as client:
            yield client
    else:
        with LitestarTestClient(litestar_app.app) as client:
            yield client


def test_readings_are_enriched(http: Any, writer: CacheServiceClient) -> None:
    writer.store_device_metadata("sensor-1", CO2)
    answer = http.post(
        "/readings",
        json=[{"device_id": "sensor-1", "value": 412.0}, {"device_id": "x", "value": 1}],
    )
    assert answer.status_code == 200
    assert answer.json() == [
        {"device_id": "sensor-1", "value": 412.0, "datatype": "carbon dioxide", "unit": "ppm",
         "persist": True}
    ]  # fmt: skip


def test_devices_are_served_and_stored(http: Any, writer: CacheServiceClient) -> None:
    assert http.get("/devices/sensor-2").status_code == 404
    body = {"device_id": "sensor-2", **CO2, "v": 1, "additional_properties": {"room": "2.14"}}
    assert http.put("/devices/sensor-2", json=body).status_code == 204
    assert writer.get_device_metadata_sync("sensor-2").additional_properties == {"room": "2.14"}
    assert http.get("/devices/sensor-2").json() == {**body, "datatype_unit": "ppm"}
    bad = http.put("/devices/sensor-2", json={**body, "persist": "sometimes"})
    assert bad.status_code in (400, 422)
