# proxy/metrics.py: Prometheus text exposition (format 0.0.4) for GET /metrics.
#
# Rules for this file:
# 1. Scrape time only (cold path): `render` builds the whole text from snapshots the gateway
#    already keeps (stats histograms, router rows, pool rows, cache counters, keys, access
#    log counters). Every family is optional: pass what exists, the rest is left out.
# 2. The one hot-path piece is `RequestCounters.record`: one increment in a preallocated
#    flat list indexed by route id and a status slot. No dict, no allocation.
# 3. Naming follows Prometheus conventions: `llm_edge_` prefix, base units (seconds, bytes,
#    USD for money), `_total` on counters, `_bucket{le}`/`_sum`/`_count` on histograms,
#    HELP and TYPE once per family, label values escaped. The gateway does not depend on
#    prometheus_client (the tests use it to parse what we write).
# 4. Nothing here does I/O or reads a clock; keys' values are never seen here (only names).
"""Prometheus text exposition built at scrape time.

Histograms: the gateway's `Histogram` keeps ~540 fine log-linear buckets of whole
microseconds; they are summed into the fixed `LE_BOUNDS_US` (10 µs ... 60 s). A fine
bucket that straddles a bound is counted in the next bound up, so a bound's count never
includes a sample above it and misses at most the samples of one fine bucket below it
(fine buckets are at most 1/16 of a power of two wide: within 6.25% of the bound). Bounds
that fall on fine-bucket edges (10, 25, 50 and 100 µs among the defaults) are exact.

Multi-worker: pass the whole gateway's counters (`proxy.totals.view`), so every scrape reads
the same series whichever worker answers; `const_labels` adds labels to every sample.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

from proxy import __version__
from proxy.stats import bucket_bounds

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# `le` bounds in whole microseconds: 10 µs ... 60 s, 1-2.5-5 steps (plus 30 s, 60 s).
LE_BOUNDS_US: tuple[int, ...] = (
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
)  # fmt: skip

_FINE_BUCKETS = 34 * 16  # must match proxy.stats (tests check it)


class HistogramLike(Protocol):
    """What `render` reads from a `proxy.stats.Histogram`."""

    counts: list[int]
    count: int
    total_us: int


# -- requests by route and status (hot) -------------------------------------------------------

# Status slots: the codes operators alert on get their own slot, the rest fall into their
# class. Slot labels are the `code` label values.
_OWN_CODES = (0, 200, 400, 401, 403, 404, 408, 409, 413, 429, 499, 500, 502, 503, 504, 529)
STATUS_LABELS: tuple[str, ...] = (*(str(c) for c in _OWN_CODES), "1xx", "2xx", "3xx", "4xx", "5xx", "other")
_NSLOT = len(STATUS_LABELS)


def _slot_table() -> tuple[int, ...]:
    table = []
    for status in range(1000):
        if status in _OWN_CODES:
            table.append(_OWN_CODES.index(status))
        elif 100 <= status < 600:
            table.append(STATUS_LABELS.index(f"{status // 100}xx"))
        else:
            table.append(_NSLOT - 1)
    return tuple(table)


STATUS_SLOT = _slot_table()  # status 0-999 -> slot


# The gateway's own pages: counted apart from LLM requests, so a probe inflates no request alert.
ADMIN_PAGES: tuple[str, ...] = ("healthz", "stats", "metrics", "dashboard", "dashboard.json", "models", "model",
                                "admin", "other")  # fmt: skip
_PAGE_INDEX = {name: i for i, name in enumerate(ADMIN_PAGES)}
# Per-route histograms: few buckets (in seconds), so routes × buckets stays small.
ROUTE_LATENCY_BOUNDS_S: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ROUTE_TTFB_BOUNDS_S: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NLAT = len(ROUTE_LATENCY_BOUNDS_S) + 1  # the last bucket is +Inf
_NTTFB = len(ROUTE_TTFB_BOUNDS_S) + 1


class ExchangeLike(Protocol):
    """What `RequestCounters.record_exchange` reads of a finished exchange."""

    endpoint: str
    route: Any
    status: int
    stream: bool
    t_start: float
    t_sent: float
    t_relayed: float
    t_end: float


class RequestCounters:
    """Requests by route and response status, per-route latency and TTFB histograms, and the
    gateway's own pages apart, each in one preallocated flat list.

    `record(route_id, status)`: route_id -1 means "no route" (answered by the gateway
    itself: bad request, unknown model, auth failure...); status 0 means "no response was
    sent" (the client left first); status must be 0-999. Exposed as
    `llm_edge_requests_total{route,model,provider,upstream_model,code}`.
    `record_exchange(ex)` does that, the route's histograms and the admin pages in one call.
    """

    __slots__ = ("admin", "counts", "lat", "lat_sum_us", "routes", "ttfb", "ttfb_sum_us")

    def __init__(self, route_count: int) -> None:
        self.routes = route_count
        self.counts = [0] * ((route_count + 1) * _NSLOT)  # row 0: no route; row r + 1: route r
        self.lat = [0] * (route_count * _NLAT)  # route r: buckets r*_NLAT ... (not cumulative)
        self.lat_sum_us = [0] * route_count
        self.ttfb = [0] * (route_count * _NTTFB)
        self.ttfb_sum_us = [0] * route_count
        self.admin = [0] * (len(ADMIN_PAGES) * _NSLOT)

    def __repr__(self) -> str:
        return f"<RequestCounters routes={self.routes} total={sum(self.counts)} admin={sum(self.admin)}>"

    def record(self, route_id: int, status: int) -> None:
        """Count one finished request (hot path)."""
        # One flat list rather than a list per route: the same speed (43 vs 42 ns inline, timeit,
        # CPython 3.11), but one object to snapshot, or to move to shared memory for several workers.
        self.counts[(route_id + 1) * _NSLOT + STATUS_SLOT[status]] += 1

    def record_exchange(self, ex: ExchangeLike) -> None:
        """Count one finished exchange (hot path): an admin page apart, else by route and status,
        with the answering route's latency and (streams) time to first byte."""
        endpoint = ex.endpoint
        status = ex.status if 0 <= ex.status < 1000 else 999
        if endpoint and endpoint[0] != "/":  # the pipeline names an admin page without a slash
            self.admin[_PAGE_INDEX.get(endpoint, len(ADMIN_PAGES) - 1) * _NSLOT + STATUS_SLOT[status]] += 1
            return
        route = ex.route
        if route is None:
            self.counts[STATUS_SLOT[status]] += 1
            return
        r = route.id
        self.counts[(r + 1) * _NSLOT + STATUS_SLOT[status]] += 1
        if not ex.t_sent:
            return
        # Measured (timeit, CPython 3.11, this 2-core VM under load): the whole call ~6x `record` (2.3 vs
        # 0.4 µs), of which each bisect over 10 bounds is ~0.1 µs: the price of per-route quantiles.
        latency = ex.t_end - ex.t_start
        self.lat[r * _NLAT + bisect_left(ROUTE_LATENCY_BOUNDS_S, latency)] += 1
        self.lat_sum_us[r] += int(latency * 1e6)
        if ex.stream and ex.t_relayed:
            ttfb = ex.t_relayed - ex.t_start
            self.ttfb[r * _NTTFB + bisect_left(ROUTE_TTFB_BOUNDS_S, ttfb)] += 1
            self.ttfb_sum_us[r] += int(ttfb * 1e6)

    def samples(self) -> list[tuple[int, str, int]]:
        """`(route_id, code label, count)` for every non-zero counter (route_id -1: no route)."""
        out = []
        for i, n in enumerate(self.counts):
            if n:
                row, slot = divmod(i, _NSLOT)
                out.append((row - 1, STATUS_LABELS[slot], n))
        return out

    def admin_samples(self) -> list[tuple[str, str, int]]:
        """`(page, code label, count)` for every non-zero admin counter."""
        out = []
        for i, n in enumerate(self.admin):
            if n:
                page, slot = divmod(i, _NSLOT)
                out.append((ADMIN_PAGES[page], STATUS_LABELS[slot], n))
        return out

    def route_histogram(self, route_id: int, ttfb: bool = False) -> tuple[list[int], int, int]:
        """(cumulative counts at each bound, then +Inf; count; sum in µs) of one route's histogram."""
        width, buckets, sums = (_NTTFB, self.ttfb, self.ttfb_sum_us) if ttfb else (_NLAT, self.lat, self.lat_sum_us)
        out = []
        acc = 0
        for n in buckets[route_id * width : (route_id + 1) * width]:
            acc += n
            out.append(acc)
        return out, acc, sums[route_id]


