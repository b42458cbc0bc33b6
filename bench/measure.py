# bench/measure.py: the measurements. One run of one scenario on one target: closed loop with wrk or
# open loop / streaming with sim.loadgen, each in its own process pinned to the load core, with the
# target's CPU time (its whole process tree), the upstream's, and both cores' busy share metered
# around the run; latencies in µs.
#
# Rules: a meter starts after the load process has started (its imports are not the target's work)
# and stops when the load is done. CPU per request is the target tree's CPU seconds over requests
# answered. `settle` waits until no target is still busy (e.g. working through a backlog) before the
# next run, so one target's leftovers never land on the next one's figures.
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import procstat, traffic, wrk
from bench.settings import Settings
from bench.targets import Fleet, Target
from sim import loadgen
from sim.hist import Histogram

IDLE_SHARE = 0.05  # a target under 5% of a core is idle
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True)
class Scenario:
    """One kind of run: closed loop (wrk) or open loop / streaming (sim.loadgen)."""

    key: str
    title: str
    tool: str  # "wrk" or "loadgen"
    connections: int
    rate: float | None = None
    stream: bool = False


def scenarios(s: Settings) -> list[Scenario]:
    """The scenarios of every round, in order."""
    out = [Scenario("c1", "wrk, 1 connection", "wrk", 1), Scenario("c32", "wrk, 32 connections", "wrk", 32)]
    out += [Scenario(f"open{r:g}", f"open loop, {r:g} req/s", "loadgen", 64, rate=r) for r in s.rates]
    out.append(Scenario("ttfb", "SSE, 1 connection", "loadgen", 1, stream=True))
    return out


def summary(h: Histogram) -> dict[str, float]:
    return {k: float(v) for k, v in h.summary(PERCENTILES).items()}


class Measurer:
    """Runs measured loads against the fleet's targets (see the module header)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.s = fleet.s
        self.say: Callable[[str], None] = fleet.say

    def run_one(self, t: Target, sc: Scenario, round_no: int, duration: float | None = None) -> dict[str, Any]:
        """One measured run of scenario `sc` on target `t`."""
        s, fleet = self.s, self.fleet
        upstream = fleet.mock if sc.stream else (fleet.upstream.child if fleet.upstream else None)
        upstream_pid = upstream.pid if upstream is not None else None
        meter = procstat.Meter(t.pid, s.load_cpu)
        up_meter = procstat.Meter(upstream_pid, s.proxy_cpu)  # and the proxy core's busy share, all processes
        nonce = fleet.nonce()
        if sc.tool == "wrk":
            wrk_secs = int(duration or s.duration)
            host, port = t.json_addr
            body = traffic.hit_body(s.body_bytes) if t.hit else traffic.miss_template(nonce, s.body_bytes)
            script = fleet.dir / f"wrk-{t.name}-{nonce}.lua"
            script.write_text(wrk.script(f"{host}:{port}", traffic.PATH, body, not t.hit,
                                         [("authorization", f"Bearer {fleet.auth}")]))  # fmt: skip
            meter.start()
            up_meter.start()
            r = wrk.run(script, f"http://{host}:{port}{traffic.PATH}", sc.connections, wrk_secs, s.load_cpu,
                        fleet.live)  # fmt: skip
            cpu, busy = meter.stop()
            up_cpu, core_busy = up_meter.stop()
            script.unlink()
            requests = r["requests"]
            out: dict[str, Any] = {
                "rps": r["rps"], "requests": requests, "ok": requests - r["errors"]["status"],
                "errors": sum(r["errors"].values()), "error_kinds": r["errors"],
                "latency_us": r["latency_us"], "percentiles": r["percentiles"],
            }  # fmt: skip
        else:
            secs = duration or s.open_duration
            host, port = t.sse_addr if sc.stream else t.json_addr
            count = int((sc.rate or 20000.0) * secs) + 16
            if sc.stream:
                bodies = traffic.stream_bodies(nonce, s.body_bytes, min(count, 20000))
            else:
                bodies = traffic.json_bodies(nonce, s.body_bytes, count, t.hit)
            spec = loadgen.LoadSpec(host, port, traffic.requests_for(host, port, bodies, fleet.auth),
                                    concurrency=sc.connections, duration=secs, rate=sc.rate, timeout=5.0)  # fmt: skip
            res = self.loadgen(spec, meter, up_meter)
            cpu, busy, up_cpu, core_busy = res.pop("_cpu")
            requests = res["requests"]
            out = res
        out.update({
            "round": round_no, "scenario": sc.key, "target": t.name,
            "cpu_s": round(cpu, 3),
            "cpu_us_per_req": round(cpu / requests * 1e6, 2) if requests and t.pid else None,
            "upstream_cpu_us_per_req": round(up_cpu / requests * 1e6, 2) if requests and upstream_pid else None,
            "load_core_busy": round(busy, 3),
            "proxy_core_busy": round(core_busy, 3),
            "proxy_own_busy": round(cpu / meter.elapsed, 3) if meter.elapsed and t.pid else 0.0,
        })  # fmt: skip
        return out

    def loadgen(self, spec: loadgen.LoadSpec, meter: procstat.Meter, up_meter: procstat.Meter) -> dict[str, Any]:
        """Run sim.loadgen in its own pinned process; results as a dict (latencies in µs)."""
        lp = loadgen.LoadProcess(spec, cpu=[self.s.load_cpu] if self.s.load_cpu is not None else None)
        live = self.fleet.live
        live.append(lp)
        try:
            meter.start()  # after the child's start: its imports are not the target's work
            up_meter.start()
            r = lp.result()
            cpu, busy = meter.stop()
            up_cpu, core_busy = up_meter.stop()
        finally:
            lp.stop()
            live.remove(lp)
        return {
            "rps": r.rps, "requests": r.requests, "ok": r.ok, "errors": r.errors, "error_kinds": r.error_kinds,
            "latency_us": summary(r.latency), "ttfb_us": summary(r.ttfb), "send_lag_us": summary(r.send_lag),
            "percentiles": [[p, r.latency.percentile(p)] for p in wrk.PERCENTILES],
            "histogram": r.latency.to_dict(),
            "_cpu": (cpu, busy, up_cpu, core_busy),
        }  # fmt: skip

    def settle(self, limit_s: float = 30.0) -> float:
        """Wait until no target is still busy (e.g. draining a backlog); returns the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            pids = self.fleet.busy_pids()
            before = procstat.cpu_seconds(pids)
            time.sleep(0.05)
            if procstat.cpu_seconds(pids) - before < 0.05 * IDLE_SHARE:
                break
        waited = time.monotonic() - t0
        if waited > 1.0:
            self.say(f"waited {waited:.1f}s for the proxies to go idle")
        return waited
