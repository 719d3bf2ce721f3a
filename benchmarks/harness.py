"""The timing harness: interleaved rounds, medians, percentiles and markdown tables.

A *group* compares candidates doing the same work; one of them is the baseline. Every round runs
each candidate once, for about ``round_time`` seconds, in an order that rotates from round to
round, so slow drifts of the machine (another process, frequency scaling) hit every candidate
alike. A candidate's figures are medians over rounds of its mean time per operation. Its ratio
to the baseline is the median of the per-round ratios (baseline time / its time in the same
round; > 1: faster): paired, so it stays right when the machine alternates between fast and slow
phases, where two separate medians can land in different phases.

A *sample* is one call of a candidate's function, which performs ``ops`` operations; latencies
(p50, p99) are per operation, i.e. a sample's time divided by its ``ops``. For sub-microsecond
work a candidate runs a small inner loop per call, so its percentiles are those of chunk means.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["baseline", "ours", "other"]
SyncFn = Callable[[], object]
AsyncFn = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Config:
    """How long to measure.

    Attributes:
        rounds: Interleaved rounds per group (at least 5; the median is reported).
        round_time: Seconds each candidate runs per round (approximately).
        min_samples: Fewest samples per candidate and round.
        trials: Trials of a measurement made trial by trial (the near cache's invalidation
            delay).
        entries: Devices a memory measurement holds (the near cache's bytes per entry).

    """

    rounds: int = 21
    round_time: float = 0.1
    min_samples: int = 3
    trials: int = 200
    entries: int = 10_000

    def __post_init__(self) -> None:
        if self.rounds < 5:
            raise ValueError("rounds must be at least 5 (the median of at least 5 is reported)")
        if self.round_time <= 0 or self.min_samples < 1:
            raise ValueError("round_time must be > 0 and min_samples >= 1")
        if self.trials < 1 or self.entries < 1:
            raise ValueError("trials and entries must be >= 1")


QUICK = Config(rounds=5, round_time=0.01, min_samples=2, trials=30, entries=2_000)
FULL = Config()


@dataclass(frozen=True)
class Candidate:
    """One way of doing a group's work.

    Attributes:
        name: Shown in the table.
        fn: Performs ``ops`` operations per call; a coroutine function for async groups.
        ops: Operations per call of ``fn``.
        role: ``"baseline"`` (ratio 1.00), ``"ours"`` (this library) or ``"other"``.
        key: Short name that targets refer to (``"ours"``, ``"msgspec"``, ``"pydantic"``, ...).

    """

    name: str
    fn: SyncFn | AsyncFn
    ops: int = 1
    role: Role = "other"
    key: str = ""


@dataclass
class Result:
    """What was measured for one candidate of a group."""

    name: str
    key: str
    role: Role
    ops: int
    #: Mean seconds per operation, one entry per round.
    round_times: list[float] = field(default_factory=list)
    #: Seconds per operation of every sample of every round.
    samples: list[float] = field(default_factory=list)
    #: Baseline time / this time, one entry per round (> 1: faster than the baseline).
    ratios: list[float] = field(default_factory=list)
    #: Median of :attr:`ratios` (> 1: faster than the baseline).
    ratio: float = 1.0

    @property
    def seconds_per_op(self) -> float:
        """Median over rounds of the mean time per operation."""
        return statistics.median(self.round_times)

    @property
    def ops_per_second(self) -> float:
        """Operations per second at the median round."""
        return 1.0 / self.seconds_per_op

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of per-operation sample times, in seconds."""
        return percentile(self.samples, q)

    def spread(self) -> float:
        """Relative spread of the round times: (max - min) / median."""
        return (max(self.round_times) - min(self.round_times)) / self.seconds_per_op


@dataclass
class GroupResult:
    """One table: all candidates of one comparison, the baseline first.

    Attributes:
        group: The ``--only`` group it belongs to (``"codec"``, ``"single"``, ...).
        table: Its id, which targets refer to (``"codec.encode_one"``).
        name: Heading.
        title: Header of the first column.
        unit: What one operation is (``"op"``, ``"batch"``).

    """

    group: str
    table: str
    name: str
    title: str
    unit: str
    results: list[Result]
    notes: list[str] = field(default_factory=list)

    def get(self, key: str) -> Result | None:
        """The result of the candidate with this key, if it ran."""
        return next((r for r in self.results if r.key == key), None)

    def speedup(self, key: str, over: str) -> float | None:
        """How many times faster candidate ``key`` is than ``over`` (paired per round)."""
        a, b = self.get(key), self.get(over)
        if a is None or b is None:
            return None
        return statistics.median(x / y for x, y in zip(a.ratios, b.ratios, strict=True))


@dataclass
class Figures:
    """A small table of measured values that are not a timing comparison.

    Attributes:
        group: The ``--only`` group it belongs to.
        table: Its id, which targets refer to (``"near.invalidation"``).
        name: Heading.
        columns: Header of each column.
        rows: The cells, already formatted.
        values: The measured numbers by name, for targets and the JSON file.

    """

    group: str
    table: str
    name: str
    columns: list[str]
    rows: list[list[str]]
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0-100) of ``values`` with linear interpolation."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _time_sync(fn: SyncFn, samples: int) -> list[float]:
    clock = time.perf_counter
    out: list[float] = []
    append = out.append
    for _ in range(samples):
        start = clock()
        fn()
        append(clock() - start)
    return out


