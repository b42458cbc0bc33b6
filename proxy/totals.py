"""The whole gateway's counters, whichever worker is asked: flatten, share, add up, rebuild.

With `--workers N` each process counts its own requests, cache lookups, key admissions and
latency samples. A scrape of `/metrics` or `/stats` lands on any worker, so each figure it
shows must be the sum over every worker, or Prometheus reads each scrape answered by another
worker as a counter reset. This module:

- flattens every counter and histogram a worker keeps into one vector of integers, laid out
  by a `Layout` derived from the configuration (a change of routes, keys or providers is a
  new layout, and rows of another layout are not added in);
- publishes it into this worker's row of `shared.SharedCounters` (on the gateway's share
  tick, and right before a scrape, so the answering worker's own figures are current);
- adds up every worker's row, each segment by its own rule (sum; max for a histogram's
  largest sample and a key's ledger-synced spend; min for the budget left), and rebuilds the
  same shapes `metrics.render` and `admin.stats` read.

A scrape is the sum of *published* rows only, each of which only grows, so successive scrapes
never go down whichever worker answers. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from proxy.metrics import RequestCounters
from proxy.stats import Histogram, Stats


class GatewayState(Protocol):
    """What this module reads of `proxy.gateway.GatewayState` (named here: the gateway imports us)."""

    gen: Any
    stats: Stats
    cache: Any
    access_log: Any
    shared: Any
    loop: Any

TIMEOUT_PHASES = ("connect", "first_byte", "stream_idle", "total", "pool", "other")
_CACHE_SUMMED = ("hits", "misses", "coalesced", "evictions", "expirations", "rejections", "entries", "bytes",
                 "stored", "in_flight_keys", "l2_hits", "l2_misses", "l2_errors")  # fmt: skip
_KEY_SUMMED = ("admitted", "refused_rpm", "refused_tpm", "refused_budget", "refused_disabled", "in_flight",
               "tokens_in", "tokens_out", "estimated_charges")  # fmt: skip
_POOL_FIELDS = ("open", "idle", "opened_total")
_LOG_FIELDS = ("lines", "dropped", "write_errors")

SUM, MAX, MIN = 0, 1, 2
_REDUCE: tuple[Callable[[list[int]], int], ...] = (sum, max, min)


class Layout:
    """Where each counter sits in the flat vector: `(name, offset, length, rule)` segments."""

    __slots__ = ("identity", "segments", "size")

    def __init__(self, segments: list[tuple[str, int, int]], shape: tuple[Any, ...]) -> None:
        self.segments: list[tuple[str, int, int, int]] = []
        offset = 0
        for name, length, rule in segments:
            self.segments.append((name, offset, length, rule))
            offset += length
        self.size = offset
        # 62 bits of the configuration's shape: workers forked from one parent hash alike.
        self.identity = hash((tuple(segments), shape)) & (2**62 - 1)

    def __repr__(self) -> str:
        return f"<Layout {len(self.segments)} segments, {self.size} cells>"


def layout_of(gateway: GatewayState) -> Layout:
    """The vector layout for the gateway's current configuration and parts."""
    gen = gateway.gen
    requests = gen.requests
    segments: list[tuple[str, int, int]] = [("stats.requests", 1, SUM), ("stats.by_status", 600, SUM)]
    for h in ("overhead", "latency", "ttfb"):
        segments += [(f"{h}.counts", len(Histogram().counts), SUM), (f"{h}.count", 1, SUM), (f"{h}.total", 1, SUM),
                     (f"{h}.max", 1, MAX)]  # fmt: skip
    segments += [
        ("timeouts", len(TIMEOUT_PHASES), SUM), ("req.counts", len(requests.counts), SUM),
        ("req.lat", len(requests.lat), SUM), ("req.lat_sum", len(requests.lat_sum_us), SUM),
        ("req.ttfb", len(requests.ttfb), SUM), ("req.ttfb_sum", len(requests.ttfb_sum_us), SUM),
        ("req.admin", len(requests.admin), SUM), ("pools", len(gen.pools) * len(_POOL_FIELDS), SUM),
    ]  # fmt: skip
    cache = gateway.cache
    l2 = cache is not None and cache.l2 is not None
    if cache is not None:
        segments.append(("cache", len(_CACHE_SUMMED), SUM))
    keys = gen.keys
    names = tuple(row["key"] for row in keys.snapshot(gateway.loop.time()))
    segments += [("auth", 2, SUM), ("keys.sum", len(names) * len(_KEY_SUMMED), SUM), ("keys.spent", len(names), MAX),
                 ("keys.remaining", len(names), MIN)]  # fmt: skip
    if gateway.access_log is not None:
        segments.append(("log", len(_LOG_FIELDS), SUM))
    shape = (tuple(p.provider.name for p in gen.pools), names, l2)
    return Layout(segments, shape)


