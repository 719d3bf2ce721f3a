"""The pinned dependency modes: ``scripts/constraints.py`` and the files it writes.

The committed constraints files must stay in step with ``pyproject.toml``; the script's
resolution runs for real (pip in throw-away virtual environments) against a local folder of
made-up wheels, so no package index is needed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.project_scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pins() -> ModuleType:
    return load_script("constraints")


@pytest.mark.parametrize("mode", ["newest", "lowest"])
def test_the_committed_pins_are_in_step_with_pyproject(pins: ModuleType, mode: str) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = pins.constraints_path(mode).read_text(encoding="utf-8")
    assert pins.problems(mode, pyproject, text) == [], "run: python scripts/constraints.py"
    assert "3.10" in pins.resolved_for(text)
    assert "://" not in text  # names and versions only, never where they come from
    names = [pin.name for pin in pins.parse(text)]
    assert "pip" in names
    assert "redis" in names


def test_the_lowest_pins_hold_every_floor(pins: ModuleType) -> None:
    floors = pins.floors((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    text = pins.constraints_path("lowest").read_text(encoding="utf-8")
    pinned = {pin.name: pin.version for pin in pins.parse(text)}
    for name, floor in floors.items():
        if name in pinned:  # one with a marker (tomli) is there when a Python needed it
            assert pins.Version(pinned[name]) == pins.Version(floor), name
    assert pins.Version(floors["redis"]) == pins.Version(pinned["redis"])
    assert len(pinned) > len(floors)  # the transitive dependencies are pinned too


PYPROJECT = """
[project]
name = "x"
dependencies = ["redis>=5.0.1,<9", "tomli>=1.1; python_version < '3.11'"]
[project.optional-dependencies]
fast = ["hiredis>=2.3.2,<4"]
[dependency-groups]
test = ["pytest>=8.2", {{ include-group = "more" }}]
more = [{more}]
lint = ["ruff"]
"""


def test_floors_are_each_direct_requirements_floor(pins: ModuleType) -> None:
    found = pins.floors(PYPROJECT.format(more='"Hiredis>=2.3.2"'), ["test"])
    assert found == {"hiredis": "2.3.2", "pytest": "8.2", "redis": "5.0.1", "tomli": "1.1"}


@pytest.mark.parametrize(
    ("more", "groups", "message"),
    [
        ('"hiredis>=2.4"', ["test"], "declare different floors"),
        ('"pydantic<3"', ["test"], "'pydantic<3': needs exactly one '>=' floor"),
        ('"pydantic>=2,>=2.5"', ["test"], "needs exactly one '>=' floor"),
        ('"pydantic>="', ["test"], "'pydantic>='"),
        ('"x>=1"', ["lint"], "'ruff': needs exactly one '>=' floor"),
        ('"x>=1"', ["docs"], "no group 'docs'"),
        ('{ include-group = "test" }', ["test"], "group 'test' includes itself"),
    ],
)
def test_floors_refuse_requirements_without_one_floor(
    pins: ModuleType, more: str, groups: list[str], message: str
) -> None:
    with pytest.raises(pins.ConstraintsError, match=re.escape(message)):
        pins.floors(PYPROJECT.format(more=more), groups)


def test_merge_marks_only_the_versions_that_differ_by_python(pins: ModuleType) -> None:
    merged = pins.merge(
        {
            "3.11": {"redis": "8.2.0", "Sphinx": "9.0.4"},
            "3.10": {"redis": "8.2.0", "sphinx": "8.1.3", "tomli": "2.3.0"},
            "3.12": {"redis": "8.2.0", "sphinx": "9.0.4"},
        }
    )
    assert [pin.line() for pin in merged] == [
        "redis==8.2.0",
        'sphinx==8.1.3; python_version == "3.10"',
        'sphinx==9.0.4; python_version == "3.11" or python_version == "3.12"',
        "tomli==2.3.0",
    ]
    text = pins.render("newest", merged, ["3.12", "3.10", "3.11"], "2026-12-07", {"3.13": "why"})
    assert pins.parse(text) == merged
    assert pins.resolved_for(text) == ["3.10", "3.11", "3.12"]
    assert "# Not for Python 3.13: why\n" in text


def test_problems_name_each_pin_out_of_step(pins: ModuleType) -> None:
    pyproject = PYPROJECT.format(more='"hiredis>=2.3.2"').replace('lint = ["ruff"]', "lint = []")
    pyproject += 'dev = [{ include-group = "test" }]\ndocs = []\nbench = []\n'
    good = pins.render(
        "lowest",
        pins.merge({"3.11": {"redis": "5.0.1", "hiredis": "2.3.2", "pytest": "8.2", "pip": "26"}}),
        ["3.11"],
        "2026-12-07",
    )
    assert pins.problems("lowest", pyproject, good) == []
    assert pins.problems("newest", pyproject, good) == []
    bad = good.replace("redis==5.0.1", "redis==9.0").replace("pytest==8.2", "pytest==8.3")
    assert pins.problems("lowest", pyproject, bad) == [
        "redis==9.0 is outside 'redis<9,>=5.0.1'",
        "pytest==8.3 is not the floor of 'pytest>=8.2'",
    ]
    assert pins.problems("newest", pyproject, bad) == ["redis==9.0 is outside 'redis<9,>=5.0.1'"]
    missing = good.replace("hiredis==2.3.2\n", "").replace("pip==26\n", "")
    assert pins.problems("lowest", pyproject, missing) == [
        "pip is not pinned",
        "'hiredis<4,>=2.3.2' is not pinned",
    ]
    assert pins.problems("lowest", pyproject, "") == ["no pins"]
    assert pins.problems("lowest", pyproject, "redis>=5\n") == [
        "line 1: 'redis>=5' is not name==version[; marker]"
    ]
    no_footer = "".join(line + "\n" for line in good.splitlines() if "Resolved" not in line)
    assert pins.problems("lowest", pyproject, no_footer) == [
        "no line '# Resolved for Python ... on ...'"
    ]


def test_installed_problems_compare_the_running_environment(pins: ModuleType) -> None:
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    here = {
        str(pins.canonicalize_name(d.metadata["Name"])): d.version
        for d in importlib.metadata.distributions()
    }
    here.pop("cache-service-client", None)
    for seed in ("setuptools", "wheel"):
        here.pop(seed, None)
    text = pins.render("newest", pins.merge({minor: here}), [minor], "2026-12-07")
    assert pins.installed_problems(text, "cache-service-client") == []
    assert pins.installed_problems(text.replace("\npytest==", "\nx-pytest=="), "x") == [
        f"cache-service-client=={importlib.metadata.version('cache-service-client')} "
        "is installed but not pinned",
        f"pytest=={here['pytest']} is installed but not pinned",
    ]
    other = text.replace(f"\npytest=={here['pytest']}\n", "\npytest==1.0\n")
    assert pins.installed_problems(other, "cache-service-client") == [
        f"pytest=={here['pytest']} is installed but pinned at 1.0"
    ]


# -- a real resolution, offline ----------------------------------------------------------------


def _wheel(folder: Path, name: str, version: str, *requires: str) -> None:
    """A minimal pure-Python wheel that pip can resolve and install."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {requirement}\n" for requirement in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