# -- histograms ------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _cuts(bounds_us: tuple[int, ...]) -> tuple[int, ...]:
    # For each bound, how many fine buckets lie wholly below it (their `high` <= bound):
    # samples are whole µs truncated down, so a fine bucket [low, high) holds true values < high.
    cuts = []
    index = 0
    for bound in bounds_us:
        while index < _FINE_BUCKETS and bucket_bounds(index)[1] <= bound:
            index += 1
        cuts.append(index)
    return tuple(cuts)


def cumulative_buckets(hist: HistogramLike, bounds_us: tuple[int, ...] = LE_BOUNDS_US) -> list[int]:
    """Cumulative sample counts at each bound of `bounds_us` (the `+Inf` bucket is `hist.count`)."""
    counts = hist.counts
    out = []
    acc = 0
    start = 0
    for cut in _cuts(bounds_us):
        acc += sum(counts[start:cut])
        start = cut
        out.append(acc)
    return out


def _le(us: int) -> str:
    whole, frac = divmod(us, 1_000_000)
    text = f"{whole}.{frac:06d}".rstrip("0")
    return text + "0" if text.endswith(".") else text


# -- text format -----------------------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers as they are, floats by repr, +Inf/-Inf/NaN spelled as Prometheus does."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Text:
    """Accumulates families; a family with no samples writes nothing (not even HELP/TYPE)."""

    __slots__ = ("const", "parts")

    def __init__(self, const: Labels) -> None:
        self.parts: list[str] = []
        self.const = const

    def family(self, name: str, kind: str, help_: str, samples: Iterable[tuple[str, Labels, float]]) -> None:
        lines = [f"{name}{suffix}{self._labels(labels)} {format_value(value)}\n" for suffix, labels, value in samples]
        if lines:
            self.parts.append(f"# HELP {name} {_escape_help(help_)}\n# TYPE {name} {kind}\n")
            self.parts.extend(lines)

    def simple(self, name: str, kind: str, help_: str, rows: Iterable[tuple[Labels, float]]) -> None:
        self.family(name, kind, help_, (("", labels, value) for labels, value in rows))

    def histogram(
        self, name: str, help_: str, hist: HistogramLike, bounds_us: tuple[int, ...], labels: Labels = ()
    ) -> None:
        samples: list[tuple[str, Labels, float]] = [
            ("_bucket", (*labels, ("le", _le(bound))), n)
            for bound, n in zip(bounds_us, cumulative_buckets(hist, bounds_us))
        ]
        samples.append(("_bucket", (*labels, ("le", "+Inf")), hist.count))
        samples.append(("_sum", labels, hist.total_us / 1e6))
        samples.append(("_count", labels, hist.count))
        self.family(name, "histogram", help_, samples)

    def _labels(self, labels: Labels) -> str:
        pairs = (*self.const, *labels) if self.const else labels
        if not pairs:
            return ""
        return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs) + "}"

    def text(self) -> bytes:
        return "".join(self.parts).encode("utf-8")


