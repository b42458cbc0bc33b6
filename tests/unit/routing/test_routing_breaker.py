"""Circuit breakers, Retry-After cooldowns and what does not count as a route failure."""

from __future__ import annotations

from proxy.routing import Failure, ModelSpec, Router, RouterSettings, RouteSpec, failure_kind

A, B = 0, 1
SMALL = 400


def make(**settings: object) -> Router:
    settings.setdefault("explore_ratio", 0.0)
    s = RouterSettings(**settings)  # type: ignore[arg-type]
    router = Router([ModelSpec("m", (RouteSpec(0, "a", 1, 1), RouteSpec(1, "b", 5, 5)), s)], [0, 0])
    for r in (A, B):  # measured, so nothing is probed for being new
        router.on_start(r)
        router.on_success(r, 0.5, 10, 10, 0.0)
    router.tick(0.0)
    return router


def fail(router: Router, r: int, now: float, kind: int = Failure.SERVER, retry_after: float = 0.0) -> None:
    router.on_start(r)
    router.on_failure(r, kind, retry_after, now)


def ok(router: Router, r: int, now: float) -> None:
    router.on_start(r)
    router.on_success(r, 0.5, 10, 10, now)


def state(router: Router, r: int) -> str:
    return str(router.snapshot()[r]["breaker"])


def test_opens_after_n_consecutive_failures() -> None:
    router = make(breaker_failures=3)
    fail(router, A, 1.0)
    fail(router, A, 1.1)
    ok(router, A, 1.2)  # a success resets the streak
    fail(router, A, 1.3)
    fail(router, A, 1.4)
    assert state(router, A) == "closed"
    assert router.pick(0, SMALL, 0, 1.5) == A
    fail(router, A, 1.5)
    assert state(router, A) == "open"
    assert router.pick(0, SMALL, 0, 1.6) == B
    assert router.pick(0, SMALL, 1 << B, 1.6) == -1


def test_opens_on_windowed_error_rate() -> None:
    router = make(breaker_failures=100, breaker_error_rate=0.5, breaker_window_s=10.0, breaker_min_requests=10)
    now = 100.0
    for _ in range(4):  # 4 of 8: 50%, but under the minimum request count
        ok(router, A, now)
        fail(router, A, now)
    assert state(router, A) == "closed"
    ok(router, A, now)
    fail(router, A, now)  # 5 of 10
    assert state(router, A) == "open"


def test_error_rate_window_forgets_old_errors() -> None:
    router = make(breaker_failures=100, breaker_error_rate=0.5, breaker_window_s=10.0, breaker_min_requests=10)
    for _ in range(9):
        fail(router, A, 100.0)  # 9 errors, one short of the minimum count
    for i in range(10):
        ok(router, A, 125.0 + i * 0.01)  # two windows later: the errors are gone
    fail(router, A, 125.5)
    assert state(router, A) == "closed"  # 1 of 11


def test_error_rate_counts_previous_bucket_proportionally() -> None:
    router = make(breaker_failures=100, breaker_error_rate=0.5, breaker_window_s=10.0, breaker_min_requests=10)
    for _ in range(10):
        fail(router, A, 105.0)
        if state(router, A) == "open":
            break
    assert state(router, A) == "open"  # 10/10 in the current bucket


def test_half_open_admits_probes_and_closes_on_success() -> None:
    router = make(breaker_failures=1, breaker_cooldown_s=5.0, half_open_probes=1)
    fail(router, A, 10.0)
    assert router.pick(0, SMALL, 0, 14.9) == B
    assert router.pick(0, SMALL, 0, 15.0) == A  # cooldown over: half-open, one probe
    assert state(router, A) == "half-open"
    router.on_start(A)
    assert router.pick(0, SMALL, 0, 15.1) == B  # the probe is out; no second one
    router.on_success(A, 0.4, 10, 10, 15.5)
    assert state(router, A) == "closed"
    assert router.pick(0, SMALL, 0, 15.6) == A


def test_half_open_probe_is_diverted_even_when_route_ranks_last() -> None:
    router = make(breaker_failures=1, breaker_cooldown_s=5.0)
    fail(router, B, 10.0)  # B is the expensive one, never first in the ranking
    router.tick(16.0)
    assert state(router, B) == "half-open"
    assert router.pick(0, SMALL, 0, 16.0) == B
    assert router.pick(0, SMALL, 1 << A, 16.0) == B  # a retry may use it too, if a slot is free


def test_several_probes_must_all_succeed() -> None:
    router = make(breaker_failures=1, breaker_cooldown_s=5.0, half_open_probes=2)
    fail(router, A, 10.0)
    assert router.pick(0, SMALL, 0, 15.0) == A
    router.on_start(A)
    assert router.pick(0, SMALL, 0, 15.0) == A
    router.on_start(A)
    assert router.pick(0, SMALL, 0, 15.0) == B
    router.on_success(A, 0.4, 1, 1, 15.2)
    assert state(router, A) == "half-open"
    router.on_success(A, 0.4, 1, 1, 15.3)
    assert state(router, A) == "closed"


