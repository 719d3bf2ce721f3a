"""The ``devcache`` operator commands against memory://, Redis and Redis Cluster.

In process through ``main()`` for the breadth (a ``memory://NAME`` store is shared by every client
of the process), and through the installed ``devcache`` entry point for a representative set:
exit codes, JSON and table output, one-line errors, export/import of 10,000 devices.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest

from cache_service_client import CacheServiceClient, ConfigurationError, DeviceMetadata
from cache_service_client.__main__ import main
from cache_service_client._cli._common import Progress, table
from cache_service_client._cli.commands import LIST_PAGE
from cache_service_client._cli.demo import synthetic_devices

BACKENDS = ["memory", "redis", "cluster"]
FLEET = 60


def _with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}key_prefix={prefix}"


def _url(request: pytest.FixtureRequest, backend: str) -> str:
    """A cache of its own on ``backend``: a named memory store, or a key prefix of its own."""
    name = f"cli-{uuid.uuid4().hex[:10]}"
    if backend == "memory":
        return f"memory://{name}"
    base: str = request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
    return _with_prefix(base, name)


def _sibling(url: str) -> str:
    """Another empty cache on the backend of ``url``."""
    name = f"cli-{uuid.uuid4().hex[:10]}"
    if url.startswith("memory"):
        return f"memory://{name}"
    return _with_prefix(url.rsplit("?", 1)[0], name)


@pytest.fixture(scope="module", params=BACKENDS)
def fleet(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[DeviceMetadata]]]:
    """A read-only fleet of FLEET synthetic devices on each backend, shared by the read tests."""
    url = _url(request, request.param)
    devices = synthetic_devices(FLEET, seed=3)
    with CacheServiceClient.from_url(url) as client:
        client.store_many_device_metadata_sync(devices)
        yield url, sorted(devices, key=lambda d: d.device_id)
        client.delete_many_device_metadata_sync([d.device_id for d in devices])


@pytest.fixture(params=BACKENDS)
def empty(request: pytest.FixtureRequest) -> str:
    """An empty cache of this test's own on each backend."""
    return _url(request, request.param)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def _decode(line: str | bytes) -> DeviceMetadata:
    return msgspec.json.decode(line, type=DeviceMetadata)