# -- render ----------------------------------------------------------------------------------

# Cache counter name -> (metric name, type, help). Keys not listed are ignored.
_CACHE_FAMILIES = {
    "hits": ("llm_edge_cache_hits_total", "counter", "Cache lookups answered from the cache."),
    "misses": ("llm_edge_cache_misses_total", "counter", "Cache lookups that found nothing usable."),
    "coalesced": ("llm_edge_cache_coalesced_total", "counter",
                  "Requests that waited for an identical in-flight request instead of going upstream."),
    "evictions": ("llm_edge_cache_evictions_total", "counter", "Entries evicted to make room."),
    "expirations": ("llm_edge_cache_expirations_total", "counter", "Entries removed because they expired."),
    "rejections": ("llm_edge_cache_rejections_total", "counter", "Responses not stored (too large or not admitted)."),
    "entries": ("llm_edge_cache_entries", "gauge", "Entries held in the cache."),
    "bytes": ("llm_edge_cache_size_bytes", "gauge", "Bytes held in the cache."),
    "max_entries": ("llm_edge_cache_max_entries", "gauge", "Configured maximum number of cache entries."),
    "max_bytes": ("llm_edge_cache_max_bytes", "gauge", "Configured maximum size of the cache in bytes."),
    "stored": ("llm_edge_cache_stores_total", "counter", "Responses stored in the cache."),
    "in_flight_keys": ("llm_edge_cache_in_flight_keys", "gauge",
                       "Cache keys with a request in flight that others may wait for."),
    "l2_hits": ("llm_edge_cache_l2_hits_total", "counter", "Lookups answered by the shared (Redis) tier."),
    "l2_misses": ("llm_edge_cache_l2_misses_total", "counter", "Lookups the shared (Redis) tier did not answer."),
    "l2_errors": ("llm_edge_cache_l2_errors_total", "counter", "Failed or timed-out calls to the shared (Redis) tier."),
}  # fmt: skip

