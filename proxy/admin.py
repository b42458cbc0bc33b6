"""The gateway's own endpoints: health, stats and the model list. Cold path.

Each function builds a complete response (bytes) from the gateway's state; the pipeline
writes it. Nothing here sees a provider key: only names and counters are exposed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import orjson

from proxy import dashboard, totals
from proxy.auth import InvalidKeyError
from proxy.keys_admin import admin_allowed
from proxy.metrics import CONTENT_TYPE, render
from proxy.model_list import anthropic_models_body, model_ids, model_object, openai_models_body
from proxy.wire import error_response, json_response

if TYPE_CHECKING:
    from proxy.gateway import GatewayState as Gateway


def healthz(gateway: Gateway, query: str = "") -> bytes:
    """200 while some model has a usable route; 503 while draining or when none has.

    The models are the configured `[[models]]`; with none, the providers' direct `provider/*`
    routes (a gateway used by direct addressing only). Cheap: it stops at the first usable
    route. With `?detail=1`, the body lists every provider and route with its state.
    """
    if gateway.draining:
        return error_response(503, "the gateway is shutting down", "server_error", date=gateway.date_header)
    if "detail" in query and parse_qs(query).get("detail", [""])[0] not in ("", "0", "false"):
        body = health_detail(gateway)
        return json_response(200 if body["status"] != "unavailable" else 503, orjson.dumps(body),
                             date=gateway.date_header)  # fmt: skip
    router = gateway.gen.router
    now = gateway.loop.time()
    if any(router.usable_route(m, now) for m in range(_health_models(gateway))):
        return json_response(200, b'{"status":"ok"}', date=gateway.date_header)
    return error_response(503, "no model has a usable route", "server_error", date=gateway.date_header)


def health_detail(gateway: Gateway) -> dict[str, Any]:
    """Each provider and route with its state: `ok` when every route is usable, `degraded` when
    some model lost a route but every model has one, `unavailable` when no model has one."""
    router = gateway.gen.router
    settings = gateway.gen.settings
    now = gateway.loop.time()
    routes_out = []
    for route in settings.routes:
        state, detail = router.route_state(route.id, now)
        routes_out.append({"id": route.id, "model": route.model, "provider": route.provider.name,
                           "upstream_model": route.upstream_model, "state": state, "detail": detail})  # fmt: skip
    providers_out = []
    for provider, pool in zip(settings.providers, gateway.gen.pools):
        reason = router.unusable.get(provider.id)
        providers_out.append({"name": provider.name, "kind": provider.kind, "base_url": provider.base_url,
                              "usable": reason is None, "reason": reason or "",
                              "in_flight": router.table.provider_in_flight[provider.id],
                              "connections_open": pool.open})  # fmt: skip
    usable = [router.usable_route(m, now) for m in range(_health_models(gateway))]
    status = "unavailable" if not any(usable) else "ok" if all(r["state"] == "usable" for r in routes_out) else (
        "degraded")  # fmt: skip
    models_out = [{"name": m.name, "usable": ok} for m, ok in zip(router.models, usable)]
    return {"status": status, "draining": gateway.draining, "models": models_out, "providers": providers_out,
            "routes": routes_out}  # fmt: skip


def _health_models(gateway: Gateway) -> int:
    # Router model ids: the configured models first, then one direct model per provider.
    return len(gateway.gen.settings.models) or len(gateway.gen.router.models)


def stats(gateway: Gateway) -> bytes:
    """Counters, overhead and latency percentiles, and per-route totals, as JSON: the whole gateway's,
    whichever worker answers."""
    return json_response(200, orjson.dumps(stats_snapshot(gateway)), date=gateway.date_header)


def stats_snapshot(gateway: Gateway, view: totals.View | None = None) -> dict[str, Any]:
    """What `/stats` shows, as a dict (the dashboard reads it too)."""
    view = view or totals.view(gateway)
    snapshot = view.stats.snapshot()
    snapshot["uptime_s"] = round(time.monotonic() - gateway.started_at, 3)
    if gateway.shared is not None:
        snapshot["worker"] = gateway.shared.worker
        snapshot["workers_reporting"] = view.workers
    snapshot["routes"] = routes(gateway)
    if view.cache is not None:
        snapshot["cache"] = view.cache
    snapshot["pools"] = view.pools
    if gateway.fleet is not None:
        snapshot["fleet"] = gateway.fleet.snapshot()
    return snapshot


def metrics(gateway: Gateway) -> bytes:
    """Prometheus text exposition, built now from the same counters `/stats` reads."""
    view = totals.view(gateway)
    body = render(
        stats=view.stats, requests=view.requests, routes=routes(gateway), pools=view.pools, cache=view.cache,
        keys=view.keys, access_log=view.access_log, now=gateway.loop.time(),
        uptime_s=time.monotonic() - gateway.started_at,
    )  # fmt: skip
    head = b"HTTP/1.1 200 OK\r\ncontent-type: " + CONTENT_TYPE + b"\r\ncontent-length: %d\r\n" % len(body)
    return head + gateway.date_header + b"\r\n" + body


def dashboard_data(gateway: Gateway) -> bytes:
    """What the dashboard polls: `/stats`' figures and the last minutes' history (`proxy.dashboard`)."""
    view = totals.view(gateway)
    return dashboard.dashboard_json(gateway, gateway.history, stats_snapshot(gateway, view), view)


def pools(gateway: Gateway) -> list[dict[str, object]]:
    """Connections per provider (the whole gateway's)."""
    return totals.view(gateway).pools


routes = totals.route_rows  # per-route health and totals, with names instead of ids


def models(gateway: Gateway, anthropic: bool = False) -> bytes:
    """The configured model names and the `provider/model` ids providers name (model_list.model_ids),
    in OpenAI's list shape or Anthropic's."""
    ids = model_ids(gateway.gen.settings)
    if anthropic:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(gateway.created))
        return json_response(200, anthropic_models_body(ids, created), date=gateway.date_header)
    return json_response(200, openai_models_body(ids, gateway.created), date=gateway.date_header)


