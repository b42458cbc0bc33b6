"""What the router tells operators: unusable providers, reasons for "no route", health, and events."""

from __future__ import annotations

import calendar
import time

from proxy.routing import Failure, ModelSpec, Router, RouterSettings, RouteSpec
from proxy.routing.table import OPEN

A, B = 0, 1
SMALL = 400


class Recorder:
    """An `EventSink` keeping what it was told, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str, str]] = []

    def route_event(self, event: str, route_id: int, reason: str, request_id: str, now: float) -> None:
        self.seen.append((event, route_id, reason, request_id))


def router(limits: tuple[int, int] = (0, 0), **settings: object) -> tuple[Router, Recorder]:
    sink = Recorder()
    s = RouterSettings(strategy="priority", **settings)  # type: ignore[arg-type]
    routes = (RouteSpec(0, "gpt-a"), RouteSpec(1, "claude-b"))
    return Router([ModelSpec("m", routes, s)], list(limits), provider_names=("openai", "anthropic"), events=sink), sink


def test_an_unusable_provider_is_never_picked_and_says_why() -> None:
    r, _ = router()
    r.mark_unusable(A, "its key variable OPENAI_API_KEY is unset or empty")
    assert [r.pick(0, SMALL, 0, 1.0) for _ in range(5)] == [B] * 5
    assert r.route_state(A, 1.0) == ("unusable", "its key variable OPENAI_API_KEY is unset or empty")
    row = r.snapshot(1.0)[A]
    assert row["unusable"] == "its key variable OPENAI_API_KEY is unset or empty" and row["state"] == "unusable"
    assert r.usable_route(0, 1.0)
    r.mark_unusable(B, "its key variable ANTHROPIC_API_KEY is unset or empty")
    assert r.pick(0, SMALL, 0, 1.0) == -1
    assert not r.usable_route(0, 1.0)


def test_upstream_auth_failure_opens_the_breaker_at_once_and_is_reported_once() -> None:
    r, sink = router(breaker_failures=5, breaker_cooldown_s=30.0)
    r.on_start(A)
    r.on_failure(A, Failure.UPSTREAM_AUTH, 0.0, 1.0, request_id="req_1")
    assert r.table.state[A] == OPEN
    assert r.pick(0, SMALL, 0, 2.0) == B
    assert sink.seen == [("breaker_open", A, "upstream authentication failed; open for 30 s", "req_1")]


def test_breaker_transitions_are_reported_in_order() -> None:
    r, sink = router(breaker_failures=2, breaker_cooldown_s=10.0)
    for now in (1.0, 1.5):
        r.on_start(A)
        r.on_failure(A, Failure.TIMEOUT, 0.0, now, request_id=f"req_{now}")
    assert r.pick(0, SMALL, 0, 12.0) == A  # the cooldown is over: a probe
    r.on_start(A)
    r.on_success(A, 0.2, 1, 1, 12.1)
    events = [(e, route) for e, route, _, _ in sink.seen]
    assert events == [("breaker_open", A), ("breaker_half_open", A), ("breaker_closed", A)]
    assert sink.seen[0][2] == "2 consecutive failures, last: timeout; open for 10 s" and sink.seen[0][3] == "req_1.5"


def test_a_retry_after_is_a_cooldown_event() -> None:
    r, sink = router()
    r.on_start(A)
    r.on_failure(A, Failure.RATE_LIMITED, 7.0, 1.0, request_id="req_9")
    assert sink.seen == [("cooldown", A, "rate limited, Retry-After 7 s", "req_9")]


def test_unavailable_reasons_name_each_route_and_why() -> None:
    r, _ = router(limits=(0, 1), breaker_failures=1, breaker_cooldown_s=10.0)
    r.on_start(A)
    r.on_failure(A, Failure.SERVER, 0.0, 100.0)
    r.on_start(B)  # takes provider B's only in-flight slot
    assert r.pick(0, SMALL, 0, 101.0) == -1
    wall = calendar.timegm(time.strptime("2026-01-02 03:04:00", "%Y-%m-%d %H:%M:%S"))
    text = r.unavailable_reasons(0, 101.0, wall_now=wall)
    assert text == (
        "route 0 (openai/gpt-a): breaker open until 03:04:09Z (9.0 s), last failure: server error; "
        "route 1 (anthropic/claude-b): provider at max_in_flight (1)"
    )
    assert "breaker open for 9.0 s more" in r.unavailable_reasons(0, 101.0)


def test_cooling_down_is_told_apart_from_an_open_breaker() -> None:
    r, _ = router()
    r.on_start(A)
    r.on_failure(A, Failure.UNAVAILABLE, 12.0, 1.0)
    state, detail = r.route_state(A, 3.0)
    assert state == "cooling" and detail == "cooling down for 10.0 s (Retry-After), last failure: unavailable"
    assert r.usable_route(0, 3.0)  # a cooldown is not an outage


def test_a_usable_route_survives_a_breaker_whose_cooldown_ended() -> None:
    r, _ = router(breaker_failures=1, breaker_cooldown_s=5.0)
    for route in (A, B):
        r.on_start(route)
        r.on_failure(route, Failure.CONNECT, 0.0, 1.0)
    assert not r.usable_route(0, 2.0)
    assert r.usable_route(0, 6.5)
