"""Route selection: every strategy, adaptivity under a fake clock, probing, exploring, fallback."""

from __future__ import annotations

from collections import Counter

import pytest

from proxy.routing import ModelSpec, Router, RouterSettings, RouteSpec
from proxy.routing.table import array_column

CHEAP, FAST, OTHER = 0, 1, 2
SMALL = 400  # prompt bytes (~100 tokens)


def make(routes: list[RouteSpec], limits: list[int] | None = None, **settings: object) -> Router:
    s = RouterSettings(**settings)  # type: ignore[arg-type]
    return Router([ModelSpec("m", tuple(routes), s)], limits or [0] * (1 + max(r.provider_id for r in routes)))


def serve(router: Router, r: int, latency: float, now: float, tokens: tuple[int, int] = (100, 100)) -> None:
    router.on_start(r)
    router.on_success(r, latency, tokens[0], tokens[1], now)


def two_routes(**settings: object) -> Router:
    settings.setdefault("explore_ratio", 0.0)
    return make([RouteSpec(0, "cheap", 1.0, 2.0), RouteSpec(1, "fast", 10.0, 20.0)], **settings)


def test_cost_sla_cheapest_when_both_meet_the_sla() -> None:
    router = two_routes(sla_ms=1000)
    serve(router, CHEAP, 0.6, 1.0)
    serve(router, FAST, 0.2, 1.0)
    router.tick(2.0)
    assert router.pick(0, SMALL, 0, 2.0) == CHEAP
    assert router.ranking(0) == (CHEAP, FAST)


def test_cost_sla_moves_to_fast_route_and_back_when_cheap_recovers() -> None:
    router = two_routes(sla_ms=1000, ewma_half_life_s=10.0, explore_ratio=0.1)
    now = 0.0
    for _ in range(5):
        now += 1.0
        serve(router, CHEAP, 0.5, now)
        serve(router, FAST, 0.2, now)
    router.tick(now)
    assert router.pick(0, SMALL, 0, now) == CHEAP

    # The cheap route turns slow: served traffic teaches the router within a few seconds.
    picks: Counter[int] = Counter()
    for i in range(100):  # 10 s at 10 req/s
        now += 0.1
        r = router.pick(0, SMALL, 0, now)
        picks[r] += 1
        serve(router, r, 3.0 if r == CHEAP else 0.2, now)
        if i % 10 == 9:
            router.tick(now)
    assert router.ranking(0)[0] == FAST
    assert router.pick(0, SMALL, 0, now) == FAST

    # It recovers. Only the explore trickle (every 10th first attempt) reaches it, and the time
    # decay lets those few fresh samples outweigh the stale slow ones.
    picks.clear()
    back_at = None
    for i in range(600):  # 60 s
        now += 0.1
        r = router.pick(0, SMALL, 0, now)
        picks[r] += 1
        serve(router, r, 0.3 if r == CHEAP else 0.2, now)
        if i % 10 == 9:
            router.tick(now)
        if back_at is None and router.ranking(0)[0] == CHEAP:
            back_at = i / 10
    assert back_at is not None and back_at < 40.0, back_at
    assert router.pick(0, SMALL, 0, now) == CHEAP
    assert picks[CHEAP] > picks[FAST]


def test_cost_sla_without_any_route_meeting_sla_takes_fastest() -> None:
    router = make(
        [RouteSpec(0, "a", 1, 1), RouteSpec(1, "b", 2, 2), RouteSpec(2, "c", 3, 3)], sla_ms=100, explore_ratio=0.0
    )
    for r, lat in ((0, 2.0), (1, 0.5), (2, 1.0)):
        serve(router, r, lat, 1.0)
    router.tick(2.0)
    assert router.ranking(0) == (1, 2, 0)


def test_cost_sla_uses_prompt_size() -> None:
    # "in" is cheap on input and dear on output; "out" the other way round.
    router = make([RouteSpec(0, "in", 1.0, 10.0), RouteSpec(1, "out", 3.0, 4.0)], explore_ratio=0.0)
    serve(router, 0, 0.5, 1.0)
    serve(router, 1, 0.5, 1.0)
    router.tick(2.0)
    assert router.pick(0, 400, 0, 2.0) == 1  # ~100-token prompt: output price dominates
    assert router.pick(0, 400_000, 0, 2.0) == 0  # ~100k-token prompt: input price dominates


