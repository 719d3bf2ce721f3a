"""Pin every distribution of the test environments: ``scripts/constraints-{newest,lowest}.txt``.

``scripts/test`` installs each dependency mode under a constraints file that pins every
distribution of its environment with ``==``, direct and transitive, runtime and tools, so that a
run next month installs what a run today installed, whatever has been released since:

- ``newest`` (``.venv`` and the docs build's ``.venv-docs``): the newest releases that fit the
  ranges ``pyproject.toml`` declares, for the project with every extra and the dependency groups
  in :data:`NEWEST_GROUPS`;
- ``lowest`` (``.venv-lowest``): every direct dependency at the floor its range declares (the
  runtime dependencies, every extra and the groups in :data:`LOWEST_FLOOR_GROUPS`); whatever
  else the environment holds (transitive dependencies, and the ``lint`` group, which stays on
  the one release series it allows) at the newest release that fits next to those floors.

This script writes both files by asking pip to resolve them (``pip install --dry-run
--report``, nothing is installed), once for each Python 3.10+ minor version it finds, since
some distributions differ by Python version; where the versions found differ, a pin carries a
``python_version`` marker. pip itself is pinned too: the newest release, in both files. The
resolution needs the package index; ``--check`` does not: it reads ``pyproject.toml`` and both
files and fails when a file no longer fits the ranges (a floor moved, a requirement was added or
its range changed so that the pin falls outside it).

Every direct requirement must declare exactly one ``>=`` floor (a package named twice, in an
extra and a group say, with the same floor in both places); otherwise this script fails, naming
the requirement.

``DEPS=latest ./scripts/test`` runs the checks on what resolves unpinned today: a maintainer runs
it before refreshing the pins, then this script, then a normal run.

Usage::

    python scripts/constraints.py                      # refresh both files (needs the index)
    python scripts/constraints.py newest               # refresh one
    python scripts/constraints.py --python /usr/bin/python3.12 ...  # resolve for these only
    python scripts/constraints.py --check              # exit 1 if a file is out of step
    python scripts/constraints.py --check --installed newest  # and this environment with it
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

ROOT = Path(__file__).resolve().parent.parent

#: The dependency groups of the newest mode: ``.venv`` takes ``dev``, ``.venv-docs`` takes
#: ``docs``; one resolution of both gives one set of pins that serves the two environments.
NEWEST_GROUPS = ("dev", "docs")

#: The dependency groups whose requirements the lowest mode installs at their floors (besides
#: the runtime dependencies and every extra).
LOWEST_FLOOR_GROUPS = ("test", "bench")

#: The dependency groups the lowest mode installs: the floor groups, and ``lint`` so that
#: ``mypy --strict`` checks the code against the lowest releases' annotations too.
LOWEST_GROUPS = (*LOWEST_FLOOR_GROUPS, "lint")

#: The Python minor versions the script looks for when no ``--python`` is given.
MINORS = ("3.10", "3.11", "3.12", "3.13", "3.14")

HEADER = {
    "newest": """\
# The newest dependency mode of scripts/test (.venv, and .venv-docs for the docs build): every
# distribution of its environment pinned at the newest release that fits pyproject.toml.
""",
    "lowest": """\
