"""The `priority` strategy: the listed order, always; breakers and cooldowns still apply."""

from __future__ import annotations

import pytest

from proxy.errors import ConfigError
from proxy.routing import Failure, ModelSpec, Router, RouterSettings, RouteSpec
from proxy.routing.table import OPEN

PRIMARY, SECOND, THIRD = 0, 1, 2
SMALL = 400


def priority_router(**settings: object) -> Router:
    # The primary is the dearest and will be the slowest: cost-sla would put it last.
    routes = (RouteSpec(0, "primary", 10.0, 30.0), RouteSpec(1, "second", 0.1, 0.2), RouteSpec(2, "third", 0.0, 0.0))
    s = RouterSettings(strategy="priority", **settings)  # type: ignore[arg-type]
    return Router([ModelSpec("m", routes, s)], [0, 0, 0])


def fail(router: Router, r: int, now: float, kind: int = Failure.SERVER, retry_after: float = 0.0) -> None:
    router.on_start(r)
    router.on_failure(r, kind, retry_after, now)


def test_the_listed_order_whatever_the_latency_and_price() -> None:
    router = priority_router()
    now = 0.0
    for _ in range(50):
        now += 0.1
        r = router.pick(0, SMALL, 0, now)
        assert r == PRIMARY
        router.on_start(r)
        router.on_success(r, 5.0, 100, 100, now)  # slow and dear
        router.on_start(SECOND)
        router.on_success(SECOND, 0.01, 100, 100, now)  # fast and cheap, seen too
        router.tick(now)
    assert router.ranking(0) == (PRIMARY, SECOND, THIRD)
    assert router.ranking(0, 10**6) == (PRIMARY, SECOND, THIRD)  # every prompt size


def test_each_route_in_turn_on_failure() -> None:
    router = priority_router()
    tried = 0
    order = []
    for _ in range(3):
        r = router.pick(0, SMALL, tried, 1.0)
        order.append(r)
        tried |= 1 << r
    assert order == [PRIMARY, SECOND, THIRD]
    assert router.pick(0, SMALL, tried, 1.0) == -1


def test_an_open_breaker_skips_the_primary_until_its_probe_succeeds() -> None:
    router = priority_router(breaker_failures=2, breaker_cooldown_s=10.0)
    fail(router, PRIMARY, 1.0)
    assert router.pick(0, SMALL, 0, 1.0) == PRIMARY  # one failure is not enough
    fail(router, PRIMARY, 1.1)
    assert router.table.state[PRIMARY] == OPEN
    assert router.pick(0, SMALL, 0, 2.0) == SECOND  # the next in the list, not the cheapest (third)
    assert router.pick(0, SMALL, 0, 11.5) == PRIMARY  # half-open probe
    router.on_start(PRIMARY)
    router.on_success(PRIMARY, 0.5, 10, 10, 11.6)
    assert router.pick(0, SMALL, 0, 11.7) == PRIMARY


def test_a_retry_after_cooldown_moves_traffic_to_the_next_route_for_that_long() -> None:
    router = priority_router()
    fail(router, PRIMARY, 1.0, Failure.RATE_LIMITED, retry_after=5.0)
    assert router.pick(0, SMALL, 0, 2.0) == SECOND
    assert router.pick(0, SMALL, 0, 6.5) == PRIMARY


def test_no_exploration_or_probing_diverts_first_attempts() -> None:
    router = priority_router(explore_ratio=0.5)
    assert {router.pick(0, SMALL, 0, float(i)) for i in range(40)} == {PRIMARY}


def test_priority_is_a_known_strategy_and_a_typo_is_not() -> None:
    assert RouterSettings.from_table({"strategy": "priority"}, "router").strategy == "priority"
    with pytest.raises(ConfigError, match="priority"):
        RouterSettings.from_table({"strategy": "priorty"}, "router")
