# bench/streams.py: how many concurrent SSE streams one proxy core carries without stalling.
#
# The mock upstream is switched to slow streams (`stream_tokens` tokens, `stream_delay_ms` apart), then
# each target takes a ladder of concurrency levels: N load-generator connections, each streaming one
# response after another for `stream_duration` seconds. Every level runs on the direct path too, the
# same harness with no proxy, so what a proxy adds is measured against what the harness itself does
# on this machine at that level. A level is held when every stream completed and the p99 stream time
# is within `stall_ms` of direct's p99 at the same level (a stream that stalls finishes late). A
# target's ladder stops at its first level not held. The proxy's CPU use per level (busy share of
# its core) shows the headroom left. Until sim.loadgen reports the longest gap between body reads
# per stream, "finished late" is the stall signal we have.
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bench import procstat, traffic
from bench.measure import Measurer
from bench.targets import Target
from sim import loadgen, procs


def _ms(summary: dict[str, float]) -> dict[str, float]:
    return {k: (v if k == "count" else round(v / 1000, 3)) for k, v in summary.items()}


def _level(m: Measurer, t: Target, n: int) -> dict[str, Any]:
    s, fleet = m.s, m.fleet
    stream_s = s.stream_tokens * s.stream_delay_ms / 1000.0
    count = int(n * (s.stream_duration / max(stream_s, 0.05) + 2))
    host, port = t.sse_addr
    bodies = traffic.stream_bodies(fleet.nonce(), 200, count)
    spec = loadgen.LoadSpec(host, port, traffic.requests_for(host, port, bodies, fleet.auth), concurrency=n,
                            duration=s.stream_duration, timeout=stream_s + 10.0)  # fmt: skip
    meter = procstat.Meter(t.pid, s.load_cpu)
    up_meter = procstat.Meter(fleet.mock.pid if fleet.mock else None, s.proxy_cpu)  # + the proxy core, all work
    res = m.loadgen(spec, meter, up_meter)
    cpu, busy, _, proxy_core_total = res.pop("_cpu")
    wall = meter.elapsed or s.stream_duration
    return {
        "target": t.name, "streams": n, "completed": res["requests"], "errors": res["errors"],
        "error_kinds": res["error_kinds"], "stream_ms": _ms(res["latency_us"]), "ttfb_ms": _ms(res["ttfb_us"]),
        "proxy_core_busy": round(cpu / wall, 3) if t.pid else None, "load_core_busy": round(busy, 3),
        "proxy_core_total_busy": round(proxy_core_total, 3),
        "streams_per_core_est": round(n * wall / cpu) if t.pid and cpu > 0 else None,
        "cpu_us_per_token": round(cpu / (res["ok"] * s.stream_tokens) * 1e6, 2) if t.pid and res["ok"] else None,
    }  # fmt: skip


def ladder(m: Measurer, tick: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Run the ladder on every available non-cache target; returns levels, verdicts and settings.
    `tick(seconds, note)` is told after each level run (for a progress bar)."""
    s, fleet = m.s, m.fleet
    tick = tick or (lambda seconds, note: None)
    settings = {"tokens": s.stream_tokens, "token_delay_ms": s.stream_delay_ms, "seconds_per_level": s.stream_duration,
                "stall_ms": s.stall_ms, "levels": list(s.stream_levels)}  # fmt: skip
    procs.http_request("POST", *fleet.mock_addr, "/_mock/config",
                       json.dumps({"token_delay_ms": s.stream_delay_ms,
                                   "tokens": s.stream_tokens}).encode())  # fmt: skip
    targets = [t for t in fleet.targets if t.available and not t.hit]
    direct = next(t for t in targets if t.name == "direct")
    results: list[dict[str, Any]] = []
    held: dict[str, int] = {t.name: 0 for t in targets if t is not direct}
    going = set(held)
    try:
        for n in s.stream_levels:
            if not going:
                break
            base = _level(m, direct, n)
            base["held"] = base["errors"] == 0
            results.append(base)
            tick(s.stream_duration, f"streams {n} direct")
            m.say(f"streams {n:>5} direct          p99 {base['stream_ms']['p99']:>7.0f} ms  "
                  f"errors {base['errors']}  load core {base['load_core_busy']:.0%}")  # fmt: skip
            for t in targets:
                if t.name not in going:
                    continue
                r = _level(m, t, n)
                late = r["stream_ms"]["p99"] - base["stream_ms"]["p99"]
                r["p99_over_direct_ms"] = round(late, 1)
                r["held"] = r["errors"] == 0 and r["completed"] > 0 and late <= s.stall_ms
                results.append(r)
                tick(s.stream_duration, f"streams {n} {t.name}")
                busy = f"{r['proxy_core_busy']:.0%}" if r["proxy_core_busy"] is not None else "-"
                m.say(f"streams {n:>5} {t.name:<15} p99 {r['stream_ms']['p99']:>7.0f} ms  (+{late:.0f})  "
                      f"errors {r['errors']}  proxy core {busy}  {'held' if r['held'] else 'NOT held'}")  # fmt: skip
                if r["held"]:
                    held[t.name] = n
                else:
                    going.discard(t.name)
    finally:
        procs.http_request("POST", *fleet.mock_addr, "/_mock/config", b'{"token_delay_ms": 0, "tokens": 16}')
    return {"settings": settings, "levels": results, "held": held}
