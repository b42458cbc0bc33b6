# bench/report.py: from raw runs to medians, ratios, the bar, and the tables people read.
#
# Rules: pure functions over plain dicts (the JSON document is the source of truth; text, markdown
# and the plot are views of it). A figure is the median over rounds of that figure per round; an
# "added" latency is, per round, the target's percentile minus direct's in the same round, then
# the median of those differences, so a noisy stretch of the run moves both sides of a difference.
# Ratios are to nginx-as-a-proxy, the C reference. Nothing here starts a process except
# `versions()`, which asks a few binaries for their version.
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench import servers, wrk

FIELDS = ("p50", "p90", "p99", "p99.9")
BAR = (
    # key, text, limit, "le" (value must be <= limit) or "ge"
    ("added_p50_c1", "Latency added at c=1, p50 ≤ 1.5× nginx's", 1.5, "le"),
    ("added_p99_c1", "Latency added at c=1, p99 ≤ 2× nginx's", 2.0, "le"),
    ("rps_c32", "Saturation throughput ≥ 0.6× nginx's", 0.6, "ge"),
    ("cpu_c32", "CPU time per request ≤ 1.5× nginx's", 1.5, "le"),
    ("hit_rps_c32", "Cache-hit throughput ≥ nginx's proxied throughput", 1.0, "ge"),
    ("streams", "Concurrent streams held without a stall, one core ≥ 2000", 2000, "ge"),
)


def machine() -> dict[str, Any]:
    """CPU model, cores, kernel, OS, Python, and the load average when the run started."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pretty = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "os": pretty,
        "python": platform.python_version(), "loadavg_at_start": os.getloadavg()[0],
    }  # fmt: skip


def versions(extra: dict[str, str]) -> dict[str, str]:
    """Versions of everything measured or measuring."""
    from proxy import __version__

    out = {"llm-edge": __version__ + _git_rev(), "nginx": servers.nginx_version(), "wrk": wrk.wrk_version()}
    for dist in ("uvloop", "httptools", "orjson"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = ""
    out.update(extra)
    return out


def _git_rev() -> str:
    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None:
        return ""
    rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False)  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if rev.returncode != 0:
        return ""
    return f" ({rev.stdout.strip()}{', with local changes' if dirty.stdout.strip() else ''})"


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> scenario -> medians over rounds (and the per-round differences to direct)."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    skipped: dict[tuple[str, str], str] = {}
    for r in runs:
        if r["round"] < 0:
            continue
        if "skipped" in r:
            skipped[(r["target"], r["scenario"])] = r["skipped"]
        else:
            by.setdefault((r["target"], r["scenario"]), []).append(r)
    direct = {(r["scenario"], r["round"]): r for r in runs if r["target"] == "direct" and "skipped" not in r}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, note in skipped.items():
        if key not in by:
            out.setdefault(key[0], {})[key[1]] = {"skipped": note}
    for (target, scenario), all_runs in by.items():
        # Latency comes only from runs that got answers; a run where every request failed has none.
        rs = [r for r in all_runs if r.get("ok", r["requests"]) > 0] or all_runs[:1]
        m: dict[str, Any] = {
            "rounds": len(all_runs),
            "answered_rounds": sum(1 for r in all_runs if r.get("ok", r["requests"]) > 0),
            "rps": _median([r["rps"] for r in all_runs]),
            "errors": sum(r["errors"] for r in all_runs),
            "cpu_us_per_req": _median([r["cpu_us_per_req"] for r in rs]),
            "cpu_us_per_req_all": [r["cpu_us_per_req"] for r in rs],
            "upstream_cpu_us_per_req": _median([r["upstream_cpu_us_per_req"] for r in rs]),
            "load_core_busy": _median([r["load_core_busy"] for r in rs]),
            "latency_us": {f: _median([r["latency_us"].get(f) for r in rs]) for f in FIELDS},
            "percentiles": [[p, _median([r["percentiles"][i][1] for r in rs])]
                            for i, (p, _) in enumerate(rs[0]["percentiles"])],
        }  # fmt: skip
        if "ttfb_us" in rs[0]:
            m["ttfb_us"] = {f: _median([r["ttfb_us"].get(f) for r in rs]) for f in FIELDS}
        if target != "direct":
            field = "ttfb_us" if scenario == "ttfb" else "latency_us"
            added: dict[str, float | None] = {}
            for f in FIELDS:
                diffs = [r[field][f] - direct[(scenario, r["round"])][field][f]
                         for r in rs if (scenario, r["round"]) in direct and r[field].get(f) is not None
                         and r.get("ok", r["requests"]) > 0]  # fmt: skip
                added[f] = _median(diffs)
            m["added_us"] = added
        out.setdefault(target, {})[scenario] = m
    return out


def _get(summary: dict[str, Any], target: str, scenario: str, *path: str) -> float | None:
    node: Any = summary.get(target, {}).get(scenario)
    for p in path:
        if node is None:
            return None
        node = node.get(p)
    return node


def ratios(summary: dict[str, Any], target: str) -> dict[str, float | None]:
    """The target's figures over nginx's: the quantities the bar is written in."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b not in (None, 0) else None

    def against_nginx(*path: str) -> float | None:
        return ratio(_get(summary, target, *path), _get(summary, "nginx", *path))

    return {
        "added_p50_c1": against_nginx("c1", "added_us", "p50"),
        "added_p99_c1": against_nginx("c1", "added_us", "p99"),
        "rps_c32": against_nginx("c32", "rps"),
        "cpu_c32": against_nginx("c32", "cpu_us_per_req"),
    }