_BREAKER_STATES = ("closed", "open", "half-open")
_DIRECTIONS = (("input", "tokens_in"), ("output", "tokens_out"))


class KeysLike(Protocol):
    """What `render` reads from `proxy.auth.Keys`."""

    missing: int
    invalid: int

    def snapshot(self, now: float) -> list[dict[str, Any]]: ...


class StatsLike(Protocol):
    """What `render` reads from `proxy.stats.Stats`."""

    by_status: list[int]
    overhead: Any
    latency: Any
    ttfb: Any


class AccessLogLike(Protocol):
    """What `render` reads from `proxy.accesslog.AccessLog`."""

    lines: int
    dropped: int
    write_errors: int


def render(
    *,
    stats: StatsLike | None = None,
    requests: RequestCounters | None = None,
    routes: Sequence[Mapping[str, Any]] = (),
    pools: Sequence[Mapping[str, Any]] = (),
    cache: Mapping[str, int] | None = None,
    keys: KeysLike | None = None,
    access_log: AccessLogLike | None = None,
    now: float = 0.0,
    uptime_s: float | None = None,
    const_labels: Mapping[str, str] | None = None,
    bounds_us: tuple[int, ...] = LE_BOUNDS_US,
) -> bytes:
    """The whole `/metrics` body (UTF-8 text, `CONTENT_TYPE`). Every argument is optional.

    stats:       `gateway.stats`: its overhead/latency/ttfb histograms (and, when `requests`
                 is not given, `by_status` as `llm_edge_requests_total{code}`).
    requests:    the `RequestCounters` the request path bumps.
    routes:      per-route rows as `admin.routes(gateway)` returns them (`id`, `model`,
                 `provider` name, ...); raw `router.snapshot()` rows work too (`route`,
                 provider id, `in_tokens`...). Also labels `requests` by route.
    pools:       `{"provider": name, "open": n, "idle": n, "opened_total": n}` per provider,
                 as /stats builds them.
    cache:       the cache's counters (`caching.Cache.snapshot()`: hits, misses, coalesced,
                 evictions, expirations, rejections, entries, bytes, stored, in_flight_keys,
                 l2_hits, l2_misses, l2_errors, max_entries, max_bytes; other keys ignored).
    keys:        the `auth.Keys` (per-key counters; `now` is passed to its snapshot).
    access_log:  the `accesslog.AccessLog` (lines written, dropped, write errors).
    uptime_s:    seconds since start.
    const_labels: labels added to every sample, e.g. {"worker": "0"}.
    """
    out = _Text(tuple((const_labels or {}).items()))
    out.simple("llm_edge_build_info", "gauge", "Always 1; labelled with the gateway version.",
               [((("version", __version__),), 1)])  # fmt: skip
    if uptime_s is not None:
        out.simple("llm_edge_uptime_seconds", "gauge", "Seconds since the gateway started.", [((), uptime_s)])

    route_labels = {_route_id(row): _route_label_set(row) for row in routes}
    if requests is not None:
        samples = []
        for route_id, code, n in requests.samples():
            labels = route_labels.get(route_id) or _unknown_route(route_id)
            samples.append((labels + (("code", code),), n))
        out.simple("llm_edge_requests_total", "counter",
                   'LLM API requests answered, by route and status (route="": answered by the gateway itself; '
                   'code="0": no response was sent). The gateway\'s own pages are counted apart.', samples)  # fmt: skip
        out.simple("llm_edge_admin_requests_total", "counter",
                   "Requests for the gateway's own pages (/healthz, /stats, /metrics, /dashboard...), by page "
                   "and status.", [((("page", page), ("code", code)), n) for page, code, n in requests.admin_samples()])
        _render_route_histograms(out, requests, route_labels)
    elif stats is not None:
        out.simple("llm_edge_requests_total", "counter", "Requests answered, by status.",
                   [((("code", str(code)),), n) for code, n in enumerate(stats.by_status) if n])  # fmt: skip

    if stats is not None:
        out.histogram("llm_edge_request_duration_seconds",
                      "Time from the whole request being received to the end of the response, for requests "
                      "sent upstream.", stats.latency, bounds_us)  # fmt: skip
        out.histogram("llm_edge_overhead_seconds",
                      "The gateway's own share of each forwarded request's latency.",
                      stats.overhead, bounds_us)  # fmt: skip
        out.histogram("llm_edge_time_to_first_byte_seconds",
                      "Time from the whole request being received to the first response byte relayed, "
                      "for streamed responses.", stats.ttfb, bounds_us)  # fmt: skip

    if routes:
        _render_routes(out, routes, route_labels)
    if pools:
        _render_pools(out, pools)
    if cache:
        for key, (name, kind, help_) in _CACHE_FAMILIES.items():
            if key in cache:
                out.simple(name, kind, help_, [((), cache[key])])
    if keys is not None:
        _render_keys(out, keys, now)
    if access_log is not None:
        out.simple("llm_edge_access_log_lines_total", "counter", "Access log lines written.",
                   [((), access_log.lines)])  # fmt: skip
        out.simple("llm_edge_access_log_dropped_total", "counter",
                   "Access log lines dropped (buffer full, unformattable or lost in a failed write).",
                   [((), access_log.dropped)])  # fmt: skip
        out.simple("llm_edge_access_log_write_errors_total", "counter", "Failed access log writes.",
                   [((), access_log.write_errors)])  # fmt: skip
    return out.text()