def gather(gateway: GatewayState, layout: Layout) -> list[int]:
    """This worker's counters as one vector laid out by `layout` (cold: a few tens of µs)."""
    st = gateway.stats
    out: list[int] = [st.requests, *st.by_status]
    for h in (st.overhead, st.latency, st.ttfb):
        out += h.counts
        out += (h.count, h.total_us, h.max_us)
    out += [st.timeouts.get(phase, 0) for phase in TIMEOUT_PHASES]
    req = gateway.gen.requests
    out += req.counts
    out += req.lat
    out += req.lat_sum_us
    out += req.ttfb
    out += req.ttfb_sum_us
    out += req.admin
    for pool in gateway.gen.pools:
        out += (pool.open, pool.idle_count, pool.opened_total)
    if gateway.cache is not None:
        snap = gateway.cache.snapshot()
        out += [int(snap.get(name, 0)) for name in _CACHE_SUMMED]
    keys = gateway.gen.keys
    rows = keys.snapshot(gateway.loop.time())
    out += (keys.missing, keys.invalid)
    for row in rows:
        out += [int(row[name]) for name in _KEY_SUMMED]
    out += [int(row["spent_nusd"]) for row in rows]
    out += [int(row["remaining_nusd"]) for row in rows]
    log = gateway.access_log
    if log is not None:
        out += (log.lines, log.dropped, log.write_errors)
    if len(out) != layout.size:  # a part changed shape since the layout was made: publish nothing stale
        raise ValueError(f"counters do not match their layout ({len(out)} vs {layout.size} cells)")
    return out


def reduce(layout: Layout, rows: list[list[int]]) -> list[int]:
    """One vector from every worker's: each segment by its rule."""
    if len(rows) == 1:
        return rows[0]
    out: list[int] = []
    for _, offset, length, rule in layout.segments:
        if rule == SUM:
            out += [sum(column) for column in zip(*(row[offset : offset + length] for row in rows))]
        else:
            pick = _REDUCE[rule]
            out += [pick(column) for column in zip(*(row[offset : offset + length] for row in rows))]
    return out


class AccessLogTotals:
    """The access log's counters, as `metrics.render` reads them."""

    __slots__ = _LOG_FIELDS

    def __init__(self, lines: int, dropped: int, write_errors: int) -> None:
        self.lines, self.dropped, self.write_errors = lines, dropped, write_errors


class KeysTotals:
    """The gateway keys' counters, as `metrics.render` reads them: this worker's rows with the whole
    gateway's figures."""

    __slots__ = ("invalid", "missing", "rows")

    def __init__(self, missing: int, invalid: int, rows: list[dict[str, Any]]) -> None:
        self.missing, self.invalid, self.rows = missing, invalid, rows

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        return self.rows


class View:
    """The whole gateway's counters, in the shapes the local objects have."""

    __slots__ = ("access_log", "cache", "keys", "pools", "requests", "stats", "workers")

    def __init__(self) -> None:
        self.stats: Any = None
        self.requests: Any = None
        self.pools: list[dict[str, object]] = []
        self.cache: dict[str, int] | None = None
        self.keys: Any = None
        self.access_log: Any = None
        self.workers = 1  # how many workers' rows were added


def local_view(gateway: GatewayState) -> View:
    """One process's own counters (no other worker): the objects themselves, nothing copied."""
    view = View()
    view.stats = gateway.stats
    view.requests = gateway.gen.requests
    view.pools = [{"provider": pool.provider.name, "open": pool.open, "idle": pool.idle_count,
                   "opened_total": pool.opened_total} for pool in gateway.gen.pools]  # fmt: skip
    view.cache = gateway.cache.snapshot() if gateway.cache is not None else None
    view.keys = gateway.gen.keys
    view.access_log = gateway.access_log
    return view


