# sim/soak/growth.py: the gateway's resources at rest (RSS, fds, pools) and the checks that they
# did not grow past their bounds; also the scan of its log for what only a bug writes.
#
# Rules: the checks are pure; `read_rss_kb` and `count_fds` read /proc. Measuring points (see the
# package header): the clients gone, every pooled connection idle again, then the providers'
# idle connections closed, so a leaked socket cannot hide as a pooled one.
#   RSS growth <= max(RSS_SLACK_MB, RSS_SLACK_RATIO of the start). After the warm-up the cache
#     holds every entry it will hold, histograms and route stats are preallocated and the access
#     log is off, so the only legitimate growth is allocator noise: measured, +0.2 to +0.6 MB over
#     1 and 10 minutes from ~31 MB. 8 MB is a leak of ~340 bytes per request in the 1-minute run,
#     ~35 bytes per request in the 10-minute one (a 2 KB-per-request leak fails even `--soak 0.2`);
#   fd growth <= FD_SLACK, and neither end more than FD_SLACK above the count before any traffic;
#   pools: open <= min(max_connections, 2 x client connections) per provider in every sample; at
#     rest every pooled connection is idle, and none is left once the provider closed idle ones.
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sim.soak.mix import CLIENT_CONNECTIONS, POOL_MAX_CONNECTIONS

RSS_SLACK_MB = 8.0
RSS_SLACK_RATIO = 0.25
FD_SLACK = 4


@dataclass
class Snapshot:
    """The gateway at rest: RSS, fds and pools (before and after the providers closed idle ones)."""

    rss_kb: int
    fds: int
    pools: dict[str, dict[str, int]]  # provider -> {"open", "idle"} with every client gone
    pools_drained: dict[str, dict[str, int]]  # ...after the mocks closed their idle connections
    settled: bool  # every pooled connection was idle again within SETTLE_TIMEOUT_S

    def to_dict(self) -> dict[str, Any]:
        return {"rss_mb": round(self.rss_kb / 1024, 1), "fds": self.fds, "pools": self.pools,
                "pools_after_idle_close": self.pools_drained, "settled": self.settled}  # fmt: skip


@dataclass(frozen=True)
class Bounds:
    """What the end may differ from the start (see the module header)."""

    rss_slack_mb: float = RSS_SLACK_MB
    rss_slack_ratio: float = RSS_SLACK_RATIO
    fd_slack: int = FD_SLACK
    pool_open_max: int = min(POOL_MAX_CONNECTIONS, 2 * CLIENT_CONNECTIONS)

    def rss_limit_kb(self, start_kb: int) -> int:
        return int(max(self.rss_slack_mb * 1024, start_kb * self.rss_slack_ratio))

    def to_dict(self, start_kb: int = 0) -> dict[str, Any]:
        return {"rss_growth_max_mb": round(self.rss_limit_kb(start_kb) / 1024, 1),
                "rss_rule": f"max({self.rss_slack_mb:g} MB, {self.rss_slack_ratio:.0%} of start)",
                "fd_growth_max": self.fd_slack, "pool_open_max_per_provider": self.pool_open_max,
                "pool_rule": (f"min(max_connections {POOL_MAX_CONNECTIONS}, "
                              f"2 x {CLIENT_CONNECTIONS} client connections)"),
                "unannounced_closes_after_ok_max": 0}  # fmt: skip


def growth_checks(start: Snapshot, end: Snapshot, peak_open: dict[str, int], bounds: Bounds,
                  boot_fds: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The resource checks: [{"name", "ok", "detail"}]. `boot_fds`: the gateway's fds before any
    traffic (nothing open either), so a leak that ran its course in the warm-up shows too."""
    out = []

    def check(name: str, ok: bool, detail: str) -> None:
        out.append({"name": name, "ok": bool(ok), "detail": detail})

    grew = end.rss_kb - start.rss_kb
    limit = bounds.rss_limit_kb(start.rss_kb)
    check("rss", grew <= limit, f"RSS {start.rss_kb / 1024:.1f} -> {end.rss_kb / 1024:.1f} MB "
                                f"({grew / 1024:+.1f} MB, bound +{limit / 1024:.1f} MB)")  # fmt: skip
    boot = "" if boot_fds is None else f"; {boot_fds} before any traffic"
    fds_ok = end.fds - start.fds <= bounds.fd_slack
    if boot_fds is not None:
        fds_ok = fds_ok and max(start.fds, end.fds) - boot_fds <= bounds.fd_slack
    check("fds", fds_ok, f"fds {start.fds} -> {end.fds} ({end.fds - start.fds:+d}, bound +{bounds.fd_slack}{boot})")
    worst = max(peak_open.values(), default=0)
    check("pool_bound", worst <= bounds.pool_open_max,
          "peak open per provider " + ", ".join(f"{k} {v}" for k, v in peak_open.items())
          + f" (bound {bounds.pool_open_max})")
    busy = [f"{at}: {k} open {p['open']} idle {p['idle']}" for at, snap in (("start", start), ("end", end))
            for k, p in snap.pools.items() if p["open"] != p["idle"] or not snap.settled]  # fmt: skip
    check("pool_idle_at_rest", not busy, "every pooled connection idle at rest, at the start and the end" if not busy
          else "connections still leased at rest: " + ", ".join(busy))
    left = [f"{at}: {k} {p['open']}" for at, snap in (("start", start), ("end", end))
            for k, p in snap.pools_drained.items() if p["open"]]  # fmt: skip
    check("pool_drained", not left, "no connection left once the providers closed the idle ones" if not left
          else "still open after the providers closed idle connections: " + ", ".join(left))
    return out


def parse_rss_kb(status_text: str) -> int:
    """VmRSS in kB from the text of /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line")


def read_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return parse_rss_kb(f.read())


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_problems(text: str) -> list[str]:
    """Lines of the gateway's log that only a bug writes (its ERROR lines, tracebacks)."""
    return [line for line in text.splitlines() if " ERROR " in line or line.startswith("Traceback")]


@dataclass
class Gauges:
    """The gateway's resources as sampled during the run: every sample, and each pool's peak."""

    pid: int
    boot_fds: int | None = None  # before any traffic, nothing open
    samples: list[dict[str, Any]] = field(default_factory=list)
    peak_open: dict[str, int] = field(default_factory=dict)

    def pools(self, stats: dict[str, Any]) -> dict[str, dict[str, int]]:
        """Open and idle pooled connections per provider, from a /stats document (peaks kept)."""
        pools = {p["provider"]: {"open": int(p["open"]), "idle": int(p["idle"])} for p in stats.get("pools") or ()}
        for name, p in pools.items():
            self.peak_open[name] = max(self.peak_open.get(name, 0), p["open"])
        return pools

    def sample(self, phase: str, t: float, pools: dict[str, dict[str, int]]) -> dict[str, Any]:
        """Read RSS and fds now; keep and return the sample."""
        s = {"phase": phase, "t": round(t, 2), "rss_kb": read_rss_kb(self.pid), "fds": count_fds(self.pid),
             "open": {k: p["open"] for k, p in pools.items()}}  # fmt: skip
        self.samples.append(s)
        return s
