# sim/soak/report.py: the soak's report: one JSON-able dict (`build`), its checks and verdict,
# and the same as labelled lines (`format_text`).
#
# Rules: pure (no I/O). The verdict is PASS when every check passed (exit 1 otherwise):
#   lost == 0; the growth checks (sim/soak/growth.py); keep-alive: the gateway closes a client
#   connection without `connection: close` only after a stream it had to end with an error;
#   the gateway stays up (and, added by the runner, exits 0 on SIGTERM and logs no ERROR line or
#   traceback); and the run covered what it claims (every kind answered, cache hits, aborts, each
#   fault fired). The labels of `format_text` are a contract that tests grep.
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sim.soak.growth import Bounds, Gauges, Snapshot, growth_checks
from sim.soak.mix import CLIENT_CONNECTIONS, FAULTY, KINDS, PROVIDERS, ROUTER
from sim.soak.schedule import FAULT_ON_SHARE, FAULTS, WARMUP_S, Window
from sim.soak.verdicts import LOST_DEFINITION, Ledger


def checks(ledger: Ledger, gauges: Gauges, bounds: Bounds, start: Snapshot, end: Snapshot, alive: bool,
           fired: dict[str, int]) -> list[dict[str, Any]]:  # fmt: skip
    """Every check but the gateway's exit and log (those come once it stopped)."""
    tallies = ledger.tally.values()
    lost, total, hits = sum(t.lost for t in tallies), sum(t.sent for t in tallies), sum(t.hits for t in tallies)
    out = [
        {"name": "lost", "ok": lost == 0, "detail": f"{lost} lost of {total} requests"},
        {"name": "gateway_alive", "ok": alive,
         "detail": "the gateway ran to the end" if alive else "the gateway died"},
    ]  # fmt: skip
    if alive:
        out += growth_checks(start, end, gauges.peak_open, bounds, gauges.boot_fds)
    closed = ledger.closed_after
    after_ok = closed.get("ok", 0)
    out.append({
        "name": "keepalive", "ok": after_ok == 0,
        "detail": (f"the gateway closed keep-alive connections unannounced only after a stream it had to end "
                   f"with an error ({closed.get('error_event', 0)} times)") if after_ok == 0
        else f"the gateway closed {after_ok} keep-alive connections after a good response, unannounced",
    })  # fmt: skip
    missing = [k.name for k in KINDS if (ledger.tally[k.name].aborted if k.name == "abort"
                                         else ledger.tally[k.name].ok) == 0]  # fmt: skip
    unfired = [f.name for f in FAULTS if f.name not in fired]
    coverage = not missing and hits > 0 and not unfired
    out.append({
        "name": "coverage", "ok": coverage,
        "detail": "every kind answered, cache hits, every fault fired" if coverage
        else f"no answers for {missing or '-'}; cache hits {hits}; faults that never fired {unfired or '-'}",
    })  # fmt: skip
    return out