# The lowest dependency mode of scripts/test (.venv-lowest): every direct dependency at the
# floor pyproject.toml declares, every other distribution pinned at what resolved next to them.
""",
}

FOOTER = """\
# Resolved for Python {pythons} on {platform} by scripts/constraints.py on {date}.{missing}
# Do not edit by hand: run `python scripts/constraints.py` to refresh (--check tests it).
"""

#: The footer's line that names the Python versions a file was resolved for (scripts/_venv.sh
#: reads it too, to pick one of them).
_RESOLVED_FOR = re.compile(r"^# Resolved for Python ([0-9., ]+) on ", re.MULTILINE)


class ConstraintsError(Exception):
    """A requirement has no single floor, a resolution failed, or a file is out of step."""


def constraints_path(mode: str, root: Path = ROOT) -> Path:
    """The constraints file of a dependency mode."""
    return root / "scripts" / f"constraints-{mode}.txt"


# -- pyproject.toml ---------------------------------------------------------------------------


def _group(groups: Mapping[str, list[Any]], name: str, seen: tuple[str, ...] = ()) -> list[str]:
    """The requirements of a dependency group, its ``include-group`` entries expanded."""
    if name not in groups:
        raise ConstraintsError(f"[dependency-groups]: no group {name!r}")
    if name in seen:
        raise ConstraintsError(f"[dependency-groups]: group {name!r} includes itself")
    requirements: list[str] = []
    for item in groups[name]:
        if isinstance(item, str):
            requirements.append(item)
        else:
            requirements.extend(_group(groups, item["include-group"], (*seen, name)))
    return requirements


def requirements_of(pyproject: Mapping[str, Any], groups: Iterable[str]) -> list[Requirement]:
    """The direct requirements of an environment: the runtime ones, every extra, the groups."""
    project = pyproject["project"]
    texts = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        texts.extend(extra)
    declared = pyproject.get("dependency-groups", {})
    for name in groups:
        texts.extend(_group(declared, name))
    requirements = []
    for text in texts:
        try:
            requirements.append(Requirement(text))
        except InvalidRequirement as exc:
            raise ConstraintsError(f"{text!r}: {exc}") from exc
    return requirements


def floors(pyproject_text: str, groups: Iterable[str] = LOWEST_FLOOR_GROUPS) -> dict[str, str]:
    """Each direct requirement's declared floor, by canonical name.

    Raises:
        ConstraintsError: Naming the requirement that has no single ``>=`` floor, or the two
            that give one package different floors.

    """
    pins: dict[str, tuple[str, Requirement]] = {}
    for requirement in requirements_of(tomllib.loads(pyproject_text), groups):
        found = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(found) != 1:
            raise ConstraintsError(f"'{requirement}': needs exactly one '>=' floor")
        name = canonicalize_name(requirement.name)
        earlier = pins.get(name)
        if earlier is not None and earlier[0] != found[0]:
            raise ConstraintsError(f"'{earlier[1]}' and '{requirement}' declare different floors")
        pins[name] = (found[0], requirement)
    return {name: floor for name, (floor, _) in sorted(pins.items())}


# -- the files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """One line of a constraints file: ``name==version``, for some Python versions or all."""

    name: str
    version: str
    pythons: tuple[str, ...] = ()  # empty: every Python

    def line(self) -> str:
        """The line as pip reads it."""
        text = f"{self.name}=={self.version}"
        if self.pythons:
            text += "; " + " or ".join(f'python_version == "{p}"' for p in self.pythons)
        return text


def merge(resolved: Mapping[str, Mapping[str, str]]) -> list[Pin]:
    """One set of pins from the versions resolved per Python minor version.

    A distribution resolved at one version wherever it was needed gets one pin without a
    marker (a constraint installs nothing by itself, so it does no harm on a Python that does
    not need the distribution); one resolved at different versions gets a pin per version,
    each with the ``python_version`` marker of the Pythons that resolved it.
    """
    by_name: dict[str, dict[str, list[str]]] = {}
    for python in sorted(resolved, key=Version):
        for name, version in resolved[python].items():
            by_name.setdefault(canonicalize_name(name), {}).setdefault(version, []).append(python)
    pins = []
    for name in sorted(by_name):
        versions = by_name[name]
        if len(versions) == 1:
            pins.append(Pin(name, next(iter(versions))))
        else:
            for version in sorted(versions, key=Version):
                pins.append(Pin(name, version, tuple(versions[version])))
    return pins


def render(
    mode: str,
    pins: Sequence[Pin],
    pythons: Sequence[str],
    today: str,
    unresolved: Mapping[str, str] | None = None,
) -> str:
    """The text of a constraints file (``unresolved``: Python versions left out, and why)."""
    missing = "".join(
        f"\n# Not for Python {minor}: {why}" for minor, why in sorted((unresolved or {}).items())
    )
    footer = FOOTER.format(
        date=today,
        pythons=", ".join(sorted(pythons, key=Version)),
        platform=sys.platform,
        missing=missing,
    )
    return HEADER[mode] + "".join(f"{pin.line()}\n" for pin in pins) + footer


def resolved_for(text: str) -> list[str]:
    """The Python versions a constraints file was resolved for (its footer says)."""
    match = _RESOLVED_FOR.search(text)
    return [] if match is None else [p.strip() for p in match[1].split(",") if p.strip()]


_LINE = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^;\s]+)(?:\s*;\s*(?P<marker>.+))?$")


def parse(text: str) -> list[Pin]:
    """The pins of a constraints file (comments and blank lines skipped).

    Raises:
        ConstraintsError: On a line that is not ``name==version`` with an optional marker of
            this script's form.

    """
    pins = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ConstraintsError(f"line {number}: {line!r} is not name==version[; marker]")
        pythons: tuple[str, ...] = ()
        if match["marker"]:
            pythons = tuple(re.findall(r'python_version == "([0-9.]+)"', match["marker"]))
            if not pythons:
                raise ConstraintsError(f"line {number}: unexpected marker {match['marker']!r}")
        pins.append(Pin(canonicalize_name(match["name"]), match["version"], pythons))
    return pins


def problems(mode: str, pyproject_text: str, constraints_text: str) -> list[str]:
    """What makes a constraints file out of step with ``pyproject.toml`` (empty: in step).

    Every direct requirement of the mode's environment must be pinned (those with a marker
    only if some pin names them) inside the range it declares; in the lowest mode, at its floor.
    """
    found: list[str] = []
    try:
        pins = parse(constraints_text)
    except ConstraintsError as exc:
        return [str(exc)]
    if not pins:
        return ["no pins"]
    if not resolved_for(constraints_text):
        found.append("no line '# Resolved for Python ... on ...'")
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
    if "pip" not in by_name:
        found.append("pip is not pinned")
    pyproject = tomllib.loads(pyproject_text)
    groups = NEWEST_GROUPS if mode == "newest" else LOWEST_GROUPS
    floor_of = floors(pyproject_text) if mode == "lowest" else {}
    unpinned: set[str] = set()
    for requirement in requirements_of(pyproject, groups):
        name = canonicalize_name(requirement.name)
        pinned = by_name.get(name, [])
        if not pinned:
            if requirement.marker is None and name not in unpinned:
                found.append(f"'{requirement}' is not pinned")
                unpinned.add(name)
            continue
        for pin in pinned:
            if not requirement.specifier.contains(pin.version, prereleases=True):
                found.append(f"{pin.line()} is outside '{requirement}'")
            elif name in floor_of and Version(pin.version) != Version(floor_of[name]):
                found.append(f"{pin.line()} is not the floor of '{requirement}'")
    return found


#: What ``pip freeze`` leaves out unless asked: the seeds of a new virtual environment.
_SEEDS = frozenset({"setuptools", "wheel", "distribute"})


def installed_problems(constraints_text: str, project: str) -> list[str]:
    """What the running environment holds that the file does not pin at that version.

    Every distribution installed (but ``project``, and the seeds ``pip freeze`` leaves out
    unless the file pins them) must be pinned, for this Python, at the version installed.
    """
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    pinned = {pin.name: pin.version for pin in parse(constraints_text) if minor in pin.pythons}
    pinned.update({pin.name: pin.version for pin in parse(constraints_text) if not pin.pythons})
    found = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"]):
        name = canonicalize_name(dist.metadata["Name"])
        if name == canonicalize_name(project) or (name in _SEEDS and name not in pinned):
            continue
        if name not in pinned:
            found.append(f"{name}=={dist.version} is installed but not pinned")
        elif Version(pinned[name]) != Version(dist.version):
            found.append(f"{name}=={dist.version} is installed but pinned at {pinned[name]}")
    return found


# -- resolving --------------------------------------------------------------------------------


def find_pythons(minors: Iterable[str] = MINORS) -> dict[str, str]:
    """One interpreter per Python minor version found: on PATH, else among pyenv's."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found: dict[str, str] = {}
    for minor in minors:
        candidates = [shutil.which(f"python{minor}")]
        candidates += sorted(str(p) for p in pyenv.glob(f"{minor}.*/bin/python3"))
        for candidate in candidates:
            if candidate and _minor(candidate) == minor:
                found[minor] = candidate
                break
    return found


