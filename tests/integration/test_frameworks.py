"""The web-framework integrations (cache_service_client.contrib) under each framework's test client.

Every app runs in both dependency modes: the framework's own (the client, or its repository,
handed to routes by the integration's dependencies) and dependency-injector's (a Container the
application wires, its repository injected). Redis-backed apps use a real server of their own,
so the tests can see the lifespan close every connection it opened.
"""

import logging
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import pydantic
import pytest
import redis
from dependency_injector import providers
from dependency_injector.wiring import Provide, inject
from fastapi import Body, Depends, FastAPI
from fastapi.testclient import TestClient
from litestar import Litestar, get, put
from litestar.di import Provide as LitestarProvide
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.testing import TestClient as LitestarTestClient

from cache_service_client import (
    AsyncDeviceMetadataRepository,
    AsyncInMemoryDeviceMetadataRepository,
    CacheInfo,
    CacheServiceClient,
    ConfigurationError,
    DeviceMetadata,
    DeviceQuery,
    HealthStatus,
    InMemoryDeviceMetadataRepository,
    Page,
    settings_from_url,
)
from cache_service_client.container import Container
from cache_service_client.contrib import fastapi as csc_fastapi
from cache_service_client.contrib.fastapi import (
    ClientDep,
    MsgspecJSONResponse,
    RepositoryDep,
    add_exception_handlers,
    get_client,
    get_repository,
    lifespan,
)
from cache_service_client.contrib.litestar import CacheClient, CacheServicePlugin, DeviceRepository
from cache_service_client.testing import RedisServer, free_port
from tests.backends import meta
from tests.redis_server import server_binary

BODY = {
    "device_id": "d-1",
    "datatype_id": "co2",
    "datatype_name": "carbon dioxide",
    "datatype_unit": "ppm",
    "persist": True,
    "last_updated": "2026-11-25T12:30:15Z",
    "additional_properties": {"floor": 3},
}


def connections(server: RedisServer) -> int:
    """Clients connected to ``server`` (not counting the one asking)."""
    with redis.Redis(port=server.port) as admin:
        return int(admin.info("clients")["connected_clients"]) - 1


def expect_json(metadata: DeviceMetadata) -> Any:
    """The JSON of ``metadata`` as the REST gateway writes it."""
    return msgspec.json.decode(msgspec.json.encode(metadata))


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with RedisServer(server_binary()) as server:
        yield server


# -- the models under pydantic ------------------------------------------------------------------


def test_models_validate_and_dump_like_msgspec() -> None:
    adapter = pydantic.TypeAdapter(DeviceMetadata)
    metadata = meta("p-1")
    assert adapter.validate_python(metadata) is metadata
    from_json = adapter.validate_json(msgspec.json.encode(metadata))
    assert from_json == metadata
    assert adapter.dump_json(metadata) == msgspec.json.encode(metadata)
    assert adapter.dump_python(metadata) is metadata  # python mode keeps the Struct

    page = pydantic.TypeAdapter(Page[DeviceMetadata])
    value = page.validate_python({"items": [msgspec.to_builtins(metadata)], "total": 1})
    assert value == Page(items=[metadata], total=1)


def test_invalid_input_is_a_pydantic_validation_error_naming_the_field() -> None:
    adapter = pydantic.TypeAdapter(DeviceMetadata)
    with pytest.raises(pydantic.ValidationError, match=r"persist"):
        adapter.validate_python({**BODY, "persist": "maybe"})
    # The library's own rules run too, as on every write.
    with pytest.raises(pydantic.ValidationError, match=r"device_id.*whitespace"):
        adapter.validate_python({**BODY, "device_id": "a b"})
    with pytest.raises(pydantic.ValidationError, match=r"last_updated"):
        adapter.validate_python({**BODY, "last_updated": "2026-11-25T12:30:15"})  # naive