def publish(gateway: GatewayState) -> Layout | None:
    """Write this worker's counters into its shared row; the layout, or None when not shared."""
    shared = gateway.shared
    if shared is None:
        return None
    layout = layout_of(gateway)
    try:
        values = gather(gateway, layout)
    except ValueError:  # never raised into the share tick (it would stop rescheduling itself)
        return None
    if not shared.counters.publish(layout.identity, values):
        return None  # too many routes and keys for the shared row: each worker shows its own
    return layout


def view(gateway: GatewayState) -> View:
    """The whole gateway's counters: every worker's rows added up (this one's published first)."""
    layout = publish(gateway)
    if layout is None:
        return local_view(gateway)
    assert gateway.shared is not None
    rows = gateway.shared.counters.rows(layout.identity)
    if not rows:
        return local_view(gateway)
    return rebuild(gateway, layout, reduce(layout, rows), len(rows))


def rebuild(gateway: GatewayState, layout: Layout, vector: list[int], workers: int) -> View:
    """The shapes `metrics.render` and `/stats` read, filled from a reduced vector."""
    seg = {name: vector[offset : offset + length] for name, offset, length, _ in layout.segments}
    out = View()
    out.workers = workers
    st = Stats()
    st.requests = seg["stats.requests"][0]
    st.by_status = seg["stats.by_status"]
    for name in ("overhead", "latency", "ttfb"):
        h = Histogram()
        h.counts = seg[f"{name}.counts"]
        h.count, h.total_us, h.max_us = seg[f"{name}.count"][0], seg[f"{name}.total"][0], seg[f"{name}.max"][0]
        setattr(st, name, h)
    st.timeouts = {phase: n for phase, n in zip(TIMEOUT_PHASES, seg["timeouts"]) if n}
    out.stats = st
    local = gateway.gen.requests
    req = RequestCounters(local.routes)
    req.counts, req.lat, req.lat_sum_us = seg["req.counts"], seg["req.lat"], seg["req.lat_sum"]
    req.ttfb, req.ttfb_sum_us, req.admin = seg["req.ttfb"], seg["req.ttfb_sum"], seg["req.admin"]
    out.requests = req
    pools = iter(seg["pools"])
    out.pools = [{"provider": pool.provider.name, **dict(zip(_POOL_FIELDS, _take(pools, 3)))}
                 for pool in gateway.gen.pools]  # fmt: skip
    if gateway.cache is not None:
        cache = gateway.cache.snapshot()  # the configured bounds stay this worker's (each has its own cache)
        cache.update((name, n) for name, n in zip(_CACHE_SUMMED, seg["cache"]) if name in cache)
        out.cache = cache
    keys = gateway.gen.keys
    rows = keys.snapshot(gateway.loop.time())
    summed = iter(seg["keys.sum"])
    for row, spent, remaining in zip(rows, seg["keys.spent"], seg["keys.remaining"]):
        row.update(zip(_KEY_SUMMED, _take(summed, len(_KEY_SUMMED))))
        row["spent_nusd"], row["remaining_nusd"] = spent, remaining
    missing, invalid = seg["auth"]
    out.keys = KeysTotals(missing, invalid, rows)
    if "log" in seg:
        out.access_log = AccessLogTotals(*seg["log"])
    return out


def route_rows(gateway: GatewayState) -> list[dict[str, object]]:
    """Per-route health and totals from the router, with names instead of ids; with workers, the
    totals are the whole gateway's (`shared.SharedRoutes.totals`)."""
    rows = gateway.gen.router.snapshot(gateway.loop.time())
    for row, route in zip(rows, gateway.gen.settings.routes):
        row["id"] = row.pop("route")
        row["provider"] = route.provider.name
        row["model"] = route.model
        row["input_tokens"] = row.pop("in_tokens")
        row["output_tokens"] = row.pop("out_tokens")
    if gateway.shared is not None:  # the whole gateway, not just this worker: this one's row made current first
        gateway.shared.publish(gateway.gen.router, gateway.gen.settings.routes)
        gateway.shared.totals(gateway.gen.settings.routes, rows)
    return rows


def _take(it: Iterator[int], n: int) -> list[int]:
    return [next(it) for _ in range(n)]