def test_cost_estimate_learns_output_size() -> None:
    router = make([RouteSpec(0, "in", 1.0, 10.0), RouteSpec(1, "out", 3.0, 4.0)], explore_ratio=0.0)
    assert router.pick(0, 40_000, 0, 1.0) == 0  # probe
    now = 1.0
    for _ in range(200):  # answers are long: 5000 tokens out
        now += 0.01
        serve(router, 0, 0.5, now, (10_000, 5000))
        serve(router, 1, 0.5, now, (10_000, 5000))
    router.tick(now)
    # 10k tokens in, 5k out: "in" costs 10k*1 + 5k*10 = 60k; "out" costs 30k + 20k = 50k.
    assert router.pick(0, 40_000, 0, now) == 1


def test_latency_strategy_weights() -> None:
    routes = [RouteSpec(0, "cheap", 1.0, 1.0), RouteSpec(1, "fast", 10.0, 10.0)]
    fastest = make(routes, strategy="latency", explore_ratio=0.0)
    balanced = make(routes, strategy="latency", cost_weight=1.0, explore_ratio=0.0)
    for router in (fastest, balanced):
        serve(router, 0, 0.6, 1.0)
        serve(router, 1, 0.3, 1.0)
        router.tick(2.0)
    assert fastest.pick(0, SMALL, 0, 2.0) == 1
    assert balanced.pick(0, SMALL, 0, 2.0) == 0  # 2x slower but 10x cheaper


def test_weighted_is_proportional_and_falls_back() -> None:
    router = make(
        [RouteSpec(0, "a", weight=3), RouteSpec(1, "b", weight=1), RouteSpec(2, "c", weight=0)], strategy="weighted"
    )
    seen = Counter(router.pick(0, SMALL, 0, 1.0) for _ in range(400))
    assert seen == {0: 300, 1: 100}
    # Interleaved, not 3 a's in a row: the first 8 picks hold both routes in 3:1.
    assert Counter(router.pick(0, SMALL, 0, 1.0) for _ in range(8)) == {0: 6, 1: 2}
    router.on_start(0)
    router.on_failure(0, 5, 60.0, 1.0)  # 429, Retry-After 60 s
    assert {router.pick(0, SMALL, 0, 2.0) for _ in range(8)} == {1}
    assert router.pick(0, SMALL, 1 << 1, 2.0) == 2  # weight 0 still serves as a fallback


