# Per-route and per-provider state, as preallocated columns indexed by id.
#
# Rules for this file:
# 1. One attribute per column, each a mutable sequence of length n created once. The hot
#    path (router.py) binds columns to locals and updates them in place; nothing here
#    allocates per request and there is no per-route object or dict.
# 2. Columns come from a `column(typecode, n)` factory: plain lists (the default, measured
#    fastest, see bench/micro_router.py) or `array` ('d' floats, 'q' ints). Moving stats to
#    shared memory later means a factory returning `memoryview(mmap).cast(typecode)` slices
#    (one row per worker) and making the `*_of` readers below sum the rows: a local change.
# 3. Averages are time-decayed: a sample taken dt seconds ago weighs 2**(-dt/half_life).
#    Each average keeps a decayed sum S and a decayed weight W; the mean is S/W, so the
#    first sample is taken at face value (no bias toward 0), bursts with dt == 0 all count,
#    and after a quiet spell W is small, so fresh samples quickly outweigh stale ones.
#    W == 0 means "never measured".

from __future__ import annotations

from array import array
from collections.abc import Callable, MutableSequence
from typing import Any

Column = MutableSequence[Any]
ColumnFactory = Callable[[str, int], Column]

# Breaker states (see router.py for the transition table).
CLOSED = 0
OPEN = 1
HALF_OPEN = 2
BREAKER_NAMES = ("closed", "open", "half-open")


# Lists, not array('d'): a list hands back its stored float, an array boxes a new one on
# every read. Measured: on_success 0.83 vs 1.76 us, pick 0.30 vs 0.40 us (bench/micro_router.py).
def list_column(typecode: str, n: int) -> Column:
    """A column backed by a plain list (default)."""
    return [0.0] * n if typecode == "d" else [0] * n


def array_column(typecode: str, n: int) -> Column:
    """A column backed by `array.array` (ints are int64: spend caps at ~9.2M USD per route)."""
    return array(typecode, [0]) * n


# Float columns, per route.
_ROUTE_D = (
    "lat_s", "lat_w",  # decayed sum and weight of total latency samples (seconds)
    "err_s", "err_w",  # decayed sum (failures) and weight (attempts) for the error rate
    "t_ewma",  # time both averages above were last decayed to
    "ttfb_s", "ttfb_w", "t_ttfb",  # same for time to first byte
    "until",  # route skipped while now < until (breaker open or Retry-After)
    "retry_until",  # the part of `until` that is only this worker's Retry-After cooldown
    "opened_at",  # when the breaker last opened
    "cooldown",  # current breaker cooldown (grows with backoff)
)  # fmt: skip
# Integer columns, per route.
_ROUTE_Q = (
    "state",  # CLOSED / OPEN / HALF_OPEN
    "consecutive",  # consecutive route failures
    "probes_out",  # half-open probes admitted and not finished
    "probe_ok",  # half-open probes that succeeded
    "win_b", "win_req", "win_err", "prev_req", "prev_err",  # two-bucket sliding error window
    "in_flight",
    "requests", "successes", "errors", "in_tokens", "out_tokens",
    "rejected",  # attempts that ended for the request's own fault (a 4xx it caused, a refused translation)
    "cancelled",  # attempts abandoned (hedge loser, client left): requests = the four outcomes + in flight
    "spend_pusd",  # spend in pico-dollars (1e-12 USD)
    "sla_ok",  # ranking memory for the SLA hysteresis
    "last_failure",  # the Failure kind of the route's latest failure (for "no route" reasons)
)  # fmt: skip


class RouteTable:
    """All mutable router state: one column per field, one slot per route (or provider)."""

    __slots__ = _ROUTE_D + _ROUTE_Q + ("n", "provider_in_flight", "provider_limit")

    def __init__(self, n_routes: int, provider_limits: list[int], column: ColumnFactory = list_column) -> None:
        self.n = n_routes
        for name in _ROUTE_D:
            setattr(self, name, column("d", n_routes))
        for name in _ROUTE_Q:
            setattr(self, name, column("q", n_routes))
        self.provider_in_flight: Column = column("q", len(provider_limits))
        self.provider_limit: Column = column("q", len(provider_limits))
        for p, limit in enumerate(provider_limits):
            # 0 means unlimited; a huge limit keeps the hot check a single compare.
            self.provider_limit[p] = limit if limit > 0 else 2**62

    # Typed views of the dynamic columns for mypy; runtime access is via __slots__.
    lat_s: Column
    lat_w: Column
    err_s: Column
    err_w: Column
    t_ewma: Column
    ttfb_s: Column
    ttfb_w: Column
    t_ttfb: Column
    until: Column
    retry_until: Column
    opened_at: Column
    cooldown: Column
    state: Column
    consecutive: Column
    probes_out: Column
    probe_ok: Column
    win_b: Column
    win_req: Column
    win_err: Column
    prev_req: Column
    prev_err: Column
    in_flight: Column
    requests: Column
    successes: Column
    errors: Column
    in_tokens: Column
    out_tokens: Column
    rejected: Column
    cancelled: Column
    spend_pusd: Column
    sla_ok: Column
    last_failure: Column

    # Readers for the cold path (ranking, snapshot). Shared memory would sum rows here.

    def latency_of(self, r: int) -> float:
        """Mean total latency in seconds, or -1.0 if never measured."""
        w = self.lat_w[r]
        return self.lat_s[r] / w if w > 0.0 else -1.0

    def ttfb_of(self, r: int) -> float:
        """Mean time to first byte in seconds, or -1.0 if never measured."""
        w = self.ttfb_w[r]
        return self.ttfb_s[r] / w if w > 0.0 else -1.0

    def error_rate_of(self, r: int) -> float:
        """Decayed share of attempts that failed, 0.0 if none finished."""
        w = self.err_w[r]
        return self.err_s[r] / w if w > 0.0 else 0.0


def carry_over(src: RouteTable, src_route: int, dst: RouteTable, dst_route: int) -> None:
    """Copy one route's learned state (averages, breaker, totals) into a new table (config reload).

    In-flight counts stay behind: those requests finish on, and are counted by, the old table.
    """
    for name in _ROUTE_D + _ROUTE_Q:
        if name != "in_flight" and name != "probes_out":
            getattr(dst, name)[dst_route] = getattr(src, name)[src_route]
