"""The dashboard's pure parts: the page is one self-contained response, the JSON carries what the page
shows, and the history holds the last minutes."""

from __future__ import annotations

import re

import orjson

from proxy.dashboard import History, dashboard_data, dashboard_json, dashboard_page, request_totals
from tests.unit.protocol_harness import make_gateway_with

TABLE = {
    "providers": [{"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1"}],
    "models": [{"name": "fast", "routes": [{"provider": "a", "model": "m1"}]}],
    "auth": {"keys": [{"name": "team", "key": "gw-DASH-canary", "budget_usd": 2.0}]},
}


def test_the_page_is_self_contained() -> None:
    response = dashboard_page()
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/html" in head and b"content-security-policy" in head
    assert int(re.search(rb"content-length: (\d+)", head).group(1)) == len(body)  # type: ignore[union-attr]
    assert not re.search(rb"(src|href)=\"(https?:)?//", body)  # no CDN, nothing fetched from elsewhere
    assert b'href="data:,"' in body  # no favicon request (a 404 would be a console error)
    assert b"dashboard.json" in body


def test_the_json_has_what_the_page_shows() -> None:
    gw, _ = make_gateway_with(TABLE)
    history = History(seconds=3)
    for second in range(5):
        history.sample(1000.0 + second, second * 10, second)
    response = dashboard_json(gw, history)
    data = orjson.loads(response.split(b"\r\n\r\n", 1)[1])
    assert data["series"] == [[1002.0, 20, 2], [1003.0, 30, 3], [1004.0, 40, 4]]  # the last `seconds` only
    [route, *_] = data["routes"]
    assert route["provider"] == "a" and route["breaker"] == "closed" and route["share"] == 0.0
    assert {"latency_ms", "ttfb_ms", "error_rate", "blocked_for_s", "in_flight", "spend_usd"} <= set(route)
    assert data["keys"] == [{"key": "team", "admitted": 0, "spent_usd": 0.0, "budget_usd": 2.0, "disabled": False,
                             "refused": {"rpm": 0, "tpm": 0, "budget": 0, "disabled": 0}}]  # fmt: skip
    assert data["cache"]["hit_ratio"] == 0.0 and "overhead_us" in data
    assert b"gw-DASH-canary" not in response
    assert dashboard_data(gw)["series"] == []


def test_errors_are_the_gateways_not_the_clients() -> None:
    by_status = [0] * 600
    by_status[200], by_status[400], by_status[429], by_status[502] = 10, 3, 2, 1
    assert request_totals(by_status) == (16, 3)