def _route_id(row: Mapping[str, Any]) -> int:
    value = row.get("id", row.get("route"))
    return int(value) if value is not None else -1


def _unknown_route(route_id: int) -> Labels:
    # Same label names as a known route, so every series of the family has one shape.
    return (("route", "" if route_id < 0 else str(route_id)), ("model", ""), ("provider", ""), ("upstream_model", ""))


def _route_label_set(row: Mapping[str, Any]) -> Labels:
    # `route` is named `provider/upstream model`, never the index: series keep their identity when
    # routes are added, removed or reordered in the file.
    upstream = row.get("upstream_model")
    return (
        ("route", f"{row.get('provider', '')}/{'*' if upstream is None else upstream}"),
        ("model", str(row.get("model", ""))),
        ("provider", str(row.get("provider", ""))),
        ("upstream_model", "" if upstream is None else str(upstream)),
    )


def _render_route_histograms(out: _Text, requests: RequestCounters, route_labels: Mapping[int, Labels]) -> None:
    for name, help_, bounds, ttfb in (
        ("llm_edge_route_request_duration_seconds", "Latency of the requests each route answered (few buckets: "
         "for per-provider quantiles).", ROUTE_LATENCY_BOUNDS_S, False),
        ("llm_edge_route_time_to_first_byte_seconds", "Time to the first relayed byte of the streams each route "
         "answered.", ROUTE_TTFB_BOUNDS_S, True),
    ):  # fmt: skip
        samples: list[tuple[str, Labels, float]] = []
        for route_id, labels in route_labels.items():
            if not 0 <= route_id < requests.routes:
                continue
            cumulative, count, sum_us = requests.route_histogram(route_id, ttfb)
            if not count:
                continue
            les = [repr(b) for b in bounds] + ["+Inf"]
            samples.extend(("_bucket", (*labels, ("le", le)), n) for le, n in zip(les, cumulative))
            samples.append(("_sum", labels, sum_us / 1e6))
            samples.append(("_count", labels, count))
        out.family(name, "histogram", help_, samples)


