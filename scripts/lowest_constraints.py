"""Derive the lowest dependency mode's constraints from pyproject.toml.

The lowest mode of ``scripts/test`` installs every direct dependency of the test environment at
the floor its range declares: the runtime dependencies, every extra, and the dependency groups
in :data:`LOWEST_GROUPS`. Transitive dependencies are left to the resolver (the newest that fit),
as a user who installs the package next to old direct dependencies gets them.

Every such requirement must declare exactly one ``>=`` floor, and a package named twice (in an
extra and a group, say) must have the same floor in both places; otherwise this script fails,
naming the requirement.

Usage::

    python scripts/lowest_constraints.py           # rewrite scripts/constraints-lowest.txt
    python scripts/lowest_constraints.py --check   # exit 1 if the file is out of step
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "scripts" / "constraints-lowest.txt"

#: The dependency groups installed in the lowest mode (besides the project and all its extras).
#: The lint tools are not among them: they judge the code rather than run it, and stay on the
#: one release series the ``lint`` group allows.
LOWEST_GROUPS = ("test", "bench")

HEADER = """\
# The lowest dependency mode of scripts/test: every direct dependency of the test environment
# at its declared floor. Generated from pyproject.toml by scripts/lowest_constraints.py; do not
# edit by hand (a test checks that this file is in step).
"""


class FloorError(Exception):
    """A requirement has no single floor, or two requirements disagree on one."""


def _group(groups: Mapping[str, list[Any]], name: str, seen: tuple[str, ...] = ()) -> list[str]:
    """The requirements of a dependency group, its ``include-group`` entries expanded."""
    if name not in groups:
        raise FloorError(f"[dependency-groups]: no group {name!r}")
    if name in seen:
        raise FloorError(f"[dependency-groups]: group {name!r} includes itself")
    requirements: list[str] = []
    for item in groups[name]:
        if isinstance(item, str):
            requirements.append(item)
        else:
            requirements.extend(_group(groups, item["include-group"], (*seen, name)))
    return requirements


def requirements_of(pyproject: Mapping[str, Any], groups: Iterable[str]) -> list[str]:
    """The direct requirements of the lowest mode's environment, in declaration order."""
    project = pyproject["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    declared = pyproject.get("dependency-groups", {})
    for name in groups:
        requirements.extend(_group(declared, name))
    return requirements


def lowest_constraints(pyproject_text: str, groups: Iterable[str] = LOWEST_GROUPS) -> str:
    """Return the constraints file: one ``name==floor`` line per direct dependency.

    Raises:
        FloorError: Naming the requirement that has no single ``>=`` floor, or the two that
            give one package different floors.

    """
    pyproject = tomllib.loads(pyproject_text)
    pins: dict[str, tuple[str, str]] = {}
    for text in requirements_of(pyproject, groups):
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise FloorError(f"{text!r}: {exc}") from exc
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(floors) != 1:
            raise FloorError(f"{text!r}: needs exactly one '>=' floor")
        name = canonicalize_name(requirement.name)
        line = f"{name}=={floors[0]}"
        if requirement.marker is not None:
            line += f"; {requirement.marker}"
        earlier = pins.get(name)
        if earlier is not None and earlier[0] != line:
            raise FloorError(f"{earlier[1]!r} and {text!r} declare different floors")
        pins[name] = (line, text)
    return HEADER + "".join(f"{line}\n" for line, _ in sorted(pins.values()))


def main(argv: list[str]) -> int:
    """Write the constraints file, or with ``--check`` report whether it is in step."""
    try:
        expected = lowest_constraints(PYPROJECT.read_text(encoding="utf-8"))
    except FloorError as exc:
        print(f"pyproject.toml: {exc}", file=sys.stderr)
        return 2
    if argv == ["--check"]:
        current = CONSTRAINTS.read_text(encoding="utf-8") if CONSTRAINTS.exists() else ""
        if current != expected:
            print(
                f"{CONSTRAINTS} is out of step with pyproject.toml: "
                "run python scripts/lowest_constraints.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if argv:
        print("usage: lowest_constraints.py [--check]", file=sys.stderr)
        return 2
    CONSTRAINTS.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
