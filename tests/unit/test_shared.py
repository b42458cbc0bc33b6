"""Route state and counters shared by workers: single-writer rows in a shared map, merged on read.

Workers are played by switching `worker` on one map, and once by a real fork (the map must
survive it)."""

from __future__ import annotations

import os

from proxy.shared import SharedCounters, SharedRoutes, identity
from tests.unit.protocol_harness import make_gateway_with

TABLE = {
    "providers": [{"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1"}],
    "models": [
        {"name": "fast", "routes": [{"provider": "a", "model": "m1"}]},
        {"name": "slow", "routes": [{"provider": "a", "model": "m2"}]},
    ],
}


def test_counters_round_trip_per_worker() -> None:
    counters = SharedCounters(3, capacity=8)
    assert counters.publish(1, [1, 2]) is False  # the parent (worker -1) never publishes
    counters.worker = 0
    assert counters.publish(7, [1, 2, 3])
    counters.worker = 2
    assert counters.publish(7, [10, 20, 30])
    assert counters.rows(7) == [[1, 2, 3], [10, 20, 30]]  # worker 1 never published
    assert counters.rows(8) == []  # another layout: not mixed in
    assert counters.publish(7, list(range(9))) is False  # too many cells
    assert counters.rows(7) == [[1, 2, 3], [10, 20, 30]]


def test_a_row_being_written_is_not_read() -> None:
    counters = SharedCounters(1, capacity=4)
    counters.worker = 0
    counters.publish(1, [5])
    counters.cells[0] += 1  # odd sequence: a writer is mid-copy (and never finishes)
    assert counters.rows(1) == []


def test_counters_survive_a_fork() -> None:
    counters = SharedCounters(2, capacity=4)
    pid = os.fork()
    if pid == 0:
        counters.worker = 1
        os._exit(0 if counters.publish(3, [42, 43]) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert counters.rows(3) == [[42, 43]]


def test_a_blocked_route_blocks_every_worker() -> None:
    gw_one, _ = make_gateway_with(TABLE)
    gw_two, _ = make_gateway_with(TABLE)
    routes = gw_one.settings.routes
    shared = SharedRoutes(2, capacity=8)
    shared.worker = 0
    gw_one.router.table.until[0] = 5000.0  # worker 0 learned a cool-down
    shared.publish(gw_one.router, routes)
    shared.worker = 1
    shared.merge(gw_two.router, gw_two.settings.routes, now=1000.0)
    assert gw_two.router.table.until[0] == 5000.0
    assert gw_two.router.table.until[1] == 0.0  # the other route is untouched
    shared.merge(gw_two.router, gw_two.settings.routes, now=6000.0)  # past: nothing to learn
    assert gw_two.router.table.until[0] == 5000.0


def test_totals_add_up_every_worker() -> None:
    gw, _ = make_gateway_with(TABLE)
    routes = gw.settings.routes
    shared = SharedRoutes(2, capacity=8)
    table = gw.router.table
    for worker, (requests, successes) in enumerate([(3, 2), (5, 5)]):
        table.requests[0], table.successes[0] = requests, successes
        shared.worker = worker
        shared.publish(gw.router, routes)
    rows = [{"model": r.model} for r in routes]
    shared.totals(routes, rows)
    assert rows[0]["requests"] == 8 and rows[0]["successes"] == 7 and rows[0]["workers_reporting"] == 2
    assert rows[0]["breaker"] == "closed"


def test_rows_of_another_configuration_are_not_combined() -> None:
    gw, _ = make_gateway_with(TABLE)
    other, _ = make_gateway_with({**TABLE, "models": [{"name": "else", "routes": [{"provider": "a", "model": "z"}]}]})
    shared = SharedRoutes(2, capacity=8)
    shared.worker = 0
    other.router.table.until[0] = 9999.0
    shared.publish(other.router, other.settings.routes)
    shared.worker = 1
    shared.merge(gw.router, gw.settings.routes, now=1.0)
    assert gw.router.table.until[0] == 0.0
    assert identity(gw.settings.routes[0]) != identity(other.settings.routes[0])
