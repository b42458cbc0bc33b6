# sim/results.py: what a load run produces (Results) and reports while running (Progress).
#
# Rules: pure data, no I/O. Both round-trip through plain JSON-able dicts, because the load
# generator runs in its own process and hands them back over a pipe. Results from several
# load processes merge into one (histograms add up; elapsed is the longest run).
#
# Tracking (`LoadSpec.track`): each response's `x-llm-edge-provider` and `x-cache` headers are
# counted. `timeline` maps a time bucket (TIMELINE_HZ per second since the run started, by
# completion time) to answers per provider; `timeline_errors` counts client-visible failures
# per bucket the same way; `cache` counts x-cache values; `cache_latency` keeps a latency
# histogram for HIT and for MISS answers.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.hist import Histogram

# connect: TCP connect failed or timed out. reset: the connection closed mid-response.
# timeout: no complete response within the per-request timeout (also: queued too long in open
# loop). parse: malformed HTTP. http: a complete non-2xx response. stream: a 2xx event stream
# that ended without its terminator (`data: [DONE]`).
ERROR_KINDS = ("connect", "reset", "timeout", "parse", "http", "stream")
TIMELINE_HZ = 10  # timeline buckets per second
NO_PROVIDER = "?"  # a 2xx answer without x-llm-edge-provider
FROM_CACHE = "(cache)"  # ...that the gateway answered from its cache (x-cache: HIT)
CACHE_TIMED = ("HIT", "MISS")  # x-cache values whose latency gets a histogram


@dataclass(frozen=True)
class Progress:
    """A live snapshot, emitted about once per ``progress_interval`` during a run."""

    elapsed_s: float
    done: int
    ok: int
    errors: int
    in_flight: int
    rps: float  # completions per second over the last interval

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {
            "elapsed_s": self.elapsed_s,
            "done": self.done,
            "ok": self.ok,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "rps": self.rps,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Progress:
        """Inverse of :meth:`to_dict`."""
        return cls(d["elapsed_s"], d["done"], d["ok"], d["errors"], d["in_flight"], d["rps"])


@dataclass
class Results:
    """Outcome of one load run.

    ``requests`` counts every request that finished, well or badly; ``ok + errors == requests``.
    ``latency`` runs from the send time (closed loop) or the scheduled time (open loop) to the
    last byte of the response; ``ttfb`` to the first body byte. Both cover every complete HTTP
    response (any status); transport failures only count in ``error_kinds``. ``send_lag`` is
    open loop only: how late each request left compared with its schedule (queueing for a
    free connection, plus timer granularity). All histograms are in µs.
    """

    mode: str  # "closed" or "open"
    requests: int = 0
    ok: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    connections: int = 0
    latency: Histogram = field(default_factory=Histogram)
    ttfb: Histogram = field(default_factory=Histogram)
    send_lag: Histogram = field(default_factory=Histogram)
    status: dict[int, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    timeline: dict[int, dict[str, int]] = field(default_factory=dict)
    timeline_errors: dict[int, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    cache_latency: dict[str, Histogram] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        """Completed requests per second over the whole run."""
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self, histograms: bool = True) -> dict[str, Any]:
        """Return a JSON-able dict: counts, rates and percentile summaries (µs).

        With ``histograms`` the raw buckets are included too, so :meth:`from_dict` and
        :func:`merge` can rebuild exact-to-the-bucket percentiles.
        """
        d: dict[str, Any] = {
            "mode": self.mode,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 6),
            "rps": round(self.rps, 1),
            "connections": self.connections,
            "latency_us": self.latency.summary(),
            "ttfb_us": self.ttfb.summary(),
            "send_lag_us": self.send_lag.summary(),
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "error_kinds": {k: v for k, v in self.error_kinds.items() if v},
            "timeline": [[b, dict(self.timeline.get(b, {})), self.timeline_errors.get(b, 0)]
                         for b in sorted(set(self.timeline) | set(self.timeline_errors))],
            "cache": dict(self.cache),
            "cache_latency_us": {k: h.summary() for k, h in self.cache_latency.items()},
        }
        if histograms:
            d["histograms"] = {
                "latency": self.latency.to_dict(),
                "ttfb": self.ttfb.to_dict(),
                "send_lag": self.send_lag.to_dict(),
                "cache": {k: h.to_dict() for k, h in self.cache_latency.items()},
            }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Results:
        """Rebuild from :meth:`to_dict` output (which must include the histograms)."""
        h = d["histograms"]
        return cls(
            mode=d["mode"],
            requests=d["requests"],
            ok=d["ok"],
            errors=d["errors"],
            elapsed_s=d["elapsed_s"],
            connections=d.get("connections", 0),
            latency=Histogram.from_dict(h["latency"]),
            ttfb=Histogram.from_dict(h["ttfb"]),
            send_lag=Histogram.from_dict(h["send_lag"]),
            status={int(k): v for k, v in d["status"].items()},
            error_kinds=dict(d["error_kinds"]),
            timeline={b: dict(p) for b, p, _ in d.get("timeline", ()) if p},
            timeline_errors={b: e for b, _, e in d.get("timeline", ()) if e},
            cache=dict(d.get("cache", {})),
            cache_latency={k: Histogram.from_dict(v) for k, v in h.get("cache", {}).items()},
        )


def merge(parts: list[Results]) -> Results:
    """Combine results of load processes that ran side by side against the same target."""
    if not parts:
        raise ValueError("nothing to merge")
    out = Results(mode=parts[0].mode)
    for r in parts:
        out.requests += r.requests
        out.ok += r.ok
        out.errors += r.errors
        out.elapsed_s = max(out.elapsed_s, r.elapsed_s)
        out.connections += r.connections
        out.latency.merge(r.latency)
        out.ttfb.merge(r.ttfb)
        out.send_lag.merge(r.send_lag)
        for k, v in r.status.items():
            out.status[k] = out.status.get(k, 0) + v
        for kind, v in r.error_kinds.items():
            out.error_kinds[kind] = out.error_kinds.get(kind, 0) + v
        for b, per in r.timeline.items():
            into = out.timeline.setdefault(b, {})
            for name, v in per.items():
                into[name] = into.get(name, 0) + v
        for b, v in r.timeline_errors.items():
            out.timeline_errors[b] = out.timeline_errors.get(b, 0) + v
        for value, v in r.cache.items():
            out.cache[value] = out.cache.get(value, 0) + v
        for value, hist in r.cache_latency.items():
            out.cache_latency.setdefault(value, Histogram()).merge(hist)
    return out
