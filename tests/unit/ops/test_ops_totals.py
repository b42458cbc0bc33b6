"""The whole gateway's counters: flattened, published per worker, added up by each segment's rule, and
rebuilt into the shapes `/metrics` and `/stats` read. Two gateways play two workers on one map."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from proxy import totals
from proxy.metrics import render
from proxy.shared import SharedRoutes
from tests.unit.protocol_harness import make_gateway_with

KEY = "gw-key-TOTALS-canary"
TABLE = {
    "providers": [{"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1"}],
    "models": [{"name": "fast", "routes": [{"provider": "a", "model": "m1", "input_per_mtok": 1.0}]}],
    "auth": {"keys": [{"name": "team", "key": KEY, "budget_usd": 1.0}]},
}


def finished(route: Any, status: int = 200, latency: float = 0.2, endpoint: str = "/chat/completions") -> Any:
    return SimpleNamespace(endpoint=endpoint, route=route, status=status, stream=False, t_start=1.0, t_sent=1.001,
                           t_relayed=1.1, t_end=1.0 + latency, overhead=lambda: 0.00005)  # fmt: skip


def two_workers() -> tuple[Any, Any, SharedRoutes]:
    shared = SharedRoutes(2, capacity=8, counter_cells=1 << 14)
    one, _ = make_gateway_with(TABLE)
    two, _ = make_gateway_with(TABLE)
    one.shared = two.shared = shared
    return one, two, shared


def traffic(gw: Any, n: int, latency: float) -> None:
    route = gw.settings.routes[0]
    for _ in range(n):
        ex = finished(route, latency=latency)
        gw.stats.record(ex)
        gw.gen.requests.record_exchange(ex)
    gw.gen.requests.record_exchange(finished(None, 0, endpoint="metrics"))  # a scrape: counted apart
    key = gw.gen.keys.authenticate(KEY.encode())
    gw.gen.keys.admit(key, 0.0, 0)
    gw.gen.keys.charge(key, 0.0, 10, 10, 1000 * n, 0)


def as_worker(shared: SharedRoutes, worker: int, gw: Any) -> totals.View:
    shared.worker = worker
    return totals.view(gw)


def test_one_process_reads_its_own_objects() -> None:
    gw, _ = make_gateway_with(TABLE)
    view = totals.view(gw)
    assert view.stats is gw.stats and view.requests is gw.gen.requests and view.keys is gw.gen.keys
    assert view.workers == 1


def test_every_worker_reads_the_sum_of_both() -> None:
    one, two, shared = two_workers()
    traffic(one, 3, 0.2)
    traffic(two, 5, 3.0)
    as_worker(shared, 1, two)  # worker 1 publishes (its tick would)
    view = as_worker(shared, 0, one)  # worker 0 answers a scrape: publishes itself, then adds up
    assert view.workers == 2
    assert view.stats.requests == 8 and view.stats.by_status[200] == 8 and view.stats.latency.count == 8
    assert view.stats.latency.max_us == 3_000_000  # the largest sample: a max, not a sum
    assert view.requests.samples() == [(0, "200", 8)]
    assert view.requests.admin_samples() == [("metrics", "0", 2)]
    cumulative, count, _ = view.requests.route_histogram(0)
    assert count == 8 and cumulative[3] == 3  # three at 0.2 s, within the 0.25 s bucket (index 1) onwards
    [key] = view.keys.snapshot(0.0)
    assert key["admitted"] == 2 and key["tokens_in"] == 20
    assert key["spent_nusd"] == max(one.gen.keys.snapshot(0.0)[0]["spent_nusd"],
                                    two.gen.keys.snapshot(0.0)[0]["spent_nusd"])  # fmt: skip
    assert view.keys.missing == 0
    again = as_worker(shared, 1, two)
    assert again.stats.requests == view.stats.requests  # whichever worker answers
    text = render(stats=view.stats, requests=view.requests, keys=view.keys, pools=view.pools, cache=view.cache,
                  routes=totals.route_rows(two))
    families = {f.name for f in text_string_to_metric_families(text.decode())}
    assert {"llm_edge_requests", "llm_edge_admin_requests", "llm_edge_route_request_duration_seconds"} <= families
    assert KEY.encode() not in text


def test_successive_reads_never_go_down() -> None:
    one, two, shared = two_workers()
    seen = []
    for step in range(6):
        traffic(one if step % 2 else two, 1, 0.1)
        view = as_worker(shared, step % 2, one if step % 2 else two)
        seen.append(view.stats.requests)
    assert seen == sorted(seen) and seen[-1] == 6


def test_rows_of_another_configuration_are_not_added() -> None:
    one, _, shared = two_workers()
    other, _ = make_gateway_with({**TABLE, "models": [{"name": "x", "routes": [{"provider": "a", "model": "z"}]},
                                                      {"name": "y", "routes": [{"provider": "a", "model": "w"}]}]})
    other.shared = shared
    traffic(other, 4, 0.1)
    as_worker(shared, 1, other)
    traffic(one, 1, 0.1)
    view = as_worker(shared, 0, one)
    assert view.stats.requests == 1 and view.workers == 1
    assert totals.layout_of(one).identity != totals.layout_of(other).identity


def test_too_big_for_the_shared_row_falls_back_to_this_workers_own() -> None:
    gw, _ = make_gateway_with(TABLE)
    gw.shared = SharedRoutes(2, capacity=8, counter_cells=16)
    gw.shared.worker = 0
    traffic(gw, 2, 0.1)
    view = totals.view(gw)
    assert view.stats is gw.stats and view.stats.requests == 2


def test_reduce_rules() -> None:
    layout = totals.Layout([("a", 2, totals.SUM), ("b", 1, totals.MAX), ("c", 1, totals.MIN)], ())
    assert totals.reduce(layout, [[1, 2, 5, 7], [10, 20, 3, 9]]) == [11, 22, 5, 7]
    assert totals.reduce(layout, [[1, 2, 5, 7]]) == [1, 2, 5, 7]
