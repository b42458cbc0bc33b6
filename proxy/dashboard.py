"""The live dashboard: `GET /dashboard` (one self-contained page) and `GET /dashboard.json` (what it polls).

The page is `dashboard.html`, shipped beside this module as package data: no CDN, no build step,
since a gateway often runs with no internet access. It polls `/dashboard.json` (every second, or
`?interval=MS`) and draws requests per second and errors over the last minutes, the overhead
percentiles, each route's share of traffic, latency, TTFB, error rate, breaker state, cooldown,
in-flight count and spend, the cache, and each gateway key's spend against its budget. With an
`[admin]` key both are guarded like `/stats`; the page sends the key found in its URL fragment
(`/dashboard#key=...`: a fragment never reaches a server or its logs).

`/dashboard.json` reads the same figures as `/stats` (the whole gateway's, whichever worker
answers) plus `History`: one sample of the request and error totals per second, taken by the
gateway's 1 Hz tick, so a freshly opened page has the last minutes at once. Nothing here does
network I/O; the page is read from the package once.
"""

from __future__ import annotations

import time
from collections import deque
from functools import lru_cache
from importlib import resources
from typing import Any

import orjson

from proxy import totals

HISTORY_S = 600  # seconds of request and error totals the page can draw
_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\ncontent-length: %d\r\ncache-control: no-store\r\n"
_PAGE_HEADERS = (b"x-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n"
                 b"content-security-policy: default-src 'none'; script-src 'unsafe-inline'; "
                 b"style-src 'unsafe-inline'; connect-src 'self'; img-src data:\r\n")  # fmt: skip


class History:
    """(wall time, LLM requests, errors) once a second, for the last `HISTORY_S` seconds."""

    __slots__ = ("samples",)

    def __init__(self, seconds: int = HISTORY_S) -> None:
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=seconds)

    def __repr__(self) -> str:
        return f"<History {len(self.samples)} samples>"

    def sample(self, wall: float, requests: int, errors: int) -> None:
        self.samples.append((round(wall, 3), requests, errors))


def request_totals(by_status: list[int]) -> tuple[int, int]:
    """(answered, errors) from counts by status: an error is a 5xx, a 429 or a 408 (the gateway's or a
    provider's); the client's own 4xx are answers, not errors of the gateway."""
    answered = sum(by_status[100:600])
    errors = sum(by_status[500:600]) + by_status[429] + by_status[408]
    return answered, errors


def tick(gateway: Any, history: History, wall: float) -> None:
    """Take the second's sample (called by the gateway's 1 Hz tick)."""
    view = totals.view(gateway)
    history.sample(wall, *request_totals(view.stats.by_status))


@lru_cache(maxsize=1)
def dashboard_page() -> bytes:
    """The whole `GET /dashboard` response (the page is the same for everyone: built once)."""
    body = resources.files("proxy").joinpath("dashboard.html").read_bytes()
    return _HEAD % (b"text/html; charset=utf-8", len(body)) + _PAGE_HEADERS + b"\r\n" + body


def dashboard_json(
    gateway: Any, history: History | None = None, stats: dict[str, Any] | None = None, view: totals.View | None = None
) -> bytes:
    """The whole `GET /dashboard.json` response: `/stats`' figures (`stats`, as `admin.stats_snapshot`
    builds them from `view`) shaped for the page, plus the history."""
    body = orjson.dumps(dashboard_data(gateway, history, stats, view))
    return _HEAD % (b"application/json", len(body)) + gateway.date_header + b"\r\n" + body


def dashboard_data(
    gateway: Any, history: History | None = None, stats: dict[str, Any] | None = None, view: totals.View | None = None
) -> dict[str, Any]:
    """The page's data as a dict."""
    view = view or totals.view(gateway)
    if stats is None:
        stats = {**view.stats.snapshot(), "routes": totals.route_rows(gateway), "cache": view.cache}
    by_status = view.stats.by_status
    answered, errors = request_totals(by_status)
    routes = stats.get("routes") or []
    attempts = sum(int(r.get("requests") or 0) for r in routes)
    out_routes = []
    for r in routes:
        n = int(r.get("requests") or 0)
        out_routes.append({
            "id": r.get("id"), "model": r.get("model"), "provider": r.get("provider"),
            "upstream_model": r.get("upstream_model"), "share": n / attempts if attempts else 0.0,
            "requests": n, "successes": r.get("successes"), "errors": r.get("errors"),
            "latency_ms": r.get("latency_ms"), "ttfb_ms": r.get("ttfb_ms"), "error_rate": r.get("error_rate"),
            "breaker": r.get("breaker"), "state": r.get("state"), "blocked_for_s": r.get("blocked_for_s"),
            "cooldown_s": r.get("cooldown_s"), "in_flight": r.get("in_flight"), "spend_usd": r.get("spend_usd"),
        })  # fmt: skip
    cache = stats.get("cache")
    cache_out = None
    if cache:
        lookups = cache.get("hits", 0) + cache.get("misses", 0)
        cache_out = {**cache, "hit_ratio": cache.get("hits", 0) / lookups if lookups else 0.0}
    keys = []
    for row in view.keys.snapshot(gateway.loop.time()):
        budget = row.get("budget_nusd") or 0
        keys.append({
            "key": row["key"], "admitted": row["admitted"], "spent_usd": row["spent_nusd"] / 1e9,
            "budget_usd": budget / 1e9 if budget else None, "disabled": row.get("disabled", False),
            "refused": {reason: row.get(f"refused_{reason}", 0) for reason in ("rpm", "tpm", "budget", "disabled")},
        })  # fmt: skip
    return {
        "time": round(time.time(), 3),
        "uptime_s": round(time.monotonic() - gateway.started_at, 3),
        "worker": gateway.shared.worker if gateway.shared is not None else None,
        "requests_total": answered,
        "errors_total": errors,
        "series": list(history.samples) if history is not None else [],
        "overhead_us": stats.get("overhead_us"),
        "latency_us": stats.get("latency_us"),
        "ttfb_us": stats.get("ttfb_us"),
        "routes": out_routes,
        "cache": cache_out,
        "keys": keys,
    }