def model(gateway: Gateway, name: str) -> bytes:
    """One model in OpenAI's shape: a configured name, or `provider/model` on a configured provider; else 404."""
    if gateway.gen.settings.resolve(name) is not None:
        return json_response(200, orjson.dumps(model_object(name, gateway.created)), date=gateway.date_header)
    return error_response(
        404, f"the model {name!r} does not exist on this gateway", "invalid_request_error", "model_not_found",
        "model", date=gateway.date_header,
    )  # fmt: skip


# admin page name (see `endpoints`) -> its builder, called with the gateway, whether the caller speaks
# Anthropic's API, and the path's argument (a model id, or a page's query)
PAGES: dict[str, Callable[[Gateway, bool, str], bytes]] = {
    "models": lambda gateway, anthropic, _: models(gateway, anthropic),
    "model": lambda gateway, _, name: model(gateway, name),
    "healthz": lambda gateway, _, query: healthz(gateway, query),
    "stats": lambda gateway, _, __: stats(gateway),
    "metrics": lambda gateway, _, __: metrics(gateway),
    "dashboard": lambda gateway, _, __: dashboard.dashboard_page(),
    "dashboard.json": lambda gateway, _, __: dashboard_data(gateway),
}
# need the admin key once one is set
ADMIN_ONLY = frozenset(("stats", "metrics", "dashboard", "dashboard.json", "admin"))


class Request(Protocol):
    """What a page reads of the request."""

    method: bytes
    url: bytes
    body: bytes
    client_key: bytes
    anthropic_version: bytes


def page(gateway: Gateway, name: str, request: Request, argument: str) -> bytes:
    """The whole response for one of the gateway's own pages; its admin key checked first."""
    settings = gateway.gen.settings
    if name in ADMIN_ONLY and not admin_allowed(settings, request.client_key):
        raise InvalidKeyError("this page needs the admin key (the one [admin] key_env names)")
    if name == "admin":
        wall = time.time()
        status, body = gateway.keys_admin.handle(settings, request.method, request.url, request.body,
                                                 request.client_key, wall)  # fmt: skip
        if request.method != b"GET" and 200 <= status < 300:
            gateway.ledger.flush(wall)  # a created key's secret was shown: its row must not be lost
        return json_response(status, body, date=gateway.date_header)
    return PAGES[name](gateway, bool(request.anthropic_version), argument)
