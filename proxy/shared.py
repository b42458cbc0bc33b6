"""Route state shared by the workers of one gateway: one row per worker per route, no locks.

The parent maps an anonymous shared region before it forks, so every worker sees the same
memory. Each worker writes only its own rows (a single writer per row needs no lock) and
reads everyone's. A worker publishes its router's state and merges the others' every
`INTERVAL_S`, off the request path:
- a breaker another worker opened (or a Retry-After cool-down it learned) blocks the route
  here too, until the same moment, so one worker's discovery protects them all;
- `/stats` and `/metrics` add up every worker's totals, and show a route's worst breaker state.

A row is tagged with a hash of its route's identity, so rows are only combined while the
workers run the same configuration (a reload reaches every worker within one interval).
Values are doubles: counts are exact up to 2**53, spend is kept in nano-dollars.

`SharedCounters` does the same for every other counter and histogram the gateway exposes
(`/metrics`, `/stats`, the dashboard): each worker copies its own counters, flattened into
one vector of integers (`proxy.totals`), into its own row, and a scrape adds up every row.
A reader never mixes a row's old and new halves: each row has a sequence number, odd while
its writer is copying (a seqlock), and a reader copies again when it changed under it.
"""

from __future__ import annotations

import mmap
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proxy.routing.table import BREAKER_NAMES, OPEN

if TYPE_CHECKING:
    from proxy.config import Route
    from proxy.routing import Router

INTERVAL_S = 0.05
# Row layout: field name -> index. Totals are added across workers; state is merged.
FIELDS = (
    "identity", "state", "until", "lat_s", "lat_w", "ttfb_s", "ttfb_w", "err_s", "err_w",
    "in_flight", "requests", "successes", "errors", "in_tokens", "out_tokens", "spend_nusd", "rejected",
    "cancelled",
)  # fmt: skip
_F = {name: i for i, name in enumerate(FIELDS)}
_WIDTH = len(FIELDS)
_TOTALS = ("in_flight", "requests", "successes", "errors", "in_tokens", "out_tokens", "rejected", "cancelled")
COUNTER_CELLS = 1 << 16  # per worker: 512 KiB; room for ~40 routes and keys with the stats histograms


class SharedCounters:
    """`workers` rows of `capacity` int64 cells: [sequence, layout, length, value...] per worker."""

    def __init__(self, workers: int, capacity: int = COUNTER_CELLS) -> None:
        self.workers = workers
        self.capacity = capacity
        self._map = mmap.mmap(-1, workers * (capacity + 3) * 8)  # anonymous, MAP_SHARED: survives fork
        self.cells = memoryview(self._map).cast("q")
        self.worker = -1

    def __repr__(self) -> str:
        return f"<SharedCounters workers={self.workers} capacity={self.capacity} worker={self.worker}>"

    def publish(self, layout: int, values: Sequence[int]) -> bool:
        """Write this worker's counters (flattened as `layout` says); False if they do not fit."""
        n = len(values)
        if n > self.capacity or self.worker < 0:
            return False
        cells = self.cells
        b = self.worker * (self.capacity + 3)
        cells[b] += 1  # odd: being written
        cells[b + 1] = layout
        cells[b + 2] = n
        cells[b + 3 : b + 3 + n] = memoryview(array("q", values))  # one memcpy: ~3 µs for 2000 cells
        cells[b] += 1  # even: complete
        return True

    def rows(self, layout: int) -> list[list[int]]:
        """Every worker's last complete vector published with `layout` (this one's included)."""
        cells = self.cells
        out = []
        for w in range(self.workers):
            b = w * (self.capacity + 3)
            for _ in range(100):  # a writer holds a row for microseconds; give up on one that never settles
                seq = cells[b]
                if seq & 1:
                    continue
                if cells[b + 1] != layout:
                    break
                n = cells[b + 2]
                values = cells[b + 3 : b + 3 + n].tolist()
                if cells[b] == seq:
                    out.append(values)
                    break
        return out


