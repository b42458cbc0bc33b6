"""Micro benchmarks for proxy.routing: the per-request cost of the router.

Run: python -m pytest bench/micro_router.py --benchmark-only -p no:cacheprovider -o testpaths=bench

- pick on a warm model with 2, 8 and 64 routes (must stay flat: a bucket lookup plus
  health checks on the first ranked route), on every strategy, on a retry, and with the
  best half of the routes blocked (the walk's worst case, which does grow);
- on_success (the stats update), with list and array('d'/'q') columns;
- a whole attempt (pick, on_start, on_first_byte, on_success) with the clock moving 1 ms per
  request, so the amortised cost of re-ranking once per second is included.
"""

from __future__ import annotations

import pytest

from proxy.routing import ModelSpec, Router, RouterSettings, RouteSpec
from proxy.routing.table import array_column, list_column

COLUMNS = {"list": list_column, "array": array_column}
pytestmark = pytest.mark.benchmark(warmup=True)  # without it the first case runs ~30% slow


def build(n: int, strategy: str = "cost-sla", column: str = "list") -> Router:
    routes = tuple(RouteSpec(i, f"m{i}", 1.0 + i, 2.0 + i, 1 + i % 3) for i in range(n))
    settings = RouterSettings(strategy=strategy, sla_ms=2000.0)
    router = Router([ModelSpec("m", routes, settings)], [0] * n, COLUMNS[column])
    now = 100.0
    for _ in range(3):  # measure every route so nothing is probed
        for r in range(n):
            router.on_start(r)
            router.on_first_byte(r, 0.1, now)
            router.on_success(r, 0.5 + r / 100, 1000, 200, now)
            now += 0.001
    router.tick(now + 10.0)
    return router


@pytest.mark.parametrize("n", [2, 8, 64])
def test_pick(benchmark, n):  # type: ignore[no-untyped-def]
    router = build(n)
    assert benchmark(router.pick, 0, 4000, 0, 200.0) >= 0


@pytest.mark.parametrize("column", ["list", "array"])
def test_pick_columns(benchmark, column):  # type: ignore[no-untyped-def]
    router = build(8, column=column)
    assert benchmark(router.pick, 0, 4000, 0, 200.0) >= 0


@pytest.mark.parametrize("strategy", ["latency", "weighted", "round-robin"])
def test_pick_strategy(benchmark, strategy):  # type: ignore[no-untyped-def]
    router = build(8, strategy)
    assert benchmark(router.pick, 0, 4000, 0, 200.0) >= 0


@pytest.mark.parametrize("n", [2, 64])
def test_pick_retry(benchmark, n):  # type: ignore[no-untyped-def]
    router = build(n)
    first = router.pick(0, 4000, 0, 200.0)
    assert benchmark(router.pick, 0, 4000, 1 << first, 200.0) not in (-1, first)


@pytest.mark.parametrize("n", [8, 64])
def test_pick_walk_half_blocked(benchmark, n):  # type: ignore[no-untyped-def]
    # Worst case worth knowing: the best half of the ranking is cooling down (Retry-After), so the
    # walk skips n/2 routes. This one does grow with n (~20-30 ns per skipped route).
    router = build(n)
    for r in router.ranking(0, 4000)[: n // 2]:
        router.table.until[r] = 1e9
    assert benchmark(router.pick, 0, 4000, 0, 200.0) >= 0


@pytest.mark.parametrize("column", ["list", "array"])
def test_on_success(benchmark, column):  # type: ignore[no-untyped-def]
    router = build(8, column=column)
    router.table.in_flight[3] = router.table.provider_in_flight[3] = 1 << 40  # never reaches 0
    clock = [300.0]

    def update() -> None:
        clock[0] += 0.001
        router.on_success(3, 0.42, 1200, 300, clock[0])

    benchmark(update)


@pytest.mark.parametrize("n", [2, 64])
def test_attempt_cycle(benchmark, n):  # type: ignore[no-untyped-def]
    router = build(n)
    clock = [300.0]

    def attempt() -> None:
        now = clock[0] = clock[0] + 0.001
        r = router.pick(0, 4000, 0, now)
        router.on_start(r)
        router.on_first_byte(r, 0.1, now)
        router.on_success(r, 0.4, 1000, 200, now)

    benchmark(attempt)
