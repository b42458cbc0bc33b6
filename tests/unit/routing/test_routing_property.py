"""Property: whatever happened before, pick never returns a tried, open, cooling or saturated route,
and returns -1 only when no route is usable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.routing import Failure, ModelSpec, Router, RouterSettings, RouteSpec
from proxy.routing.table import CLOSED, HALF_OPEN, OPEN

N = 5
ROUTES = tuple(RouteSpec(r % 3, f"m{r}", 1.0 + r, 2.0 * r, 1 + r % 2) for r in range(N))
LIMITS = [2, 0, 3]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("pick"), st.integers(0, (1 << N) - 1), st.integers(0, 1 << 20)),
        st.tuples(st.just("ok"), st.integers(0, 50), st.floats(0.01, 5.0)),
        st.tuples(st.just("fail"), st.integers(0, 50), st.sampled_from(list(Failure)), st.floats(0.0, 20.0)),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("wait"), st.floats(0.0, 8.0)),
        st.tuples(st.just("tick")),
    ),
    max_size=80,
)


def usable(router: Router, r: int, tried: int, now: float) -> bool:
    t = router.table
    p = ROUTES[r].provider_id
    if tried >> r & 1 or t.until[r] > now or t.provider_in_flight[p] >= t.provider_limit[p]:
        return False
    if t.state[r] == HALF_OPEN:
        return t.probes_out[r] < router.settings(0).half_open_probes
    return True  # OPEN with until <= now becomes half-open on sight, with a fresh slot


def cooling_only(router: Router, r: int, tried: int, now: float) -> bool:
    """A closed route whose only obstacle is a Retry-After cooldown."""
    t = router.table
    p = ROUTES[r].provider_id
    if tried >> r & 1 or t.provider_in_flight[p] >= t.provider_limit[p]:
        return False
    return t.state[r] == CLOSED and t.until[r] > now and t.retry_until[r] >= t.until[r]


@settings(max_examples=300, deadline=None)
@given(
    strategy=st.sampled_from(["cost-sla", "latency", "weighted", "round-robin"]),
    explore=st.sampled_from([0.0, 0.2]),
    probes=st.integers(1, 2),
    script=ops,
)
def test_pick_never_returns_an_unusable_route(strategy: str, explore: float, probes: int, script: list) -> None:  # type: ignore[type-arg]
    s = RouterSettings(
        strategy=strategy,
        explore_ratio=explore,
        half_open_probes=probes,
        sla_ms=1000,
        breaker_failures=2,
        breaker_min_requests=3,
        breaker_cooldown_s=3.0,
        breaker_window_s=5.0,
        rerank_interval_s=0.5,
    )
    router = Router([ModelSpec("m", ROUTES, s)], LIMITS)
    now = 1000.0
    running: list[int] = []
    for op in script:
        if op[0] == "pick":
            tried, size = op[1], op[2]
            before = [usable(router, r, tried, now) for r in range(N)]
            cooling = [cooling_only(router, r, tried, now) for r in range(N)]
            r = router.pick(0, size, tried, now)
            if r < 0:
                assert not any(before) and not any(cooling)
                continue
            # a route merely cooling down after a Retry-After is used only when nothing else is
            assert before[r] or (cooling[r] and not any(before))
            assert not tried >> r & 1
            assert router.table.state[r] != OPEN
            router.on_start(r)
            running.append(r)
        elif op[0] == "wait":
            now += op[1]
        elif op[0] == "tick":
            router.tick(now)
        elif running:
            r = running.pop(op[1] % len(running))
            if op[0] == "ok":
                router.on_success(r, op[2], 100, 50, now)
            elif op[0] == "fail":
                router.on_failure(r, op[2], op[3], now)
            else:
                router.on_cancel(r)
    t = router.table
    assert sum(t.in_flight) == len(running) == sum(t.provider_in_flight)
    assert all(x >= 0 for x in t.in_flight)
