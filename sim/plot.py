# sim/plot.py: `python -m sim --plot FILE.png`: what a simulator run looked like, as one figure.
#
# Panels: (a) the client latency distribution (every answer, and cache hits and misses apart when
# the run had repeats), from the load process's histograms; (b) the gateway's own overhead
# distribution, from the cumulative buckets of its /metrics `llm_edge_overhead_seconds` with the
# finer /stats percentiles marked; (c) each provider's share of the answers over time, for the run
# itself and for each scenario run (failover, slowdown), with the moments the mock was degraded and
# restored marked, so the switch and the switch back show as curves; (d) the cost per provider.
# Latency axes count nines, as bench's plot does (sim/plotting.py).
#
# Rules: pure (no I/O; `figure` builds, `sim.plotting.save` writes). Shares are smoothed over
# SMOOTH_BUCKETS timeline buckets (0.1 s each), and a bucket with no answers is left out.
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sim.hist import Histogram, bucket_range
from sim.plotting import histogram_curve, new_figure, nines, percentile_axis, us_label
from sim.results import TIMELINE_HZ, Results

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SMOOTH_BUCKETS = 3
OVERHEAD_FAMILY = "llm_edge_overhead_seconds_bucket"
COLORS = ("#1f64c8", "#e67814", "#28a046", "#963caa", "#009696", "#c8285a")


@dataclass
class PlotRun:
    """One simulator run, as the plot needs it."""

    name: str  # "this run", or the scenario's name
    report: dict[str, Any]
    results: Results
    overhead_buckets: list[tuple[float, int]] = field(default_factory=list)  # (le in µs, cumulative count)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # provider -> (input, output) $/Mtok


def overhead_buckets(metrics_text: str, family: str = OVERHEAD_FAMILY) -> list[tuple[float, int]]:
    """(upper bound in µs, cumulative count) of a histogram family in Prometheus text, summed over
    every label set, in bound order; `+Inf` is left out (the count says the same)."""
    sums: dict[float, int] = {}
    for line in metrics_text.splitlines():
        if not line.startswith(family + "{"):
            continue
        labels, _, value = line[len(family) + 1 :].rpartition("} ")
        le = next((part.split("=", 1)[1].strip('"') for part in labels.split(",") if part.startswith("le=")), "")
        if not le or le == "+Inf":
            continue
        bound = float(le) * 1e6
        sums[bound] = sums.get(bound, 0) + int(float(value))
    return sorted(sums.items())


def histogram_buckets(h: Histogram) -> list[tuple[float, int]]:
    """(bucket midpoint in µs, count) of every bucket that holds a sample."""
    out = []
    for i, c in enumerate(h.counts):
        if c:
            low, high = bucket_range(i)
            out.append((low if high - low == 1 else (low + high - 1) / 2, c))
    return out