def test_models_nest_in_pydantic_models_with_a_self_contained_schema() -> None:
    class Envelope(pydantic.BaseModel):
        device: DeviceMetadata
        info: CacheInfo | None = None

    envelope = Envelope.model_validate({"device": BODY})
    assert envelope.device.datatype_unit == "ppm"
    dumped = msgspec.json.decode(envelope.model_dump_json())
    assert dumped["device"] == expect_json(envelope.device)

    schema = pydantic.TypeAdapter(Page[DeviceMetadata]).json_schema()
    assert "$ref" not in msgspec.json.encode(schema).decode()
    item = schema["properties"]["items"]["items"]
    assert item["required"] == [
        "v",
        "device_id",
        "datatype_id",
        "datatype_name",
        "persist",
        "last_updated",
    ]
    assert item["properties"]["last_updated"] == {"type": "string", "format": "date-time"}


# -- FastAPI ------------------------------------------------------------------------------------


def fastapi_app(**options: Any) -> FastAPI:
    """An app whose routes take the client (ClientDep) or the repository (RepositoryDep)."""
    app = FastAPI(lifespan=lifespan(**options))
    add_exception_handlers(app)

    @app.get("/devices/{device_id}")
    async def device(device_id: str, client: ClientDep) -> DeviceMetadata:
        return await client.get_device_metadata(device_id)

    @app.put("/devices/{device_id}", status_code=204, response_model=None)
    async def store(
        device_id: str, body: Annotated[DeviceMetadata, Body()], repo: RepositoryDep
    ) -> None:
        await repo.put(body)

    @app.get("/query")
    async def query(repo: RepositoryDep, datatype_id: str | None = None) -> Page[DeviceMetadata]:
        return await repo.query(DeviceQuery(datatype_id=datatype_id))

    @app.get("/info")
    async def info(client: ClientDep) -> CacheInfo:
        return await client.get_cache_info()

    @app.get("/health")
    async def health(client: ClientDep) -> HealthStatus:
        return await client.check_health()

    @app.get("/raw/{device_id}", response_class=MsgspecJSONResponse)
    async def raw(device_id: str, repo: RepositoryDep) -> MsgspecJSONResponse:
        return MsgspecJSONResponse(await repo.get(device_id))

    return app


def exercise(http: Any, repository: AsyncDeviceMetadataRepository | None = None) -> None:
    """The same requests against any of the apps; both frameworks answer alike."""
    missing = http.get("/devices/d-1")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "device_not_found",
        "message": "device 'd-1' not found",
        "device_id": "d-1",
    }
    assert http.put("/devices/d-1", json=BODY).status_code in (200, 204)
    stored = DeviceMetadata.from_dict(BODY)
    found = http.get("/devices/d-1")
    assert found.status_code == 200
    assert found.json() == expect_json(stored)

    bad = http.put("/devices/d-1", json={**BODY, "device_id": "a b"})
    assert bad.status_code in (400, 422)
    page = http.get("/query", params={"datatype_id": "co2"}).json()
    assert page["items"] == [expect_json(stored)]
    assert page["next_cursor"] is None
    info = http.get("/info").json()
    assert info["total_devices"] == 1
    assert info["oldest_entry_timestamp"] == "2026-11-25T12:30:15Z"
    assert http.get("/health").json()["status"] == "healthy"


def test_fastapi_client_and_repository_dependencies_on_redis(own_server: RedisServer) -> None:
    made: list[CacheServiceClient] = []

    def factory() -> CacheServiceClient:
        made.append(CacheServiceClient(url=own_server.url))
        return made[-1]

    app = fastapi_app(client=factory)
    assert made == []  # the client is built when the app starts
    with TestClient(app) as http:
        assert len(made) == 1
        exercise(http)
        raw = http.get("/raw/d-1")
        assert raw.headers["content-type"] == "application/json"
        assert raw.content == msgspec.json.encode(DeviceMetadata.from_dict(BODY))
        assert connections(own_server) >= 1
    assert connections(own_server) == 0  # the lifespan closed the client


def test_fastapi_openapi_document_shows_the_models() -> None:
    app = fastapi_app(client=lambda: CacheServiceClient(url="memory://"))
    with TestClient(app) as http:
        document = http.get("/openapi.json").json()
    schemas = document["components"]["schemas"]

    def schema_of(content: Any) -> Any:
        ref = content["application/json"]["schema"]["$ref"]
        return schemas[ref.removeprefix("#/components/schemas/")]

    device = document["paths"]["/devices/{device_id}"]
    schema = schema_of(device["get"]["responses"]["200"]["content"])
    assert schema["title"] == "DeviceMetadata"
    assert set(schema["required"]) >= {"device_id", "datatype_id", "persist", "last_updated"}
    assert schema_of(device["put"]["requestBody"]["content"]) == schema
    page = schema_of(document["paths"]["/query"]["get"]["responses"]["200"]["content"])
    assert page["properties"]["items"]["items"]["title"] == "DeviceMetadata"


