# sim/soak/verdicts.py: the accounting: one Result per request, one verdict per Result, tallies
# per kind of client.
#
# Rules: pure (no I/O). Every request gets exactly one verdict (`classify`):
#   ok       a 200 whose answer is right (sim/soak/answers.py);
#   errored  a streamed 200 from the faulty provider during a mid-stream fault window that ended
#            with an error event or whose body was cut, with the text before it a prefix of the
#            right answer. Not lost: once the head and tokens reached the client, no gateway can
#            fall back, and the client was told;
#   aborted  an `abort` client left on purpose. Not judged, except that a response head it read
#            before leaving must be a 200, and one it waited for must come in time;
#   lost     everything else (see LOST_DEFINITION).
# Results that are not plainly ok wait until the fault windows as they really happened are known.
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.hist import Histogram
from sim.soak.mix import CLIENT_TIMEOUT_S, Kind

WINDOW_SLACK_S = 0.1  # clock slack when matching a request's time span to a fault window

LOST_DEFINITION = (
    "lost = no response (connect error, reset or close before a complete response, none within "
    f"{CLIENT_TIMEOUT_S:g} s) or a wrong one (status other than 200; a body that is not a valid chat "
    "completion / message or not the exact deterministic answer; a stream without its terminator, or with an "
    "error event or cut body unless the faulty provider served it during a mid-stream fault window: that is "
    "'errored', not lost). Intended client aborts are not lost unless they read a non-200 head or no head in time."
)


@dataclass
class Result:
    """One request as the client saw it. `outcome`: ok | error_event | cut | timeout | no_response
    | bad: <why>; for aborts: aborted."""

    kind: str
    t0: float
    t1: float = 0.0
    status: int = 0  # 0: no response head
    provider: str = ""
    cache: str = ""
    outcome: str = ""
    stage: str = ""  # aborts: when it left


@dataclass
class KindTally:
    """Per-kind counters."""

    sent: int = 0
    ok: int = 0
    errored: int = 0
    aborted: int = 0
    lost: int = 0
    hits: int = 0
    providers: dict[str, int] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"requests": self.sent, "ok": self.ok, "errored": self.errored, "lost": self.lost}
        if self.aborted or self.stages:
            d["aborted"] = self.aborted
            d["abort_stages"] = dict(self.stages)
        if self.hits:
            d["cache_hits"] = self.hits
        d["providers"] = dict(self.providers)
        if self.latency.n:
            d["latency_ms"] = {k: round(self.latency.percentile(q) / 1000, 2) for k, q in (("p50", 50), ("p99", 99))}
            d["latency_ms"]["max"] = round(self.latency.max / 1000, 2)
        return d


    def record(self, r: Result) -> bool:
        """Count `r` in; False when its verdict must wait for the fault windows (errored or lost)."""
        self.sent += 1
        if r.provider:
            self.providers[r.provider] = self.providers.get(r.provider, 0) + 1
        if r.cache.upper() == "HIT":
            self.hits += 1
        if r.stage:
            self.stages[r.stage] = self.stages.get(r.stage, 0) + 1
        if r.outcome == "ok":
            self.ok += 1
            self.latency.record((r.t1 - r.t0) * 1e6)
        elif r.outcome == "aborted" and r.status in (0, 200):
            self.aborted += 1
        else:
            return False
        return True


def overlaps(t0: float, t1: float, windows: Iterable[tuple[float, float]], slack: float = WINDOW_SLACK_S) -> bool:
    """Does [t0, t1] meet any (on, off) window?"""
    return any(t0 <= off + slack and t1 >= on - slack for on, off in windows)


def classify(r: Result, stream: bool, faulty: str, midstream_windows: Sequence[tuple[float, float]]) -> str:
    """ok | errored | aborted | lost (see the module header)."""
    if r.outcome == "aborted":
        return "aborted" if r.status in (0, 200) else "lost"
    if r.status != 200:
        return "lost"  # no response, or a wrong status
    if r.outcome == "ok":
        return "ok"
    if (r.outcome in ("error_event", "cut") and stream and r.provider == faulty
            and overlaps(r.t0, r.t1, midstream_windows)):  # fmt: skip
        return "errored"
    return "lost"


def why_lost(r: Result) -> str:
    """A short reason for a lost request."""
    if r.status == 0:
        return f"no response ({r.outcome})"
    if r.status != 200:
        return f"status {r.status}"
    return {"error_event": "error event outside a mid-stream fault", "cut": "cut outside a mid-stream fault"}.get(
        r.outcome, r.outcome)


@dataclass
class Ledger:
    """Every request's result, tallied by kind; the fault windows as they really happened; the
    keep-alive connections the gateway closed unasked, by what the last response on them was."""

    kinds: dict[str, Kind]
    faulty: str  # the provider the faults are injected into
    origin: float = 0.0  # the run's start (time.monotonic())
    tally: dict[str, KindTally] = field(default_factory=dict)
    pending: list[Result] = field(default_factory=list)  # not ok yet: decided once the windows are known
    windows: list[dict[str, Any]] = field(default_factory=list)
    closed_after: dict[str, int] = field(default_factory=dict)
    lost_examples: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tally = self.tally or {name: KindTally() for name in self.kinds}

    def record(self, r: Result) -> None:
        if not self.tally[r.kind].record(r):
            self.pending.append(r)

    def window(self, phase: str, fault: str, midstream: bool, on: float, off: float) -> None:
        self.windows.append({"phase": phase, "fault": fault, "midstream": midstream, "on": on, "off": off})

    def sent(self) -> int:
        return sum(t.sent for t in self.tally.values())

    def decide(self) -> dict[str, int]:
        """Classify every request that was not plainly ok; return errored streams by fault."""
        mid = [(w["on"], w["off"]) for w in self.windows if w["midstream"]]
        errored_by_fault: dict[str, int] = {}
        for r in self.pending:
            verdict = classify(r, self.kinds[r.kind].stream, self.faulty, mid)
            t = self.tally[r.kind]
            if verdict == "errored":
                t.errored += 1
                fault = next(w["fault"] for w in self.windows
                             if w["midstream"] and overlaps(r.t0, r.t1, [(w["on"], w["off"])]))  # fmt: skip
                errored_by_fault[fault] = errored_by_fault.get(fault, 0) + 1
            elif verdict == "aborted":
                t.aborted += 1
            else:
                t.lost += 1
                if len(self.lost_examples) < 20:
                    self.lost_examples.append({
                        "kind": r.kind, "at_s": round(r.t0 - self.origin, 3), "took_s": round(r.t1 - r.t0, 3),
                        "status": r.status, "provider": r.provider, "cache": r.cache, "reason": why_lost(r),
                    })  # fmt: skip
        self.pending = []
        return errored_by_fault