def bar(summary: dict[str, Any], ladder: dict[str, Any], targets: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's bar, item by item: value, limit, verdict, and how far off when it is missed."""
    r = ratios(summary, "llm-edge")
    hit_ok = targets.get("llm-edge-hit", {}).get("available", False)
    r["hit_rps_c32"] = ratios(summary, "llm-edge-hit")["rps_c32"] if hit_ok else None
    held = ladder.get("held", {}).get("llm-edge") if ladder else None
    tried = max(ladder.get("settings", {}).get("levels", [0]) or [0]) if ladder else 0
    r["streams"] = held
    def n_edge(scen: str, *p: str) -> Any:
        return _get(summary, "llm-edge", scen, *p)

    def n_ngx(scen: str, *p: str) -> Any:
        return _get(summary, "nginx", scen, *p)

    out = []
    for key, text, limit, how in BAR:
        value = r.get(key)
        item: dict[str, Any] = {"key": key, "text": text, "value": value, "limit": limit}
        if value is None:
            item["ok"] = None
            hit_note = targets.get("llm-edge-hit", {}).get("note") or "not measured"
            item["note"] = hit_note if key == "hit_rps_c32" else "not measured"
        else:
            item["ok"] = value <= limit if how == "le" else value >= limit
            if key == "streams" and not item["ok"] and held == tried:
                item["ok"] = None
                item["note"] = f"held every level tried (up to {tried}); try higher --stream-levels"
            elif not item["ok"]:
                item["note"] = _shortfall(key, value, limit, n_edge, n_ngx)
        out.append(item)
    return out


def _shortfall(key: str, value: float, limit: float, edge: Any, ngx: Any) -> str:
    if key in ("added_p50_c1", "added_p99_c1"):
        f = "p50" if key.endswith("p50_c1") else "p99"
        have, ref = edge("c1", "added_us", f), ngx("c1", "added_us", f)
        return f"adds {have:.0f} µs against nginx's {ref:.0f}: {have - limit * ref:.0f} µs over the {limit:g}× limit"
    if key == "rps_c32":
        have, ref = edge("c32", "rps"), ngx("c32", "rps")
        more = 100 * (limit * ref / have - 1)
        return f"{have:.0f} req/s against nginx's {ref:.0f}: needs {limit * ref:.0f}, {more:.0f}% more"
    if key == "cpu_c32":
        have, ref = edge("c32", "cpu_us_per_req"), ngx("c32", "cpu_us_per_req")
        return f"{have:.1f} µs/req against nginx's {ref:.1f}: {have - limit * ref:.1f} µs/req over the {limit:g}× limit"
    if key == "hit_rps_c32":
        return f"{value:.2f}× nginx's proxied throughput: {100 * (1 / value - 1):.0f}% short"
    if key == "streams":
        return f"held {value:.0f} streams; {limit - value:.0f} short"
    return ""


def build(meta: dict[str, Any], targets: list[Any], runs: list[dict[str, Any]], ladder: dict[str, Any],
          profile: dict[str, Any], gateway_stats: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The JSON document: meta, targets, every run, medians, ratios, the bar, streams, profile."""
    tinfo = {
        t.name: {
            "label": t.label, "available": t.available, "note": t.note,
            "rss_mib": round(t.memory[0] / 1024, 1) if t.memory[0] else None,
            "peak_rss_mib": round(t.memory[1] / 1024, 1) if t.memory[1] else None,
        }
        for t in targets
    }  # fmt: skip
    summary = summarize(runs)
    return {
        "meta": meta,
        "targets": tinfo,
        "summary": summary,
        "ratios": {name: ratios(summary, name) for name in tinfo if name not in ("direct",)},
        "bar": bar(summary, ladder, tinfo),
        "streams": ladder,
        "profile": profile,
        "gateway_stats": {k: gateway_stats.get(k) for k in ("requests", "overhead_us", "latency_us", "ttfb_us")}
        if gateway_stats else {},
        "runs": runs,
    }


# views


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _status(summary: dict[str, Any], name: str, scenario: str) -> str | None:
    """Why a cell has no figures ("over capacity", "no answers", "–"), or None when it has some."""
    node = summary.get(name, {}).get(scenario)
    if node is None:
        return "–"
    if "skipped" in node:
        return "over capacity"
    if node.get("answered_rounds") == 0:
        return "no answers"
    return None


def tables(doc: dict[str, Any]) -> str:
    """The two result tables (markdown pipes, which read fine in a terminal too)."""
    summary, targets = doc["summary"], doc["targets"]
    s = doc["meta"]["settings"]
    rows1, rows2, notes = [], [], []
    for name, info in targets.items():
        if not info["available"]:
            rows1.append([info["label"], *["n/a"] * 9])
            rows2.append([info["label"], *["n/a"] * (3 + len(s["rates"]))])
            notes.append(f"{info['label']}: {info['note']}")
            continue
        g = functools.partial(_get, summary, name)
        rt = doc["ratios"].get(name, {})
        errs = sum((summary.get(name, {}).get(sc, {}).get("errors") or 0) for sc in summary.get(name, {}))
        label = info["label"] + (f" ({errs} errors)" if errs else "")

        def cell(scen: str, key: str, fields: tuple[str, ...], name: str = name, g: Any = g) -> str:
            status = _status(summary, name, scen)
            return status or "/".join(_f(g(scen, key, f)) for f in fields)

        lat = cell("c1", "latency_us", ("p50", "p90", "p99"))
        added = "–" if name == "direct" else cell("c1", "added_us", ("p50", "p99"))
        ratio_cells = [("–" if name in ("direct",) else _f(rt.get(k), "{:.2f}"))
                       for k in ("rps_c32", "added_p50_c1", "added_p99_c1", "cpu_c32")]
        rows1.append([
            label, _f(g("c32", "rps")), lat, added, _f(g("c32", "cpu_us_per_req"), "{:.1f}"),
            _f(info["rss_mib"], "{:.1f}"), *ratio_cells,
        ])  # fmt: skip
        opens = [cell(f"open{r:g}", "latency_us", ("p50", "p99")) for r in s["rates"]]
        c32 = cell("c32", "latency_us", ("p50", "p99"))
        ttfb = _status(summary, name, "ttfb") or (
            _f(g("ttfb", "ttfb_us", "p50")) + ("" if name == "direct" else f" (+{_f(g('ttfb', 'added_us', 'p50'))})")
        )
        held = doc["streams"].get("held", {}).get(name) if doc["streams"] else None
        levels = doc["streams"].get("settings", {}).get("levels") if doc["streams"] else None
        held_text = "–" if held is None else (f"< {levels[0]}" if held == 0 and levels else str(held))
        rows2.append([label, c32, *opens, ttfb, held_text])
    t1 = _table(["target", "RPS c=32", "c=1 p50/p90/p99 µs", "added c=1 p50/p99 µs", "CPU µs/req", "RSS MiB",
                 "RPS ×nginx", "added p50 ×nginx", "added p99 ×nginx", "CPU ×nginx"], rows1)  # fmt: skip
    t2 = _table(["target", "c=32 p50/p99 µs", *(f"open {r:g}/s p50/p99 µs" for r in s["rates"]),
                 "SSE TTFB p50 µs (added)", "streams held"], rows2)  # fmt: skip
    out = t1 + "\n\n" + t2
    if notes:
        out += "\n\n" + "\n".join(f"* {n}" for n in notes)
    return out


def bar_text(doc: dict[str, Any]) -> str:
    """The bar, one line per item."""
    lines = []
    for item in doc["bar"]:
        mark = {True: "PASS", False: "MISS", None: "n/a "}[item["ok"]]
        v = item["value"]
        value = "–" if v is None else (f"{v:.0f}" if item["key"] == "streams" else f"{v:.2f}×")
        note = f" ({item['note']})" if item.get("note") else ""
        lines.append(f"- {mark} {item['text']}: {value}{note}")
    return "\n".join(lines)


def streams_table(doc: dict[str, Any]) -> str:
    """The streaming ladder, one row per level and target."""
    ladder = doc["streams"]
    if not ladder or not ladder.get("levels"):
        return ""
    rows = []
    for r in ladder["levels"]:
        rows.append([
            r["target"], str(r["streams"]), str(r["completed"]), str(r["errors"]),
            "/".join(_f(r["stream_ms"].get(f)) for f in ("p50", "p99")), _f(r.get("p99_over_direct_ms")),
            "/".join(_f(r["ttfb_ms"].get(f), "{:.1f}") for f in ("p50", "p99")),
            _f(r["proxy_core_busy"] * 100 if r["proxy_core_busy"] is not None else None, "{:.0f}%"),
            _f(r.get("proxy_core_total_busy", 0) * 100, "{:.0f}%"), _f(r.get("cpu_us_per_token"), "{:.1f}"),
            _f(r.get("streams_per_core_est")), f"{r['load_core_busy'] * 100:.0f}%", "yes" if r["held"] else "NO",
        ])  # fmt: skip
    return _table(["target", "streams", "completed", "errors", "stream p50/p99 ms", "p99 over direct ms",
                   "TTFB p50/p99 ms", "proxy's own CPU", "proxy core, all", "CPU µs/token", "streams/core est.",
                   "load core", "held"], rows)  # fmt: skip


def profile_text(doc: dict[str, Any], top: int = 15) -> str:
    """Top functions of the py-spy profile, by own time and by time including callees."""
    prof = doc.get("profile") or {}
    if not prof.get("samples"):
        return ""
    rows = [[f, f"{pct:.1f}%"] for f, pct in prof["self"][:top]]
    rows2 = [[f, f"{pct:.1f}%"] for f, pct in prof["total"][:top]]
    return (f"py-spy, {prof['samples']} samples of llm-edge at c=32 ({prof.get('rate', '')} Hz):\n\n"
            + _table(["own time (function, file:line)", "share"], rows) + "\n\n"
            + _table(["including callees", "share"], rows2))  # fmt: skip


def text(doc: dict[str, Any]) -> str:
    """What `python -m bench` prints at the end."""
    m = doc["meta"]
    parts = [
        (f"llm-edge comparison: {m['settings']['rounds']} interleaved rounds, medians; "
         f"proxies on core {m['settings']['proxy_cpu']}, load + upstreams on core {m['settings']['load_cpu']}"),
        "",
        tables(doc),
        "",
        "The bar (llm-edge on the cache-miss path, every feature on, ratios to nginx):",
        bar_text(doc),
    ]
    st = streams_table(doc)
    if st:
        parts += ["", "Streaming ladder:", st]
    pt = profile_text(doc)
    if pt:
        parts += ["", pt]
    return "\n".join(parts)


def markdown(doc: dict[str, Any], png: str | None) -> str:
    """The results section of BENCHMARKS.md: machine, versions, command, plot (when drawn), tables, bar,
    streams, profile."""
    m = doc["meta"]
    mc, v, s = m["machine"], m["versions"], m["settings"]
    measured = [r for r in doc["runs"] if r["round"] >= 0 and "skipped" not in r]
    busy = [r["load_core_busy"] for r in measured]
    others = [max(0.0, r.get("proxy_core_busy", 0.0) - r.get("proxy_own_busy", 0.0)) for r in measured]
    lines = [
        f"Run {m['started']}, {m['elapsed_s']:.0f} s, with:",
        "",
        "```",
        m["command"],
        "```",
        "",
        (f"* Machine: {mc['cpu']}, {mc['cores']} cores, {mc['os']}, Linux {mc['kernel']}, Python {mc['python']}; "
         f"load average {mc['loadavg_at_start']:.2f} at the start (the machine is shared)."),
        "* Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        (f"* Pinning: every proxy on core {s['proxy_cpu']}; wrk / sim.loadgen, the nginx upstream and the mock on "
         f"core {s['load_cpu']} (median busy {100 * (statistics.median(busy) if busy else 0):.0f}% during runs). "
         f"Other people's processes took a median {100 * (statistics.median(others) if others else 0):.0f}% "
         f"(max {100 * max(others, default=0):.0f}%) of the proxy core during runs."),
        (f"* Traffic: {s['body_bytes']} B chat requests, unique per request (miss path), temperature 0; "
         f"{s['rounds']} interleaved rounds of {s['duration']} s (wrk) / {s['open_duration']:g} s (open loop, TTFB)."),
        "",
        *([f"![latency distributions and streams ladder]({png})", ""] if png else []),
        tables(doc),
        "",
        "**Against the bar** (llm-edge on the cache-miss path, every feature on, ratios to nginx in the same run):",
        "",
        bar_text(doc),
    ]
    st = streams_table(doc)
    if st:
        ss = doc["streams"]["settings"]
        title = (f"**Streaming ladder** ({ss['tokens']} tokens {ss['token_delay_ms']:g} ms apart per stream, "
                 f"{ss['seconds_per_level']:g} s per level; held = no errors and p99 stream time within "
                 f"{ss['stall_ms']:g} ms of direct's):")  # fmt: skip
        lines += ["", title, "", st]
    pt = profile_text(doc)
    if pt:
        lines += ["", pt]
    return "\n".join(lines) + "\n"


BEGIN = "<!-- bench:results:begin (written by python -m bench --write-md) -->"
END = "<!-- bench:results:end -->"


def write_md(path: Path, doc: dict[str, Any], png: Path | None, latest: Path | None = None) -> None:
    """Replace the results section of `path` (between the markers); the plot, when one was drawn, is
    copied to `latest` (default bench/latest.png, kept in git so BENCHMARKS.md can show it)."""
    rel = None
    if png is not None:
        latest = latest or Path(__file__).resolve().parent / "latest.png"
        latest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, latest)
        rel = os.path.relpath(latest, path.resolve().parent)
    body = markdown(doc, rel)
    text_ = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text_ or END not in text_:
        text_ = text_.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, _, rest = text_.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")
