"""The issue's performance targets, checked against a run's results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from benchmarks.harness import Figures, GroupResult

Verdict = Literal["met", "NOT met", "skipped"]


@dataclass(frozen=True)
class Target:
    """``key`` must be at least ``at_least`` times as fast as ``over`` in table ``table``.

    Attributes:
        table: The table's id (``"single.get"``).
        key: The candidate under test (``"ours"``).
        over: The reference candidate.
        at_least: Lowest acceptable speed ratio (time of ``over`` / time of ``key``).
        label: What the target says.
        as_time: Show the ratio as time (key / over), for "within 1.15x of" targets.

    """

    table: str
    key: str
    over: str
    at_least: float
    label: str
    as_time: bool = False


def _codec_targets(table: str, what: str) -> list[Target]:
    return [
        Target(table, "ours", "msgspec", 1 / 1.15, f"codec {what}: within 1.15x of msgspec", True),
        Target(table, "ours", "pydantic", 3.0, f"codec {what}: >= 3x faster than pydantic v2"),
    ]


TARGETS: tuple[Target, ...] = (
    *_codec_targets("codec.encode_one", "encode one"),
    *_codec_targets("codec.decode_one", "decode one"),
    *_codec_targets("codec.encode_batch", "encode 1000"),
    *_codec_targets("codec.decode_batch", "decode 1000"),
    Target("single.get", "ours", "raw", 0.9, "get: >= 0.9x raw redis-py + msgspec"),
    Target("single.get", "ours", "redis-om", 1.5, "get: >= 1.5x redis-om"),
    Target("single.put", "ours", "raw", 0.8, "put (atomic, indexed): >= 0.8x raw SET EX"),
    Target("single.put", "ours", "redis-om", 1.7, "put: >= 1.7x redis-om save + expire"),
    Target("single.churn", "ours", "raw", 0.75, "put + delete: >= 0.75x raw SET EX + DEL"),
    Target("batch.get_many", "ours", "raw", 0.9, "get_many: >= 0.9x raw MGET + decode"),
    Target("batch.put_many", "ours", "raw", 1.0, "put_many: >= 1.0x raw pipeline"),
    Target("async.get", "ours", "raw", 0.9, "async get x64 tasks: >= 0.9x raw redis.asyncio"),
    Target(
        "telemetry.get",
        "instrumented",
        "plain",
        1 / 1.02,
        "get with opentelemetry-api, no SDK: within 1.02x of without",
        True,
    ),
    Target(
        "async.get",
        "raw-bounded",
        "raw",
        1 / 1.1,
        "async facade pool (waits, never refuses): within 1.1x of the default pool",
        True,
    ),
    Target(
        "near.get",
        "ours",
        "raw",
        20.0,
        "near-cached get_device_metadata_sync (hit): >= 20x raw redis-py GET + decode",
    ),
    Target(
        "near.async_get",
        "ours",
        "raw",
        10.0,
        "near-cached get_device_metadata (hit): >= 10x raw redis.asyncio GET + decode",
    ),
)


@dataclass(frozen=True)
class Limit:
    """Value ``value`` of figures table ``table`` must be at most ``at_most``.

    Attributes:
        table: The figures' id (``"near.invalidation"``).
        value: The name of the value in :attr:`Figures.values`.
        at_most: Highest acceptable value.
        label: What the target says.
        unit: Shown after the numbers.

    """

    table: str
    value: str
    at_most: float
    label: str
    unit: str


LIMITS: tuple[Limit, ...] = (
    Limit(
        "near.invalidation",
        "spin.p99",
        20.0,
        "near cache: another client's write seen within 20 ms (p99, reader spinning)",
        "ms",
    ),
)


@dataclass(frozen=True)
class Outcome:
    """A target and what the run measured for it."""

    target: Target
    speedup: float | None

    @property
    def verdict(self) -> Verdict:
        """met, NOT met or skipped (a candidate did not run)."""
        if self.speedup is None:
            return "skipped"
        return "met" if self.speedup >= self.target.at_least else "NOT met"

    def measured(self) -> str:
        """The measured ratio, as the target states it."""
        if self.speedup is None:
            return "-"
        if self.target.as_time:
            return f"{1 / self.speedup:.3f}x the time"
        return f"{self.speedup:.3f}x"

    def needed(self) -> str:
        """The threshold, as the target states it."""
        if self.target.as_time:
            return f"<= {1 / self.target.at_least:.2f}x"
        return f">= {self.target.at_least:g}x"


@dataclass(frozen=True)
class LimitOutcome:
    """A limit and what the run measured for it."""

    target: Limit
    value: float | None

    @property
    def verdict(self) -> Verdict:
        """met, NOT met or skipped (the value was not measured)."""
        if self.value is None:
            return "skipped"
        return "met" if self.value <= self.target.at_most else "NOT met"

    def measured(self) -> str:
        """The measured value."""
        return "-" if self.value is None else f"{self.value:.2f} {self.target.unit}"

    def needed(self) -> str:
        """The threshold."""
        return f"<= {self.target.at_most:g} {self.target.unit}"


def evaluate(results: Sequence[GroupResult | Figures]) -> list[Outcome]:
    """The outcome of every speed target whose table ran."""
    by_table = {r.table: r for r in results if isinstance(r, GroupResult)}
    return [
        Outcome(t, by_table[t.table].speedup(t.key, t.over)) for t in TARGETS if t.table in by_table
    ]


def evaluate_limits(results: Sequence[GroupResult | Figures]) -> list[LimitOutcome]:
    """The outcome of every limit whose figures were measured."""
    measured = {r.table: r for r in results if isinstance(r, Figures)}
    return [
        LimitOutcome(limit, measured[limit.table].values.get(limit.value))
        for limit in LIMITS
        if limit.table in measured
    ]


def evaluate_all(results: Sequence[GroupResult | Figures]) -> list[Outcome | LimitOutcome]:
    """The speed targets' outcomes, then the limits'."""
    return [*evaluate(results), *evaluate_limits(results)]


def markdown_targets(outcomes: Sequence[Outcome | LimitOutcome]) -> str:
    """The targets as a markdown table."""
    lines = ["| target | measured | needed | verdict |", "|---|---:|---:|---|"]
    for o in outcomes:
        verdict = f"**{o.verdict}**" if o.verdict == "NOT met" else o.verdict
        lines.append(f"| {o.target.label} | {o.measured()} | {o.needed()} | {verdict} |")
    return "\n".join(lines)