class SharedRoutes:
    """The shared table: `workers` × `capacity` rows of `FIELDS` doubles, and the other counters."""

    def __init__(self, workers: int, capacity: int, counter_cells: int = COUNTER_CELLS) -> None:
        self.workers = workers
        self.capacity = capacity
        self._map = mmap.mmap(-1, workers * capacity * _WIDTH * 8)  # anonymous, MAP_SHARED: survives fork
        self.cells = memoryview(self._map).cast("d")
        self.counters = SharedCounters(workers, counter_cells)
        self._worker = -1

    @property
    def worker(self) -> int:
        """This process's worker index (-1 in the parent), set after the fork."""
        return self._worker

    @worker.setter
    def worker(self, index: int) -> None:
        self._worker = index
        self.counters.worker = index

    def _base(self, worker: int, route: int) -> int:
        return (worker * self.capacity + route) * _WIDTH

    def publish(self, router: Router, routes: tuple[Route, ...]) -> None:
        """Write this worker's rows from its router's table."""
        t = router.table
        cells = self.cells
        for route in routes[: self.capacity]:
            r = route.id
            b = self._base(self.worker, r)
            cells[b] = identity(route)
            cells[b + 1] = t.state[r]
            cells[b + 2] = t.until[r]
            cells[b + 3] = t.lat_s[r]
            cells[b + 4] = t.lat_w[r]
            cells[b + 5] = t.ttfb_s[r]
            cells[b + 6] = t.ttfb_w[r]
            cells[b + 7] = t.err_s[r]
            cells[b + 8] = t.err_w[r]
            cells[b + 9] = t.in_flight[r]
            cells[b + 10] = t.requests[r]
            cells[b + 11] = t.successes[r]
            cells[b + 12] = t.errors[r]
            cells[b + 13] = t.in_tokens[r]
            cells[b + 14] = t.out_tokens[r]
            cells[b + 15] = t.spend_pusd[r] / 1000.0
            cells[b + 16] = t.rejected[r]
            cells[b + 17] = t.cancelled[r]

    def merge(self, router: Router, routes: tuple[Route, ...], now: float) -> None:
        """Block here what another worker found blocked (an open breaker, a Retry-After)."""
        t = router.table
        cells = self.cells
        for route in routes[: self.capacity]:
            r = route.id
            ident = identity(route)
            for w in range(self.workers):
                if w == self.worker:
                    continue
                b = self._base(w, r)
                if cells[b] == ident and cells[b + 2] > now and cells[b + 2] > t.until[r]:
                    t.until[r] = cells[b + 2]

    def totals(self, routes: tuple[Route, ...], rows: list[dict[str, Any]]) -> None:
        """Replace per-worker figures in `/stats` rows with the whole gateway's."""
        cells = self.cells
        for route, row in zip(routes[: self.capacity], rows):
            ident = identity(route)
            sums = dict.fromkeys(_TOTALS, 0.0)
            spend = lat_s = lat_w = err_s = err_w = 0.0
            worst = 0
            seen = 0
            for w in range(self.workers):
                b = self._base(w, route.id)
                if cells[b] != ident:
                    continue
                seen += 1
                for name in _TOTALS:
                    sums[name] += cells[b + _F[name]]
                spend += cells[b + 15]
                lat_s += cells[b + 3]
                lat_w += cells[b + 4]
                err_s += cells[b + 7]
                err_w += cells[b + 8]
                state = int(cells[b + 1])
                if state == OPEN or (state and worst != OPEN):
                    worst = state
            if not seen:
                continue
            for name in _TOTALS:
                row[{"in_tokens": "input_tokens", "out_tokens": "output_tokens"}.get(name, name)] = int(sums[name])
            row["spend_usd"] = spend / 1e9
            row["latency_ms"] = round(lat_s / lat_w * 1000.0, 3) if lat_w > 0 else None
            row["error_rate"] = round(err_s / err_w, 6) if err_w > 0 else 0.0
            row["breaker"] = BREAKER_NAMES[worst]
            row["workers_reporting"] = seen


def identity(route: Route) -> float:
    """A route's identity as a double (53 bits of its hash): rows match only for the same route."""
    return float(hash((route.model, route.provider.name, route.provider.base_url, route.upstream_model)) & (2**53 - 1))