async def _time_async(fn: AsyncFn, samples: int) -> list[float]:
    clock = time.perf_counter
    out: list[float] = []
    for _ in range(samples):
        start = clock()
        await fn()
        out.append(clock() - start)
    return out


class Runner:
    """Times candidates, sync ones directly and async ones on ``loop``."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.loop = loop

    def _time(self, candidate: Candidate, samples: int) -> list[float]:
        fn = candidate.fn
        if inspect.iscoroutinefunction(fn):
            if self.loop is None:
                raise RuntimeError(f"{candidate.name}: an async candidate needs an event loop")
            return self.loop.run_until_complete(_time_async(fn, samples))
        return _time_sync(fn, samples)

    def _samples_per_round(self, candidate: Candidate) -> int:
        """Run a few calls (warming caches and connections) and size a round from them."""
        self._time(candidate, 2)
        start = time.perf_counter()
        probe = self._time(candidate, 3)
        per_call = max(min(probe), 1e-7)
        elapsed = time.perf_counter() - start
        if elapsed > self.config.round_time:
            return self.config.min_samples
        return max(self.config.min_samples, int(self.config.round_time / per_call))

    def run(
        self,
        group: str,
        table: str,
        name: str,
        title: str,
        candidates: Sequence[Candidate],
        *,
        unit: str = "op",
        notes: Sequence[str] = (),
    ) -> GroupResult:
        """Measure ``candidates`` in interleaved rounds; the one with role baseline is 1.00x."""
        baselines = [c for c in candidates if c.role == "baseline"]
        if len(baselines) != 1:
            raise ValueError(f"{name}: exactly one baseline candidate is needed")
        ordered = baselines + [c for c in candidates if c.role != "baseline"]
        results = [Result(c.name, c.key or c.name, c.role, c.ops) for c in ordered]
        counts = [self._samples_per_round(c) for c in ordered]
        # Everything alive now (libraries, fixtures) is left out of later collections, so that a
        # full collection costs the same whichever competitor libraries happen to be imported.
        gc.collect()
        gc.freeze()
        n = len(ordered)
        for round_index in range(self.config.rounds):
            per_op = [0.0] * n
            for k in range(n):
                index = (round_index + k) % n
                candidate, result = ordered[index], results[index]
                gc.collect()
                self._time(candidate, 1)  # re-warm after the previous candidate
                times = self._time(candidate, counts[index])
                ops = candidate.ops
                result.samples.extend(t / ops for t in times)
                per_op[index] = math.fsum(times) / (len(times) * ops)
                result.round_times.append(per_op[index])
            for index, result in enumerate(results):
                result.ratios.append(per_op[0] / per_op[index])
        for result in results:
            result.ratio = statistics.median(result.ratios)
        return GroupResult(group, table, name, title, unit, results, list(notes))


# -- formatting ------------------------------------------------------------------------------


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def markdown_table(result: GroupResult) -> str:
    """One markdown table: ops/s, µs/op, p50/p99 and the ratio to the baseline."""
    unit = result.unit
    lines = [
        f"| {result.title} | {unit}/s | µs/{unit} | p50 µs | p99 µs | vs baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result.results:
        label = {"baseline": f"{r.name} (baseline)", "ours": f"**{r.name}**"}.get(r.role, r.name)
        lines.append(
            f"| {label} | {_fmt_rate(r.ops_per_second)} | {_fmt_us(r.seconds_per_op)} "
            f"| {_fmt_us(r.percentile(50))} | {_fmt_us(r.percentile(99))} | {r.ratio:.2f}x |"
        )
    return "\n".join(lines)


def figures_table(figures: Figures) -> str:
    """The figures as a markdown table (every column but the first right-aligned)."""
    lines = [
        "| " + " | ".join(figures.columns) + " |",
        "|---|" + "---:|" * (len(figures.columns) - 1),
        *("| " + " | ".join(row) + " |" for row in figures.rows),
    ]
    return "\n".join(lines)


def group_section(result: GroupResult | Figures, level: int = 3) -> str:
    """A heading, the table and the group's notes."""
    table = figures_table(result) if isinstance(result, Figures) else markdown_table(result)
    parts = [f"{'#' * level} {result.name}", "", table]
    if result.notes:
        parts += ["", *(f"- {note}" for note in result.notes)]
    return "\n".join(parts)
