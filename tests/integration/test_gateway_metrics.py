"""The gateway's Prometheus ``/metrics`` over a real gateway: what it counts, its format, and
the token it needs unless opened."""

from __future__ import annotations

import re

import httpx

from cache_service_client import AsyncRedisDeviceMetadataRepository, RetryPolicy
from cache_service_client.server import wire
from cache_service_client.server.cli import build_parser
from tests.http_gateway import Gateway
from tests.redis_server import free_port

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SAMPLE = re.compile(r'^([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
BODY = {
    "datatype_id": "temp",
    "datatype_name": "temperature",
    "datatype_unit": "C",
    "persist": True,
}


def samples(text: str) -> dict[str, float]:
    """Every sample of an exposition, by its name and labels; each line must parse."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            assert line.startswith(
                ("# HELP cache_service_gateway_", "# TYPE cache_service_gateway_")
            )
            continue
        match = SAMPLE.match(line)
        assert match is not None, line
        found[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return found


def test_requests_by_route_and_status_and_their_latency() -> None:
    with (
        Gateway(auth_token=TOKEN) as gateway,
        httpx.Client(base_url=gateway.url, headers=AUTH, trust_env=False) as client,
    ):
        assert client.put(wire.device_path("s/1"), json=BODY).status_code == 204
        assert client.get(wire.device_path("s/1")).status_code == 200
        assert client.get(wire.device_path("nope")).status_code == 404
        assert client.get("/no/such/route").status_code == 404
        assert client.request("BREW", wire.COUNT_PATH).status_code == 405
        assert httpx.get(gateway.url + wire.COUNT_PATH, trust_env=False).status_code == 401
        # Without the token /metrics is refused like any other route.
        anonymous = httpx.get(gateway.url + wire.METRICS_PATH, trust_env=False)
        assert anonymous.status_code == 401
        answer = client.get(wire.METRICS_PATH)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = samples(answer.text)
    requests = "cache_service_gateway_requests_total"
    device = 'route="/v1/devices/{device_id}"'
    assert found[f'{requests}{{method="PUT",{device},status="204"}}'] == 1
    assert found[f'{requests}{{method="GET",{device},status="200"}}'] == 1
    assert found[f'{requests}{{method="GET",{device},status="404"}}'] == 1
    assert found[f'{requests}{{method="GET",route="unmatched",status="404"}}'] == 1
    # Methods out of HTTP's usual set share one label value (no label per made-up method).
    assert found[f'{requests}{{method="other",route="/v1/devices:count",status="405"}}'] == 1
    assert found[f'{requests}{{method="GET",route="/v1/devices:count",status="401"}}'] == 1
    assert found[f'{requests}{{method="GET",route="/metrics",status="401"}}'] == 1
    duration = "cache_service_gateway_request_duration_seconds"
    labels = f'method="GET",{device}'
    assert found[f"{duration}_count{{{labels}}}"] == 2
    assert found[f'{duration}_bucket{{{labels},le="+Inf"}}'] == 2
    assert 0 < found[f"{duration}_sum{{{labels}}}"] < 10
    buckets = [v for k, v in found.items() if k.startswith(f"{duration}_bucket{{{labels},")]
    assert buckets == sorted(buckets)  # cumulative
    assert "# TYPE cache_service_gateway_backend_errors_total counter" in answer.text


def test_open_metrics_and_backend_errors() -> None:
    with (
        Gateway(auth_token=TOKEN, open_metrics=True) as gateway,
        httpx.Client(base_url=gateway.url, trust_env=False) as anonymous,
    ):
        dead = gateway.redis_client(f"redis://127.0.0.1:{free_port()}/0")
        repository = AsyncRedisDeviceMetadataRepository(dead, retry=RetryPolicy.disabled())
        with gateway.serving(repository):
            assert anonymous.get(wire.device_path("a"), headers=AUTH).status_code == 503
            assert anonymous.get(wire.COUNT_PATH, headers=AUTH).status_code == 503
        assert anonymous.get(wire.COUNT_PATH).status_code == 401  # the rest stays closed
        answer = anonymous.get(wire.METRICS_PATH)
        assert answer.status_code == 200
        with_query = anonymous.get(wire.METRICS_PATH, params={"x": "1"})
        assert with_query.status_code == 422
    found = samples(answer.text)
    errors = 'cache_service_gateway_backend_errors_total{error_type="BackendConnectionError"}'
    assert found[errors] == 2
    assert build_parser().parse_args(["--open-metrics"]).open_metrics is True
