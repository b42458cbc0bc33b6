# sim/report.py: turns load results and the gateway's /stats into the simulator's report.
#
# Rules: pure (no I/O). `build` makes one JSON-able dict, the single source for both outputs:
# `--json` prints it as is, `format_text` prints labelled lines. The labels are a contract
# (tests and people grep them): "Total Requests:", "Success:", "Errors:", "Total Time:",
# "RPS:", "Latency p50/p90/p99:", "Overhead p50/p99:", one "Provider NAME:" line each.
# Unknown keys in /stats are ignored; missing ones show as "n/a".
from __future__ import annotations

from typing import Any

from sim.results import Results


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
    if results.mode == "open":
        report["send_lag_us"] = _pcts(d["send_lag_us"])
    return report


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
    for p in report["providers"]:
        lines.append(
            f"Provider {p['name']}: {p['requests']} requests ({p['share'] * 100:.1f}%), "
            f"{p['errors']} errors, ${p['spend_usd']:.6f}"
        )
    if report["providers"]:
        lines.append(f"Total Cost: ${report['total_spend_usd']:.6f}")
    lines += [f"Status {code}: {n}" for code, n in report["status"].items()]
    lines += [f"Error {kind}: {n}" for kind, n in report["error_kinds"].items()]
    return "\n".join(lines)
