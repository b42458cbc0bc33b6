# sim/report.py: turns load results and the gateway's /stats into the simulator's report.
#
# Rules: pure (no I/O). `build` makes one JSON-able dict, the single source for both outputs:
# `--json` prints it as is, `format_text` prints labelled lines. The labels are a contract
# (tests and people grep them): "Total Requests:", "Success:", "Errors:", "Total Time:",
# "RPS:", "Latency p50/p90/p99:", "Overhead p50/p99:", "About overhead:" (what it counts and why
# it is larger at low rates), "About send lag:" (open loop), one "Provider NAME:" line each.
# Unknown keys in /stats are ignored; missing ones show as "n/a".
# Tracked runs add: "Scenario:" and one "Event at Xs:" line per mock change (with --scenario),
# "Client Errors:", one "Slice A-Bs:" line per tenth of the run (answers per provider, from
# each response's x-llm-edge-provider, and errors), and the cache lines "Cache Hit Rate:",
# "Cache HIT latency p50/p99:", "Cache MISS latency p50/p99:" (or "cache: no x-cache header
# seen" when the gateway sent none).
from __future__ import annotations

import math
from typing import Any

from sim.results import TIMELINE_HZ, Results

SLICES = 10  # the timeline is shown in tenths of the run

# What the overhead and send-lag figures mean, in the report itself (checked on this 2-core machine:
# overhead p50 392 µs at 50 req/s, 236 µs at 500, 86 µs at 2000, 114 µs in the default closed loop).
OVERHEAD_NOTE = (
    "the gateway's own time per forwarded request: from having the whole request to having written it "
    "upstream (less any wait for a new upstream connection), plus from the first upstream byte arriving to "
    "relaying it. It counts only the gateway's own callbacks, not the sleeps between them, and the code path "
    "is the same at every rate; yet it is several times larger at low rates (e.g. ~400 µs at 50 req/s against "
    "~50-100 µs under saturation). At 50 req/s the event loop sleeps ~20 ms between requests, the core idles "
    "or runs other processes, and each request then runs on a cold core: the code and data it touches were "
    "evicted in between and the CPU may have clocked down. Under load requests arrive back to back, one loop "
    "wake-up serves several of them and the same work stays hot. Compare overheads at the same rate only."
)
SEND_LAG_NOTE = (
    "open loop only: how late the load generator sent each request against its fixed schedule (waiting "
    "for a free connection, or its own timer waking late on a busy machine). It is the client side's "
    "lateness, not the gateway's; latencies count from the scheduled time, so a large send lag means the "
    "load process could not keep up and the latencies include that queueing."
)
NO_CACHE_HEADER = "cache: no x-cache header seen"