def _render_routes(out: _Text, routes: Sequence[Mapping[str, Any]], route_labels: Mapping[int, Labels]) -> None:
    rows = [(route_labels[_route_id(row)], row) for row in routes]

    def column(key: str, *alternatives: str, scale: float = 1.0) -> list[tuple[Labels, float]]:
        found = []
        for labels, row in rows:
            value = row.get(key)
            for alt in alternatives:
                if value is None:
                    value = row.get(alt)
            if value is not None:
                found.append((labels, value * scale if scale != 1.0 else value))
        return found

    out.simple("llm_edge_route_attempts_total", "counter", "Upstream attempts started on the route.",
               column("requests"))  # fmt: skip
    out.simple("llm_edge_route_successes_total", "counter", "Attempts on the route that completed with a usable "
               "response.", column("successes"))  # fmt: skip
    out.simple("llm_edge_route_failures_total", "counter", "Attempts on the route that failed in a way that counts "
               "against its health.", column("errors"))  # fmt: skip
    out.simple("llm_edge_route_rejections_total", "counter", "Attempts on the route that ended for the request's own "
               "fault (a 4xx it caused, or a translation the provider's API cannot express): neither a success nor "
               "a failure of the route.", column("rejected"))  # fmt: skip
    out.simple("llm_edge_route_cancellations_total", "counter", "Attempts on the route abandoned before their outcome "
               "(a hedge that lost, a client that left).", column("cancelled"))  # fmt: skip
    tokens = [(labels + (("direction", "input"),), v) for labels, v in column("in_tokens", "input_tokens")]
    tokens += [(labels + (("direction", "output"),), v) for labels, v in column("out_tokens", "output_tokens")]
    out.simple("llm_edge_route_tokens_total", "counter", "Tokens used through the route, by direction.", tokens)
    out.simple("llm_edge_route_spend_usd_total", "counter", "Spend through the route at its configured prices, "
               "in USD.", column("spend_usd"))  # fmt: skip
    out.simple("llm_edge_route_in_flight", "gauge", "Attempts in flight on the route.", column("in_flight"))
    out.simple("llm_edge_route_latency_seconds", "gauge", "Time-decayed average latency of the route's attempts.",
               column("latency_ms", scale=1e-3))  # fmt: skip
    out.simple("llm_edge_route_ttfb_seconds", "gauge", "Time-decayed average time to first byte of the route's "
               "attempts.", column("ttfb_ms", scale=1e-3))  # fmt: skip
    out.simple("llm_edge_route_error_ratio", "gauge", "Time-decayed share of the route's attempts that failed.",
               column("error_rate"))  # fmt: skip
    out.simple("llm_edge_route_consecutive_failures", "gauge", "Failures in a row on the route.",
               column("consecutive_failures"))  # fmt: skip
    out.simple("llm_edge_route_blocked_seconds", "gauge", "Seconds until the route may be tried again "
               "(Retry-After or an open breaker).", column("blocked_for_s"))  # fmt: skip
    breaker: list[tuple[Labels, float]] = []
    for labels, row in rows:
        state = row.get("breaker")
        if state is not None:
            breaker.extend((labels + (("state", s),), int(s == state)) for s in _BREAKER_STATES)
    out.simple("llm_edge_route_breaker_state", "gauge", "1 for the route's current circuit breaker state, "
               "0 for the others.", breaker)  # fmt: skip


def _render_pools(out: _Text, pools: Sequence[Mapping[str, Any]]) -> None:
    def column(key: str) -> list[tuple[Labels, float]]:
        return [((("provider", str(p.get("provider", ""))),), p[key]) for p in pools if p.get(key) is not None]

    out.simple("llm_edge_upstream_connections_open", "gauge", "Upstream connections open or opening, idle "
               "included.", column("open"))  # fmt: skip
    out.simple("llm_edge_upstream_connections_idle", "gauge", "Upstream connections idle in the pool.",
               column("idle"))  # fmt: skip
    out.simple("llm_edge_upstream_connections_opened_total", "counter", "Upstream connections opened.",
               column("opened_total"))  # fmt: skip


def _render_keys(out: _Text, keys: KeysLike, now: float) -> None:
    out.simple("llm_edge_auth_failures_total", "counter", "Requests refused for a missing or unknown gateway key.",
               [((("reason", "missing"),), keys.missing), ((("reason", "invalid"),), keys.invalid)])  # fmt: skip
    rows = keys.snapshot(now)
    if not rows:
        return
    named = [((("key", str(row["key"])),), row) for row in rows]
    out.simple("llm_edge_key_requests_total", "counter", "Requests admitted for the gateway key.",
               [(labels, row["admitted"]) for labels, row in named])  # fmt: skip
    out.simple("llm_edge_key_refusals_total", "counter", "Requests refused for the gateway key, by limit.",
               [(labels + (("reason", reason),), row[f"refused_{reason}"])
                for labels, row in named for reason in ("rpm", "tpm", "budget")])  # fmt: skip
    out.simple("llm_edge_key_tokens_total", "counter", "Tokens charged to the gateway key, by direction.",
               [(labels + (("direction", d),), row[field])
                for labels, row in named for d, field in _DIRECTIONS])  # fmt: skip
    out.simple("llm_edge_key_spend_usd_total", "counter", "Spend charged to the gateway key, in USD.",
               [(labels, row["spent_nusd"] / 1e9) for labels, row in named])  # fmt: skip
    out.simple("llm_edge_key_in_flight", "gauge", "Requests admitted for the key and not yet charged.",
               [(labels, row["in_flight"]) for labels, row in named])  # fmt: skip
    out.simple("llm_edge_key_budget_remaining_usd", "gauge", "Budget left to the gateway key on this worker, "
               "in USD (keys with a budget only).",
               [(labels, row["remaining_nusd"] / 1e9)
                for labels, row in named if row["remaining_nusd"] >= 0])  # fmt: skip
