# bench/plot.py: the comparison's latency distributions as one PNG (see bench/png.py for the why).
#
# One panel per scenario (c=1, c=32, each open-loop rate; up to four, two by two), each showing
# latency against percentile for every target: the median over rounds at each percentile wrk and
# sim.loadgen report. The x axis counts nines (50, 90, 99, 99.9, 99.99), so the tail gets as much
# room as the median; the y axis is logarithmic, so a target ten times slower still fits.
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from bench.png import Canvas, Color, text_width

COLORS: dict[str, Color] = {
    "direct": (120, 120, 120),
    "llm-edge": (31, 100, 200),
    "llm-edge-hit": (40, 160, 70),
    "nginx": (230, 120, 20),
    "litellm": (150, 60, 170),
}
_EXTRA: list[Color] = [(0, 150, 150), (150, 90, 40), (200, 40, 90)]
INK: Color = (30, 30, 30)
GRID: Color = (222, 222, 222)
AXIS: Color = (150, 150, 150)
X_TICKS = ((0.0, "0"), (50.0, "50"), (90.0, "90"), (99.0, "99"), (99.9, "99.9"), (99.99, "99.99"))
X_MAX = 4.0  # 99.99th percentile = four nines


def nines(p: float) -> float:
    """Percentile -> position on the nines axis (50 -> 0.30, 90 -> 1, 99 -> 2, ...)."""
    return -math.log10(max(1e-6, 1.0 - p / 100.0))


def _y_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    e = math.floor(math.log10(lo))
    while 10**e <= hi * 1.001:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo * 0.999 <= v <= hi * 1.001:
                ticks.append(float(v))
        e += 1
    return ticks


def _bounds(values: list[float]) -> tuple[float, float]:
    lo, hi = max(1.0, min(values)), max(values)
    steps = [m * 10**e for e in range(9) for m in (1, 2, 5)]
    return max([s for s in steps if s <= lo] or [1]), min([s for s in steps if s >= hi] or [hi])


def _us(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}s"
    if v >= 1000:
        return f"{v / 1000:g}ms"
    return f"{v:g}"


def _panel(c: Canvas, x0: int, y0: int, w: int, h: int, title: str, series: list[tuple[str, Color, list[list[float]]]]) -> None:
    c.text(x0 + w // 2, y0, title, INK, 2, "center")
    left, right, top, bottom = x0 + 70, x0 + w - 35, y0 + 34, y0 + h - 45
    values = [v for _, _, pts in series for _, v in pts if v and v > 0]
    if not values:
        c.text(x0 + w // 2, y0 + h // 2, "no data", AXIS, 2, "center")
        return
    lo, hi = _bounds(values)
    lo_l, hi_l = math.log10(lo), math.log10(hi)
    span = hi_l - lo_l or 1.0

    def px(u: float) -> float:
        return left + (right - left) * min(u, X_MAX) / X_MAX

    def py(v: float) -> float:
        return bottom - (bottom - top) * (math.log10(max(v, lo)) - lo_l) / span

    for v in _y_ticks(lo, hi):
        y = round(py(v))
        c.line(left, y, right, y, GRID)
        c.text(left - 8, y - 7, _us(v), INK, 2, "right")
    for p, label in X_TICKS:
        x = round(px(nines(p)))
        c.line(x, top, x, bottom, GRID)
        c.text(x, bottom + 8, label, INK, 2, "center")
    c.line(left, bottom, right, bottom, AXIS)
    c.line(left, top, left, bottom, AXIS)
    c.text((left + right) // 2, bottom + 28, "percentile", INK, 2, "center")
    for _, color, points in series:
        xy = [(px(nines(p)), py(v)) for p, v in points if v and v > 0]
        for (ax, ay), (bx, by) in itertools.pairwise(xy):
            c.line(ax, ay, bx, by, color, 3)
        for fx, fy in xy:
            c.box(round(fx) - 3, round(fy) - 3, round(fx) + 3, round(fy) + 3, color)


def render(doc: dict[str, Any], path: Path) -> None:
    """Write the plot of `doc` (the comparison's JSON document) to `path`."""
    summary, targets = doc["summary"], doc["targets"]
    rates = doc["meta"]["settings"]["rates"]
    panels = [("c1", "c=1, wrk: serial latency"), ("c32", "c=32, wrk: saturation")]
    panels += [(f"open{r:g}", f"open loop, {r:g} req/s (sim.loadgen)") for r in rates]
    panels = panels[:4]
    names = [n for n, info in targets.items() if info["available"] and n in summary]
    extra = iter(_EXTRA)
    colors = {n: COLORS.get(n) or next(extra, INK) for n in names}
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    pw, ph = 640, 420
    width, height = pw * cols, 110 + ph * rows
    c = Canvas(width, height)
    m = doc["meta"]
    c.text(width // 2, 14, f"Latency by percentile, median of {m['settings']['rounds']} interleaved rounds", INK, 3, "center")
    c.text(width // 2, 46, f"latency in µs (ms where marked), {m['started']}, {m['machine']['cpu']}", AXIS, 2, "center")
    x = (width - sum(text_width(targets[n]["label"]) + 60 for n in names)) // 2
    for n in names:
        c.line(x, 82, x + 30, 82, colors[n], 4)
        x += 40 + c.text(x + 40, 75, targets[n]["label"], INK, 2) + 20
    for i, (key, title) in enumerate(panels):
        series = [(n, colors[n], summary[n][key]["percentiles"]) for n in names
                  if summary[n].get(key, {}).get("answered_rounds")]  # fmt: skip
        _panel(c, (i % cols) * pw + 10, 110 + (i // cols) * ph, pw - 20, ph - 10, title, series)
    path.write_bytes(c.png())