def test_cancelled_probe_frees_its_slot() -> None:
    router = make(breaker_failures=1, breaker_cooldown_s=5.0)
    fail(router, A, 10.0)
    assert router.pick(0, SMALL, 0, 15.0) == A
    router.on_start(A)
    router.on_cancel(A)  # e.g. the downstream went away
    assert router.pick(0, SMALL, 0, 15.1) == A
    assert router.snapshot()[A]["in_flight"] == 0


def test_probe_failure_reopens_with_capped_backoff() -> None:
    router = make(breaker_failures=1, breaker_cooldown_s=5.0, breaker_backoff=2.0, breaker_cooldown_max_s=15.0)
    fail(router, A, 0.0)
    now = 0.0
    for expected in (10.0, 15.0, 15.0):
        now += router.snapshot()[A]["cooldown_s"]
        assert router.pick(0, SMALL, 0, now) == A  # half-open probe
        fail(router, A, now)
        assert state(router, A) == "open"
        assert router.snapshot()[A]["cooldown_s"] == expected
        assert router.pick(0, SMALL, 0, now + expected - 0.01) == B
    now += 15.0
    assert router.pick(0, SMALL, 0, now) == A
    ok(router, A, now)
    assert state(router, A) == "closed" and router.snapshot()[A]["cooldown_s"] == 5.0
    fail(router, A, now + 1)
    assert router.snapshot(now + 1)[A]["blocked_for_s"] == 5.0  # backoff starts over


def test_retry_after_cools_the_route_down() -> None:
    router = make(breaker_cooldown_max_s=60.0)
    fail(router, A, 10.0, failure_kind(429), 7.0)
    assert state(router, A) == "closed"
    assert router.pick(0, SMALL, 0, 16.9) == B
    assert router.pick(0, SMALL, 0, 17.0) == A
    fail(router, A, 20.0, failure_kind(503), 3600.0)  # capped at breaker_cooldown_max_s
    assert router.snapshot(20.0)[A]["blocked_for_s"] == 60.0
    fail(router, B, 20.0, failure_kind(429), 30.0)
    # Every route cools down: a Retry-After alone never takes the last routes out of service
    # (issue 11, defect 14), so they are still tried, in order, each at most once per request.
    assert router.pick(0, SMALL, 0, 21.0) == A
    assert router.pick(0, SMALL, 1 << A, 21.0) == B
    assert router.pick(0, SMALL, (1 << A) | (1 << B), 21.0) == -1
    assert router.retry_after(0, 21.0) == 29.0
    assert router.refusal_status(0, 21.0) == 429


def test_an_open_breaker_is_not_a_cooldown() -> None:
    router = make(breaker_failures=1)
    fail(router, A, 10.0)
    fail(router, B, 10.0)
    assert router.pick(0, SMALL, 0, 10.1) == -1
    assert router.refusal_status(0, 10.1) == 503


def test_retry_after_ignored_for_other_failures() -> None:
    router = make()
    fail(router, A, 10.0, Failure.SERVER, 30.0)
    assert router.pick(0, SMALL, 0, 10.1) == A
    assert router.retry_after(0, 10.1) == 0.0


def test_client_errors_do_not_trip() -> None:
    router = make(breaker_failures=2, breaker_min_requests=1)
    for status in (400, 401, 403, 404, 422) * 10:
        fail(router, A, 10.0, failure_kind(status))
    row = router.snapshot()[A]
    assert (row["breaker"], row["errors"], row["error_rate"], row["in_flight"]) == ("closed", 0, 0.0, 0)
    assert router.pick(0, SMALL, 0, 10.0) == A


def test_straggler_success_does_not_close_an_open_breaker() -> None:
    router = make(breaker_failures=1, breaker_cooldown_s=5.0)
    router.on_start(A)  # long request, started while closed
    fail(router, A, 10.0)
    router.on_success(A, 30.0, 1, 1, 11.0)
    assert state(router, A) == "open"
    assert router.pick(0, SMALL, 0, 12.0) == B


def test_tick_moves_expired_breakers_to_half_open() -> None:
    router = make(breaker_failures=1, breaker_cooldown_s=5.0)
    fail(router, A, 10.0)
    router.tick(12.0)
    assert state(router, A) == "open"
    router.tick(15.0)
    assert state(router, A) == "half-open"


def test_client_error_on_a_probe_returns_the_slot() -> None:
    router = make(breaker_failures=1, breaker_cooldown_s=5.0)
    fail(router, A, 10.0)
    assert router.pick(0, SMALL, 0, 15.0) == A
    fail(router, A, 15.1, failure_kind(400))  # the upstream answered; says nothing either way
    assert state(router, A) == "half-open"
    assert router.pick(0, SMALL, 0, 15.2) == A


def test_explore_skips_a_blocked_target() -> None:
    router = make(explore_ratio=0.5, breaker_failures=1, breaker_cooldown_s=5.0)
    fail(router, B, 1.0)
    assert [router.pick(0, SMALL, 0, 2.0) for _ in range(4)] == [A, A, A, A]


def test_repr_summarises_state() -> None:
    router = make(breaker_failures=1)
    fail(router, A, 1.0)
    router.on_start(B)
    assert repr(router) == "<Router models=1 routes=2 open=1 half_open=0 in_flight=1>"
