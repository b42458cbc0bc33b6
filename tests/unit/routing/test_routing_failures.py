"""Failure classification and the all-routes-failed status summary."""

from __future__ import annotations

import pytest

from proxy.routing import RETRYABLE, Failure, failure_kind, is_route_failure, summarize_failures


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_route_failures(status: int) -> None:
    assert is_route_failure(status)
    assert failure_kind(status) != Failure.CLIENT


@pytest.mark.parametrize("status", [200, 204, 301, 400, 401, 403, 404, 413, 422])
def test_request_caused_statuses_are_not_route_failures(status: int) -> None:
    assert not is_route_failure(status)
    assert failure_kind(status) == Failure.CLIENT


def test_kinds_and_retry_classification() -> None:
    assert failure_kind(429) == Failure.RATE_LIMITED
    assert failure_kind(503) == Failure.UNAVAILABLE
    assert failure_kind(504) == failure_kind(408) == Failure.TIMEOUT
    assert failure_kind(500) == Failure.SERVER
    retryable = {k for k in Failure if RETRYABLE[k]}
    assert retryable == set(Failure) - {Failure.CLIENT, Failure.BROKEN}


RL, UN, TO, CT, SE, CO = (
    Failure.RATE_LIMITED,
    Failure.UNAVAILABLE,
    Failure.TIMEOUT,
    Failure.CONNECT_TIMEOUT,
    Failure.SERVER,
    Failure.CONNECT,
)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], (503, None)),
        ([(RL, 0.0), (RL, 0.0)], (429, None)),
        ([(RL, 30.0), (RL, 2.2)], (429, 3)),
        ([(TO, 0.0), (CT, 0.0)], (504, None)),
        ([(TO, 0.0), (RL, 12.0)], (503, 12)),
        ([(UN, 0.0), (RL, 0.0)], (503, None)),
        ([(UN, 0.5)], (503, 1)),
        ([(SE, 0.0), (TO, 0.0)], (502, None)),
        ([(CO, 0.0), (SE, 5.0)], (502, None)),  # Retry-After on a 500 means nothing
    ],
)
def test_summary(outcomes: list[tuple[int, float]], expected: tuple[int, int | None]) -> None:
    assert summarize_failures(outcomes) == expected
