# sim/scenario.py: `--scenario`: a mock provider that degrades mid-run, and the router settings
# that let the gateway react within the run.
#
# Rules: the schedule is in fractions of the run (1/3, 2/3), measured on the load process's
# clock (`Progress.elapsed_s / duration`) or, for runs bounded by a request count, by requests
# done. `Driver.tick` runs in the simulator's main thread from the progress hook (every
# PROGRESS_INTERVAL_S), changes mocks over HTTP (`Stack.mock_config`) and records when each
# change really happened, for the report. Nothing here touches the gateway: it only sees
# providers misbehave, as it would in production.
#
#   steady    nothing changes (the baseline: same settings, same report)
#   failover  the preferred provider answers every request with a 500 from 1/3 of the run,
#             and recovers at 2/3: its breaker must open (clients see no error, the other
#             provider serves), then half-open probes must notice the recovery
#   slowdown  the preferred provider's time to first token jumps far above the SLA at 1/3 and
#             comes back at 2/3: cost-sla must move traffic to the provider within the SLA, and
#             exploration must notice the recovery
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.results import Progress
from sim.stack import Provider

NAMES = ("steady", "failover", "slowdown")
PROGRESS_INTERVAL_S = 0.05  # progress on every watchdog tick (~0.1 s), so events land within ~0.1 s
SLA_MS = 50.0  # both default mocks (2 ms and 8 ms) are well within it
SLOW_TTFT_MS = 150.0  # slowdown: 3x the SLA

# [[models]] keys for scenario runs: a latency SLA, and breakers, averages and rankings fast
# enough to react within a run of a few seconds (the defaults are tuned for hours).
ROUTER: dict[str, Any] = {
    "strategy": "cost-sla",
    "sla_ms": SLA_MS,
    "ewma_half_life_s": 0.5,  # old latency samples fade within a second
    "rerank_interval_s": 0.1,
    "explore_ratio": 0.05,  # 1 request in 20 checks the other route (how recovery is noticed)
    "breaker_failures": 3,
    "breaker_cooldown_s": 0.3,
    "breaker_backoff": 1.5,
    "breaker_cooldown_max_s": 1.0,  # a recovered provider is probed again within a second
    "max_attempts": 3,
}


@dataclass(frozen=True)
class Event:
    """One change to one mock at a fraction of the run."""

    at: float  # fraction of the run, 0..1
    provider: str
    changes: dict[str, Any]
    label: str  # what it means, for the report ("fails", "recovers", ...)


@dataclass
class Driver:
    """Applies a scenario's events as the run progresses (see module header)."""

    name: str
    events: tuple[Event, ...]
    apply: Callable[[str, dict[str, Any]], None]  # (provider, changes): Stack.mock_config
    duration: float | None = None  # the run's length in seconds, when the clock bounds it
    requests: int | None = None  # else its request count
    fired: list[dict[str, Any]] = field(default_factory=list)  # what happened, for the report

    def fraction(self, p: Progress) -> float:
        """How far the run is, 0..1."""
        if self.duration:
            return p.elapsed_s / self.duration
        if self.requests:
            return p.done / self.requests
        return 0.0

    def tick(self, p: Progress) -> list[dict[str, Any]]:
        """Fire every event that is due; return the ones fired now."""
        now: list[dict[str, Any]] = []
        frac = self.fraction(p)
        while len(self.fired) < len(self.events) and frac >= self.events[len(self.fired)].at:
            event = self.events[len(self.fired)]
            self.apply(event.provider, event.changes)
            record = {"at_s": round(p.elapsed_s, 2), "at_fraction": round(frac, 3), "provider": event.provider,
                      "changes": dict(event.changes), "label": event.label}  # fmt: skip
            self.fired.append(record)
            now.append(record)
        return now

    def describe(self) -> dict[str, Any]:
        """The scenario for the report: its name, plan and what actually fired when."""
        return {
            "name": self.name,
            "planned": [
                {"at_fraction": round(e.at, 3), "provider": e.provider, "changes": e.changes, "label": e.label}
                for e in self.events
            ],
            "events": list(self.fired),
        }


def preferred(providers: Sequence[Provider]) -> Provider:
    """The provider cost-sla prefers while every route meets the SLA: the cheapest one."""
    return min(providers, key=lambda p: (p.input_per_mtok + p.output_per_mtok, p.ttft_ms))


def events(name: str, providers: Sequence[Provider]) -> tuple[Event, ...]:
    """The schedule of scenario `name` over these providers."""
    if name not in NAMES:
        raise ValueError(f"unknown scenario {name!r} (expected one of {', '.join(NAMES)})")
    if name == "steady":
        return ()
    target = preferred(providers)
    if name == "failover":
        return (
            Event(1 / 3, target.name, {"error_rate": 1.0, "error_status": 500}, "fails (every request a 500)"),
            Event(2 / 3, target.name, {"error_rate": 0.0}, "recovers"),
        )
    return (
        Event(1 / 3, target.name, {"ttft_ms": SLOW_TTFT_MS},
              f"slows down (ttft {SLOW_TTFT_MS:g} ms > SLA {SLA_MS:g} ms)"),
        Event(2 / 3, target.name, {"ttft_ms": target.ttft_ms}, "recovers"),
    )
