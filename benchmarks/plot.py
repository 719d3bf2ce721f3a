"""Draw the ratios to the baselines (matplotlib, from the ``plot`` dependency group).

``python -m benchmarks.plot results.json out.svg`` redraws a plot from a saved run
(``python -m benchmarks --json results.json``). The format follows the file's extension.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import GroupResult
from benchmarks.targets import TARGETS

_COLOURS = {"ours": "#1f77b4", "other": "#ff7f0e"}


def have_matplotlib() -> bool:
    """True when matplotlib is importable."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def plot(results: Sequence[GroupResult], path: str | Path, subtitle: str = "") -> None:
    """Draw every non-baseline candidate's speed ratio to its table's baseline.

    Ticks on our bars mark the targets that are stated against the baseline.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = {
        t.table: t.at_least for t in TARGETS if t.key == "ours" and t.over in ("raw", "msgspec")
    }
    labels: list[str] = []
    bold: list[bool] = []
    bars: list[tuple[int, float, str, float | None]] = []
    for group in results:
        baseline = group.results[0]
        labels.append(f"{group.title}  (baseline: {baseline.name})")
        bold.append(True)
        for r in group.results[1:]:
            target = thresholds.get(group.table) if r.key == "ours" else None
            bars.append((len(labels), r.ratio, r.role, target))
            labels.append(r.name)
            bold.append(False)
    rows = len(labels)
    fig: Any
    ax: Any
    fig, ax = plt.subplots(figsize=(9.0, 0.27 * rows + 1.3))
    ys = [rows - 1 - i for i in range(rows)]
    for index, ratio, role, target in bars:
        y = ys[index]
        ax.barh(y, ratio, height=0.65, color=_COLOURS.get(role, "#7f7f7f"), left=0)
        ax.text(max(ratio, target or 0) * 1.05, y, f"{ratio:.2f}x", va="center", fontsize=7)
        if target is not None:
            ax.plot([target, target], [y - 0.42, y + 0.42], color="black", linewidth=1.2)
    ax.axvline(1.0, color="#444444", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ratios = [b[1] for b in bars] or [1.0]
    lo, hi = min(0.05, min(ratios) / 1.5), max(2.0, max(ratios) * 1.6)
    ax.set_xlim(lo, hi)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    for tick, is_bold in zip(ax.get_yticklabels(), bold, strict=True):
        if is_bold:
            tick.set_fontweight("bold")
    ax.set_ylim(-0.7, rows - 0.3)
    ax.set_xlabel("speed relative to the table's baseline (log scale; > 1 is faster)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ticks = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
    ax.set_xticks([t for t in ticks if lo <= t <= hi])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_ratio_label))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    title = "cache-service-client benchmarks: ratio to baseline (blue: ours; tick: target)"
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    out = Path(path)
    if out.suffix.lower() == ".svg":
        matplotlib.rcParams["svg.fonttype"] = "none"
        fig.savefig(out, metadata={"Date": None})
    else:
        fig.savefig(out, dpi=100)
    plt.close(fig)


def _ratio_label(value: float, _pos: object) -> str:
    return f"{value:g}x"


def main(argv: Sequence[str] | None = None) -> None:
    """Redraw a plot from a run saved with ``--json``."""
    from benchmarks.report import from_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__)
    parser.add_argument("results", help="a JSON file written by `python -m benchmarks --json`")
    parser.add_argument("out", help="the image to write (.svg, .png, ...)")
    args = parser.parse_args(argv)
    groups, info, _ = from_json(Path(args.results).read_text())
    plot(groups, args.out, subtitle=f"{info.get('cpu', '')}, {info.get('cpus (nproc)', '?')} CPUs")


if __name__ == "__main__":
    main()
