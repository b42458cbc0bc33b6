"""Prometheus exposition: parses with prometheus_client, follows the naming rules, round-trips values."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from proxy import __version__
from proxy.accesslog import AccessLog, AccessLogSettings
from proxy.auth import AuthSettings, Keys
from proxy.cache.store import LRUStore
from proxy.metrics import (
    CONTENT_TYPE,
    LE_BOUNDS_US,
    STATUS_LABELS,
    STATUS_SLOT,
    RequestCounters,
    cumulative_buckets,
    escape_label_value,
    format_value,
    render,
)
from proxy.routing import ModelSpec, Router, RouterSettings, RouteSpec
from proxy.stats import Histogram, Stats, bucket_bounds

FAKE_KEY = "sk-edge-CANARY-5d1e0b7c9a"
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


# -- helpers -------------------------------------------------------------------------------------


def parse(text: bytes) -> dict[str, object]:
    """Families by name, after checking the text is strictly well formed (more than the parser does)."""
    check_structure(text.decode("utf-8"))
    return {f.name: f for f in text_string_to_metric_families(text.decode("utf-8"))}


def samples(text: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample values of metric `name` (full sample name), keyed by sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def check_structure(text: str) -> None:
    assert text.endswith("\n")
    seen_families: set[str] = set()
    seen_series: set[str] = set()
    family = kind = None
    pending_help = None
    last_le = -math.inf
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in seen_families, f"family {name} appears twice"
            pending_help = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert pending_help == name, "HELP must come right before TYPE"
            assert kind in ("counter", "gauge", "histogram")
            assert _NAME.fullmatch(name) and name.startswith("llm_edge_")
            if kind == "counter":
                assert name.endswith("_total")
            else:
                assert not name.endswith("_total")
            seen_families.add(name)
            family = name
            last_le = -math.inf
            continue
        assert not line.startswith("#")
        series, value = line.rsplit(" ", 1)
        float(value.replace("+Inf", "inf"))  # a number
        assert series not in seen_series, f"duplicate series {series}"
        seen_series.add(series)
        name = series.split("{", 1)[0]
        assert family is not None
        if kind == "histogram":
            assert name in (f"{family}_bucket", f"{family}_sum", f"{family}_count")
            if name.endswith("_bucket"):
                le = re.search(r'le="([^"]+)"', series)
                assert le is not None
                bound = math.inf if le.group(1) == "+Inf" else float(le.group(1))
                assert bound > last_le or "le" not in series
                last_le = bound if bound != math.inf else -math.inf  # next label set starts over
        else:
            assert name == family
        if "{" in series:
            body = series[series.index("{") + 1 : -1]
            for name_eq in re.findall(r'(?:^|,)([^=,"]+)="', body):
                assert _LABEL.fullmatch(name_eq)


def make_router() -> Router:
    specs = [
        ModelSpec("fast", (RouteSpec(0, "gpt-4o-mini", 0.15, 0.6), RouteSpec(1, "claude-haiku", 1.0, 5.0))),
        ModelSpec('we"ird\\name\n', (RouteSpec(0, "x"),), RouterSettings()),
    ]
    return Router(specs, [0, 0])


def admin_rows(router: Router, now: float) -> list[dict[str, object]]:
    # What admin.routes() does: provider names and renamed keys.
    names = ["openai", "anthropic"]
    rows = router.snapshot(now)
    for row in rows:
        row["id"] = row.pop("route")
        row["provider"] = names[row["provider"]]
        row["input_tokens"] = row.pop("in_tokens")
        row["output_tokens"] = row.pop("out_tokens")
    return rows


def full_render() -> bytes:
    stats = Stats()
    for seconds in (0.000012, 0.00004, 0.0009, 0.2, 1.5, 75.0):
        stats.latency.record(seconds)
    stats.overhead.record(0.00003)
    stats.ttfb.record(0.05)
    router = make_router()
    router.on_start(0)
    router.on_success(0, 0.25, 1000, 500, 1.0)
    router.on_start(1)
    router.on_failure(1, 1, 0.0, 1.0)
    counters = RequestCounters(3)
    counters.record(0, 200)
    counters.record(0, 200)
    counters.record(1, 502)
    counters.record(-1, 401)
    store = LRUStore(100, 10_000)
    keys = Keys(
        AuthSettings.from_table({"keys": [{"name": "team-a", "key": FAKE_KEY, "rpm": 60, "budget_usd": 5}]}, {})
    )
    assert keys.authenticate(FAKE_KEY.encode()) == 0
    keys.admit(0, 1.0, 0)
    keys.charge(0, 1.0, 100, 20, 2_500)
    keys.authenticate(b"nope")
    log = AccessLog(AccessLogSettings("-"), sink=lambda data: None)
    return render(
        stats=stats, requests=counters, routes=admin_rows(router, 2.0), cache={**store.counters(), "coalesced": 3},
        pools=[{"provider": "openai", "open": 4, "idle": 3, "opened_total": 9}], keys=keys, access_log=log,
        now=2.0, uptime_s=12.5,
    )  # fmt: skip


# -- the whole exposition ------------------------------------------------------------------------


def test_full_exposition_parses_and_is_well_formed() -> None:
    text = full_render()
    families = parse(text)
    expected = {
        "llm_edge_build_info": "gauge",
        "llm_edge_uptime_seconds": "gauge",
        "llm_edge_requests": "counter",
        "llm_edge_request_duration_seconds": "histogram",
        "llm_edge_overhead_seconds": "histogram",
        "llm_edge_time_to_first_byte_seconds": "histogram",
        "llm_edge_route_attempts": "counter",
        "llm_edge_route_tokens": "counter",
        "llm_edge_route_spend_usd": "counter",
        "llm_edge_route_breaker_state": "gauge",
        "llm_edge_route_error_ratio": "gauge",
        "llm_edge_upstream_connections_open": "gauge",
        "llm_edge_upstream_connections_opened": "counter",
        "llm_edge_cache_hits": "counter",
        "llm_edge_cache_coalesced": "counter",
        "llm_edge_cache_size_bytes": "gauge",
        "llm_edge_key_requests": "counter",
        "llm_edge_key_refusals": "counter",
        "llm_edge_key_spend_usd": "counter",
        "llm_edge_key_budget_remaining_usd": "gauge",
        "llm_edge_auth_failures": "counter",
        "llm_edge_access_log_dropped": "counter",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name  # type: ignore[attr-defined]
    assert CONTENT_TYPE == b"text/plain; version=0.0.4; charset=utf-8"


def test_values_round_trip() -> None:
    text = full_render()
    assert samples(text, "llm_edge_build_info") == {(("version", __version__),): 1}
    assert samples(text, "llm_edge_uptime_seconds") == {(): 12.5}
    requests = samples(text, "llm_edge_requests_total")
    ok = (("code", "200"), ("model", "fast"), ("provider", "openai"), ("route", "openai/gpt-4o-mini"),
            ("upstream_model", "gpt-4o-mini"))
    assert requests[ok] == 2
    unrouted = (("code", "401"), ("model", ""), ("provider", ""), ("route", ""), ("upstream_model", ""))
    assert requests[unrouted] == 1
    assert sum(requests.values()) == 4

    tokens = samples(text, "llm_edge_route_tokens_total")
    route0 = (("model", "fast"), ("provider", "openai"), ("route", "openai/gpt-4o-mini"),
            ("upstream_model", "gpt-4o-mini"))
    assert tokens[tuple(sorted((*route0, ("direction", "input"))))] == 1000
    assert tokens[tuple(sorted((*route0, ("direction", "output"))))] == 500
    spend = samples(text, "llm_edge_route_spend_usd_total")[route0]
    assert spend == pytest.approx(1000 * 0.15e-6 + 500 * 0.6e-6)
    assert samples(text, "llm_edge_route_latency_seconds")[route0] == pytest.approx(0.25)
    breaker = samples(text, "llm_edge_route_breaker_state")
    assert breaker[tuple(sorted((*route0, ("state", "closed"))))] == 1
    assert breaker[tuple(sorted((*route0, ("state", "open"))))] == 0
    assert (
        samples(text, "llm_edge_route_failures_total")[
            (("model", "fast"), ("provider", "anthropic"), ("route", "anthropic/claude-haiku"),
             ("upstream_model", "claude-haiku"))
        ]
        == 1
    )

    assert samples(text, "llm_edge_upstream_connections_idle") == {(("provider", "openai"),): 3}
    assert samples(text, "llm_edge_upstream_connections_opened_total") == {(("provider", "openai"),): 9}
    assert samples(text, "llm_edge_cache_coalesced_total") == {(): 3}
    assert samples(text, "llm_edge_cache_entries") == {(): 0}

    assert samples(text, "llm_edge_key_requests_total") == {(("key", "team-a"),): 1}
    assert samples(text, "llm_edge_key_refusals_total")[(("key", "team-a"), ("reason", "rpm"))] == 0
    assert samples(text, "llm_edge_key_tokens_total")[(("direction", "output"), ("key", "team-a"))] == 20
    assert samples(text, "llm_edge_key_spend_usd_total") == {(("key", "team-a"),): 2.5e-6}
    assert samples(text, "llm_edge_key_budget_remaining_usd") == {(("key", "team-a"),): 5 - 2.5e-6}
    assert samples(text, "llm_edge_auth_failures_total") == {(("reason", "invalid"),): 1, (("reason", "missing"),): 0}


def test_histograms_round_trip_sum_count_and_inf() -> None:
    text = full_render()
    buckets = samples(text, "llm_edge_request_duration_seconds_bucket")
    assert [le for ((_, le),) in buckets][:3] == ["0.00001", "0.000025", "0.00005"]  # plain decimals
    assert buckets[(("le", "+Inf"),)] == 6
    assert samples(text, "llm_edge_request_duration_seconds_count") == {(): 6}
    total = samples(text, "llm_edge_request_duration_seconds_sum")[()]
    assert total == pytest.approx(0.000012 + 0.00004 + 0.0009 + 0.2 + 1.5 + 75.0, abs=1e-5)
    assert buckets[(("le", "0.000025"),)] == 1  # 12 µs
    assert buckets[(("le", "0.00005"),)] == 2  # + 40 µs
    assert buckets[(("le", "1.0"),)] == 4
    assert buckets[(("le", "60.0"),)] == 5  # 75 s only in +Inf
    le_values = [float(le) for ((_, le),) in buckets if le != "+Inf"]
    assert le_values == [b / 1e6 for b in LE_BOUNDS_US]


def test_every_family_is_optional() -> None:
    text = render()
    families = parse(text)
    assert list(families) == ["llm_edge_build_info"]
    partial = render(cache={"hits": 5, "something_new": 1})
    assert set(parse(partial)) == {"llm_edge_build_info", "llm_edge_cache_hits"}
    assert b"something_new" not in partial


def test_keys_without_entries_still_count_auth_failures() -> None:
    keys = Keys(AuthSettings())
    keys.authenticate(b"")
    text = render(keys=keys)
    assert set(parse(text)) == {"llm_edge_build_info", "llm_edge_auth_failures"}
    assert samples(text, "llm_edge_auth_failures_total")[(("reason", "missing"),)] == 1


def test_stats_by_status_is_the_fallback_for_requests() -> None:
    stats = Stats()
    stats.by_status[200] = 7
    stats.by_status[429] = 1
    text = render(stats=stats)
    assert samples(text, "llm_edge_requests_total") == {(("code", "200"),): 7, (("code", "429"),): 1}


def test_raw_router_snapshot_rows_work_too() -> None:
    router = make_router()
    router.on_start(0)
    router.on_success(0, 0.1, 10, 20, 1.0)
    text = render(routes=router.snapshot(1.0))
    parse(text)
    tokens = samples(text, "llm_edge_route_tokens_total")
    assert tokens[(("direction", "input"), ("model", "fast"), ("provider", "0"), ("route", "0/gpt-4o-mini"),
                   ("upstream_model", "gpt-4o-mini"))] == 10  # fmt: skip


def test_const_labels_on_every_sample() -> None:
    text = full_render()
    worker = render(stats=Stats(), requests=RequestCounters(1), const_labels={"worker": "3"})
    parse(worker)
    for family in text_string_to_metric_families(worker.decode()):
        for s in family.samples:
            assert s.labels["worker"] == "3"
    assert b'worker="' not in text


def test_label_values_are_escaped_and_round_trip() -> None:
    router = make_router()
    text = render(routes=admin_rows(router, 0.0))
    parse(text)
    models = {dict(labels)["model"] for labels in samples(text, "llm_edge_route_attempts_total")}
    assert models == {"fast", 'we"ird\\name\n'}
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_no_key_value_in_metrics() -> None:
    text = full_render()
    assert FAKE_KEY.encode() not in text
    assert FAKE_KEY[-8:].encode() not in text


def test_format_value() -> None:
    assert format_value(3) == "3"
    assert format_value(True) == "1"
    assert format_value(0.5) == "0.5"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert float(format_value(1e-7)) == 1e-7


# -- histogram bucketing ---------------------------------------------------------------------------


def test_fine_bucket_count_matches_stats() -> None:
    assert len(Histogram().counts) == 34 * 16


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=120_000_000), max_size=300))
def test_buckets_never_count_a_sample_above_the_bound(values_us: list[int]) -> None:
    hist = Histogram()
    for us in values_us:
        hist.record(us / 1e6)
    recorded = [int((us / 1e6) * 1e6) for us in values_us]  # what record() stores (float truncation)
    for bound, n in zip(LE_BOUNDS_US, cumulative_buckets(hist)):
        # Never more than the samples below the bound, and at most one fine bucket (<= bound/16) short.
        assert sum(1 for us in recorded if us < bound - bound / 16) <= n <= sum(1 for us in recorded if us < bound)
        if bound in (10, 25, 50, 100):  # fine-bucket edges: exact
            assert n == sum(1 for us in recorded if us < bound)


def test_bucket_is_exactly_the_fine_buckets_below_the_bound() -> None:
    hist = Histogram()
    for index in range(len(hist.counts)):
        hist.counts[index] = index + 1
    for bound, n in zip(LE_BOUNDS_US, cumulative_buckets(hist)):
        assert n == sum(i + 1 for i in range(len(hist.counts)) if bucket_bounds(i)[1] <= bound)


def test_custom_bounds() -> None:
    stats = Stats()
    stats.latency.record(0.003)
    text = render(stats=stats, bounds_us=(1_024, 4_096))
    parse(text)
    buckets = samples(text, "llm_edge_request_duration_seconds_bucket")
    assert buckets == {(("le", "0.001024"),): 0, (("le", "0.004096"),): 1, (("le", "+Inf"),): 1}


# -- request counters ------------------------------------------------------------------------------


def test_status_slots() -> None:
    assert STATUS_LABELS[STATUS_SLOT[200]] == "200"
    assert STATUS_LABELS[STATUS_SLOT[429]] == "429"
    assert STATUS_LABELS[STATUS_SLOT[0]] == "0"
    assert STATUS_LABELS[STATUS_SLOT[201]] == "2xx"
    assert STATUS_LABELS[STATUS_SLOT[418]] == "4xx"
    assert STATUS_LABELS[STATUS_SLOT[101]] == "1xx"
    assert STATUS_LABELS[STATUS_SLOT[600]] == "other"
    assert STATUS_LABELS[STATUS_SLOT[42]] == "other"
    assert len(STATUS_SLOT) == 1000


def test_request_counters_are_preallocated_and_count() -> None:
    counters = RequestCounters(2)
    storage = counters.counts
    size = len(storage)
    for status in (200, 200, 503, 0, 299):
        counters.record(1, status)
    counters.record(-1, 404)
    assert counters.counts is storage and len(storage) == size  # nothing grows on the hot path
    assert sorted(counters.samples()) == [(-1, "404", 1), (1, "0", 1), (1, "200", 2), (1, "2xx", 1), (1, "503", 1)]
    assert "total=6" in repr(counters)
    with pytest.raises(IndexError):
        counters.record(2, 200)  # route ids are 0..route_count-1


def test_requests_for_an_unknown_route_keep_the_label_shape() -> None:
    counters = RequestCounters(5)
    counters.record(4, 200)
    text = render(requests=counters)
    parse(text)
    assert samples(text, "llm_edge_requests_total") == {
        (("code", "200"), ("model", ""), ("provider", ""), ("route", "4"), ("upstream_model", "")): 1
    }


# -- hygiene: admin pages apart, per-route histograms ------------------------------------------


class _Route:
    def __init__(self, route_id: int) -> None:
        self.id = route_id


class _Done:
    """A finished exchange, as `record_exchange` reads it."""

    def __init__(self, endpoint: str, route_id: int | None, status: int, latency: float = 0.0, ttfb: float = 0.0,
                 stream: bool = False) -> None:  # fmt: skip
        self.endpoint, self.status, self.stream = endpoint, status, stream
        self.route = _Route(route_id) if route_id is not None else None
        self.t_start, self.t_sent = 10.0, 10.0 + (0.001 if latency else 0.0)
        self.t_relayed = 10.0 + ttfb if ttfb else 0.0
        self.t_end = 10.0 + latency


def test_admin_pages_are_counted_apart_from_llm_requests() -> None:
    counters = RequestCounters(2)
    for page in ("metrics", "stats", "healthz", "dashboard", "dashboard.json", "something-new"):
        counters.record_exchange(_Done(page, None, 0))
    counters.record_exchange(_Done("/chat/completions", 1, 200, latency=0.3))
    counters.record_exchange(_Done("", None, 404))  # unknown path: the gateway's own answer, an LLM-side error
    assert sorted(counters.samples()) == [(-1, "404", 1), (1, "200", 1)]
    assert ("metrics", "0", 1) in counters.admin_samples() and ("other", "0", 1) in counters.admin_samples()
    text = render(requests=counters, routes=admin_rows(make_router(), 1.0))
    parse(text)
    admin = samples(text, "llm_edge_admin_requests_total")
    assert admin[(("code", "0"), ("page", "healthz"))] == 1 and sum(admin.values()) == 6
    assert sum(samples(text, "llm_edge_requests_total").values()) == 2


def test_per_route_latency_and_ttfb_histograms_have_few_buckets() -> None:
    counters = RequestCounters(2)
    for latency in (0.05, 0.3, 0.3, 7.0, 500.0):
        counters.record_exchange(_Done("/chat/completions", 0, 200, latency=latency))
    counters.record_exchange(_Done("/messages", 1, 200, latency=2.0, ttfb=0.04, stream=True))
    counters.record_exchange(_Done("/messages", 1, 200))  # never sent upstream: no latency sample
    counters.record_exchange(_Done("/messages", 1, 1234))  # out of range: "other", never an IndexError
    text = render(requests=counters, routes=admin_rows(make_router(), 1.0))
    parse(text)
    route0 = (("model", "fast"), ("provider", "openai"), ("route", "openai/gpt-4o-mini"),
              ("upstream_model", "gpt-4o-mini"))  # fmt: skip
    buckets = samples(text, "llm_edge_route_request_duration_seconds_bucket")
    assert buckets[tuple(sorted((*route0, ("le", "0.1"))))] == 1
    assert buckets[tuple(sorted((*route0, ("le", "0.5"))))] == 3
    assert buckets[tuple(sorted((*route0, ("le", "120.0"))))] == 4
    assert buckets[tuple(sorted((*route0, ("le", "+Inf"))))] == 5
    assert len([k for k in buckets if dict(k)["route"] == "openai/gpt-4o-mini"]) == 11  # 10 bounds and +Inf
    assert samples(text, "llm_edge_route_request_duration_seconds_sum")[route0] == pytest.approx(507.65)
    ttfb = samples(text, "llm_edge_route_time_to_first_byte_seconds_count")
    assert list(ttfb.values()) == [1]  # streams only
    assert samples(text, "llm_edge_requests_total")[
        (("code", "other"), ("model", "fast"), ("provider", "anthropic"), ("route", "anthropic/claude-haiku"),
         ("upstream_model", "claude-haiku"))] == 1  # fmt: skip


def test_rejected_and_cancelled_attempts_close_the_books() -> None:
    router = make_router()
    for _ in range(4):
        router.on_start(0)
    router.on_success(0, 0.1, 1, 1, 1.0)
    router.on_failure(0, 1, 0.0, 1.0)  # a route failure
    router.on_failure(0, 0, 0.0, 1.0)  # Failure.CLIENT: the request's fault (a refused translation too)
    router.on_cancel(0)
    [row, *_] = admin_rows(router, 1.0)
    assert (row["successes"], row["errors"], row["rejected"], row["cancelled"], row["in_flight"]) == (1, 1, 1, 1, 0)
    assert row["requests"] == row["successes"] + row["errors"] + row["rejected"] + row["cancelled"] + row["in_flight"]
    text = render(routes=[row])
    assert list(samples(text, "llm_edge_route_rejections_total").values()) == [1]
    assert list(samples(text, "llm_edge_route_cancellations_total").values()) == [1]