def _minor(python: str) -> str | None:
    """The ``X.Y`` version of an interpreter, or None if it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.strip()


def _run(args: Sequence[str], what: str) -> None:
    """Run a command; on failure raise ConstraintsError with what it printed."""
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"
        err = "\n".join(line for line in done.stderr.splitlines() if noise not in line)
        raise ConstraintsError(f"{what} failed (exit {done.returncode}):\n{err[-3000:]}")


def resolve(
    python: str,
    requirements: Sequence[Requirement],
    constraints: Mapping[str, str] | None = None,
    pip_args: Sequence[str] = (),
) -> dict[str, str]:
    """What ``pip install`` of the requirements would put in a new environment of ``python``.

    A throw-away virtual environment gets the newest pip, then ``pip install --dry-run
    --ignore-installed --report`` of the requirements (under ``constraints``, ``name: version``
    pins) runs in it: nothing is installed. The result, ``name: version`` by canonical name,
    includes pip itself.
    """
    with tempfile.TemporaryDirectory(prefix="csc-pins-") as tmp:
        venv = Path(tmp, "venv")
        _run([python, "-m", "venv", str(venv)], f"{python} -m venv")
        py = str(venv / "bin" / "python")
        _run([py, "-m", "pip", "install", "-q", "--upgrade", "pip", *pip_args], "updating pip")
        wanted = Path(tmp, "requirements.txt")
        wanted.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
        report = Path(tmp, "report.json")
        args = [py, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q"]
        args += ["--report", str(report), "-r", str(wanted)]
        if constraints:
            pins = Path(tmp, "constraints.txt")
            pins.write_text("".join(f"{n}=={v}\n" for n, v in constraints.items()), "utf-8")
            args += ["-c", str(pins)]
        _run([*args, *pip_args], f"resolving on Python {_minor(python)}")
        data = json.loads(report.read_text(encoding="utf-8"))
        resolved = {
            str(canonicalize_name(item["metadata"]["name"])): str(item["metadata"]["version"])
            for item in data["install"]
        }
        resolved["pip"] = str(data["pip_version"])
        return resolved


def refresh(
    mode: str,
    pythons: Mapping[str, str],
    root: Path = ROOT,
    pip_args: Sequence[str] = (),
    today: str | None = None,
) -> str:
    """Resolve a mode's environment on every Python given and return its constraints file."""
    pyproject_text = (root / "pyproject.toml").read_text(encoding="utf-8")
    groups = NEWEST_GROUPS if mode == "newest" else LOWEST_GROUPS
    requirements = requirements_of(tomllib.loads(pyproject_text), groups)
    constraints = floors(pyproject_text) if mode == "lowest" else None
    resolved: dict[str, dict[str, str]] = {}
    unresolved: dict[str, str] = {}
    for minor, python in sorted(pythons.items(), key=lambda item: Version(item[0])):
        try:
            resolved[minor] = resolve(python, requirements, constraints, pip_args)
        except ConstraintsError as exc:
            if mode == "newest":
                raise
            # A floor older than a Python release often has no build for it: the lowest
            # mode then runs on the older Pythons only (scripts/_venv.sh picks among them).
            unresolved[minor] = "the floors do not install there"
            first = str(exc).splitlines()[0]
            print(f"lowest mode, Python {minor}: left out ({first})", file=sys.stderr)
    if not resolved:
        raise ConstraintsError(f"the {mode} mode resolves on none of Python {', '.join(pythons)}")
    today = today or datetime.date.today().isoformat()
    text = render(mode, merge(resolved), list(resolved), today, unresolved)
    left = problems(mode, pyproject_text, text)
    if left:
        raise ConstraintsError("the resolution does not fit pyproject.toml: " + "; ".join(left))
    return text


