# sim/plotting.py: what the simulator's and the benchmark's plots share: matplotlib on its Agg
# backend (no display needed), a percentile axis counted in nines, microsecond tick labels, and
# saving a figure as a PNG.
#
# Rules: matplotlib is the optional extra `plot` (pip install -e '.[plot]'); nothing here is
# imported by a run that draws no plot, and `available()` says whether one can be drawn. Figures
# are built whole by the caller (`new_figure`), so a test can look at their axes and titles
# before anything is written.
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL = "pip install -e '.[plot]' (matplotlib)"
NINES_TICKS = ((50.0, "50"), (90.0, "90"), (99.0, "99"), (99.9, "99.9"), (99.99, "99.99"))
X_MAX = 4.0  # the 99.99th percentile: four nines


def available() -> bool:
    """Is matplotlib installed?"""
    return importlib.util.find_spec("matplotlib") is not None


def nines(p: float) -> float:
    """Percentile -> position on the nines axis (50 -> 0.30, 90 -> 1, 99 -> 2, 99.9 -> 3)."""
    return -math.log10(max(1e-6, 1.0 - p / 100.0))


def us_label(v: float, _pos: Any = None) -> str:
    """A tick label for a value in µs: 450 µs, 2.5 ms, 1.2 s."""
    if v >= 1e6:
        return f"{v / 1e6:g} s"
    if v >= 1000:
        return f"{v / 1000:g} ms"
    return f"{v:g} µs"


def new_figure(rows: int, cols: int, title: str, *, width: float = 7.0,
               height: float = 4.2) -> tuple[Figure, list[Axes]]:  # fmt: skip
    """A figure of rows x cols panels (each width x height inches) and its axes, in reading order."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, same output on every machine
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows + 0.6), layout="constrained")
    fig.suptitle(title, fontsize=13)
    grid = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in grid for ax in row]


def percentile_axis(ax: Axes, ylabel: str = "latency") -> None:
    """x: percentiles in nines (the tail as wide as the median); y: logarithmic, in µs/ms/s."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xlim(0.0, X_MAX)
    ax.set_xticks([nines(p) for p, _ in NINES_TICKS], [label for _, label in NINES_TICKS])
    ax.set_xlabel("percentile")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # labels even within one decade
    ax.yaxis.set_major_formatter(FuncFormatter(us_label))
    ax.yaxis.set_minor_formatter(NullFormatter())  # 2×10^3 between 1 ms and 10 ms says nothing more
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", color="#dddddd")


def histogram_curve(buckets: list[tuple[float, int]]) -> tuple[list[float], list[float]]:
    """(x on the nines axis, value) through a histogram's (value, count) buckets, in value order."""
    total = sum(c for _, c in buckets)
    xs, ys, seen = [], [], 0
    for value, count in sorted(buckets):
        seen += count
        share = seen / total
        if share >= 1.0:
            share = 1.0 - 0.5 / total  # the last sample: plotted half a sample short of 100%
        xs.append(min(X_MAX, nines(share * 100.0)))
        ys.append(max(value, 1.0))
    return xs, ys


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