def _wheel_of_pip(folder: Path) -> str:
    """A wheel of the running pip, so that a throw-away environment updates to it offline."""
    dist = importlib.metadata.distribution("pip")
    with zipfile.ZipFile(folder / f"pip-{dist.version}-py3-none-any.whl", "w") as archive:
        for file in dist.files or []:
            if file.parts[0] != ".." and "__pycache__" not in file.parts:
                archive.write(Path(str(file.locate())), str(file))
    return dist.version


PROJECT = """
[project]
name = "demo"
dependencies = ["alpha>=1.0,<3"]
[project.optional-dependencies]
fast = ["beta>=1.0,<2"]
[dependency-groups]
test = ["gamma>=1.0"]
bench = []
lint = ["delta>=1.0,<2"]
dev = [{ include-group = "test" }, { include-group = "lint" }]
docs = ["delta>=1.0,<2"]
"""


def test_the_script_resolves_writes_and_checks_both_modes(
    pins: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    pip_version = _wheel_of_pip(index)
    for name, version, *requires in [
        ("alpha", "1.0"),
        ("alpha", "2.0", "epsilon>=1"),
        ("alpha", "3.0"),  # outside the range
        ("beta", "1.0"),
        ("beta", "1.5"),
        ("gamma", "1.0"),
        ("gamma", "1.2"),
        ("delta", "1.0"),
        ("delta", "1.1"),
        ("epsilon", "1.0"),
        ("epsilon", "2.0"),
    ]:
        _wheel(index, name, version, *requires)
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PROJECT, encoding="utf-8")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no index nor folder but ours
    for variable in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(variable, raising=False)
    offline = ["--pip-arg=--no-index", f"--pip-arg=--find-links={index}"]

    assert pins.main(["--check"], root=root) == 1  # no files yet
    assert pins.main(["--python", sys.executable, *offline], root=root) == 0

    def pinned(mode: str) -> list[str]:
        text = (root / "scripts" / f"constraints-{mode}.txt").read_text(encoding="utf-8")
        minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
        assert pins.resolved_for(text) == [minor]
        return [pin.line() for pin in pins.parse(text)]

    newest = ["alpha==2.0", "beta==1.5", "delta==1.1", "epsilon==2.0", "gamma==1.2"]
    assert pinned("newest") == sorted([*newest, f"pip=={pip_version}"])
    lowest = ["alpha==1.0", "beta==1.0", "delta==1.1", "gamma==1.0"]  # lint: newest in range
    assert pinned("lowest") == sorted([*lowest, f"pip=={pip_version}"])
    assert pins.main(["--check"], root=root) == 0

    # A floor raised in pyproject.toml: the lowest pins are out of step until refreshed.
    (root / "pyproject.toml").write_text(PROJECT.replace("alpha>=1.0", "alpha>=2.0"), "utf-8")
    assert pins.main(["--check", "newest"], root=root) == 0
    assert pins.main(["--check", "lowest"], root=root) == 1
    assert pins.main(["lowest", "--python", sys.executable, *offline], root=root) == 0
    assert pinned("lowest") == sorted(
        [
            "alpha==2.0",
            "beta==1.0",
            "delta==1.1",
            "epsilon==2.0",
            "gamma==1.0",
            f"pip=={pip_version}",
        ]
    )
    assert pins.main(["--check"], root=root) == 0

    # A refresh that covers fewer Pythons than the file did says so.
    path = root / "scripts" / "constraints-newest.txt"
    path.write_text(
        path.read_text("utf-8").replace("Resolved for Python ", "Resolved for Python 3.99, "),
        "utf-8",
    )
    capsys.readouterr()
    assert pins.main(["newest", "--python", sys.executable, *offline], root=root) == 0
    assert "no longer covers Python 3.99" in capsys.readouterr().err

    # A resolution that fails names the Python and what pip said.
    (root / "pyproject.toml").write_text(PROJECT.replace("gamma>=1.0", "gamma>=5"), "utf-8")
    assert pins.main(["newest", "--python", sys.executable, *offline], root=root) == 2
    assert pins.main(["bogus"], root=root) == 2
