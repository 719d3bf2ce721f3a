"""Property-based: every public method, given arbitrary Python values, raises only documented
exceptions, and a rejected write leaves the store exactly as it was.

Arbitrary means wrong types, None, huge and surrogate-bearing strings, NaN and infinities, deep
nesting, naive datetimes and objects of no JSON type, as arguments and inside metadata. Every
repository of the contract suite runs them (through ``backend``), and so does the facade.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_service_client import (
    CacheServiceClient,
    CacheServiceError,
    ConfigurationError,
    DeviceMetadata,
    DeviceQuery,
    KeyStrategy,
)
from tests.backends import Backend, meta

SURROGATES = ["\ud800", "\udfff", "a\udbffb"]


def _deep(levels: int) -> Any:
    nested: Any = "leaf"
    for _ in range(levels):
        nested = {"n": [nested]}
    return nested


# Large values are built by functions, so that no strategy's repr holds them.
large = st.one_of(
    st.integers(100_000, 100_001).map(lambda n: "x" * n),
    st.integers(5000, 5001).map(lambda n: "[ab]" * n),
    st.integers(40, 120).map(_deep),
)
ODD = [
    float("nan"),
    float("inf"),
    -float("inf"),
    2**70,
    -(2**64),
    datetime(2026, 1, 1),
    datetime(2026, 1, 1, tzinfo=timezone.utc),
    object(),
    {1, 2},
    b"\xff\xfe",
    (),
    ["a", "b"],
    {"a": 1},
    meta("ok"),
]

text = st.one_of(
    st.text(max_size=12),
    st.builds(
        lambda a, s, b: a + s + b,
        st.text(max_size=4),
        st.sampled_from(SURROGATES),
        st.text(max_size=4),
    ),
    st.sampled_from(["", " ", "a b", "dev-1", "*", "\x00", "é" * 300]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=8),
    st.sampled_from(ODD),
    large,
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(text, st.integers()), inner, max_size=3),
        st.tuples(inner),
    ),
    max_leaves=6,
)
ids = st.one_of(st.sampled_from(["dev-1", "dev-2", "a*b", "ü"]), anything)
hashable_ids = st.one_of(st.sampled_from(["dev-1", "dev-2"]), text, st.integers(), st.none())


def _metadata(fields: dict[str, Any]) -> DeviceMetadata:
    return DeviceMetadata(**{**meta("dev-1").to_dict(), **fields})


field_names = st.sampled_from(
    ["device_id", "datatype_id", "datatype_name", "datatype_unit", "persist", "last_updated",
     "additional_properties"]
)  # fmt: skip
metadata = st.one_of(
    st.builds(
        lambda d: _metadata(d), st.dictionaries(field_names, anything, min_size=1, max_size=3)
    ),
    anything,
)
query_fields = st.sampled_from(list(DeviceQuery.__struct_fields__))
queries = st.one_of(
    st.builds(lambda d: DeviceQuery(**d), st.dictionaries(query_fields, anything, max_size=3)),
    anything,
)
batches = st.one_of(st.lists(ids, max_size=4), anything)


METHODS = [
    "get", "exists", "delete", "put", "put_many", "get_many", "get_many_detailed", "delete_many",
    "list_ids", "query",
]  # fmt: skip


METHODS = [
    "get", "exists", "delete", "put", "put_many", "get_many", "get_many_detailed", "delete_many",
    "list_ids", "query",
]  # fmt: skip


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """A repository method and arbitrary arguments for it."""
    name = draw(st.sampled_from(METHODS))
    if name in ("get", "exists", "delete"):
        return name, (draw(ids),), {}
    if name == "put":
        return name, (draw(metadata),), {}
    if name == "put_many":
        return name, (draw(st.one_of(st.lists(metadata, max_size=3), anything)),), {}
    if name == "list_ids":
        options = {"pattern": text | anything, "limit": anything, "offset": anything}
        return name, (), draw(st.fixed_dictionaries({}, optional=options))
    if name == "query":
        return name, (draw(queries),), {}
    return name, (draw(batches),), {}


WRITES = {"delete", "put", "put_many", "delete_many"}


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=calls())
async def test_repositories_raise_only_documented_errors(
    backend: Backend, call: tuple[str, tuple[Any, ...], dict[str, Any]]
) -> None:
    name, args, kwargs = call
    before = backend.backdoor.size()
    try:
        await getattr(backend.repo, name)(*args, **kwargs)
    except CacheServiceError:
        if name in WRITES:
            assert backend.backdoor.size() == before, "a rejected write changed the store"
    except Exception as exc:  # pragma: no cover - the failure this test looks for
        pytest.fail(f"{name}{args!r:.200}{kwargs!r:.200} raised {type(exc).__name__}: {exc}")


FACADE_METHODS = {
    # name: (argument strategies, is a write)
    "store_device_metadata": ((ids, anything), True),
    "get_device_metadata_sync": ((ids,), False),
    "device_exists_sync": ((ids,), False),
    "delete_device_metadata_sync": ((ids,), True),
    "store_many_device_metadata_sync": (
        (st.dictionaries(hashable_ids, anything, max_size=3) | batches,), True
    ),
    "get_many_device_metadata_sync": ((batches,), False),
    "delete_many_device_metadata_sync": ((batches,), True),
    "list_devices_sync": ((anything, anything, text | anything), False),
}  # fmt: skip


@pytest.fixture(params=["memory", "redis"])
def facade(request: pytest.FixtureRequest, key_strategy: KeyStrategy) -> Any:
    if request.param == "memory":
        url = "memory://"
    else:
        url = f"{request.getfixturevalue('redis_url')}?key_prefix={key_strategy.prefix}"
    client = CacheServiceClient.from_url(url)
    yield client
    asyncio.run(client.aclose())


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_the_facade_raises_only_documented_errors(facade: CacheServiceClient, data: Any) -> None:
    name = data.draw(st.sampled_from([*FACADE_METHODS, "query_devices_sync", "configure"]))
    kwargs: dict[str, Any] = {}
    if name == "query_devices_sync":
        args: tuple[Any, ...] = ()
        kwargs = data.draw(st.dictionaries(st.one_of(query_fields, text), anything, max_size=3))
        write = False
    elif name == "configure":
        args = ()
        option = st.sampled_from(["metadata_ttl", "socket_timeout", "host", "colour"])
        kwargs = data.draw(st.dictionaries(option, anything, min_size=1, max_size=2))
        write = False
    else:
        strategies, write = FACADE_METHODS[name]
        args = tuple(data.draw(s) for s in strategies)
    before = facade.count_devices_sync()
    try:
        getattr(facade, name)(*args, **kwargs)
    except ConfigurationError:
        assert name == "configure", name
    except CacheServiceError:
        if write:
            assert facade.count_devices_sync() == before
    except Exception as exc:  # pragma: no cover - the failure this test looks for
        pytest.fail(f"{name}{args!r:.200}{kwargs!r:.200} raised {type(exc).__name__}: {exc}")
