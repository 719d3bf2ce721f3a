"""Every Python block of README.md and docs/*.md runs as written.

The marker convention: a ```python block that cannot run alone (it uses names of an earlier
block or of the reader's own code, it is a signature sketch or an excerpt of the library's
source, or it needs what the suite does not start: a gateway, a cluster, another server kind)
has, on the line right before its fence, an HTML comment that says so and why::

    <!-- fragment: uses `app` and `RepositoryDep` of the example above -->
    ```python

GitHub, PyPI and Sphinx (MyST) show the comment nowhere and the block as Python. Every other
block is run, and must pass; fragments are few (``MAX_FRAGMENTS``) and each gives its reason.

How a block runs: on its own, in a fresh module (no page-level namespace: a block is what a
reader copies, so it carries its own imports), in this process, in an empty working directory.
A block may ``await`` at top level, as in ``python -m asyncio`` or a notebook: it is then run
with ``asyncio.run``. A block that names a Redis server runs against the session's Redis (on a
database of its own, emptied of what the block wrote); ``for_session_redis`` lists the only
edits made to a block's text, visibly.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from cache_service_client.testing import find_server

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRAGMENT = re.compile(r"^\s*<!-- fragment: (?P<reason>\S.*?) -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```python(?:\s.*)?$")
# A fragment is the exception: raise this only with a reason, lower it when one is fixed.
MAX_FRAGMENTS = 12
# The database of the session's Redis the blocks write to (and that is emptied after each).
DOCS_DB = 7


class Block(NamedTuple):
    """One ```python block: where it is, its code, and why it is a fragment (None: it runs)."""

    page: str
    line: int
    code: str
    fragment: str | None


def collect() -> list[Block]:
    """Every ```python block of the pages, in page order; ``line`` is the fence's (1-based)."""
    blocks: list[Block] = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            fence = FENCE.match(lines[index])
            if fence is None:
                index += 1
                continue
            end = index + 1
            while not lines[end].strip().startswith("```"):
                end += 1
            indent = len(fence["indent"])
            code = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
            marker = FRAGMENT.match(lines[index - 1]) if index else None
            blocks.append(
                Block(
                    str(page.relative_to(ROOT)),
                    index + 1,
                    code,
                    marker["reason"] if marker else None,
                )
            )
            index = end + 1
    return blocks


BLOCKS = collect()
RUNNABLE = [block for block in BLOCKS if block.fragment is None]


def needs_redis(code: str) -> bool:
    """Whether a block names a Redis server (a URL, ``redis.Redis(...)``, a host)."""
    return bool(re.search(r'"redis://|redis\.(asyncio\.)?Redis\(|host="|REDIS_HOST', code))


def for_session_redis(code: str, url: str) -> str:
    """The block with the Redis server it names replaced by the session's (``url``).

    The only edits made to a block: a ``redis://`` URL becomes ``url``; ``redis.Redis()`` (the
    default, localhost:6379) becomes ``redis.Redis.from_url(url)``; ``host="..."`` and
    ``port=6379`` become the session server's host, port and database, and a
    ``password="..."`` next to them ``password=None`` (the session's server has none).
    """
    parts = urlsplit(url)
    code = re.sub(r'"redis://[^"]*"', repr(url).replace("'", '"'), code)
    code = re.sub(r"redis\.(asyncio\.)?Redis\(\)", rf'redis.\1Redis.from_url("{url}")', code)
    code = re.sub(r'\bhost="[^"]*"', f'host="{parts.hostname}"', code)
    code = re.sub(r"\bport=6379\b", f"port={parts.port}, db={parts.path.strip('/')}", code)
    return re.sub(r'password="[^"]*"', "password=None", code)


def run_block(code: str, name: str) -> None:
    """Run ``code`` as the module ``name``, awaiting it if it awaits at top level."""
    # dont_inherit: not this module's ``from __future__ import annotations`` (a reader's block
    # has real annotations, which frameworks such as FastAPI read).
    compiled = compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        if compiled.co_flags & inspect.CO_COROUTINE:
            coroutine = eval(compiled, module.__dict__)
            asyncio.run(coroutine)
        else:
            exec(compiled, module.__dict__)
    finally:
        del sys.modules[name]


@pytest.fixture
def docs_redis_url(redis_url: str) -> Iterator[str]:
    """The session's Redis, on database ``DOCS_DB``; what a block writes there is deleted."""
    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(path=f"/{DOCS_DB}", query=""))
    client = redis.Redis.from_url(url)
    before = set(client.scan_iter())
    try:
        yield url
    finally:
        written = set(client.scan_iter()) - before
        if written:
            client.delete(*written)
        client.close()


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b.page}:{b.line}" for b in RUNNABLE])
def test_block_runs_as_written(
    block: Block,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.chdir(tmp_path)
    code = block.code
    for kind in re.findall(r"find_server\(\"([\w.-]+)\"\)", code):
        try:
            find_server(kind)
        except RuntimeError as exc:  # a server kind this machine lacks: said, not hidden
            pytest.skip(f"the block starts a {kind} server: {exc}")
    if needs_redis(code):
        url: str = request.getfixturevalue("docs_redis_url")
        code = for_session_redis(code, url)
        # A block that reads the server from the environment, as a service does.
        parts = urlsplit(url)
        monkeypatch.setenv("REDIS_HOST", str(parts.hostname))
        monkeypatch.setenv("REDIS_PORT", str(parts.port))
    name = "docs_example_" + re.sub(r"\W", "_", f"{block.page}_{block.line}")
    run_block(code, name)


def test_the_pages_have_blocks_and_few_fragments() -> None:
    fragments = [f"{b.page}:{b.line}: {b.fragment}" for b in BLOCKS if b.fragment is not None]
    print(f"{len(BLOCKS)} blocks: {len(RUNNABLE)} run, {len(fragments)} fragments")
    print("\n".join(fragments))
    assert len(RUNNABLE) >= 15
    assert len(fragments) <= MAX_FRAGMENTS, "\n".join(fragments)


def test_a_fragment_marker_precedes_a_python_block() -> None:
    """A marker that lost its block (an edit moved it, or the fence is no longer Python)."""
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if "<!-- fragment" in line:
                assert FRAGMENT.match(line), f"{page.name}:{number}: <!-- fragment: why -->"
                following = lines[number] if number < len(lines) else ""
                assert FENCE.match(following), f"{page.name}:{number}: no ```python block follows"
