# bench/plot.py: the comparison as one PNG: latency distributions and the streams ladder.
#
# One panel per scenario (c=1, c=32, each open-loop rate), each showing latency against
# percentile for every target: the median over rounds at each percentile wrk and sim.loadgen
# report. The x axis counts nines (50, 90, 99, 99.9, 99.99), so the tail gets as much room as the
# median; the y axis is logarithmic, so a target ten times slower still fits. A last panel is the
# streams ladder: p99 stream time per concurrency level, one line per target, a cross where a
# level was not held. Drawn with matplotlib through sim/plotting.py, as the simulator's plot is.
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.plotting import INSTALL, available, new_figure, nines, percentile_axis, save

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["INSTALL", "available", "figure", "nines", "render", "save"]

COLORS = {"direct": "#777777", "llm-edge": "#1f64c8", "llm-edge-hit": "#28a046", "nginx": "#e67814",
          "litellm": "#963caa"}  # fmt: skip
EXTRA = ("#009696", "#965a28", "#c8285a")


def panels(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(scenario key, title) of every latency panel."""
    rates = doc["meta"]["settings"]["rates"]
    out = [("c1", "c=1, wrk: serial latency"), ("c32", "c=32, wrk: saturation")]
    return out + [(f"open{r:g}", f"open loop, {r:g} req/s (sim.loadgen)") for r in rates]


def _colors(names: list[str]) -> dict[str, str]:
    extra = iter(EXTRA)
    return {n: COLORS.get(n) or next(extra, "#222222") for n in names}


def _latency(ax: Axes, title: str, key: str, doc: dict[str, Any], names: list[str], colors: dict[str, str]) -> None:
    ax.set_title(title)
    percentile_axis(ax)
    drawn = 0
    for n in names:
        s = doc["summary"][n].get(key, {})
        pts = [(nines(p), v) for p, v in s.get("percentiles") or () if v and v > 0]
        if s.get("answered_rounds") and pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, color=colors[n], label=doc["targets"][n]["label"])
            drawn += 1
    if drawn:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="#999999")


def _ladder(ax: Axes, doc: dict[str, Any], colors: dict[str, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title("streams ladder: p99 stream time per level")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("p99 stream time (ms)")
    ax.grid(True, color="#dddddd")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # levels are stream counts
    levels = (doc.get("streams") or {}).get("levels") or []
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in levels:
        by_target.setdefault(r["target"], []).append(r)
    for name, rows in by_target.items():
        label = doc["targets"].get(name, {}).get("label", name)
        color = colors.get(name, "#222222")
        ax.plot([r["streams"] for r in rows], [r["stream_ms"]["p99"] for r in rows], marker="o", color=color,
                label=label)  # fmt: skip
        lost = [r for r in rows if not r.get("held", True)]
        if lost:
            ax.plot([r["streams"] for r in lost], [r["stream_ms"]["p99"] for r in lost], "x", color="#c00000",
                    markersize=10, markeredgewidth=2)  # fmt: skip
    if by_target:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no ladder run", transform=ax.transAxes, ha="center", color="#999999")


def figure(doc: dict[str, Any]) -> Figure:
    """The figure of `doc` (the comparison's JSON document); not yet written anywhere."""
    m = doc["meta"]
    names = [n for n, info in doc["targets"].items() if info["available"] and n in doc["summary"]]
    colors = _colors([*names, *(n for n in doc["targets"] if n not in names)])
    keys = panels(doc)
    count = len(keys) + 1
    cols = 2
    rows = (count + cols - 1) // cols
    title = (f"Latency by percentile, median of {m['settings']['rounds']} interleaved rounds; "
             f"{m['started']}, {m['machine']['cpu']}")  # fmt: skip
    fig, axes = new_figure(rows, cols, title)
    for ax, (key, panel_title) in zip(axes, keys):
        _latency(ax, panel_title, key, doc, names, colors)
    _ladder(axes[len(keys)], doc, colors)
    for ax in axes[count:]:
        fig.delaxes(ax)
    return fig


def render(doc: dict[str, Any], path: Path) -> Path:
    """Draw `doc` and write it to `path` as a PNG."""
    return save(figure(doc), path)
