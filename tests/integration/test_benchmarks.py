"""The benchmark suite runs and its tables are well formed (speed is never judged here)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from benchmarks import others
from benchmarks.harness import (
    Candidate,
    Config,
    Figures,
    GroupResult,
    Result,
    Runner,
    group_section,
    markdown_table,
)
from benchmarks.harness import percentile as pct
from benchmarks.report import from_json, markdown_report, to_json
from benchmarks.run import main
from benchmarks.scale import MEMORY_QUERIES, SHAPES
from benchmarks.scale import _client as scale_client
from benchmarks.scale import main as scale_main
from benchmarks.suites import run_groups
from benchmarks.targets import TARGETS, Outcome, evaluate, evaluate_all, markdown_targets
from benchmarks.workloads import AsyncRedisWork, CodecWork, SyncRedisWork, run_prefix

from tests.redis_server import server_kind

TINY = Config(rounds=5, round_time=0.0005, min_samples=1)


@pytest.fixture(autouse=True)
def _no_redis_om(monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-om is only installed in the benchmarks' own environment; never import it here.
    monkeypatch.setattr(others, "have_redis_om", lambda: False)


def test_percentile_interpolates() -> None:
    assert pct([3.0], 99) == 3.0
    assert pct([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert pct([0.0, 10.0], 25) == 2.5
    with pytest.raises(ValueError, match="no values"):
        pct([], 50)


def test_config_needs_five_rounds() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        Config(rounds=4)


def test_runner_interleaves_and_reports_ratios() -> None:
    calls: list[str] = []

    def slow() -> None:
        calls.append("slow")
        sum(range(2000))

    def fast() -> None:
        calls.append("fast")

    result = Runner(TINY).run(
        "g",
        "g.t",
        "A table",
        "work",
        [
            Candidate("fast one", fast, role="ours", key="ours"),
            Candidate("slow one", slow, ops=2, role="baseline", key="base"),
        ],
    )
    assert [r.key for r in result.results] == ["base", "ours"]  # baseline first
    base, ours = result.results
    assert len(base.round_times) == len(ours.ratios) == 5
    assert base.ratios == [1.0] * 5
    assert ours.ratio > 0
    assert base.seconds_per_op > 0
    assert {"slow", "fast"} == set(calls)
    assert result.speedup("ours", "base") == pytest.approx(ours.ratio)
    assert base.ratio == 1.0
    assert ours.ratio == pytest.approx(sorted(ours.ratios)[2])
    assert result.speedup("ours", "missing") is None
    table = markdown_table(result).splitlines()
    assert table[0] == "| work | op/s | µs/op | p50 µs | p99 µs | vs baseline |"
    assert table[2].startswith("| slow one (baseline) |")
    assert table[2].endswith("| 1.00x |")
    assert table[3].startswith("| **fast one** |")


def test_runner_needs_one_baseline() -> None:
    with pytest.raises(ValueError, match="baseline"):
        Runner(TINY).run("g", "g.t", "T", "t", [Candidate("a", lambda: None, role="ours")])


def test_runner_times_async_candidates_on_its_loop() -> None:
    async def nap() -> None:
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        result = Runner(TINY, loop).run(
            "g", "g.t", "T", "t", [Candidate("nap", nap, role="baseline", key="nap")]
        )
    finally:
        loop.close()
    assert result.results[0].ops_per_second > 0
    with pytest.raises(RuntimeError, match="event loop"):
        Runner(TINY).run("g", "g.t", "T", "t", [Candidate("nap", nap, role="baseline")])


def _group(table: str, ratios: dict[str, float]) -> GroupResult:
    results = [
        Result(
            key, key, "baseline" if i == 0 else "ours", 1, [1e-6 / r] * 5, [1e-6] * 5, [r] * 5, r
        )
        for i, (key, r) in enumerate(ratios.items())
    ]
    return GroupResult("single", table, "Name", "title", "op", results)


def test_targets_are_judged_from_paired_ratios() -> None:
    outcomes = evaluate(
        [
            _group("single.get", {"raw": 1.0, "ours": 0.95, "redis-om": 0.5}),
            _group("single.put", {"raw": 1.0, "ours": 0.5}),
            _group("codec.encode_one", {"msgspec": 1.0, "ours": 0.9, "pydantic": 0.2}),
        ]
    )
    verdicts = {(o.target.table, o.target.over): o.verdict for o in outcomes}
    assert verdicts[("single.get", "raw")] == "met"
    assert verdicts[("single.get", "redis-om")] == "met"  # 0.95 / 0.5 = 1.9 >= 1.5
    assert verdicts[("single.put", "raw")] == "NOT met"
    assert verdicts[("single.put", "redis-om")] == "skipped"
    assert verdicts[("codec.encode_one", "msgspec")] == "met"  # 1.11x the time <= 1.15x
    assert verdicts[("codec.encode_one", "pydantic")] == "met"  # 4.5x
    text = markdown_targets(outcomes)
    assert (
        "| codec encode one: within 1.15x of msgspec | 1.111x the time | <= 1.15x | met |" in text
    )
    assert "**NOT met**" in text
    groups = {"codec", "single", "batch", "async", "telemetry", "near"}
    assert all(t.table.split(".")[0] in groups for t in TARGETS)
    skipped = Outcome(TARGETS[0], None)
    assert skipped.measured() == "-"


def test_codec_workload_candidates_agree() -> None:
    work = CodecWork()
    work.verify()
    for fns in (work.encode_one(), work.decode_one(), work.encode_batch(), work.decode_batch()):
        assert {"ours", "msgspec", "json"} <= set(fns)
        for fn in fns.values():
            fn()


def test_redis_workloads_do_the_same_work(redis_url: str) -> None:
    work = SyncRedisWork(redis_url, run_prefix())
    try:
        work.verify()
    finally:
        work.cleanup()

    async def run_async() -> None:
        awork = await AsyncRedisWork.create(redis_url, run_prefix())
        try:
            await awork.verify()
            for fn in awork.get().values():
                await fn()
        finally:
            await awork.cleanup()

    asyncio.run(run_async())


def test_redis_groups_run_and_clean_up(redis_url: str) -> None:
    import redis

    results = list(run_groups(Runner(TINY), ("single", "facade", "telemetry"), redis_url))
    tables = ["single.get", "single.put", "single.churn", "facade.get", "telemetry.get"]
    tables.append("telemetry.memory_get")
    assert [r.table for r in results] == tables
    for result in results[-2:]:
        assert isinstance(result, GroupResult)
        assert [r.key for r in result.results] == ["plain", "instrumented"]
    client = redis.Redis.from_url(redis_url)
    try:
        assert not list(client.scan_iter(match="csc-bench-*"))
    finally:
        client.close()


def _near_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("cache_service_client near")}


def test_near_group_runs_and_cleans_up(redis_url: str) -> None:
    import redis

    before = _near_threads()
    config = Config(rounds=5, round_time=0.0005, min_samples=1, trials=3, entries=50)
    results = list(run_groups(Runner(config), ("near",), redis_url))
    assert [r.table for r in results] == [
        "near.get",
        "near.async_get",
        "near.invalidation",
        "near.memory",
    ]
    for timed in results[:2]:
        assert isinstance(timed, GroupResult)
        assert [r.key for r in timed.results] == ["raw", "ours", "repository", "plain"]
        ours = timed.get("ours")
        assert ours is not None
        assert ours.ops > 1  # many cache hits per sample
    delay, memory = results[2], results[3]
    assert isinstance(delay, Figures)
    assert isinstance(memory, Figures)
    assert [row[1] for row in delay.rows] == ["3", "3"]
    assert delay.values["spin.p99"] >= delay.values["spin.p50"] > 0
    assert memory.values["entries"] == 50
    assert memory.values["entry"] > memory.values["device"] > memory.values["json"] > 0
    section = group_section(delay).splitlines()
    assert section[0] == "### Near cache: another client's write, seen by a near-cached reader"
    assert section[2].startswith("| reader | trials | p50 ms | p99 ms |")
    labels = [o.target.label for o in evaluate_all(results)]
    assert len(labels) == 3
    assert any("p99" in label for label in labels)
    client = redis.Redis.from_url(redis_url)
    try:
        assert not list(client.scan_iter(match="csc-bench-*"))
    finally:
        client.close()
    assert not {t for t in _near_threads() - before if t.is_alive()}


def test_command_line_quick_codec_run_writes_markdown_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md, js = tmp_path / "out.md", tmp_path / "out.json"
    argv = ["--only", "codec", "--rounds", "5", "--round-time", "0.0005"]
    assert main([*argv, "--markdown", str(md), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "## Codec: encode one device" in printed
    assert "## Targets" in printed
    report = md.read_text()
    assert report.count("| bare msgspec Encoder/Decoder (baseline) |") == 4
    groups, info, config = from_json(js.read_text())
    assert [g.table for g in groups][:2] == ["codec.encode_one", "codec.decode_one"]
    assert config.rounds == 5
    assert "python" in info
    assert len(groups[0].results[0].samples) == 1001
    assert json.loads(to_json(groups, info, config))["config"]["rounds"] == 5
    assert markdown_report(groups, info, config, command="x").count("### ") == 5


def test_command_line_rejects_unknown_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "codec,nope"])
    assert "nope" in capsys.readouterr().err


def test_scale_quick_prints_a_table_with_every_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert scale_main(["--quick", "--server", server_kind()]) == 0
    out = capsys.readouterr().out
    for row in (
        "memory per device (bytes)",
        "round trip (redis-py PING)",
        "cache info",
        "count",
        "first page by id (100)",
        "first page by last_updated (100)",
        "leading wildcard",
        "page floor (ZRANGE 100 + MGET + decode)",
        *(f"{name}: first page" for name in SHAPES),
    ):
        assert f"| {row}" in out
    assert "| N = 1,000 | N = 5,000 | 5,000 / 1,000 |" in out
    assert "largest growth of the index-bounded reads" in out


def test_scale_memory_quick_times_every_query_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert scale_main(["--memory", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "In-memory twin, 1,000 devices" in out
    for row in (*(f"{name}: first page" for name in MEMORY_QUERIES), "count", "info", "delete"):
        assert f"| {row} |" in out


def test_scale_gives_each_size_a_database_of_its_own() -> None:
    for url, offset, db in [("redis://127.0.0.1:1/3", 2, 5), ("redis://127.0.0.1:1", 1, 1)]:
        client = scale_client(url, offset)
        assert client.connection_pool.connection_kwargs["db"] == db
        client.close()


def test_cli_benchmark_round_trips_through_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cli import main as cli_main

    assert cli_main(["--quick", "--server", server_kind()]) == 0
    out = capsys.readouterr().out
    assert "devcache export / import, 2,000 devices" in out
    assert "| command | devices/s | bare redis-py floor | of the floor | target |" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for name in ("export", "import"):
        cells = [cell.strip() for cell in rows[name].split("|")[1:-1]]
        rate, floor, ratio = (float(cells[i].rstrip("x").replace(",", "")) for i in (1, 2, 3))
        assert rate > 0
        assert floor > 0
        assert ratio == pytest.approx(rate / floor, abs=0.01)