def test_fastapi_a_pydantic_error_in_the_body_is_a_422() -> None:
    app = fastapi_app(client=lambda: CacheServiceClient(url="memory://"))
    with TestClient(app) as http:
        answer = http.put("/devices/d-1", json={**BODY, "persist": "maybe"})
    assert answer.status_code == 422
    assert "persist" in answer.text


def test_fastapi_repository_overridden_in_tests() -> None:
    fake = AsyncInMemoryDeviceMetadataRepository()
    app = fastapi_app(client=lambda: CacheServiceClient(url="memory://"))
    app.dependency_overrides[get_repository] = lambda: fake
    with TestClient(app) as http:
        assert http.put("/devices/d-1", json=BODY).status_code == 204
        assert http.get("/raw/d-1").json() == expect_json(DeviceMetadata.from_dict(BODY))
        # The client's own store saw nothing: the route wrote to the override.
        assert http.get("/devices/d-1").status_code == 404


def test_fastapi_one_client_override_reaches_every_dependency(
    own_server: RedisServer,
    memory_repository: InMemoryDeviceMetadataRepository,
    async_memory_repository: AsyncInMemoryDeviceMetadataRepository,
) -> None:
    # The app talks to a real Redis; a test overrides get_client alone, with a client over the
    # pytest plugin's in-memory fixtures: routes that take ClientDep and routes that take
    # RepositoryDep both see the fake, and Redis sees nothing.
    app = fastapi_app(client=lambda: CacheServiceClient(url=own_server.url))
    fake = CacheServiceClient(
        repository=memory_repository, async_repository=async_memory_repository
    )
    app.dependency_overrides[get_client] = lambda: fake
    with TestClient(app) as http:
        exercise(http)  # PUT through RepositoryDep, GET and /info through ClientDep
        assert http.get("/raw/d-1").json() == expect_json(DeviceMetadata.from_dict(BODY))
    assert memory_repository.exists("d-1")
    with redis.Redis(port=own_server.port) as admin:
        assert admin.dbsize() == 0


def test_fastapi_container_mode_offers_the_client_too(own_server: RedisServer) -> None:
    container = Container(settings=providers.Object(settings_from_url(own_server.url)))
    with TestClient(fastapi_app(container=container)) as http:
        exercise(http)
    assert connections(own_server) == 0


def test_fastapi_dependency_injector_wiring(own_server: RedisServer) -> None:
    container = Container(settings=providers.Object(settings_from_url(own_server.url)))
    app = FastAPI(lifespan=lifespan(container=container))
    add_exception_handlers(app)

    @app.get("/devices/{device_id}")
    @inject
    async def device(
        device_id: str,
        repo: AsyncDeviceMetadataRepository = Depends(Provide[Container.async_repository]),  # noqa: B008
    ) -> DeviceMetadata:
        return await repo.get(device_id)

    @app.put("/devices/{device_id}", status_code=204, response_model=None)
    async def store(
        device_id: str, body: Annotated[DeviceMetadata, Body()], repo: RepositoryDep
    ) -> None:
        await repo.put(body)

    container.wire(modules=[__name__])
    try:
        with TestClient(app) as http:
            assert http.get("/devices/d-1").status_code == 404
            assert http.put("/devices/d-1", json=BODY).status_code == 204
            found = http.get("/devices/d-1")
            assert found.json() == expect_json(DeviceMetadata.from_dict(BODY))
    finally:
        container.unwire()
    assert connections(own_server) == 0  # the container's resources were shut down


def test_fastapi_backend_down_is_a_503_with_retry_after() -> None:
    url = f"redis://127.0.0.1:{free_port()}?retry_attempts=1&socket_timeout=0.5"
    app = fastapi_app(client=lambda: CacheServiceClient(url=url))
    with TestClient(app) as http:
        answer = http.get("/devices/d-1")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["error"] == "backend_unavailable"


