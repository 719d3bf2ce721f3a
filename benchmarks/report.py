"""The report around the tables: the machine, the versions, the targets; JSON for later plots."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import redis

from benchmarks.harness import Config, Figures, GroupResult, Result, group_section
from benchmarks.server import server_name
from benchmarks.targets import evaluate_all, markdown_targets


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(url: str | None) -> dict[str, str]:
    """Where and with what the benchmarks ran."""
    info = {
        "cpus (nproc)": str(
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "cpu": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "msgspec": _version("msgspec"),
        "redis-py": _version("redis"),
        "hiredis": _version("hiredis") + ("" if redis.utils.HIREDIS_AVAILABLE else " (not in use)"),
        "pydantic": _version("pydantic"),
        "redis-om": _version("redis-om"),
    }
    if hasattr(os, "getloadavg"):
        info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if url is not None:
        client = redis.Redis.from_url(url)
        try:
            server = client.info("server")
            info["redis server"] = f"{server_name(server)} (loopback TCP)"
        finally:
            client.close()
    return info


def markdown_report(
    results: Sequence[GroupResult | Figures],
    info: dict[str, str],
    config: Config,
    *,
    command: str,
    level: int = 3,
) -> str:
    """The whole report: machine, tables, targets."""
    parts = [
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items()),
        "",
        f"Command: `{command}` ({config.rounds} interleaved rounds of about "
        f"{config.round_time:g} s per candidate; figures are medians over rounds; the ratio is "
        "the median of the per-round ratios to the baseline row, > 1 is faster).",
    ]
    for result in results:
        parts += ["", group_section(result, level)]
    outcomes = evaluate_all(results)
    if outcomes:
        parts += ["", f"{'#' * level} Targets", "", markdown_targets(outcomes)]
    return "\n".join(parts) + "\n"


# -- JSON, so that a plot can be drawn again without running everything ---------------------


def to_json(results: Sequence[GroupResult | Figures], info: dict[str, str], config: Config) -> str:
    """Serialise a run; each candidate's samples are reduced to 1001 quantiles."""
    groups = []
    figures = []
    for group in results:
        data = asdict(group)
        if isinstance(group, Figures):
            figures.append(data)
            continue
        for entry, result in zip(data["results"], group.results, strict=True):
            entry["samples"] = [result.percentile(q / 10) for q in range(1001)]
        groups.append(data)
    run = {"machine": info, "config": asdict(config), "groups": groups, "figures": figures}
    return json.dumps(run, indent=1)


def from_json(text: str) -> tuple[list[GroupResult], dict[str, str], Config]:
    """Read a run written by :func:`to_json` (its timing tables; figures stay in the file)."""
    data: dict[str, Any] = json.loads(text)
    groups = []
    for g in data["groups"]:
        results = [Result(**r) for r in g.pop("results")]
        groups.append(GroupResult(results=results, **g))
    return groups, data["machine"], Config(**data["config"])
