"""``scripts/unasync.py``: the sync flavours it writes, and its check of them."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.project_scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unasync() -> ModuleType:
    return load_script("unasync")


def test_every_generated_file_is_up_to_date_and_says_it_is_generated(unasync: ModuleType) -> None:
    assert unasync.run(unasync.PAIRS, check=True) == [], "run: python scripts/unasync.py"
    for pair in unasync.PAIRS:
        first = (ROOT / pair.target).read_text(encoding="utf-8").split("\n", 1)[0]
        assert first.startswith("# Generated from ")
        assert "scripts/unasync.py" in first


def test_the_substitutions_and_the_async_only_marker(unasync: ModuleType) -> None:
    source = (
        "import asyncio\n"
        "async def f(repo: AsyncDeviceMetadataRepository) -> None:\n"
        "    await asyncio.sleep(1)\n"
        "    loop = asyncio.get_running_loop()  # unasync: async only\n"
        "    return await repo.get('x')\n"
    )
    text, used = unasync.convert(source, unasync.COMMON)
    assert text == (
        "import time\n"
        "def f(repo: DeviceMetadataRepository) -> None:\n"
        "    time.sleep(1)\n"
        "    return repo.get('x')\n"
    )
    assert {rule.pattern for rule in used} >= {
        r"^import asyncio$",
        r"\basync def\b",
        r"\bawait ",
        r"\basyncio\.sleep\b",
        r"\bAsyncDeviceMetadataRepository\b",
    }
    # Words that only contain a name are left alone.
    assert unasync.convert("MyAsyncDeviceMetadataRepositoryX\n", unasync.COMMON)[0] == (
        "MyAsyncDeviceMetadataRepositoryX\n"
    )


def test_a_stale_or_missing_file_and_an_unused_rule_are_reported(
    unasync: ModuleType, tmp_path: Path
) -> None:
    source = tmp_path / "thing_async.py"
    source.write_text("async def f() -> None:\n    await g()\n", encoding="utf-8")
    rules = (unasync.Rule(r"\bnever\b", "seen"),)
    pair = unasync.Pair("thing_async.py", "thing_sync.py", rules)
    problems = unasync.run([pair], check=True, root=tmp_path)
    assert any("thing_sync.py is stale" in p for p in problems)
    assert any(r"\bnever\b" in p and "changed no line" in p for p in problems)
    assert not (tmp_path / "thing_sync.py").exists()  # a check writes nothing
    unasync.run([pair], check=False, root=tmp_path)
    written = (tmp_path / "thing_sync.py").read_text(encoding="utf-8")
    assert written.endswith("def f() -> None:\n    g()\n")
    assert [p for p in unasync.run([pair], check=True, root=tmp_path) if "stale" in p] == []
    # A hand edit of the generated file is found.
    (tmp_path / "thing_sync.py").write_text(written + "x = 1\n", encoding="utf-8")
    assert any("stale" in p for p in unasync.run([pair], check=True, root=tmp_path))
