"""Packaging: the distributions, what they ship, and the wheel alone in a clean environment.

The sdist and the wheel are built once per module (``python -m build``, the wheel from the
sdist, so a file the sdist forgets breaks the wheel), checked with ``twine check``, inspected,
and the wheel is installed without the source tree into a new virtual environment, where every
public name is imported and the README's example runs against ``memory://`` and the suite's
Redis. Also here: the README's links work off the repository, and the changelog knows the
current version.
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import redis

import cache_service_client

ROOT = Path(__file__).resolve().parents[2]
VERSION = cache_service_client.__version__
DOCS_SITE = "https://cache-service-client.readthedocs.io/en/latest/"


def run(*command: str | Path, cwd: Path = ROOT, timeout: float = 300) -> str:
    """Run a command; fail the test with its output when it fails."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result.stdout


class Dists(NamedTuple):
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the build backend comes from the test environment (the test group pins
    # hatchling), so the build needs no download and runs the backend version under test.
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dists(wheel, sdist)


@pytest.fixture(scope="module")
def wheel_python(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a new virtual environment with only the wheel (and its dependencies)."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", dists.wheel)
    return python


def in_wheel_env(python: Path, code: str, cwd: Path) -> str:
    # -I: neither the working directory nor PYTHONPATH is on sys.path, so nothing of the
    # source tree can be imported in place of the installed wheel.
    return run(python, "-I", "-c", code, cwd=cwd)


def test_twine_check_passes(dists: Dists) -> None:
    out = run(sys.executable, "-m", "twine", "check", "--strict", dists.wheel, dists.sdist)
    assert out.count("PASSED") == 2, out


def test_the_wheel_ships_types_licence_and_public_extras_only(dists: Dists) -> None:
    info = f"cache_service_client-{VERSION}.dist-info"
    with zipfile.ZipFile(dists.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = email.parser.Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        licence = wheel.read(f"{info}/licenses/LICENSE").decode()
    assert "cache_service_client/py.typed" in names
    assert "cache_service_client/server/__init__.py" in names
    scripts = "cache_service_client/repository/redis/scripts/"
    for script in ("prelude", "put", "delete", "range", "time_range", "time_set", "count", "info"):
        assert f"{scripts}{script}.lua" in names
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/"))]
    assert licence == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License")
    assert metadata["Name"] == "cache-service-client"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    extras = sorted(metadata.get_all("Provides-Extra") or [])
    assert extras == ["fastapi", "hiredis", "http", "litestar", "otel", "server"]
    requires = " ".join(metadata.get_all("Requires-Dist") or [])
    for tool in ("pytest", "hypothesis", "ruff", "mypy", "schemathesis", "pydantic"):
        assert tool not in requires, f"{tool} is a development tool, not a dependency"
    readme = metadata.get_payload()
    assert isinstance(readme, str)
    assert "](docs/" not in readme
    assert "]: docs/" not in readme


def test_the_sdist_ships_licence_changelog_and_tests(dists: Dists) -> None:
    top = f"cache_service_client-{VERSION}"
    with tarfile.open(dists.sdist) as sdist:
        names = set(sdist.getnames())
    for path in (
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
        "src/cache_service_client/py.typed",
        "tests/conftest.py",
        "docs/openapi.json",
    ):
        assert f"{top}/{path}" in names, path
    assert not [n for n in names if "/.venv" in n or "__pycache__" in n or "/_build/" in n]


def test_every_public_name_imports_from_the_wheel(wheel_python: Path, tmp_path: Path) -> None:
    out = in_wheel_env(
        wheel_python,
        "import importlib.metadata, pathlib, cache_service_client as c\n"
        "assert 'site-packages' in c.__file__, c.__file__\n"
        "missing = [name for name in c.__all__ if not hasattr(c, name)]\n"
        "assert not missing, missing\n"
        "assert (pathlib.Path(c.__file__).parent / 'py.typed').is_file()\n"
        "print(len(c.__all__), c.__version__, importlib.metadata.version(c.__name__))\n",
        tmp_path,
    )
    count, version, distribution = out.split()
    assert int(count) == len(cache_service_client.__all__)
    assert version == distribution == VERSION


def test_a_missing_extra_is_named_when_the_client_is_created(
    wheel_python: Path, tmp_path: Path
) -> None:
    # The wheel alone has no httpx: HTTP mode must say which extra to install, at once.
    out = in_wheel_env(
        wheel_python,
        "from cache_service_client import CacheServiceClient, ConfigurationError\n"
        "try:\n"
        "    CacheServiceClient(use_http=True, http_url='http://gateway:8080')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n",
        tmp_path,
    )
    assert "[http] extra" in out
    assert "pip install 'cache-service-client[http]'" in out


def test_without_the_otel_extra_repositories_are_not_wrapped(
    wheel_python: Path, tmp_path: Path
) -> None:
    # The wheel alone has no opentelemetry-api: no wrapper, and nothing of it imported.
    out = in_wheel_env(
        wheel_python,
        "import sys\n"
        "from cache_service_client import CacheServiceClient\n"
        "from cache_service_client.telemetry import AVAILABLE\n"
        "client = CacheServiceClient.from_url('memory://')\n"
        "print(AVAILABLE, type(client.repository).__name__, client.count_devices_sync())\n"
        "assert not [name for name in sys.modules if name.startswith('opentelemetry')]\n",
        tmp_path,
    )
    assert out.split() == ["False", "InMemoryDeviceMetadataRepository", "0"]


def test_framework_integrations_name_their_extra_and_models_need_no_pydantic(
    wheel_python: Path, tmp_path: Path
) -> None:
    # The wheel alone has neither FastAPI nor Litestar nor pydantic.
    out = in_wheel_env(
        wheel_python,
        "import importlib, sys\n"
        "import cache_service_client\n"
        "assert 'pydantic' not in sys.modules and 'pydantic_core' not in sys.modules\n"
        "for name in ('fastapi', 'litestar'):\n"
        "    try:\n"
        "        importlib.import_module(f'cache_service_client.contrib.{name}')\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n",
        tmp_path,
    )
    assert "pip install 'cache-service-client[fastapi]'" in out
    assert "pip install 'cache-service-client[litestar]'" in out


def readme_example(url: str) -> str:
    """The README's first Python block, with its URL line set to ``url``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert match is not None, "README.md has no Python example"
    code, count = re.subn(r'^URL = ".*"$', f"URL = {url!r}", match.group(1), flags=re.MULTILINE)
    assert count == 1, "the README example sets URL in one line"
    return code


@pytest.fixture
def readme_redis_url(redis_url: str, redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"readme-{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in redis_url else "?"
    yield f"{redis_url}{separator}key_prefix={prefix}"
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_readme_example_runs_from_the_wheel(
    backend: str, wheel_python: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = "memory://" if backend == "memory" else request.getfixturevalue("readme_redis_url")
    out = in_wheel_env(wheel_python, readme_example(url), tmp_path)
    assert out.splitlines() == ["temperature {'firmware': '1.2'} ['sensor-1']", "C 1 healthy"]


# -- README and changelog ----------------------------------------------------------------------


def test_the_readme_links_work_off_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    inline = re.findall(r"\]\(([^)]*)\)", readme)
    references = re.findall(r"^\[[^\]]+\]:\s*(\S+)", readme, flags=re.MULTILINE)
    links = inline + references
    assert len(links) >= 7
    for link in links:
        assert link.startswith("https://"), f"{link}: a relative link breaks on the index page"
        if link.startswith(DOCS_SITE):
            page = link.removeprefix(DOCS_SITE).removesuffix(".html")
            sources = [ROOT / "docs" / f"{page}{suffix}" for suffix in (".md", ".rst")]
            assert any(source.is_file() for source in sources), f"{link}: no docs/{page}.md"


def test_the_changelog_has_the_current_version_and_an_unreleased_section() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", changelog, re.M)
    assert headings[0] == ("Unreleased", "")
    assert VERSION in [version for version, _ in headings[1:]], f"no entry for {VERSION}"
    assert all(date for _, date in headings[1:]), "every release has a date"