def test_round_robin_rotates() -> None:
    router = make([RouteSpec(0, "a"), RouteSpec(0, "b"), RouteSpec(0, "c")], strategy="round-robin")
    assert [router.pick(0, SMALL, 0, 1.0) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    # Retries don't move the cursor and walk the rotation from where it stands.
    assert router.pick(0, SMALL, 1 << 0, 1.0) == 1
    assert router.pick(0, SMALL, 0, 1.0) == 0


def test_unmeasured_route_is_probed_once_at_a_time_not_starved() -> None:
    router = make(
        [RouteSpec(0, "cheap", 1, 1), RouteSpec(1, "fast", 2, 2), RouteSpec(2, "new", 50, 50)], explore_ratio=0.0
    )
    serve(router, 0, 0.5, 1.0)
    serve(router, 1, 0.5, 1.0)
    router.tick(1.0)
    assert router.pick(0, SMALL, 0, 2.0) == 2  # the expensive newcomer still gets measured
    router.on_start(2)
    assert router.pick(0, SMALL, 0, 2.0) == 0  # one probe in flight is enough
    assert router.pick(0, SMALL, 1 << 0, 2.0) == 1  # retries are never diverted to probes
    router.on_success(2, 0.4, 10, 10, 3.0)
    assert router.pick(0, SMALL, 0, 3.0) == 0  # measured: back to cost order
    router.tick(4.0)
    assert router.pick(0, SMALL, 0, 4.0) == 0


def test_cold_start_probes_each_route_then_ranks_by_cost() -> None:
    router = make([RouteSpec(0, "a", 5, 5), RouteSpec(1, "b", 1, 1)], explore_ratio=0.0)
    first = router.pick(0, SMALL, 0, 1.0)
    router.on_start(first)
    second = router.pick(0, SMALL, 0, 1.0)
    router.on_start(second)
    assert {first, second} == {0, 1}
    assert router.pick(0, SMALL, 0, 1.0) == 1  # nothing left to probe: cheapest


def test_explore_trickle_reaches_non_best_routes() -> None:
    router = make([RouteSpec(0, "a", 1, 1), RouteSpec(1, "b", 2, 2), RouteSpec(2, "c", 3, 3)], explore_ratio=0.1)
    for r in range(3):
        serve(router, r, 0.5, 1.0)
    router.tick(1.0)
    seen = Counter(router.pick(0, SMALL, 0, 2.0) for _ in range(1000))
    assert seen == {0: 900, 1: 50, 2: 50}
    retries = Counter(router.pick(0, SMALL, 1 << 2, 2.0) for _ in range(100))
    assert retries == {0: 100}  # no exploring on retries


def test_explore_disabled() -> None:
    router = two_routes(explore_ratio=0.0)
    serve(router, 0, 0.5, 1.0)
    serve(router, 1, 0.5, 1.0)
    router.tick(1.0)
    assert {router.pick(0, SMALL, 0, 2.0) for _ in range(1000)} == {CHEAP}


def test_fallback_order_follows_ranking_via_tried_mask() -> None:
    router = make([RouteSpec(0, "a", 3, 3), RouteSpec(1, "b", 1, 1), RouteSpec(2, "c", 2, 2)], explore_ratio=0.0)
    for r in range(3):
        serve(router, r, 0.5, 1.0)
    router.tick(1.0)
    tried, order = 0, []
    while (r := router.pick(0, SMALL, tried, 2.0)) >= 0:
        order.append(r)
        tried |= 1 << r
    assert order == [1, 2, 0]


def test_provider_in_flight_limit() -> None:
    # Routes 0 and 1 share provider 0 (limit 2); route 2 is on provider 1 (limit 1).
    router = make(
        [RouteSpec(0, "a", 1, 1), RouteSpec(0, "b", 2, 2), RouteSpec(1, "c", 3, 3)], [2, 1], explore_ratio=0.0
    )
    for r in range(3):
        serve(router, r, 0.5, 1.0)
    router.tick(1.0)
    started = []
    for _ in range(3):
        r = router.pick(0, SMALL, 0, 2.0)
        router.on_start(r)
        started.append(r)
    assert started == [0, 0, 2]  # provider 0 full after two, so route 1 is skipped too
    assert router.pick(0, SMALL, 0, 2.0) == -1
    router.on_cancel(2)
    assert router.pick(0, SMALL, 0, 2.0) == 2
    router.on_success(0, 0.5, 1, 1, 3.0)
    assert router.pick(0, SMALL, 0, 3.0) == 0
    assert router.snapshot()[0]["in_flight"] == 1


def test_ewma_decays_with_time_not_sample_count() -> None:
    router = two_routes(ewma_half_life_s=10.0)
    serve(router, 0, 1.0, 0.0)
    serve(router, 0, 3.0, 10.0)  # one half-life later: the first sample weighs 1/2
    assert router.snapshot()[0]["latency_ms"] == pytest.approx((0.5 * 1000 + 3000) / 1.5)
    serve(router, 1, 1.0, 0.0)
    serve(router, 1, 3.0, 0.0)  # same instant: plain mean
    assert router.snapshot()[1]["latency_ms"] == pytest.approx(2000)


def test_ttfb_metric_ranks_on_first_byte() -> None:
    router = two_routes(sla_ms=500, latency_metric="ttfb")
    for r, ttfb, total in ((CHEAP, 0.8, 1.0), (FAST, 0.1, 5.0)):
        router.on_start(r)
        router.on_first_byte(r, ttfb, 1.0)
        router.on_success(r, total, 10, 10, 1.0)
    router.tick(2.0)
    assert router.ranking(0) == (FAST, CHEAP)
    assert router.snapshot()[FAST]["ttfb_ms"] == pytest.approx(100)


def test_stats_totals_and_exact_spend() -> None:
    router = two_routes()
    for _ in range(1000):
        serve(router, CHEAP, 0.5, 1.0, (1000, 500))  # $1/Mtok in, $2/Mtok out
    router.on_start(CHEAP)
    router.on_failure(CHEAP, 3, 0.0, 1.0)  # same instant, so no decay: 1 error in 1001
    row = router.snapshot(now=2.0)[CHEAP]
    assert router.table.spend_pusd[CHEAP] == 1000 * (1000 * 1_000_000 + 500 * 2_000_000)
    assert row["spend_usd"] == 2.0  # exactly: no float accumulation
    assert (row["requests"], row["successes"], row["errors"]) == (1001, 1000, 1)
    assert (row["in_tokens"], row["out_tokens"], row["in_flight"]) == (1_000_000, 500_000, 0)
    assert row["error_rate"] == pytest.approx(1 / 1001)
    assert row["breaker"] == "closed" and row["blocked_for_s"] == 0.0


def test_rerank_waits_for_dirty_and_interval() -> None:
    router = two_routes(sla_ms=1000, rerank_interval_s=5.0)
    serve(router, CHEAP, 0.5, 1.0)
    serve(router, FAST, 0.2, 1.0)
    router.tick(1.0)
    assert router.ranking(0)[0] == CHEAP
    for i in range(20):
        serve(router, CHEAP, 4.0, 1.0 + i / 10)
    assert router.pick(0, SMALL, 0, 3.0) == CHEAP  # stale until the interval passes
    assert router.pick(0, SMALL, 0, 6.5) == FAST  # pick re-ranks itself when overdue


def test_ranking_and_settings_accessors() -> None:
    rr = make([RouteSpec(0, "a"), RouteSpec(0, "b")], strategy="round-robin", max_attempts=2)
    assert rr.ranking(0) == (0, 1)
    rr.pick(0, SMALL, 0, 1.0)
    assert rr.ranking(0) == (1, 0)
    assert rr.settings(0).max_attempts == 2
    weighted = make([RouteSpec(0, "a", weight=1), RouteSpec(0, "b", weight=2)], strategy="weighted")
    assert weighted.ranking(0)[0] == 1
    assert rr.model_index == {"m": 0}


def test_first_byte_samples_at_the_same_instant_average() -> None:
    router = two_routes()
    for ttfb in (0.1, 0.3):
        router.on_first_byte(CHEAP, ttfb, 5.0)
    assert router.snapshot()[CHEAP]["ttfb_ms"] == pytest.approx(200)


def test_array_columns_behave_like_lists() -> None:
    # The table's backing store is swappable (array today, shared memory later): same results.
    routes = (RouteSpec(0, "a", 1, 2), RouteSpec(1, "b", 3, 4), RouteSpec(0, "c", 5, 6))
    spec = ModelSpec("m", routes, RouterSettings(breaker_failures=2, explore_ratio=0.2, sla_ms=800))
    a, b = Router([spec], [2, 0]), Router([spec], [2, 0], array_column)
    now, picks = 0.0, ([], [])
    for i in range(300):
        now += 0.05
        for router, seen in ((a, picks[0]), (b, picks[1])):
            r = router.pick(0, 1000 * (i % 7), 0, now)
            seen.append(r)
            if r < 0:
                continue
            router.on_start(r)
            if i % 11 == 0:
                router.on_failure(r, 3, 0.0, now)
            else:
                router.on_success(r, 0.2 + 0.5 * r + (i % 5) / 10, 100, 50, now)
            if i % 20 == 0:
                router.tick(now)
    assert picks[0] == picks[1]
    assert a.snapshot(now) == b.snapshot(now)
