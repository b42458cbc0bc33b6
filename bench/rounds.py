# bench/rounds.py: the rounds. An unrecorded warm-up, then R rounds; in each round every scenario
# runs on every target in turn, and the order of the targets rotates each round (A B C, then B C A)
# so slow drift on a shared machine hits every target alike. The medians over rounds are taken by
# bench/report.py; this module only decides what runs when, and records every run as it was.
#
# Rules: an open-loop rate above a target's capacity (its c=32 rate in the same round) is skipped
# and recorded as such: past its capacity an open loop only measures a growing queue, and the
# target keeps working through it long after the run, on the core the next target needs.
# Progress goes to `say` (one line per run) and to a ProgressBar with the time left.
from __future__ import annotations

import time
from typing import Any

import orjson

from bench import procstat, pyspy
from bench.measure import Measurer, Scenario, scenarios
from bench.targets import Target
from sim import procs
from sim.progressbar import ProgressBar


def planned_s(m: Measurer) -> float:
    """Seconds of load the whole comparison plans (warm-up, rounds, ladder): the progress bar's 100%."""
    s = m.s
    active = [t for t in m.fleet.targets if t.available]
    per_round = sum(s.duration if sc.tool == "wrk" else s.open_duration
                    for sc in scenarios(s) for t in active if not (sc.stream and t.hit))  # fmt: skip
    warm = sum(1.3 if not t.hit else 1.0 for t in active) if s.warmup else 0.0
    ladder = len(s.stream_levels) * len([t for t in active if not t.hit]) * s.stream_duration
    return warm + s.rounds * per_round + ladder + s.profile_s


class Rounds:
    """Runs the comparison's plan and keeps every run (`runs`) and llm-edge's /stats after it."""

    def __init__(self, m: Measurer, bar: ProgressBar | None = None) -> None:
        self.m = m
        self.bar = bar or ProgressBar("[bench]", False)
        self.runs: list[dict[str, Any]] = []
        self.gateway_stats: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self.plan_s = planned_s(m)
        self.done_s = 0.0

    def tick(self, seconds: float, note: str) -> None:
        """`seconds` more of the plan are done."""
        self.done_s += seconds
        self.bar.update(self.done_s / self.plan_s if self.plan_s else 1.0, time.monotonic() - self.t0, note)

    def warm_up(self) -> None:
        """A short unrecorded run of each scenario kind on each target (caches and pools fill)."""
        for t in self.m.fleet.targets:
            if t.available:
                self.m.run_one(t, Scenario("warm", "", "wrk", 32), -1, duration=1)
                if not t.hit:
                    self.m.run_one(t, Scenario("warm", "", "loadgen", 1, stream=True), -1, duration=0.3)
                self.tick(1.3 if not t.hit else 1.0, f"warm-up {t.name}")

    def run(self) -> None:
        """Every scenario on every target, interleaved, `rounds` times."""
        m, s = self.m, self.m.s
        active = [t for t in m.fleet.targets if t.available]
        plan = scenarios(s)
        capacity: dict[str, float] = {}  # req/s at c=32 in the latest round
        for r in range(s.rounds):
            order = active[r % len(active):] + active[: r % len(active)]
            for sc in plan:
                for t in order:
                    if sc.stream and t.hit:
                        continue
                    secs = s.duration if sc.tool == "wrk" else s.open_duration
                    if sc.rate is not None and capacity.get(t.name, sc.rate) < sc.rate:
                        note = f"over capacity ({capacity[t.name]:.0f} req/s at c=32)"
                        self.runs.append({"round": r, "scenario": sc.key, "target": t.name, "skipped": note})
                        self.m.say(f"round {r + 1}/{s.rounds} {sc.key:<9} {t.name:<14} skipped: {note}")
                        self.tick(secs, f"round {r + 1}/{s.rounds}")
                        continue
                    m.settle()
                    res = m.run_one(t, sc, r)
                    self.runs.append(res)
                    if sc.key == "c32":
                        capacity[t.name] = res["rps"]
                    lat = res["latency_us"]
                    cpu = f"{res['cpu_us_per_req']:.1f} µs/req" if res["cpu_us_per_req"] else "-"
                    err = f"  ERRORS {res['errors']}" if res["errors"] else ""
                    self.m.say(f"round {r + 1}/{s.rounds} {sc.key:<9} {t.name:<14} {res['rps']:>9.0f} rps  "
                              f"p50 {lat['p50']:>7.0f}  p99 {lat['p99']:>7.0f} µs  cpu {cpu}{err}")  # fmt: skip
                    self.tick(secs, f"round {r + 1}/{s.rounds} {sc.key} {t.name}")
        for t in active:
            if t.child is not None:
                t.memory = procstat.memory_kib(procstat.tree(t.child.pid))
        self._read_stats(active)

    def _read_stats(self, active: list[Target]) -> None:
        for t in active:
            if t.name == "llm-edge":
                try:
                    status, body = procs.http_get(*t.json_addr, "/stats")
                    if status == 200:
                        self.gateway_stats = orjson.loads(body)
                except OSError:
                    pass

    def profile(self) -> dict[str, Any]:
        """py-spy on llm-edge during a saturation run: where the miss path spends its time."""
        m = self.m
        t = next((t for t in m.fleet.targets if t.name == "llm-edge"), None)
        if t is None or t.pid is None:
            return {}
        out = m.s.out / "profile-llm-edge.txt"
        try:
            spy = pyspy.start(t.pid, out, m.s.profile_s, m.s.load_cpu)
        except pyspy.ProfileError as exc:
            m.say(f"profile skipped: {exc}")
            return {"error": str(exc)}
        live = m.fleet.live
        live.append(spy)
        try:
            m.run_one(t, Scenario("profile", "", "wrk", 32), -1, duration=max(1, int(m.s.profile_s)))
            spy.wait(timeout=m.s.profile_s + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
            live.remove(spy)
        self.tick(m.s.profile_s, "profile")
        return pyspy.summarize(out)
