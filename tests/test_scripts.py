"""The Lua scripts as files: each loads, is whole, and keeps to the rules of the prelude."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cache_service_client.repository.redis import lua
from cache_service_client.repository.redis.ops import LuaScript

SCRIPTS = Path(lua.__file__).parent / "scripts"
WRITES = ("'SET'", "'DEL'", "'ZADD'", "'ZREM'", "'SADD'", "'SREM'")
ALL = [getattr(lua, name) for name in lua.__all__ if isinstance(getattr(lua, name), LuaScript)]


def test_every_script_file_is_a_script_and_the_other_way_round() -> None:
    files = {path.stem for path in SCRIPTS.glob("*.lua")} - {"prelude"}
    assert files == {script.name for script in ALL}


@pytest.mark.parametrize("script", ALL, ids=lambda s: s.name)
def test_no_constant_is_left_unreplaced(script: LuaScript) -> None:
    assert not re.search(r"\{[a-z_]+\}", script.source), script.name
    assert script.source.startswith((SCRIPTS / "prelude.lua").read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", [lua.PUT, lua.DELETE], ids=lambda s: s.name)
def test_write_scripts_read_before_they_write(script: LuaScript) -> None:
    # The rule of writes that cannot half-happen: no write command before the last read of
    # the first phase (the scripts mark the phases with "-- Reads" and "-- Writes").
    body = script.source.removeprefix((SCRIPTS / "prelude.lua").read_text(encoding="utf-8"))
    reads, _, writes = body.partition("-- Writes")
    assert writes, script.name
    for command in WRITES:
        assert f"redis.call({command}" not in reads.split("-- Reads", 1)[1], (script.name, command)
    for helper in ("drop_from(", "remove_entries(", "unindex(", "index("):
        assert not re.search(rf"(?<!\w){re.escape(helper)}", reads), (script.name, helper)


def test_read_scripts_never_write() -> None:
    prelude = (SCRIPTS / "prelude.lua").read_text(encoding="utf-8")
    for script in (lua.RANGE, lua.SCORE_MERGE, lua.COUNT, lua.INFO):
        body = script.source.removeprefix(prelude)
        for command in WRITES:
            assert f"redis.call({command}" not in body, (script.name, command)
        for helper in (
            "unindex(",
            "drop_from(",
            "drop_shard_entry(",
            "remove_entries(",
            "index(",
            "forget(",
            "forget_from(",
            "prune_expired(",
        ):
            assert not re.search(rf"(?<!\w){re.escape(helper)}", body), (script.name, helper)