def test_fastapi_without_the_lifespan_names_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/count")
    async def count(client: ClientDep) -> int:
        return await client.count_devices()

    with caplog.at_level(logging.ERROR, "cache_service_client"), TestClient(app) as http:
        answer = http.get("/count")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal_error", "message": "internal error"}
    assert "lifespan" in caplog.text  # the logged error says what to do


def test_fastapi_lifespan_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="client or a container"):
        lifespan(CacheServiceClient(url="memory://"), container=Container())
    app = FastAPI(lifespan=lifespan(lambda: "memory://"))  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigurationError, match="returned str"), TestClient(app):
        pass


def test_fastapi_lifespan_keeps_a_client_it_must_not_close(own_server: RedisServer) -> None:
    client = CacheServiceClient(url=own_server.url)
    app = fastapi_app(client=client, close=False)
    with TestClient(app) as http:
        assert http.put("/devices/d-1", json=BODY).status_code == 204
    assert not hasattr(app.state, csc_fastapi.CLIENT_STATE)
    # Still open: the sync side works, the async side is the caller's to close.
    assert client.count_devices_sync() == 1
    client.close()


def test_fastapi_client_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_SERVICE_URL", "memory://")
    with TestClient(fastapi_app()) as http:
        exercise(http)


# -- Litestar -----------------------------------------------------------------------------------


@get("/devices/{device_id:str}")
async def ls_device(device_id: FromPath[str], cache_client: CacheClient) -> DeviceMetadata:
    return await cache_client.get_device_metadata(device_id)


@put("/devices/{device_id:str}", status_code=204)
async def ls_store(
    device_id: FromPath[str], data: JSONBody[DeviceMetadata], device_repository: DeviceRepository
) -> None:
    await device_repository.put(data)


@get("/query")
async def ls_query(
    device_repository: DeviceRepository, datatype_id: FromQuery[str | None] = None
) -> Page[DeviceMetadata]:
    return await device_repository.query(DeviceQuery(datatype_id=datatype_id))


@get("/info")
async def ls_info(cache_client: CacheClient) -> CacheInfo:
    return await cache_client.get_cache_info()


@get("/health")
async def ls_health(cache_client: CacheClient) -> HealthStatus:
    return await cache_client.check_health()


@get("/repo/{device_id:str}")
async def ls_repo_device(
    device_id: FromPath[str], device_repository: DeviceRepository
) -> DeviceMetadata:
    return await device_repository.get(device_id)


LITESTAR_ROUTES = [ls_device, ls_store, ls_query, ls_info, ls_health]


def test_litestar_plugin_on_redis(own_server: RedisServer) -> None:
    made: list[CacheServiceClient] = []

    def factory() -> CacheServiceClient:
        made.append(CacheServiceClient(url=own_server.url))
        return made[-1]

    app = Litestar(LITESTAR_ROUTES, plugins=[CacheServicePlugin(factory)])
    assert made == []
    with LitestarTestClient(app) as http:
        assert len(made) == 1
        exercise(http)
        assert connections(own_server) >= 1
    assert connections(own_server) == 0


