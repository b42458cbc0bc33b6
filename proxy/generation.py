"""What one loaded configuration builds: the router, the pools, the keys, the bytes to reuse.

A `Generation` is immutable in spirit: a reload (SIGHUP) builds a new one from the new file
and the gateway swaps its current generation in one assignment. Each exchange keeps the
generation it started on, so an in-flight request finishes on the config it began with.
Learned route state carries over to the new generation for routes that did not change
(same model, provider settings and upstream model), and so do the pools of providers that
did not change; retired pools close their connections as they come back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING

from proxy.auth import Keys
from proxy.cache import Planner
from proxy.config import ProviderSettings, Settings
from proxy.events import EventLog, route_labels
from proxy.limits import Accounts
from proxy.metrics import RequestCounters
from proxy.model_list import openai_models_body
from proxy.pool import Pool
from proxy.request_head import header_actions
from proxy.routing import Router
from proxy.routing.table import carry_over

if TYPE_CHECKING:
    from proxy.config import Route
    from proxy.upstream import ResponseHandler


class Generation:
    """Everything derived from one `Settings`."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        handler: ResponseHandler,
        previous: Generation | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        self.settings = settings
        self.pools = [_pool_for(provider, loop, handler, previous) for provider in settings.providers]
        specs = settings.model_specs
        self.events = EventLog(route_labels(settings.routes), settings.server.event_interval_s)
        self.router = Router(
            specs, [p.max_in_flight for p in settings.providers], provider_names=[p.name for p in settings.providers],
            events=self.events,
        )
        for provider_id, why in settings.unusable:  # allow_missing_keys: kept out of service, and said so
            self.router.mark_unusable(provider_id, why)
        self.keys = Keys(settings.auth, accounts=accounts)
        self.requests = RequestCounters(len(settings.routes))
        self.planner = Planner(settings.cache, settings.cache_modes)
        self.header_actions = header_actions(settings.server.forward_headers)
        self.provider_headers = [f"x-llm-edge-provider: {p.name}\r\n".encode("latin-1") for p in settings.providers]
        self.models_body = openai_models_body(settings.models, int(time.time()))
        # configured model name -> (router model id, router settings), found by one dict probe per request
        self.resolved = {name: (model.id, model.router) for name, model in settings.models.items()}
        if previous is not None:
            self._carry_over(previous)

    def retire(self, successor: Generation) -> None:
        """This generation is replaced: close the pools the successor did not keep."""
        kept = {id(pool) for pool in successor.pools}
        for pool in self.pools:
            if id(pool) not in kept:
                pool.retire()

    def _carry_over(self, previous: Generation) -> None:
        old_routes = {_route_identity(r): r.id for r in previous.settings.routes}
        for route in self.settings.routes:
            old = old_routes.get(_route_identity(route))
            if old is not None:
                carry_over(previous.router.table, old, self.router.table, route.id)


def _provider_identity(provider: ProviderSettings) -> ProviderSettings:
    return dataclasses.replace(provider, id=0)  # the same provider, wherever it sits in the file


def _route_identity(route: Route) -> tuple[object, ...]:
    return (route.model, route.upstream_model, _provider_identity(route.provider), route.input_per_mtok,
            route.output_per_mtok, route.weight)  # fmt: skip


def _pool_for(
    provider: ProviderSettings, loop: asyncio.AbstractEventLoop, handler: ResponseHandler, previous: Generation | None
) -> Pool:
    if previous is not None:
        identity = _provider_identity(provider)
        for pool in previous.pools:
            if _provider_identity(pool.provider) == identity:
                return pool  # same provider, same settings: keep its warm connections
    return Pool(provider, loop, handler)