def shares_over_time(results: Results, smooth: int = SMOOTH_BUCKETS) -> tuple[list[float], dict[str, list[float]]]:
    """Seconds since the start, and each provider's share of the answers then (0..1), smoothed."""
    timeline = results.timeline
    if not timeline:
        return [], {}
    names: list[str] = []
    for b in sorted(timeline):
        names += [n for n in timeline[b] if n not in names]
    first, last = min(timeline), max(timeline)
    times: list[float] = []
    series: dict[str, list[float]] = {n: [] for n in names}
    for b in range(first, last + 1):
        window = [timeline.get(i, {}) for i in range(b - smooth // 2, b + smooth // 2 + 1)]
        total = sum(sum(w.values()) for w in window)
        if not total or not timeline.get(b):
            continue
        times.append((b + 0.5) / TIMELINE_HZ)
        for n in names:
            series[n].append(sum(w.get(n, 0) for w in window) / total)
    return times, series


def _colors(runs: list[PlotRun]) -> dict[str, str]:
    names: list[str] = []
    for r in runs:
        for b in sorted(r.results.timeline):
            names += [n for n in r.results.timeline[b] if n not in names]
        names += [p["name"] for p in r.report.get("providers") or () if p["name"] not in names]
    return {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}


def _latency(ax: Axes, run: PlotRun) -> None:
    ax.set_title("(a) client latency distribution")
    percentile_axis(ax)
    curves = [("every answer", run.results.latency, "#222222")]
    curves += [(f"cache {k}", h, c) for (k, h), c in zip(sorted(run.results.cache_latency.items()),
                                                         ("#28a046", "#c8285a")) if h.n]  # fmt: skip
    for label, h, color in curves:
        if h.n:
            ax.plot(*histogram_curve(histogram_buckets(h)), color=color, label=f"{label} ({h.n})")
    ax.legend(fontsize=8, loc="upper left")


def _overhead(ax: Axes, run: PlotRun) -> None:
    ax.set_title("(b) the gateway's own overhead per request")
    percentile_axis(ax, "overhead")
    cum = run.overhead_buckets
    total = cum[-1][1] if cum else 0
    stats = run.report.get("overhead_us") or {}
    if total:
        pts = []
        for le, c in cum:
            if c:
                pts.append((min(4.0, nines(100.0 * c / total)) if c < total else 4.0, le))
            if c == total:
                break  # every request is under this bound: the larger bounds add nothing
        ax.step([x for x, _ in pts], [y for _, y in pts], where="pre", color="#1f64c8",
                label=f"/metrics bucket bounds, at or under ({total} requests)")  # fmt: skip
    marks = [(q, stats[k]) for q, k in ((50.0, "p50"), (90.0, "p90"), (99.0, "p99")) if stats.get(k)]
    if marks:
        ax.plot([nines(q) for q, _ in marks], [v for _, v in marks], "o", color="#e67814",
                label="/stats " + ", ".join(f"p{q:g} {us_label(v)}" for q, v in marks))  # fmt: skip
    if total or marks:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no overhead figures from the gateway", transform=ax.transAxes, ha="center")


def _shares(ax: Axes, run: PlotRun, colors: dict[str, str]) -> None:
    scen = run.report.get("scenario")
    ax.set_title(f"(c) provider share over time: {run.name}")
    ax.set_xlabel("seconds since the start")
    ax.set_ylabel("share of answers")
    ax.set_ylim(0.0, 1.0)
    times, series = shares_over_time(run.results)
    if times:
        names = list(series)
        ax.stackplot(times, *(series[n] for n in names), labels=names, colors=[colors[n] for n in names],
                     alpha=0.85)  # fmt: skip
        ax.set_xlim(0.0, max(times[-1], run.results.elapsed_s))
    for i, e in enumerate((scen or {}).get("events") or ()):
        ax.axvline(e["at_s"], color="#222222", linestyle="--", linewidth=1)
        ax.text(e["at_s"], 0.97 - 0.09 * (i % 2), f" {e['provider']} {e['label']}", fontsize=7, va="top",
                bbox={"facecolor": "white", "alpha": 0.75, "linewidth": 0})  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")


def _cost(ax: Axes, run: PlotRun, colors: dict[str, str]) -> None:
    ax.set_title("(d) cost per provider")
    providers = run.report.get("providers") or []
    names = [p["name"] for p in providers]
    spend = [p["spend_usd"] for p in providers]
    bars = ax.bar(names, spend, color=[colors.get(n, "#777777") for n in names])
    for bar, p in zip(bars, providers):
        price = run.prices.get(p["name"])
        rate = f"\n\\${price[0]:g} in / \\${price[1]:g} out per Mtok" if price else ""  # \\$: a dollar, not mathtext
        ax.annotate(f"\\${p['spend_usd']:.4f}, {p['requests']} requests{rate}", (bar.get_x() + bar.get_width() / 2,
                    bar.get_height()), ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylabel("spend (USD)")
    ax.margins(y=0.3)


def figure(main: PlotRun, scenarios: Sequence[PlotRun] = ()) -> Figure:
    """The whole figure: (a), (b), (c) for the run and each scenario run, (d)."""
    runs = [main, *scenarios]
    colors = _colors(runs)
    count = 4 + len(scenarios)
    rows = (count + 1) // 2
    rep = main.report
    title = (f"llm-edge sim: {rep['total_requests']} requests at {rep['rps']:.0f} req/s, "
             f"{rep['errors']} errors; {len(scenarios)} scenario runs")  # fmt: skip
    fig, axes = new_figure(rows, 2, title)
    _latency(axes[0], main)
    _overhead(axes[1], main)
    _shares(axes[2], main, colors)
    _cost(axes[3], main, colors)
    for ax, run in zip(axes[4:], scenarios):
        _shares(ax, run, colors)
    for ax in axes[count:]:
        fig.delaxes(ax)
    return fig
