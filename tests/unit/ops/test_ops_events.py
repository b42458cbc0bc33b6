"""proxy/events.py: one line per route and kind of event per interval, with the count held back."""

from __future__ import annotations

import logging

import pytest

from proxy.events import EventLog, route_labels
from proxy.routing import Failure, ModelSpec, Router, RouterSettings, RouteSpec


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def text(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def lines() -> Lines:
    handler = Lines()
    logger = logging.getLogger("test.events")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def test_once_per_interval_per_route_and_event(lines: Lines) -> None:
    log = EventLog(["openai/gpt-a for 'm'", "anthropic/claude-b for 'm'"], interval_s=10.0,
                   logger=logging.getLogger("test.events"))  # fmt: skip
    assert log.route_event("breaker_open", 0, "timeout", "req_1", 100.0)
    assert not log.route_event("breaker_open", 0, "timeout", "req_2", 105.0)
    assert not log.route_event("breaker_open", 0, "timeout", "req_3", 109.9)
    assert log.route_event("breaker_open", 1, "timeout", "req_4", 106.0)  # another route
    assert log.route_event("breaker_closed", 0, "probe ok", "", 106.0)  # another event
    assert log.pending() == 2
    assert log.route_event("breaker_open", 0, "timeout", "req_5", 110.0)
    assert log.pending() == 0
    assert lines.text == [
        "breaker_open route=0 (openai/gpt-a for 'm') reason=\"timeout\" request_id=\"req_1\"",
        "breaker_open route=1 (anthropic/claude-b for 'm') reason=\"timeout\" request_id=\"req_4\"",
        "breaker_closed route=0 (openai/gpt-a for 'm') reason=\"probe ok\" request_id=\"-\"",
        "breaker_open route=0 (openai/gpt-a for 'm') reason=\"timeout\" request_id=\"req_5\" suppressed=2",
    ]
    assert [r.levelno for r in lines.records] == [logging.WARNING, logging.WARNING, logging.INFO, logging.WARNING]


def test_failover_and_retry_name_both_routes(lines: Lines) -> None:
    log = EventLog(["a/x for 'm'", "b/y for 'm'"], logger=logging.getLogger("test.events"))
    log.failover(0, 1, "upstream authentication failed", "req_7", 1.0)
    log.retry(0, "stale pooled connection", "req_8", 1.0)
    assert lines.text == [
        "failover route=0 (a/x for 'm') reason=\"upstream authentication failed; next: route 1 (b/y for 'm')\" "
        "request_id=\"req_7\"",
        "retry route=0 (a/x for 'm') reason=\"stale pooled connection\" request_id=\"req_8\"",
    ]


def test_a_hostile_request_id_stays_on_one_line(lines: Lines) -> None:
    log = EventLog(["a/x for 'm'"], logger=logging.getLogger("test.events"))
    log.retry(0, "x", 'evil"\r\nFAKE line', 1.0)
    assert lines.text == ['retry route=0 (a/x for \'m\') reason="x" request_id="evil???FAKE line"']


def test_unknown_events_are_refused() -> None:
    with pytest.raises(ValueError):
        EventLog([]).route_event("made_up", 0, "", "", 0.0)


def test_the_router_reports_through_an_event_log(lines: Lines) -> None:
    class Route:
        def __init__(self, provider: str, upstream: str | None, model: str) -> None:
            self.provider = type("P", (), {"name": provider})()
            self.upstream_model = upstream
            self.model = model

    labels = route_labels([Route("openai", "gpt-a", "m"), Route("openai", None, "openai/*")])
    assert labels == ["openai/gpt-a for 'm'", "openai/* for 'openai/*'"]
    log = EventLog(labels, logger=logging.getLogger("test.events"))
    router = Router([ModelSpec("m", (RouteSpec(0, "gpt-a"),), RouterSettings())], [0], events=log)
    for i in range(20):  # a burst of auth failures: one line
        router.on_start(0)
        router.on_failure(0, Failure.UPSTREAM_AUTH, 0.0, 1.0 + i * 0.01, request_id=f"req_{i}")
    assert lines.text == [
        "breaker_open route=0 (openai/gpt-a for 'm') reason=\"upstream authentication failed; open for 10 s\" "
        "request_id=\"req_0\""
    ]