def build(ledger: Ledger, gauges: Gauges, bounds: Bounds, start: Snapshot, end: Snapshot, *, minutes: float,
          soak_s: float, plan: Sequence[Window], stats: dict[str, Any], alive: bool) -> dict[str, Any]:  # fmt: skip
    """The report of a finished run (decides every pending verdict first)."""
    errored_by_fault = ledger.decide()
    tallies = ledger.tally.values()
    total = sum(t.sent for t in tallies)
    lost = sum(t.lost for t in tallies)
    hits = sum(t.hits for t in tallies)
    cached_sent = sum(ledger.tally[k.name].sent for k in KINDS if k.cached)
    fired: dict[str, int] = {}
    for w in ledger.windows:
        if w["phase"] == "soak":
            fired[w["fault"]] = fired.get(w["fault"], 0) + 1
    found = checks(ledger, gauges, bounds, start, end, alive, fired)
    samples = gauges.samples
    rss_series = [s["rss_kb"] for s in samples if s["phase"] == "soak"]
    half = rss_series[len(rss_series) // 2 :]
    origin = ledger.origin
    soak_info = {
        "minutes": round(minutes, 3), "duration_s": round(soak_s, 2), "warmup_s": WARMUP_S,
        "faulty_provider": FAULTY.name, "healthy_provider": PROVIDERS[1].name,
        "client_connections": CLIENT_CONNECTIONS, "rates": {k.name: k.rate for k in KINDS},
        "router": dict(ROUTER),
    }  # fmt: skip
    requests = {
        "total": total, "ok": sum(t.ok for t in tallies), "errored": sum(t.errored for t in tallies),
        "aborted": sum(t.aborted for t in tallies), "lost": lost, "rps": round(total / (soak_s + WARMUP_S), 1),
        "keepalive_closed_by_gateway": dict(ledger.closed_after),
    }  # fmt: skip
    faults = {
        "provider": FAULTY.name,
        "plan": {"slot_s": round(plan[1].on - plan[0].on, 2) if len(plan) > 1 else None,
                 "on_share": FAULT_ON_SHARE, "windows": len(plan)},
        "kinds": {f.name: f.label for f in FAULTS},
        "fired": fired,
        "errored_streams": errored_by_fault,
        "windows": [{"phase": w["phase"], "fault": w["fault"], "on_s": round(w["on"] - origin, 2),
                     "off_s": round(w["off"] - origin, 2)} for w in ledger.windows],
    }  # fmt: skip
    gateway = {
        "pid": gauges.pid,
        "fds_before_traffic": gauges.boot_fds,
        "start": start.to_dict(),
        "end": end.to_dict() if alive else None,
        "peak": {"rss_mb": round(max(rss_series, default=0) / 1024, 1),
                 "fds": max((s["fds"] for s in samples), default=0), "pool_open": dict(gauges.peak_open)},
        "rss_second_half_mb": [round(min(half) / 1024, 1), round(max(half) / 1024, 1)] if half else None,
        "samples": len(samples),
        "stats_requests": stats.get("requests"),
        "stats_by_status": stats.get("by_status"),
    }  # fmt: skip
    return {
        "soak": soak_info,
        "requests": requests,
        "lost": lost,
        "lost_definition": LOST_DEFINITION,
        "lost_examples": ledger.lost_examples,
        "by_kind": {name: t.to_dict() for name, t in ledger.tally.items()},
        "cache": {"hits": hits, "hit_rate": round(hits / cached_sent, 4) if cached_sent else 0.0},
        "faults": faults,
        "gateway": gateway,
        "bounds": bounds.to_dict(start.rss_kb),
        "checks": found,
        "verdict": verdict_of(found),
    }


def verdict_of(checks: Sequence[dict[str, Any]]) -> str:
    """PASS when every check passed."""
    return "PASS" if all(c["ok"] for c in checks) else "FAIL"


def format_text(rep: dict[str, Any]) -> str:
    """The report as labelled lines ("Requests:", "Lost:", "Kind NAME:", "Fault windows:", "RSS:", "FDs:",
    "Pools at rest:", "Bounds:", "Check NAME:", "Verdict:")."""
    s, req, gw, b = rep["soak"], rep["requests"], rep["gateway"], rep["bounds"]
    st, en = gw["start"], gw["end"] or {}

    def pools(p: dict[str, Any] | None) -> str:
        return ", ".join(f"{k} {v['open']} open/{v['idle']} idle" for k, v in (p or {}).items()) or "n/a"

    lines = [
        (f"llm-edge soak: {s['minutes']:g} min ({s['duration_s']:.1f}s after a {s['warmup_s']:g}s warm-up), "
         f"faults on {s['faulty_provider']}, {s['healthy_provider']} healthy"),
        (f"Requests: {req['total']} ({req['rps']:.0f}/s)  ok {req['ok']}  errored {req['errored']}  "
         f"aborted {req['aborted']}  lost {req['lost']}"),
        f"Lost: {rep['lost']}",
    ]  # fmt: skip
    for name, k in rep["by_kind"].items():
        extra = f"  aborted {k['aborted']} {k.get('abort_stages')}" if "aborted" in k else ""
        extra += f"  cache hits {k['cache_hits']}" if k.get("cache_hits") else ""
        lat = k.get("latency_ms")
        extra += f"  latency p50/p99 {lat['p50']}/{lat['p99']} ms" if lat else ""
        lines.append(f"Kind {name}: {k['requests']} requests  ok {k['ok']}  errored {k['errored']}  "
                     f"lost {k['lost']}{extra}")  # fmt: skip
    for ex in rep["lost_examples"]:
        lines.append(f"Lost {ex['kind']} at {ex['at_s']:.2f}s: {ex['reason']} (status {ex['status']}, "
                     f"provider {ex['provider'] or '-'}, cache {ex['cache'] or '-'})")  # fmt: skip
    f = rep["faults"]
    lines.append(f"Cache hits: {rep['cache']['hits']} ({rep['cache']['hit_rate'] * 100:.1f}% of cached requests)")
    fired = ", ".join(f"{k} {v}" for k, v in f["fired"].items())
    lines.append(f"Fault windows: {sum(f['fired'].values())} on {f['provider']} ({fired})")
    if f["errored_streams"]:
        lines.append("Errored streams: " + ", ".join(f"{k} {v}" for k, v in f["errored_streams"].items()))
    peak = gw["peak"]
    lines += [
        f"RSS: {st['rss_mb']:.1f} MB -> {en.get('rss_mb', 'n/a')} MB (peak {peak['rss_mb']:.1f} MB)",
        f"FDs: {st['fds']} -> {en.get('fds', 'n/a')} (peak {peak['fds']})",
        f"Pools at rest: start {pools(st['pools'])}; end {pools(en.get('pools'))}",
        "Pool peak open: " + ", ".join(f"{k} {v}" for k, v in peak["pool_open"].items()),
        (f"Bounds: RSS +{b['rss_growth_max_mb']:.1f} MB ({b['rss_rule']}), fds +{b['fd_growth_max']}, "
         f"pool open <= {b['pool_open_max_per_provider']} ({b['pool_rule']})"),
    ]  # fmt: skip
    lines += [f"Check {c['name']}: {'ok' if c['ok'] else 'FAIL'} ({c['detail']})" for c in rep["checks"]]
    lines.append(f"Verdict: {rep['verdict']}")
    return "\n".join(lines)