def providers_from_stats(stats: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Sum the gateway's per-route counters by provider, in first-seen order, with shares."""
    if not stats:
        return []
    by_name: dict[str, dict[str, Any]] = {}
    for route in stats.get("routes") or ():
        name = str(route.get("provider", "?"))
        p = by_name.setdefault(
            name, {"name": name, "requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "spend_usd": 0.0}
        )
        for key in ("requests", "errors", "input_tokens", "output_tokens"):
            p[key] += int(route.get(key) or 0)
        p["spend_usd"] += float(route.get("spend_usd") or 0.0)
    total = sum(p["requests"] for p in by_name.values())
    for p in by_name.values():
        p["share"] = round(p["requests"] / total, 4) if total else 0.0
        p["spend_usd"] = round(p["spend_usd"], 9)
    return list(by_name.values())


def timeline(results: Results, slices: int = SLICES) -> list[dict[str, Any]]:
    """Answers per provider and client-visible errors in (up to) `slices` slices of the run.

    Slices are whole numbers of timeline buckets (1/TIMELINE_HZ s), as equal as that allows;
    a run shorter than `slices` buckets gets one slice per bucket. Anything finishing after
    the nominal end goes to the last slice.
    """
    buckets = set(results.timeline) | set(results.timeline_errors)
    if not buckets:
        return []
    n_buckets = max(round(results.elapsed_s * TIMELINE_HZ), 1)
    per = math.ceil(n_buckets / slices)
    count = math.ceil(n_buckets / per)
    names: list[str] = []
    for b in sorted(results.timeline):
        for name in results.timeline[b]:
            if name not in names:
                names.append(name)
    counts: list[dict[str, int]] = [dict.fromkeys(names, 0) for _ in range(count)]
    errors = [0] * count
    for b in buckets:
        i = min(count - 1, b // per)
        for name, n in results.timeline.get(b, {}).items():
            counts[i][name] += n
        errors[i] += results.timeline_errors.get(b, 0)
    out = []
    for i in range(count):
        total = sum(counts[i].values())
        out.append({
            "from_s": round(i * per / TIMELINE_HZ, 3),
            "to_s": round(min((i + 1) * per, n_buckets) / TIMELINE_HZ, 3),
            "providers": counts[i],
            "shares": {name: round(n / total, 4) if total else 0.0 for name, n in counts[i].items()},
            "errors": errors[i],
        })
    return out


def cache_summary(results: Results) -> dict[str, Any]:
    """Hit rate and hit/miss latencies from the x-cache headers the responses carried."""
    counts = dict(results.cache)
    seen = sum(counts.values())
    hits = counts.get("HIT", 0)
    return {
        "header_seen": seen > 0,
        "counts": counts,
        "hits": hits,
        "hit_rate": round(hits / seen, 4) if seen else 0.0,
        "latency_us": {k: _pcts(h.summary()) for k, h in sorted(results.cache_latency.items()) if h.n},
    }


def _pcts(summary: dict[str, float]) -> dict[str, float]:
    return {k: summary[k] for k in ("p50", "p90", "p99", "max", "mean") if k in summary}


def build(results: Results, stats: dict[str, Any] | None, run: dict[str, Any]) -> dict[str, Any]:
    """The report: client-side results, gateway overhead and per-provider traffic and cost.

    ``run`` describes the run's settings (mode, concurrency, rate, stream, ...) and is copied
    in as is.
    """
    d = results.to_dict(histograms=False)
    providers = providers_from_stats(stats)
    overhead = (stats or {}).get("overhead_us")
    report: dict[str, Any] = {
        "total_requests": results.requests,
        "success": results.ok,
        "errors": results.errors,
        "total_time_s": round(results.elapsed_s, 4),
        "rps": round(results.rps, 1),
        "latency_us": _pcts(d["latency_us"]),
        "ttfb_us": _pcts(d["ttfb_us"]),
        "overhead_us": overhead if isinstance(overhead, dict) else None,
        "gateway_requests": (stats or {}).get("requests"),
        "providers": providers,
        "total_spend_usd": round(sum(p["spend_usd"] for p in providers), 9),
        "status": d["status"],
        "error_kinds": d["error_kinds"],
        "run": dict(run),
    }
    report["notes"] = {"overhead": OVERHEAD_NOTE}
    if results.mode == "open":
        report["send_lag_us"] = _pcts(d["send_lag_us"])
        report["notes"]["send_lag"] = SEND_LAG_NOTE
    if run.get("track"):
        report["client_errors"] = results.errors
        report["timeline"] = timeline(results)
        report["answers_by_provider"] = _answers(results)
        report["cache"] = cache_summary(results)
    return report


def _answers(results: Results) -> dict[str, int]:
    out: dict[str, int] = {}
    for b in sorted(results.timeline):
        for name, n in results.timeline[b].items():
            out[name] = out.get(name, 0) + n
    return out


def _us(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def format_text(report: dict[str, Any]) -> str:
    """Render the report as labelled lines (see the module header)."""
    run = report["run"]
    mode = (f"open loop at {run.get('rate'):g} req/s over {run.get('connections')} connections"
            if run.get("mode") == "open" else f"closed loop, concurrency {run.get('concurrency')}")
    kind = "streaming" if run.get("stream") else "non-streaming"
    lines = [
        f"llm-edge sim: {mode}, {kind}",
        f"Total Requests: {report['total_requests']}",
        f"Success: {report['success']}",
        f"Errors: {report['errors']}",
        f"Total Time: {report['total_time_s']:.2f}s",
        f"RPS: {report['rps']:.0f}",
    ]
    lat, ttfb = report["latency_us"], report["ttfb_us"]
    lines += [f"Latency {k}: {_us(lat.get(k))} µs" for k in ("p50", "p90", "p99", "max")]
    lines += [f"TTFB {k}: {_us(ttfb.get(k))} µs" for k in ("p50", "p99")]
    if "send_lag_us" in report:
        lines.append(f"Send lag p99: {_us(report['send_lag_us'].get('p99'))} µs")
    overhead = report["overhead_us"] or {}
    lines += [f"Overhead {k}: {_us(overhead.get(k))} µs" for k in ("p50", "p90", "p99")]
    notes = report.get("notes") or {}
    if "overhead" in notes:
        lines.append(f"About overhead: {notes['overhead']}")
    if "send_lag" in notes:
        lines.append(f"About send lag: {notes['send_lag']}")
    for p in report["providers"]:
        lines.append(
            f"Provider {p['name']}: {p['requests']} requests ({p['share'] * 100:.1f}%), "
            f"{p['errors']} errors, ${p['spend_usd']:.6f}"
        )
    if report["providers"]:
        lines.append(f"Total Cost: ${report['total_spend_usd']:.6f}")
    lines += [f"Status {code}: {n}" for code, n in report["status"].items()]
    lines += [f"Error {kind}: {n}" for kind, n in report["error_kinds"].items()]
    scenario = report.get("scenario")
    if scenario:
        lines.append(f"Scenario: {scenario['name']}")
        for e in scenario["events"]:
            changes = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in e["changes"].items())
            lines.append(f"Event at {e['at_s']:.2f}s: {e['provider']} {e['label']} ({changes})")
    if "client_errors" in report:
        lines.append(f"Client Errors: {report['client_errors']}")
    for row in report.get("timeline") or ():
        shares = ", ".join(f"{name} {n} ({row['shares'][name] * 100:.0f}%)" for name, n in row["providers"].items())
        lines.append(f"Slice {row['from_s']:.1f}-{row['to_s']:.1f}s: {shares or 'no answers'}, errors {row['errors']}")
    cache = report.get("cache")
    if cache and (cache["hits"] or report["run"].get("repeat_ratio")):
        if not cache["header_seen"]:
            lines.append(NO_CACHE_HEADER)
        else:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(cache["counts"].items()))
            lines.append(f"Cache Hit Rate: {cache['hit_rate'] * 100:.1f}% ({counts})")
            for kind in ("HIT", "MISS"):
                lat = cache["latency_us"].get(kind)
                if lat:
                    lines.append(f"Cache {kind} latency p50/p99: {_us(lat.get('p50'))} / {_us(lat.get('p99'))} µs")
    return "\n".join(lines)