def _one_error_line(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


# -- reads -------------------------------------------------------------------------------------


def test_get(fleet: tuple[str, list[DeviceMetadata]], capsys: pytest.CaptureFixture[str]) -> None:
    url, devices = fleet
    device = devices[7]
    code, out, _ = run(capsys, "get", device.device_id, "--url", url, "--json")
    assert code == 0
    assert _decode(out) == device
    assert json.loads(out)["v"] == 1  # the stored form, schema tag included
    code, out, _ = run(capsys, "get", device.device_id, "--url", url)
    assert code == 0
    rows = dict(line.split(None, 1) for line in out.splitlines())
    assert rows["device_id"] == device.device_id
    assert rows["persist"] == ("yes" if device.persist else "no")
    assert json.loads(rows["additional_properties"]) == device.additional_properties
    code, out, err = run(capsys, "get", "no-such-device", "--url", url)
    assert (code, out) == (1, "")
    assert err == "devcache: error: device 'no-such-device' not found\n"


def test_list_count_info(
    fleet: tuple[str, list[DeviceMetadata]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, devices = fleet
    ids = [d.device_id for d in devices]
    code, out, _ = run(capsys, "list", "--url", url)
    assert (code, out.splitlines()) == (0, ids)
    oslo = [i for i in ids if i.startswith("oslo-")]
    code, out, _ = run(
        capsys, "list", "--url", url, "--pattern", "oslo-*", "--limit", "3", "--offset", "2"
    )
    assert out.splitlines() == oslo[2:5]
    code, out, _ = run(capsys, "list", "--url", url, "--json", "--pattern", "oslo-*")
    assert json.loads(out) == oslo
    code, out, _ = run(capsys, "list", "--url", url, "--pattern", "nothing-*")
    assert (code, out) == (0, "")
    assert run(capsys, "count", "--url", url) == (0, f"{FLEET}\n", "")
    assert json.loads(run(capsys, "count", "--url", url, "--json")[1]) == {"count": FLEET}
    code, out, _ = run(capsys, "info", "--url", url, "--json")
    info = json.loads(out)
    assert info["total_devices"] == FLEET
    newest = max(d.last_updated for d in devices)
    assert info["newest_entry_timestamp"][:19] == newest.isoformat()[:19]
    code, out, _ = run(capsys, "info", "--url", url)
    assert f"total_devices           {FLEET}" in out


def test_query(fleet: tuple[str, list[DeviceMetadata]], capsys: pytest.CaptureFixture[str]) -> None:
    url, devices = fleet
    wanted = [d for d in devices if d.datatype_id == "temp" and d.persist]
    wanted.sort(key=lambda d: (d.last_updated, d.device_id), reverse=True)
    base = ["query", "--url", url, "--datatype", "temp", "--persist", "--sort", "last_updated"]
    code, out, err = run(capsys, *base, "--desc", "--limit", "2", "--json")
    page = json.loads(out)
    assert (code, err) == (0, "")
    assert [_decode(json.dumps(item)) for item in page["items"]] == wanted[:2]
    assert page["next_cursor"]
    code, out, _ = run(
        capsys, *base, "--desc", "--limit", "2", "--json", "--cursor", page["next_cursor"]
    )
    assert [item["device_id"] for item in json.loads(out)["items"]] == [
        d.device_id for d in wanted[2:4]
    ]
    # --all: every page, one JSON document
    code, out, _ = run(capsys, *base, "--desc", "--limit", "3", "--json", "--all")
    whole = json.loads(out)
    assert [item["device_id"] for item in whole["items"]] == [d.device_id for d in wanted]
    assert (whole["next_cursor"], whole["total"]) == (None, len(wanted))
    # the table: a header, a row per device, the cursor on stderr
    code, out, err = run(capsys, "query", "--url", url, "--no-persist", "--limit", "2")
    lines = out.splitlines()
    assert lines[0].split() == [
        "device_id", "datatype_id", "datatype_name", "unit", "persist", "last_updated"
    ]  # fmt: skip
    first = next(d for d in devices if not d.persist)
    assert lines[1].split()[0] == first.device_id
    assert len(lines) == 3
    assert err.startswith("more: --cursor ")
    code, out, err = run(capsys, "query", "--url", url, "--all", "--pattern", "lisbon-*")
    assert len(out.splitlines()) == 1 + sum(d.device_id.startswith("lisbon-") for d in devices)
    after = devices[0].last_updated.isoformat()
    code, out, _ = run(capsys, "query", "--url", url, "--updated-after", after, "--json", "--all")
    assert json.loads(out)["total"] == sum(
        d.last_updated > devices[0].last_updated for d in devices
    )


def test_health(
    fleet: tuple[str, list[DeviceMetadata]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = fleet
    code, out, _ = run(capsys, "health", "--url", url, "--json")
    assert (code, json.loads(out)["status"]) == (0, "healthy")
    code, out, _ = run(capsys, "health", "--url", url)
    assert out.split()[:2] == ["status", "healthy"]
    if url.startswith("memory"):
        return
    # every PING is slower than a nanosecond: degraded, exit code 1
    code, out, _ = run(capsys, "health", "--url", url + "&health_slow_ms=0.000001", "--json")
    assert (code, json.loads(out)["status"]) == (1, "degraded")


def test_health_of_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "health", "--url", "redis://127.0.0.1:1/0", "--socket-timeout", "0.3", "--json"
    )
    assert (code, json.loads(out)["status"], err) == (2, "unhealthy", "")


# -- writes ------------------------------------------------------------------------------------


def test_put_and_delete(
    empty: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = {"datatype_id": "t", "datatype_name": "temp", "persist": True, "firmware": "1.2"}
    code, out, _ = run(capsys, "put", "a", json.dumps(plain), "--url", empty)
    assert (code, out) == (0, "stored a\n")
    code, out, _ = run(capsys, "get", "a", "--url", empty, "--json")
    stored = _decode(out)
    assert stored.additional_properties == {"firmware": "1.2"}
    # stdin, with the output of get --json (its schema tag is not a property)
    older = out.replace(stored.last_updated.isoformat()[:4], "2001", 1)
    _stdin(monkeypatch, older.encode())
    code, out, _ = run(capsys, "put", "a", "-", "--url", empty, "--if-newer", "--json")
    assert (code, json.loads(out)) == (0, {"device_id": "a", "written": False})
    _stdin(monkeypatch, older.encode())
    code, out, _ = run(capsys, "put", "a", "--url", empty, "--json")
    assert json.loads(out) == {"device_id": "a", "written": True}
    assert _decode(run(capsys, "get", "a", "--url", empty, "--json")[1]).last_updated.year == 2001
    # errors name the field or the input
    code, out, err = run(capsys, "put", "b", '{"datatype_id": "t"}', "--url", empty)
    assert (code, out, err) == (2, "", "devcache: error: datatype_name: is required\n")
    code, _, err = run(capsys, "put", "b", "{nope", "--url", empty)
    assert code == 2
    assert err.startswith("devcache: error: JSON: not valid JSON")
    code, _, err = run(capsys, "put", "b b", json.dumps(plain), "--url", empty)
    assert code == 2
    assert "device_id" in err
    # delete: 0 when anything was deleted, 1 when nothing was
    run(capsys, "put", "b", json.dumps(plain), "--url", empty)
    assert run(capsys, "delete", "a", "b", "zz", "--url", empty) == (
        0,
        "deleted 2 of 3 devices\n",
        "",
    )
    code, out, _ = run(capsys, "delete", "a", "--url", empty, "--json")
    assert (code, json.loads(out)) == (1, {"deleted": 0})


# -- export and import -------------------------------------------------------------------------


def test_export_import_round_trip(
    fleet: tuple[str, list[DeviceMetadata]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, devices = fleet
    empty = _sibling(source)
    dump = tmp_path / "fleet.jsonl"
    code, out, err = run(capsys, "export", "--url", source, "-o", str(dump))
    assert (code, out) == (0, "")
    assert err.startswith(f"exported {FLEET} devices to {dump}")
    lines = dump.read_bytes().splitlines()
    assert [_decode(line) for line in lines] == devices
    code, out, err = run(capsys, "import", str(dump), "--url", empty, "--batch", "7", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["devices"], summary["written"], summary["invalid"]) == (FLEET, FLEET, 0)
    code, again, _ = run(capsys, "export", "--url", empty, "-q")
    assert again.encode().splitlines() == lines
    # filters; --if-newer writes nothing over the same data
    code, out, _ = run(capsys, "export", "--url", empty, "--datatype", "door", "--pattern", "o*")
    wanted = [d for d in devices if d.datatype_id == "door" and d.device_id.startswith("o")]
    assert [_decode(line) for line in out.splitlines()] == wanted
    code, out, err = run(capsys, "import", str(dump), "--url", empty, "--if-newer")
    assert (code, out) == (0, "")
    assert err.startswith(f"imported 0 of {FLEET} devices, {FLEET} not newer")


INVALID = [
    b'{"v":1,"device_id":"q","datatype_id":"t","datatype_name":"n","persist":"x",'
    b'"last_updated":"2026-01-01T00:00:00Z"}',
    b"not json",
    b"",
    b'{"device_id":"q q","datatype_id":"t","datatype_name":"n","persist":true,'
    b'"last_updated":"2026-01-01T00:00:00Z"}',
    b'{"device_id":"r","datatype_id":"t","datatype_name":"n","persist":true,'
    b'"last_updated":"2026-01-01T00:00:00Z","firmware":"1"}',
    b'{"device_id":"s","datatype_id":"t","datatype_name":"n","persist":true}',
    b'{"device_id":"ok","datatype_id":"t","datatype_name":"n","persist":true,'
    b'"last_updated":"2026-01-01T00:00:00+02:00"}',
]


def test_import_validates_every_line_first(
    empty: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"\n".join(INVALID) + b"\n"
    _stdin(monkeypatch, data)
    code, out, err = run(capsys, "import", "-", "--url", empty)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "devcache: error: line 1: persist: Expected `bool`, got `str`",
        "devcache: error: line 2: not valid JSON: JSON is malformed: invalid character (byte 4)",
        "devcache: error: line 4: device_id: 'q q' contains ' ': no whitespace or control "
        "characters allowed",
        "devcache: error: line 5: firmware: Object contains unknown field `firmware`",
        "devcache: error: 4 invalid lines of 7: nothing written (--skip-invalid writes the "
        "valid ones)",
    ]
    assert run(capsys, "count", "--url", empty)[1] == "0\n"
    _stdin(monkeypatch, data)
    code, out, err = run(capsys, "import", "-", "--url", empty, "--skip-invalid", "--json")
    assert code == 0
    assert json.loads(out) | {"seconds": 0} == {
        "lines": 7,
        "devices": 2,
        "written": 2,
        "invalid": 4,
        "seconds": 0,
    }
    assert err.count("devcache: skipped line ") == 4
    stored = _decode(run(capsys, "get", "ok", "--url", empty, "--json")[1])
    assert stored.last_updated.isoformat() == "2025-12-31T22:00:00+00:00"


def test_import_defaults_last_updated_to_now_as_put_does(
    empty: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `put` takes metadata without last_updated (now); so does `import`: every such line gets
    # the time the import started, the same for all of them.
    dump = tmp_path / "undated.jsonl"
    dump.write_bytes(
        b'{"device_id":"u1","datatype_id":"t","datatype_name":"n","persist":true}\n'
        b'{"v":1,"device_id":"u2","datatype_id":"t","datatype_name":"n","persist":false,'
        b'"additional_properties":{"floor":2}}\n'
        b'{"device_id":"d","datatype_id":"t","datatype_name":"n","persist":true,'
        b'"last_updated":"2026-01-01T00:00:00Z"}\n'
    )
    before = datetime.now(timezone.utc)
    code, out, err = run(capsys, "import", str(dump), "--url", empty, "--json", "--batch", "2")
    after = datetime.now(timezone.utc)
    assert (code, json.loads(out)["written"], err) == (0, 3, "")
    u1, u2, d = (
        _decode(run(capsys, "get", name, "--url", empty, "--json")[1]) for name in ("u1", "u2", "d")
    )
    assert before <= u1.last_updated <= after
    assert u2.last_updated == u1.last_updated
    assert (u2.persist, u2.additional_properties) == (False, {"floor": 2})
    assert d.last_updated.isoformat() == "2026-01-01T00:00:00+00:00"


def test_import_with_skip_invalid_and_no_valid_line_fails(
    empty: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "all-bad.jsonl"
    dump.write_bytes(b"not json\n[]\n\n")
    code, out, err = run(capsys, "import", str(dump), "--url", empty, "--skip-invalid", "--json")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        "devcache: error: 2 invalid lines of 3, none valid: nothing written"
    )
    assert run(capsys, "count", "--url", empty)[1] == "0\n"
    # An empty file is no error: nothing to import.
    (tmp_path / "empty.jsonl").write_bytes(b"")
    code, out, _ = run(capsys, "import", str(tmp_path / "empty.jsonl"), "--url", empty, "--json")
    assert (code, json.loads(out)["written"]) == (0, 0)


def test_import_reports_only_the_first_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "bad.jsonl"
    dump.write_bytes(b"[]\n" * 25)
    code, _, err = run(capsys, "import", str(dump), "--url", f"memory://{uuid.uuid4().hex}")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 12
    assert lines[0] == "devcache: error: line 1: $: Expected `object`, got `array`"
    assert lines[10] == "devcache: error: ... and 15 more invalid lines"
    code, _, err = run(capsys, "import", str(tmp_path / "missing.jsonl"), "--url", "memory://")
    assert code == 2
    assert "missing.jsonl: cannot be read (No such file or directory)" in err


# -- settings and errors -----------------------------------------------------------------------


def test_settings_come_from_the_environment_and_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"memory://{uuid.uuid4().hex}"
    with CacheServiceClient.from_url(name) as client:
        client.store_device_metadata(
            "x", {"datatype_id": "t", "datatype_name": "n", "persist": 1 > 0}
        )
    monkeypatch.setenv("CACHE_SERVICE_URL", name)
    assert run(capsys, "count") == (0, "1\n", "")
    monkeypatch.delenv("CACHE_SERVICE_URL")
    config = tmp_path / "cache.toml"
    config.write_text(f'[cache_service]\nurl = "{name}"\n')
    assert run(capsys, "list", "--config", str(config)) == (0, "x\n", "")
    config.write_text('port = "abc"\n')
    code, _, err = run(capsys, "count", "--config", str(config))
    assert code == 2
    assert err == f"devcache: error: file {config}: port: 'abc' is not an integer\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["query", "--limit", "0"], "devcache query: error: argument --limit: must be at least 1"),
        (["query", "--updated-after", "yesterday"], "is not an RFC 3339 time with a timezone"),
        (["query", "--sort", "size"], "argument --sort: invalid choice: 'size'"),
        (["get"], "the following arguments are required: ID"),
        (["nope"], "argument COMMAND: invalid choice: 'nope'"),
        (["count", "--socket-timeout", "-1"], "must be a number > 0, not -1"),
        (["count", "--url", "ftp://x"], "unsupported scheme 'ftp'"),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exit:
        code = int(str(exit.code))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    _one_error_line(err)


def test_table_and_progress() -> None:
    assert table(("a", "bb"), [("xyz", None), ("1", True)]) == "a    bb\nxyz  -\n1    yes\n"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = Progress("exported", 10, terminal)
    progress.update(5)
    progress.done()
    assert terminal.getvalue().startswith("\rexported 5 of 10 devices (")
    assert terminal.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress("exported", None, quiet).update(5)
    assert quiet.getvalue() == ""


# -- the installed entry point -----------------------------------------------------------------


def _devcache() -> str:
    found = shutil.which("devcache", path=os.path.dirname(sys.executable))
    assert found is not None, "the devcache entry point is not installed beside the interpreter"
    return found


def _cli(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_devcache(), *argv], input=stdin, capture_output=True, timeout=120, check=False
    )


@pytest.fixture(params=["redis", "cluster"])
def big_fleet(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[DeviceMetadata]]]:
    """10,000 devices on Redis (2,000 on the cluster), under a key prefix of their own."""
    url = _url(request, request.param)
    devices = synthetic_devices(10_000 if request.param == "redis" else 2_000, seed=9)
    with CacheServiceClient.from_url(url) as client:
        for start in range(0, len(devices), 5000):
            client.store_many_device_metadata_sync(devices[start : start + 5000])
        yield url, devices
        client.delete_many_device_metadata_sync([d.device_id for d in devices])


def test_installed_command_round_trips_a_fleet(
    big_fleet: tuple[str, list[DeviceMetadata]], tmp_path: Path
) -> None:
    url, devices = big_fleet
    dump = tmp_path / "fleet.jsonl"
    done = _cli("export", "--url", url, "-o", str(dump))
    assert (done.returncode, done.stdout) == (0, b"")
    assert done.stderr.startswith(f"exported {len(devices):,} devices".encode())
    exported = dump.read_bytes()
    assert exported.count(b"\n") == len(devices)
    target = _sibling(url)
    done = _cli("import", "-", "--url", target, "--batch", "3000", "--json", stdin=exported)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["written"] == len(devices)
    with CacheServiceClient.from_url(target) as client:
        try:
            again = _cli("export", "--url", target, "-q")
            assert again.stdout == exported  # every id and field, last_updated to the µs
            stored = client.get_many_device_metadata_sync(d.device_id for d in devices)
            assert sorted(stored.values(), key=lambda d: d.device_id) == sorted(
                devices, key=lambda d: d.device_id
            )
        finally:
            client.delete_many_device_metadata_sync([d.device_id for d in devices])
    if "cluster" not in url:
        _stops_quietly_when_the_reader_goes(url)


def test_list_streams_every_page(
    big_fleet: tuple[str, list[DeviceMetadata]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, devices = big_fleet
    ids = sorted(d.device_id for d in devices)
    assert len(ids) >= 2 * LIST_PAGE  # the walk crosses pages
    code, out, _ = run(capsys, "list", "--url", url)
    assert (code, out.splitlines()) == (0, ids)
    code, out, _ = run(capsys, "list", "--url", url, "--json", "--offset", str(LIST_PAGE + 7))
    assert (code, json.loads(out)) == (0, ids[LIST_PAGE + 7 :])
    code, out, _ = run(capsys, "list", "--url", url, "--offset", str(len(ids)))
    assert (code, out) == (0, "")
    code, out, _ = run(capsys, "list", "--url", url, "--json", "--offset", str(len(ids) + 5))
    assert (code, json.loads(out)) == (0, [])
    prefix = ids[1234][:6]
    matching = [i for i in ids if i.startswith(prefix)]
    code, out, _ = run(capsys, "list", "--url", url, "--pattern", f"{prefix}*", "--offset", "3")
    assert (code, out.splitlines()) == (0, matching[3:])


def _stops_quietly_when_the_reader_goes(url: str) -> None:
    process = subprocess.Popen(
        [_devcache(), "export", "--url", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    assert process.stdout.readline().startswith(b'{"v":1,')
    process.stdout.close()  # like `| head -1`
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b""
    process.stderr.close()


def test_installed_command_exit_codes_and_errors(redis_url: str) -> None:
    done = _cli("health", "--url", redis_url, "--json")
    assert (done.returncode, json.loads(done.stdout)["status"]) == (0, "healthy")
    done = _cli("get", "no-such-device", "--url", redis_url)
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr == b"devcache: error: device 'no-such-device' not found\n"
    done = _cli(
        "count", "--url", "redis://127.0.0.1:1/0?retry_attempts=1", "--socket-timeout", "0.3"
    )
    assert (done.returncode, done.stdout) == (2, b"")
    _one_error_line(done.stderr.decode())
    assert b"Connection refused" in done.stderr
    done = _cli("query", "--limit", "5000")
    assert done.returncode == 2
    _one_error_line(done.stderr.decode())


def _default_sigint() -> None:
    # A command started from a terminal gets SIGINT's default action; one started by a shell
    # script in the background inherits it ignored. Ctrl-C is tested as from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_installed_command_reports_ctrl_c_in_one_line(redis_url: str) -> None:
    process = subprocess.Popen(
        [_devcache(), "import", "-", "--url", redis_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
    )
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    assert stdin is not None
    assert stdout is not None
    assert stderr is not None
    line = msgspec.json.encode(synthetic_devices(1, seed=3)[0]) + b"\n"
    chunk = line * (16384 // len(line) + 1)
    written = [0]

    def feed() -> None:
        with contextlib.suppress(OSError):  # the pipe breaks once the command has exited
            while True:
                stdin.write(chunk)
                stdin.flush()
                written[0] += len(chunk)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        # The command spools stdin as it reads it: once much more than a pipe's buffer has
        # gone in, it is running its own code (its imports done), reading and waiting for more.
        deadline = time.monotonic() + 120
        while written[0] < 1 << 20:
            assert time.monotonic() < deadline, "the command did not read its input"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        feeder.join(timeout=60)
        with contextlib.suppress(OSError):
            stdin.close()
        with stdout as out, stderr as err:
            output = (out.read(), err.read())
    assert output == (b"", b"devcache: error: interrupted\n")


def test_serve_takes_the_connection_options(tmp_path: Path) -> None:
    from cache_service_client.server import cli as gateway_cli

    file = tmp_path / "cache.toml"
    file.write_text('key_prefix = "from-file"\nmetadata_ttl = 60\n')
    args = gateway_cli.build_parser().parse_args(
        ["--url", "memory://served", "--socket-timeout", "2.5", "--config", str(file)]
    )
    settings = gateway_cli.settings_of(args)
    assert (settings.backend, settings.memory_store) == ("memory", "served")
    assert (settings.socket_timeout, settings.key_prefix, settings.metadata_ttl) == (
        2.5,
        "from-file",
        60,
    )
    bad = gateway_cli.build_parser().parse_args(["--url", "memory://", "--socket-timeout", "0"])
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        gateway_cli.settings_of(bad)
    with pytest.raises(ConfigurationError, match="not another gateway"):
        gateway_cli.settings_of(gateway_cli.build_parser().parse_args(["--url", "http://g:1"]))


def _serve_stderr(*argv: str, token: str | None = None) -> str:
    """What ``devcache serve`` writes on stderr until it listens (then it is stopped)."""
    from cache_service_client.server.cli import TOKEN_ENV
    from cache_service_client.testing import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHE_SERVICE_")}
    if token is not None:
        env[TOKEN_ENV] = token
    port = str(free_port())
    process = subprocess.Popen(
        [_devcache(), "serve", "--url", "memory://", "--port", port, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline().decode()
            if not line:
                break
            lines.append(line)
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()
    text = "".join(lines)
    assert "Application startup complete" in text or "Uvicorn running" in text, text
    return text


def test_serve_beyond_loopback_without_a_token_warns_on_stderr() -> None:
    warned = _serve_stderr("--host", "0.0.0.0")
    assert "warning: serving on 0.0.0.0 without a bearer token" in warned
    assert "CACHE_SERVICE_GATEWAY_TOKEN" in warned  # what to set
    assert "without a bearer token" not in _serve_stderr("--host", "0.0.0.0", token="s3cret")
    assert "without a bearer token" not in _serve_stderr()  # loopback: no warning
