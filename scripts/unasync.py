"""Write the sync flavour of each async source file, or check that it is up to date.

The library's sync and async flavours of a class differ only in ``async``/``await`` and in the
names of a few types and calls. The async flavour is written by hand; this script derives the
sync one, line by line, with the substitutions below (regular expressions, applied in order),
sorts its imports and formats it with ruff (which must be installed: the lint group), and
writes it beside the source with a first line saying it is generated:

    python scripts/unasync.py            # write every generated file
    python scripts/unasync.py --check    # exit 1 if one differs from what would be written

A source line that ends with ``# unasync: async only`` is left out of the sync file. A rule that
no line of any file used fails the run (it is stale). ``scripts/test`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASYNC_ONLY = "# unasync: async only"
HEADER = "# Generated from {source} by scripts/unasync.py: edit that file, not this one.\n"


@dataclass(frozen=True)
class Rule:
    """Replace ``pattern`` (a regular expression) by ``replacement`` on every line."""

    pattern: str
    replacement: str

    def compiled(self) -> re.Pattern[str]:
        """The pattern, compiled."""
        return re.compile(self.pattern)


@dataclass(frozen=True)
class Pair:
    """A hand-written async ``source`` and the sync ``target`` derived from it.

    ``rules`` come before the common ones.
    """

    source: str
    target: str
    rules: tuple[Rule, ...] = field(default=())


#: The substitutions every file gets, in order (a rule joins when a file first needs it).
COMMON: tuple[Rule, ...] = (
    Rule(r"\basync def\b", "def"),
    Rule(r"\bawait ", ""),
    Rule(r"^import asyncio$", "import time"),
    Rule(r"\basyncio\.sleep\b", "time.sleep"),
    Rule(r"\bAsyncDeviceMetadataRepository\b", "DeviceMetadataRepository"),
    Rule(r"\bAsyncFaultyRepository\b", "FaultyRepository"),
    Rule(r"\bAsyncInMemoryDeviceMetadataRepository\b", "InMemoryDeviceMetadataRepository"),
    Rule(r"\bany async repository\b", "any repository"),
)

#: Every generated file.
PAIRS: tuple[Pair, ...] = (
    Pair(
        "src/cache_service_client/testing/_faults_async.py",
        "src/cache_service_client/testing/_faults_sync.py",
    ),
    Pair(
        "src/cache_service_client/repository/_near_async.py",
        "src/cache_service_client/repository/_near_sync.py",
        (
            Rule(
                r"\bAsyncNearCachedDeviceMetadataRepository\b", "NearCachedDeviceMetadataRepository"
            ),
            Rule(r"\bAsyncRedisDeviceMetadataRepository\b", "RedisDeviceMetadataRepository"),
            Rule(r"\b_AsyncForwarding\b", "_Forwarding"),
            Rule(r"\b([Aa])n async Redis repository\b", r"\1 Redis repository"),
            Rule(r"\bThe async Redis repository\b", "The Redis repository"),
            Rule(r"\bThe near-cached async repository\b", "The near-cached repository"),
            Rule(
                r"\(the sync one is generated from this file\)", "(generated from _near_async.py)"
            ),
        ),
    ),
    Pair(
        "src/cache_service_client/_telemetry_async.py",
        "src/cache_service_client/_telemetry_sync.py",
        (
            Rule(r"\bAsyncInstrumentedRepository\b", "InstrumentedRepository"),
            Rule(r"\b_AsyncForwarding\b", "_Forwarding"),
            Rule(
                r"^from collections\.abc import Awaitable, Callable$",
                "from collections.abc import Callable",
            ),
            Rule(r"\bAwaitable\[(\w+)\]", r"\1"),
            Rule(
                r"\bAn (:class:`~cache_service_client\.)AsyncDeviceMetadataRepository",
                r"A \1DeviceMetadataRepository",
            ),
            Rule(r"\bcalling task only\b", "calling thread only"),
            Rule(r'^"""The async repository wrapper', '"""The repository wrapper'),
            Rule(r"\(the sync one is generated from it\)", "(generated from _telemetry_async.py)"),
        ),
    ),
)


class StaleRuleError(Exception):
    """A rule that no line used."""


def convert(text: str, rules: Sequence[Rule]) -> tuple[str, set[Rule]]:
    """The sync text of the async ``text``, and the rules that changed a line."""
    compiled = [(rule, rule.compiled()) for rule in rules]
    used: set[Rule] = set()
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.rstrip().endswith(ASYNC_ONLY):
            continue
        body, newline = (line[:-1], "\n") if line.endswith("\n") else (line, "")
        for rule, pattern in compiled:
            body, n = pattern.subn(rule.replacement, body)
            if n:
                used.add(rule)
        out.append(body + newline)
    return "".join(out), used


def _ruff(arguments: list[str], text: str, target: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *arguments, "--stdin-filename", target, "-"],
        input=text,
        capture_output=True,
        encoding="utf-8",
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"ruff {arguments[0]} failed on the text of {target}: {result.stderr}")
    return result.stdout


def formatted(text: str, target: str) -> str:
    """``text`` with its imports sorted and formatted as ruff leaves them.

    A renamed import can change the order; removing ``await`` can let lines join.
    """
    text = _ruff(["check", "--select", "I", "--fix", "--exit-zero", "--quiet"], text, target)
    return _ruff(["format"], text, target)


def generated(pair: Pair, root: Path = ROOT) -> tuple[str, set[Rule]]:
    """What ``pair.target`` should hold, and the rules used for it."""
    source = (root / pair.source).read_text(encoding="utf-8")  # and written as UTF-8 too
    text, used = convert(source, (*pair.rules, *COMMON))
    header = HEADER.format(source=Path(pair.source).name)
    return formatted(header + text, pair.target), used


def run(pairs: Sequence[Pair], *, check: bool, root: Path = ROOT) -> list[str]:
    """Write (or, with ``check``, compare) every target; return the problems found."""
    problems: list[str] = []
    used: set[Rule] = set()
    for pair in pairs:
        expected, rules = generated(pair, root)
        used |= rules
        target = root / pair.target
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == expected:
            continue
        if check:
            diff = difflib.unified_diff(
                (current or "").splitlines(keepends=True),
                expected.splitlines(keepends=True),
                pair.target,
                f"{pair.target} (from {pair.source})",
                n=1,
            )
            shown = "".join(list(diff)[:40])
            problems.append(f"{pair.target} is stale: run python scripts/unasync.py\n{shown}")
        else:
            target.write_text(expected, encoding="utf-8")
            print(f"wrote {pair.target}")
    every = {rule for pair in pairs for rule in (*pair.rules, *COMMON)}
    for rule in sorted(every - used, key=lambda r: r.pattern):
        problems.append(f"the rule {rule.pattern} -> {rule.replacement!r} changed no line")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Write or check every generated file; 1 if a check found a problem."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a generated file is not up to date"
    )
    args = parser.parse_args(argv)
    problems = run(PAIRS, check=args.check)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
