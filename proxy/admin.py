"""The gateway's own endpoints: health, stats and the model list. Cold path.

Each function builds a complete response (bytes) from the gateway's state; the pipeline
writes it. Nothing here sees a provider key: only names and counters are exposed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from proxy.metrics import CONTENT_TYPE, render
from proxy.model_list import anthropic_models_body, model_object
from proxy.wire import error_response, json_response

if TYPE_CHECKING:
    from proxy.gateway import GatewayState as Gateway


def healthz(gateway: Gateway) -> bytes:
    """200 once the gateway is serving; 503 while it drains for shutdown."""
    if gateway.draining:
        return error_response(503, "the gateway is shutting down", "server_error", date=gateway.date_header)
    return json_response(200, b'{"status":"ok"}', date=gateway.date_header)


def stats(gateway: Gateway) -> bytes:
    """Counters, overhead and latency percentiles, and per-route totals, as JSON."""
    snapshot = gateway.stats.snapshot()
    snapshot["uptime_s"] = round(time.monotonic() - gateway.started_at, 3)
    if gateway.shared is not None:
        snapshot["worker"] = gateway.shared.worker
    snapshot["routes"] = routes(gateway)
    if gateway.cache is not None:
        snapshot["cache"] = gateway.cache.snapshot()
    snapshot["pools"] = pools(gateway)
    return json_response(200, orjson.dumps(snapshot), date=gateway.date_header)


def metrics(gateway: Gateway) -> bytes:
    """Prometheus text exposition, built now from the same counters `/stats` reads."""
    body = render(
        stats=gateway.stats, requests=gateway.gen.requests, routes=routes(gateway), pools=pools(gateway),
        cache=gateway.cache.snapshot() if gateway.cache is not None else None, keys=gateway.gen.keys,
        access_log=gateway.access_log, now=gateway.loop.time(), uptime_s=time.monotonic() - gateway.started_at,
    )  # fmt: skip
    head = b"HTTP/1.1 200 OK\r\ncontent-type: " + CONTENT_TYPE + b"\r\ncontent-length: %d\r\n" % len(body)
    return head + gateway.date_header + b"\r\n" + body


def pools(gateway: Gateway) -> list[dict[str, object]]:
    """Connections per provider."""
    return [
        {"provider": pool.provider.name, "open": pool.open, "idle": pool.idle_count, "opened_total": pool.opened_total}
        for pool in gateway.gen.pools
    ]


def routes(gateway: Gateway) -> list[dict[str, object]]:
    """Per-route health and totals from the router, with names instead of ids."""
    rows = gateway.gen.router.snapshot(gateway.loop.time())
    for row, route in zip(rows, gateway.gen.settings.routes):
        row["id"] = row.pop("route")
        row["provider"] = route.provider.name
        row["model"] = route.model
        row["input_tokens"] = row.pop("in_tokens")
        row["output_tokens"] = row.pop("out_tokens")
    if gateway.shared is not None:
        gateway.shared.totals(gateway.gen.settings.routes, rows)  # the whole gateway, not just this worker
    return rows


def models(gateway: Gateway, anthropic: bool = False) -> bytes:
    """The configured model names, in OpenAI's list shape or Anthropic's."""
    if anthropic:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(gateway.created))
        return json_response(200, anthropic_models_body(list(gateway.gen.settings.models), created), date=gateway.date_header)
    return json_response(200, gateway.gen.models_body, date=gateway.date_header)


def model(gateway: Gateway, name: str) -> bytes:
    """One configured model in OpenAI's shape, or 404."""
    if name in gateway.gen.settings.models:
        return json_response(200, orjson.dumps(model_object(name, gateway.created)), date=gateway.date_header)
    return error_response(
        404, f"the model {name!r} does not exist on this gateway", "invalid_request_error", "model_not_found",
        "model", date=gateway.date_header,
    )  # fmt: skip


# admin page name (see `endpoints`) -> its builder, called with the gateway, whether the caller speaks
# Anthropic's API, and the path's argument (a model id)
PAGES: dict[str, Callable[[Gateway, bool, str], bytes]] = {
    "models": lambda gateway, anthropic, _: models(gateway, anthropic),
    "model": lambda gateway, _, name: model(gateway, name),
    "healthz": lambda gateway, _, __: healthz(gateway),
    "stats": lambda gateway, _, __: stats(gateway),
    "metrics": lambda gateway, _, __: metrics(gateway),
}
