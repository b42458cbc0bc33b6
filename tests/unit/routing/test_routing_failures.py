"""Failure classification and the all-routes-failed status summary."""

from __future__ import annotations

import pytest

from proxy.routing import RETRYABLE, Failure, failure_kind, is_route_failure, summarize_failures
from proxy.routing.failures import (
    KIND_NAMES,
    REJECTION_STATUS,
    ROUTE_FAILURE,
    TRIPS_AT_ONCE,
    may_be_rejection,
    rejection_message,
    upstream_rejection,
)


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


# Rejections of the gateway's own configuration (issue 17)


def test_every_table_has_one_entry_per_kind() -> None:
    from proxy.routing import failures

    for table in (failures.ROUTE_FAILURE, failures.RETRYABLE, failures.HONOURS_RETRY_AFTER, TRIPS_AT_ONCE, KIND_NAMES):
        assert len(table) == len(Failure)


@pytest.mark.parametrize("status", [401, 403])
def test_a_provider_401_or_403_is_the_gateways_credentials(status: int) -> None:
    assert may_be_rejection(status)
    kind = upstream_rejection(status, b'{"type":"error","error":{"type":"authentication_error"}}')
    assert kind == Failure.UPSTREAM_AUTH
    assert ROUTE_FAILURE[kind] and RETRYABLE[kind] and TRIPS_AT_ONCE[kind]


@pytest.mark.parametrize(
    "body",
    [
        b'{"error":{"message":"Invalid URL (POST /messages)","type":"invalid_request_error","param":null,"code":null}}',
        b'{"type":"error","error":{"type":"not_found_error","message":"Not Found"}}',
        b"<html><body>404 Not Found</body></html>",
        b"",
    ],
)
def test_a_404_on_the_endpoint_path_is_a_route_failure(body: bytes) -> None:
    assert upstream_rejection(404, body) == Failure.UPSTREAM_PATH


@pytest.mark.parametrize(
    "body",
    [
        b'{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error",'
        b'"code":"model_not_found"}}',
        b'{"type":"error","error":{"type":"not_found_error","message":"model: claude-9"}}',
        b'{"object":"error","message":"The model `llama` does not exist.","type":"NotFoundError","code":404}',
        b'{"error":"model \\"llama3\\" not found, try pulling it first"}',
    ],
)
def test_a_404_for_a_model_stays_the_clients(body: bytes) -> None:
    assert upstream_rejection(404, body) == Failure.CLIENT


@pytest.mark.parametrize("status", [400, 409, 413, 422, 500])
def test_other_statuses_are_not_rejections(status: int) -> None:
    assert not may_be_rejection(status)
    assert upstream_rejection(status, b"{}") == Failure.CLIENT


def test_rejection_messages_name_the_provider_and_nothing_else() -> None:
    message = rejection_message(Failure.UPSTREAM_AUTH, "anthropic")
    assert message == "upstream authentication failed for provider 'anthropic'"
    assert "base_url" in rejection_message(Failure.UPSTREAM_PATH, "anthropic")
    assert REJECTION_STATUS == 502
    assert summarize_failures([(Failure.UPSTREAM_AUTH, 0.0), (Failure.UPSTREAM_PATH, 0.0)]) == (502, None)