# -- the command ------------------------------------------------------------------------------


def main(argv: Sequence[str], root: Path = ROOT) -> int:
    """Refresh the constraints files, or with ``--check`` report whether they are in step."""
    parser = argparse.ArgumentParser(
        prog="constraints.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("modes", nargs="*", metavar="newest|lowest", help="default: both")
    parser.add_argument("--check", action="store_true", help="only check, offline")
    parser.add_argument(
        "--installed",
        action="store_true",
        help="with --check: also check that this environment holds exactly the pinned versions",
    )
    parser.add_argument(
        "--python", action="append", default=[], help="resolve on this interpreter (repeatable)"
    )
    parser.add_argument(
        "--pip-arg", action="append", default=[], help="pass this argument to pip (repeatable)"
    )
    try:
        options = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    modes = options.modes or ["newest", "lowest"]
    unknown = sorted(set(modes) - set(HEADER))
    if unknown:
        print(f"unknown mode {unknown[0]!r}: the modes are newest and lowest", file=sys.stderr)
        return 2
    pyproject_text = (root / "pyproject.toml").read_text(encoding="utf-8")
    try:
        if options.check:
            status = 0
            for mode in modes:
                path = constraints_path(mode, root)
                text = path.read_text(encoding="utf-8") if path.exists() else ""
                found = problems(mode, pyproject_text, text)
                if options.installed and not found:
                    project = tomllib.loads(pyproject_text)["project"]["name"]
                    found = installed_problems(text, project)
                for problem in found:
                    print(f"{path.name}: {problem}", file=sys.stderr)
                    status = 1
            if status:
                print("run: python scripts/constraints.py (then ./scripts/test)", file=sys.stderr)
            return status
        pythons: dict[str, str] = {}
        for python in options.python:
            minor = _minor(python)
            if minor is None:
                print(f"--python {python}: does not run", file=sys.stderr)
                return 2
            pythons[minor] = python
        pythons = pythons or find_pythons()
        if not pythons:
            print("no Python 3.10+ found (name one with --python)", file=sys.stderr)
            return 2
        for mode in modes:
            text = refresh(mode, pythons, root, options.pip_arg)
            path = constraints_path(mode, root)
            before = resolved_for(path.read_text(encoding="utf-8")) if path.exists() else []
            lost = sorted(set(before) - set(resolved_for(text)), key=Version)
            if lost:  # a refresh on a machine without some Python drops its pins
                print(
                    f"warning: {path.name} no longer covers Python {', '.join(lost)} "
                    "(not found here, or it did not resolve): name each with --python",
                    file=sys.stderr,
                )
            path.write_text(text, encoding="utf-8")
            print(f"{path.name}: Python {', '.join(resolved_for(text))}")
    except ConstraintsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
