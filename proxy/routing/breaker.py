# Circuit breaker transitions for one route, applied to RouteTable columns.
#
# Rules for this file:
# 1. Every breaker state change lives here (h11 rule 1 style); router.py only decides *when*
#    to call these and marks the model for re-ranking.
# 2. Pure functions over the table: no clock (time is `now`), no per-call allocation.
# 3. These run off the fast path: on failures, on non-closed routes and once per window roll.
#
# Transitions (state, until, cooldown, consecutive, probes_out/probe_ok are table columns):
#   CLOSED    --failure: consecutive >= breaker_failures, or window error rate >=
#               breaker_error_rate over >= breaker_min_requests-->  OPEN, cooldown = base
#   OPEN      --now >= until, seen by pick or tick-->  HALF_OPEN, admits half_open_probes
#   HALF_OPEN --half_open_probes successes-->  CLOSED, window and probe counters reset
#   HALF_OPEN --any failure-->  OPEN, cooldown = min(cooldown * breaker_backoff, max)
#   OPEN      --outcome of a request started before it opened-->  OPEN (ignored)
# A 429/503 with Retry-After only pushes `until` (the route is skipped), whatever the state.

from __future__ import annotations

from proxy.routing.table import CLOSED, HALF_OPEN, OPEN, RouteTable


def trip(t: RouteTable, r: int, now: float, cooldown: float) -> None:
    """Open the breaker of route `r` for `cooldown` seconds (longer if Retry-After says so)."""
    t.state[r] = OPEN
    t.cooldown[r] = cooldown
    t.opened_at[r] = now
    t.until[r] = max(t.until[r], now + cooldown)
    t.probes_out[r] = 0
    t.probe_ok[r] = 0


def to_half_open(t: RouteTable, r: int) -> None:
    """Cooldown over: let probes through."""
    t.state[r] = HALF_OPEN
    t.probes_out[r] = 0
    t.probe_ok[r] = 0


def probe_succeeded(t: RouteTable, r: int, probes: int, base_cooldown: float) -> None:
    """A success on a half-open route; close after `probes` of them. Ignored while OPEN."""
    if t.state[r] != HALF_OPEN:
        return  # a straggler finishing while OPEN proves little; wait for the probe
    if t.probes_out[r] > 0:
        t.probes_out[r] -= 1
    t.probe_ok[r] += 1
    if t.probe_ok[r] >= probes:
        t.state[r] = CLOSED
        t.cooldown[r] = base_cooldown
        t.probes_out[r] = t.probe_ok[r] = 0
        t.win_req[r] = t.win_err[r] = t.prev_req[r] = t.prev_err[r] = 0


def roll_window(t: RouteTable, r: int, b: int) -> None:
    """Move route `r`'s error window to bucket `b` (bucket = int(now / breaker_window_s)).

    Two buckets approximate a sliding window: the rate at time x (in buckets) counts the
    previous bucket weighted by how much of it is still inside the window, 1 - (x - b).
    """
    if b == t.win_b[r] + 1:
        t.prev_req[r] = t.win_req[r]
        t.prev_err[r] = t.win_err[r]
    else:
        t.prev_req[r] = t.prev_err[r] = 0
    t.win_req[r] = t.win_err[r] = 0
    t.win_b[r] = b


def window_trips(t: RouteTable, r: int, x: float, min_requests: int, error_rate: float) -> bool:
    """Whether the sliding-window error rate at `x` (now in window units) should open the breaker."""
    keep = 1.0 - (x - t.win_b[r])  # share of the previous bucket still inside the window
    req = t.prev_req[r] * keep + t.win_req[r]
    return req >= min_requests and t.prev_err[r] * keep + t.win_err[r] >= error_rate * req