def test_litestar_openapi_document_shows_the_models() -> None:
    plugin = CacheServicePlugin(lambda: CacheServiceClient(url="memory://"))
    app = Litestar(LITESTAR_ROUTES, plugins=[plugin])
    with LitestarTestClient(app) as http:
        document = http.get("/schema/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert {"DeviceMetadata", "CacheInfo", "HealthStatus"} <= set(schemas)
    assert "last_updated" in schemas["DeviceMetadata"]["properties"]


def test_litestar_container_mode_and_overrides(own_server: RedisServer) -> None:
    container = Container(settings=providers.Object(settings_from_url(own_server.url)))
    app = Litestar([ls_store, ls_repo_device], plugins=[CacheServicePlugin(container=container)])
    with LitestarTestClient(app) as http:
        assert http.get("/repo/d-1").status_code == 404
        assert http.put("/devices/d-1", json=BODY).status_code == 204
        assert http.get("/repo/d-1").json() == expect_json(DeviceMetadata.from_dict(BODY))
    assert connections(own_server) == 0

    # A test swaps the repository for the in-memory fake; the app's own choice is kept.
    fake = AsyncInMemoryDeviceMetadataRepository()
    app = Litestar(
        [ls_store, ls_repo_device],
        plugins=[CacheServicePlugin(lambda: CacheServiceClient(url="memory://"))],
        dependencies={"device_repository": LitestarProvide(lambda: fake, sync_to_thread=False)},
    )
    with LitestarTestClient(app) as http:
        assert http.put("/devices/d-1", json=BODY).status_code == 204
    assert fake.sync.exists("d-1")


def test_litestar_one_client_override_reaches_every_dependency(
    own_server: RedisServer,
    memory_repository: InMemoryDeviceMetadataRepository,
    async_memory_repository: AsyncInMemoryDeviceMetadataRepository,
) -> None:
    # As with FastAPI: one override of cache_client, and device_repository follows.
    fake = CacheServiceClient(
        repository=memory_repository, async_repository=async_memory_repository
    )
    app = Litestar(
        LITESTAR_ROUTES,
        plugins=[CacheServicePlugin(lambda: CacheServiceClient(url=own_server.url))],
        dependencies={"cache_client": LitestarProvide(lambda: fake, sync_to_thread=False)},
    )
    with LitestarTestClient(app) as http:
        exercise(http)  # PUT and /query through device_repository, GET and /info cache_client
    assert memory_repository.exists("d-1")
    with redis.Redis(port=own_server.port) as admin:
        assert admin.dbsize() == 0


@get("/named/{device_id:str}")
async def ls_named_device(device_id: FromPath[str], cache: CacheClient) -> DeviceMetadata:
    return await cache.get_device_metadata(device_id)


@put("/named/{device_id:str}", status_code=204)
async def ls_named_store(
    device_id: FromPath[str], data: JSONBody[DeviceMetadata], repo: DeviceRepository
) -> None:
    await repo.put(data)


def test_litestar_override_with_own_dependency_names_and_container_mode(
    own_server: RedisServer,
    memory_repository: InMemoryDeviceMetadataRepository,
    async_memory_repository: AsyncInMemoryDeviceMetadataRepository,
) -> None:
    fake = CacheServiceClient(
        repository=memory_repository, async_repository=async_memory_repository
    )
    plugin = CacheServicePlugin(
        lambda: CacheServiceClient(url="memory://"), client_key="cache", repository_key="repo"
    )
    override = {"cache": LitestarProvide(lambda: fake, sync_to_thread=False)}
    app = Litestar([ls_named_device, ls_named_store], plugins=[plugin], dependencies=override)
    with LitestarTestClient(app) as http:
        assert http.put("/named/d-1", json=BODY).status_code == 204
        assert http.get("/named/d-1").json() == expect_json(DeviceMetadata.from_dict(BODY))
    assert memory_repository.exists("d-1")

    # In container mode, cache_client is a client over the container's repositories.
    container = Container(settings=providers.Object(settings_from_url(own_server.url)))
    app = Litestar(LITESTAR_ROUTES, plugins=[CacheServicePlugin(container=container)])
    with LitestarTestClient(app) as http:
        exercise(http)
    assert connections(own_server) == 0


def test_litestar_without_exception_handlers_leaves_errors_to_the_app() -> None:
    plugin = CacheServicePlugin(
        lambda: CacheServiceClient(url="memory://"), exception_handlers=False
    )
    app = Litestar([ls_device], plugins=[plugin])
    with LitestarTestClient(app) as http:
        answer = http.get("/devices/nope")
    assert answer.status_code == 500
    assert "device_not_found" not in answer.text


def test_litestar_backend_down_is_a_503_and_arguments_are_checked() -> None:
    url = f"redis://127.0.0.1:{free_port()}?retry_attempts=1&socket_timeout=0.5"
    app = Litestar([ls_device], plugins=[CacheServicePlugin(lambda: CacheServiceClient(url=url))])
    with LitestarTestClient(app) as http:
        answer = http.get("/devices/d-1")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["error"] == "backend_unavailable"
    with pytest.raises(ConfigurationError, match="client or a container"):
        CacheServicePlugin(CacheServiceClient(url="memory://"), container=Container())
