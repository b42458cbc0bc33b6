# The adaptive, cost-aware router: which route serves the next attempt, and what each
# attempt's outcome teaches us.
#
# Theory of operation:
# - Every route has an id 0..N-1 (models' routes in config order) and all its mutable state
#   lives in `RouteTable` columns. Ranking (rank.py) turns that state into ordered tuples of
#   route ids per model (per prompt-size bucket for price-aware strategies).
# - The record functions (`on_*`) update columns in place and mark the model dirty by moving
#   its `rank_due` from +inf to "last ranking + rerank_interval_s". `pick` re-ranks when due,
#   `tick` re-ranks whatever is dirty; so sorting never happens per request.
# - `pick` is then: choose the ordered tuple (bucket / cursor), maybe divert a first attempt
#   to a probe or an exploration, and walk the tuple to the first route that is untried, not
#   blocked (`until`), admitted by its breaker and under its provider's in-flight limit.
#   The walk is the fallback order too: retries pass the growing `tried_mask`.
# - Nothing here does I/O or reads a clock: time is the `now` argument (seconds).
#
# Breaker transitions are in breaker.py; this file decides when they happen, and tells the
# optional `events` sink (an `EventSink`, e.g. proxy/events.py) about each one. Transitions are
# rare, so the sink is called off the fast path only.
# A provider marked unusable (`mark_unusable`: e.g. its key variable is unset) gets an in-flight
# limit of 0, so the existing provider check in `pick` skips it at no extra cost.

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

from proxy.errors import ConfigError
from proxy.routing import breaker, rank
from proxy.routing.failures import HONOURS_RETRY_AFTER, KIND_NAMES, ROUTE_FAILURE, TRIPS_AT_ONCE
from proxy.routing.settings import ModelSpec, RouterSettings, RouteSpec
from proxy.routing.table import BREAKER_NAMES, CLOSED, HALF_OPEN, OPEN, ColumnFactory, RouteTable, list_column

_INF = math.inf
_LN2 = math.log(2.0)
_exp = math.exp
_BUCKET = rank.BUCKET_OF_BITLEN
_NEVER = 2**62  # explore countdown that never reaches zero (no "explore enabled?" branch per pick)
_OUT_PRIOR_N = 20  # the assumed output size counts as this many observed requests

# Strategies past _LATENCY have static orders; pick walks m.orders[cursor] for them.
_COST_SLA, _LATENCY, _WEIGHTED, _ROUND_ROBIN, _PRIORITY = range(5)
_KIND = {"cost-sla": _COST_SLA, "latency": _LATENCY, "weighted": _WEIGHTED, "round-robin": _ROUND_ROBIN,
         "priority": _PRIORITY}  # fmt: skip


class EventSink(Protocol):
    """Where the router reports what operators want to read about (see proxy/events.py)."""

    def route_event(self, event: str, route_id: int, reason: str, request_id: str, now: float) -> None:
        """`event` is breaker_open, breaker_half_open, breaker_closed or cooldown."""


class _Model:
    """Per-model constants and selection state (one per configured model, cold to build)."""

    # Grouped by lifetime in __init__: config constants first, then selection state.
    __slots__ = (
        "backoff", "cooldown", "cooldown_max", "cursor", "decay", "error_rate", "explore_count", "explore_every",
        "explore_i", "failures", "id", "interval", "inv_window", "kind", "min_requests", "name", "next_rank",
        "orders", "probe", "probes", "rank_due", "routes", "settings", "sla_s", "ttfb", "wheel",
    )  # fmt: skip

    def __init__(self, model_id: int, spec: ModelSpec, routes: tuple[int, ...]) -> None:
        s = spec.settings
        # config
        self.id = model_id
        self.name = spec.name
        self.settings = s
        self.routes = routes
        self.kind = _KIND[s.strategy]
        self.ttfb = s.latency_metric == "ttfb"
        self.sla_s = s.sla_ms / 1000.0
        self.decay = -_LN2 / s.ewma_half_life_s  # weight of a sample dt old is exp(decay * dt)
        self.inv_window = 1.0 / s.breaker_window_s
        self.failures = s.breaker_failures
        self.error_rate = s.breaker_error_rate
        self.min_requests = s.breaker_min_requests
        self.cooldown = s.breaker_cooldown_s
        self.backoff = s.breaker_backoff
        self.cooldown_max = s.breaker_cooldown_max_s
        self.probes = s.half_open_probes
        self.interval = s.rerank_interval_s
        ratio = s.explore_ratio
        self.explore_every = max(2, round(1.0 / ratio)) if ratio > 0.0 and len(routes) > 1 else _NEVER
        # selection state
        self.orders: tuple[tuple[int, ...], ...] = (routes,)
        self.wheel: tuple[int, ...] = (0,)
        self.probe: tuple[int, ...] = ()
        self.cursor = 0
        self.explore_count = self.explore_every
        self.explore_i = 0
        self.rank_due = -_INF  # rank on first use
        self.next_rank = -_INF


class Router:
    """Route selection and per-route health for every configured model.

    Parameters:
        models: the models in config order; model ids are their positions, route ids are
            assigned in order across all models' routes.
        provider_limits: `max_in_flight` per provider id (0 = unlimited).
        column: column factory for the state table (list by default; see table.py).

    Request-path protocol, per attempt: `r = pick(...)`; if r >= 0, `on_start(r)`, then
    exactly one of `on_success`, `on_failure` or `on_cancel` (plus `on_first_byte` when the
    response head arrives). Retries call `pick` again with `tried_mask | (1 << r)`.
    """

    __slots__ = (
        "_model_of",
        "_pick_cols",
        "_prices_in",
        "_prices_out",
        "_provider_of",
        "events",
        "model_index",
        "models",
        "provider_names",
        "routes",
        "table",
        "unusable",
    )  # fmt: skip

    def __init__(
        self,
        models: Sequence[ModelSpec],
        provider_limits: Sequence[int],
        column: ColumnFactory = list_column,
        provider_names: Sequence[str] = (),
        events: EventSink | None = None,
    ) -> None:
        routes: list[RouteSpec] = []
        built: list[_Model] = []
        for i, spec in enumerate(models):
            if not spec.routes:
                raise ConfigError(f"models[{i}].routes: at least one route is required")
            ids = tuple(range(len(routes), len(routes) + len(spec.routes)))
            for j, route in enumerate(spec.routes):
                if not 0 <= route.provider_id < len(provider_limits):
                    raise ConfigError(f"models[{i}].routes[{j}].provider: unknown provider id {route.provider_id}")
            routes.extend(spec.routes)
            built.append(_Model(i, spec, ids))
        self.models = tuple(built)
        self.model_index = {m.name: m.id for m in built}
        if len(self.model_index) != len(built):
            raise ConfigError("models.name: model names must be unique")
        self.routes = tuple(routes)
        self.table = t = RouteTable(len(routes), list(provider_limits), column)
        self.provider_names = tuple(provider_names) or tuple(f"#{p}" for p in range(len(provider_limits)))
        self.events = events
        self.unusable: dict[int, str] = {}  # provider id -> why it is never picked
        self._model_of = tuple(m for m in built for _ in m.routes)
        self._provider_of = tuple(r.provider_id for r in routes)
        self._prices_in = tuple(r.input_pusd for r in routes)
        self._prices_out = tuple(r.output_pusd for r in routes)
        for r in range(len(routes)):
            t.cooldown[r] = self._model_of[r].cooldown
            t.sla_ok[r] = 1
        # pick binds these five as locals with one load + unpack: no gain on a first-route pick,
        # ~5-10% (noisy) when the walk skips 32 blocked routes (see bench/micro_router.py).
        self._pick_cols = (t.until, t.state, self._provider_of, t.provider_in_flight, t.provider_limit)
        for m in built:
            self._rerank(m, 0.0)
            m.rank_due = _INF

    def __repr__(self) -> str:
        t = self.table
        states = [t.state[r] for r in range(t.n)]
        return (
            f"<Router models={len(self.models)} routes={t.n} open={states.count(OPEN)} "
            f"half_open={states.count(HALF_OPEN)} in_flight={sum(t.in_flight)}>"
        )

    # -- selection (hot) ------------------------------------------------------------------

    def pick(self, model_id: int, prompt_bytes: int, tried_mask: int, now: float) -> int:
        """The route for the next attempt of a request to `model_id`, or -1 if none is usable.

        `prompt_bytes` sizes the request for price-aware ranking (body length is fine).
        `tried_mask` has bit `1 << route_id` set for every route already tried by this
        request; 0 on the first attempt (only first attempts are diverted to probes and
        exploration). Never returns a tried route, a route whose breaker is open or whose
        Retry-After has not passed, a half-open route with no probe slot left, or a route
        whose provider is at `max_in_flight`.
        """
        m = self.models[model_id]
        if now >= m.rank_due:
            self._rerank(m, now)
        kind = m.kind
        if kind <= _LATENCY:
            order = m.orders[_BUCKET[prompt_bytes.bit_length()]]
            if not tried_mask:
                if m.probe:
                    r = self._probe(m, now)
                    if r >= 0:
                        return r
                c = m.explore_count - 1
                if c:
                    m.explore_count = c
                else:
                    m.explore_count = m.explore_every
                    r = self._explore(m, order, now)
                    if r >= 0:
                        return r
        else:
            c = m.cursor
            order = m.orders[m.wheel[c] if kind == _WEIGHTED else c]
            if not tried_mask:
                c += 1
                m.cursor = c if c < len(m.wheel) else 0
        until, state, prov, pinf, plim = self._pick_cols
        for r in order:
            if until[r] > now or tried_mask >> r & 1:
                continue
            if state[r] and not self._admit(r, now):
                continue
            p = prov[r]
            if pinf[p] < plim[p]:
                return r
        # A Retry-After only shifts traffic to other routes: the last routes standing are still
        # tried while they merely cool down (closed breaker). Their breakers still apply.
        retry_until = self.table.retry_until
        for r in order:
            if until[r] > now and not state[r] and retry_until[r] >= until[r] and not tried_mask >> r & 1:
                if pinf[prov[r]] < plim[prov[r]]:
                    return r
        return -1

    # -- outcomes (hot) -------------------------------------------------------------------

    def on_start(self, route_id: int) -> None:
        """An attempt on `route_id` begins (counts in-flight on the route and its provider)."""
        t = self.table
        t.in_flight[route_id] += 1
        t.provider_in_flight[self._provider_of[route_id]] += 1
        t.requests[route_id] += 1
        if t.state[route_id] == HALF_OPEN:
            t.probes_out[route_id] += 1

    def on_first_byte(self, route_id: int, ttfb_s: float, now: float) -> None:
        """The response head arrived `ttfb_s` seconds after the attempt started."""
        t = self.table
        m = self._model_of[route_id]
        dt = now - t.t_ttfb[route_id]
        if dt > 0.0:
            t.t_ttfb[route_id] = now
            d = _exp(m.decay * dt)
            t.ttfb_s[route_id] = t.ttfb_s[route_id] * d + ttfb_s
            t.ttfb_w[route_id] = t.ttfb_w[route_id] * d + 1.0
        else:
            t.ttfb_s[route_id] += ttfb_s
            t.ttfb_w[route_id] += 1.0
        if m.ttfb:
            m.rank_due = m.next_rank

    def on_success(self, route_id: int, latency_s: float, in_tokens: int, out_tokens: int, now: float) -> None:
        """The attempt completed with a usable response after `latency_s` seconds in total."""
        r = route_id
        t = self.table
        m = self._model_of[r]
        t.in_flight[r] -= 1
        t.provider_in_flight[self._provider_of[r]] -= 1
        t.successes[r] += 1
        t.in_tokens[r] += in_tokens
        t.out_tokens[r] += out_tokens
        t.spend_pusd[r] += in_tokens * self._prices_in[r] + out_tokens * self._prices_out[r]
        dt = now - t.t_ewma[r]
        if dt > 0.0:
            t.t_ewma[r] = now
            d = _exp(m.decay * dt)
            t.lat_s[r] = t.lat_s[r] * d + latency_s
            t.lat_w[r] = t.lat_w[r] * d + 1.0
            t.err_s[r] *= d
            t.err_w[r] = t.err_w[r] * d + 1.0
        else:
            t.lat_s[r] += latency_s
            t.lat_w[r] += 1.0
            t.err_w[r] += 1.0
        b = int(now * m.inv_window)
        if b != t.win_b[r]:
            breaker.roll_window(t, r, b)
        t.win_req[r] += 1
        t.consecutive[r] = 0
        if t.state[r]:
            breaker.probe_succeeded(t, r, m.probes, m.cooldown)
            if t.state[r] == CLOSED and self.events is not None:
                self.events.route_event("breaker_closed", r, "half-open probe succeeded", "", now)
        m.rank_due = m.next_rank

    def on_failure(self, route_id: int, kind: int, retry_after_s: float, now: float, request_id: str = "") -> None:
        """The attempt failed with `kind` (a `Failure`); `retry_after_s` > 0 if the upstream sent one.

        `Failure.CLIENT` (the request's own 4xx) only releases the in-flight slot. `request_id`
        goes into the event a breaker transition or a cooldown reports.
        """
        r = route_id
        t = self.table
        m = self._model_of[r]
        t.in_flight[r] -= 1
        t.provider_in_flight[self._provider_of[r]] -= 1
        if not ROUTE_FAILURE[kind]:
            t.rejected[r] += 1
            if t.probes_out[r] > 0:
                t.probes_out[r] -= 1
            return
        t.errors[r] += 1
        t.last_failure[r] = kind
        dt = now - t.t_ewma[r]
        d = 1.0
        if dt > 0.0:
            t.t_ewma[r] = now
            d = _exp(m.decay * dt)
            t.lat_s[r] *= d
            t.lat_w[r] *= d
        t.err_s[r] = t.err_s[r] * d + 1.0
        t.err_w[r] = t.err_w[r] * d + 1.0
        x = now * m.inv_window
        b = int(x)
        if b != t.win_b[r]:
            breaker.roll_window(t, r, b)
        t.win_req[r] += 1
        t.win_err[r] += 1
        if retry_after_s > 0.0 and HONOURS_RETRY_AFTER[kind]:
            # The provider said when to come back: that cool-down is the whole answer. Counting
            # it as a breaker failure too would let one burst of 429s, seen by N requests in
            # flight, shut the route for breaker_cooldown_s instead of the time it asked for.
            t.until[r] = max(t.until[r], now + min(retry_after_s, m.cooldown_max))
            t.retry_until[r] = max(t.retry_until[r], now + min(retry_after_s, m.cooldown_max))
            if t.probes_out[r] > 0:
                t.probes_out[r] -= 1  # a half-open probe told to wait: the next one may try later
            m.rank_due = m.next_rank
            if self.events is not None:
                self.events.route_event("cooldown", r, f"{KIND_NAMES[kind]}, Retry-After {retry_after_s:g} s",
                                        request_id, now)  # fmt: skip
            return
        t.consecutive[r] += 1
        st = t.state[r]
        if st == CLOSED:
            if TRIPS_AT_ONCE[kind]:
                self._trip(r, now, m.cooldown, KIND_NAMES[kind], request_id)
            elif t.consecutive[r] >= m.failures:
                self._trip(r, now, m.cooldown, f"{t.consecutive[r]} consecutive failures, last: {KIND_NAMES[kind]}",
                           request_id)  # fmt: skip
            elif breaker.window_trips(t, r, x, m.min_requests, m.error_rate):
                self._trip(r, now, m.cooldown, f"error rate over {m.error_rate:g}, last: {KIND_NAMES[kind]}",
                           request_id)  # fmt: skip
        elif st == HALF_OPEN:
            self._trip(r, now, min(t.cooldown[r] * m.backoff, m.cooldown_max),
                       f"half-open probe failed: {KIND_NAMES[kind]}", request_id)  # fmt: skip
        m.rank_due = m.next_rank

    def on_cancel(self, route_id: int) -> None:
        """The attempt was abandoned (hedge loser, downstream left): release it, learn nothing."""
        t = self.table
        t.in_flight[route_id] -= 1
        t.cancelled[route_id] += 1
        t.provider_in_flight[self._provider_of[route_id]] -= 1
        if t.probes_out[route_id] > 0:
            t.probes_out[route_id] -= 1

    # -- cold path ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Periodic housekeeping (e.g. 1 Hz): expire cooldowns and re-rank dirty models."""
        t = self.table
        for r in range(t.n):
            if t.state[r] == OPEN and t.until[r] <= now:
                self._to_half_open(r, now)
        for m in self.models:
            if m.rank_due != _INF:
                self._rerank(m, now)

    def retry_after(self, model_id: int, now: float) -> float:
        """Seconds until some route of `model_id` is unblocked (0.0 if one is already)."""
        until = self.table.until
        return max(0.0, min(until[r] for r in self.models[model_id].routes) - now)

    def refusal_status(self, model_id: int, now: float) -> int:
        """The status for "no route is available": 429 when every route is only rate-limited, else 503."""
        t = self.table
        routes = self.models[model_id].routes
        cooling = all(t.until[r] > now and t.state[r] == CLOSED and t.retry_until[r] >= t.until[r] for r in routes)
        return 429 if cooling else 503

    def ranking(self, model_id: int, prompt_bytes: int = 0) -> tuple[int, ...]:
        """The current preference order of `model_id`'s routes (before health checks)."""
        m = self.models[model_id]
        if m.kind <= _LATENCY:
            return m.orders[_BUCKET[prompt_bytes.bit_length()]]
        return m.orders[m.wheel[m.cursor] if m.kind == _WEIGHTED else m.cursor]

    def settings(self, model_id: int) -> RouterSettings:
        """The validated settings of `model_id` (max_attempts, deadlines, hedge_after_ms...)."""
        return self.models[model_id].settings

    def snapshot(self, now: float | None = None) -> list[dict[str, Any]]:
        """One dict per route for `GET /stats`. Pass `now` to also get `blocked_for_s`."""
        t = self.table
        out = []
        for r, spec in enumerate(self.routes):
            lat = t.latency_of(r)
            ttfb = t.ttfb_of(r)
            row: dict[str, Any] = {
                "route": r,
                "model": self._model_of[r].name,
                "provider": spec.provider_id,
                "upstream_model": spec.upstream_model,
                "latency_ms": round(lat * 1000.0, 3) if lat >= 0.0 else None,
                "ttfb_ms": round(ttfb * 1000.0, 3) if ttfb >= 0.0 else None,
                "error_rate": round(t.error_rate_of(r), 6),
                "breaker": BREAKER_NAMES[t.state[r]],
                "consecutive_failures": t.consecutive[r],
                "cooldown_s": t.cooldown[r],
                "in_flight": t.in_flight[r],
                "requests": t.requests[r],
                "successes": t.successes[r],
                "errors": t.errors[r],
                "rejected": t.rejected[r],
                "cancelled": t.cancelled[r],
                "in_tokens": t.in_tokens[r],
                "out_tokens": t.out_tokens[r],
                "spend_usd": t.spend_pusd[r] / 1e12,
            }
            if now is not None:
                row["blocked_for_s"] = max(0.0, t.until[r] - now)
                row["state"], row["state_detail"] = self.route_state(r, now)
            if self._provider_of[r] in self.unusable:
                row["unusable"] = self.unusable[self._provider_of[r]]
            out.append(row)
        return out

    # -- operator view (cold) -------------------------------------------------------------

    def mark_unusable(self, provider_id: int, reason: str) -> None:
        """Never pick `provider_id`'s routes (e.g. its key variable is unset); `reason` shows in
        `/stats`, `/healthz?detail=1` and "no route" answers. Lasts for this router's life."""
        self.unusable[provider_id] = reason
        self.table.provider_limit[provider_id] = 0  # `pick`'s in-flight check already skips a full provider

    def route_state(self, r: int, now: float) -> tuple[str, str]:
        """(state, detail) of route `r` for an operator: usable, unusable, open, half-open, cooling or full."""
        t = self.table
        p = self._provider_of[r]
        if p in self.unusable:
            return "unusable", self.unusable[p]
        st = t.state[r]
        left = t.until[r] - now
        last = KIND_NAMES[t.last_failure[r]] if t.errors[r] else "none"
        if st == OPEN and left > 0.0:
            return "open", f"breaker open for {left:.1f} s more, last failure: {last}"
        if st == HALF_OPEN or st == OPEN:
            if t.probes_out[r] >= self._model_of[r].probes:
                return "half-open", f"breaker half-open, probe in flight, last failure: {last}"
            return "half-open", f"breaker half-open, admitting a probe, last failure: {last}"
        if left > 0.0:
            return "cooling", f"cooling down for {left:.1f} s (Retry-After), last failure: {last}"
        if t.provider_in_flight[p] >= t.provider_limit[p]:
            return "full", f"provider at max_in_flight ({t.provider_limit[p]})"
        return "usable", ""

    def unavailable_reasons(self, model_id: int, now: float, wall_now: float | None = None) -> str:
        """Why each route of `model_id` was not usable, for the "no route available" answer.

        `wall_now` (time.time() at `now`) adds the UTC time a breaker stays open until.
        Example: `route 0 (openai/gpt-4o): breaker open until 20:31:05Z (9.8 s), last failure: timeout`.
        """
        t = self.table
        parts = []
        for r in self.models[model_id].routes:
            state, detail = self.route_state(r, now)
            if state == "open" and wall_now is not None:
                stamp = time.strftime("%H:%M:%SZ", time.gmtime(wall_now + t.until[r] - now))
                detail = detail.replace("breaker open for ", f"breaker open until {stamp} (", 1).replace(
                    " s more,", " s),", 1
                )
            parts.append(f"route {r} ({self._label(r)}): {detail or 'available'}")
        return "; ".join(parts)

    def usable_route(self, model_id: int, now: float) -> bool:
        """Whether some route of `model_id` could serve a request now or after a Retry-After wait:
        its provider is usable and its breaker is not open (a full provider counts as usable)."""
        t = self.table
        for r in self.models[model_id].routes:
            if self._provider_of[r] not in self.unusable and not (t.state[r] == OPEN and t.until[r] > now):
                return True
        return False

    def _label(self, r: int) -> str:
        return f"{self.provider_names[self._provider_of[r]]}/{self.routes[r].upstream_model}"

    # -- internal -------------------------------------------------------------------------

    def _probe(self, m: _Model, now: float) -> int:
        # First attempts go to an unmeasured route (one in flight at a time) or a half-open one.
        t = self.table
        until, state, prov, pinf, plim = self._pick_cols
        weight = t.ttfb_w if m.ttfb else t.lat_w
        for r in m.probe:
            if until[r] > now:
                continue
            if state[r]:
                if not self._admit(r, now):
                    continue
            elif t.in_flight[r] or weight[r] > 0.0:
                continue
            p = prov[r]
            if pinf[p] < plim[p]:
                return r
        return -1

    def _explore(self, m: _Model, order: tuple[int, ...], now: float) -> int:
        # Every explore_every-th first attempt tries the next non-best route in rotation.
        n = len(order) - 1
        i = m.explore_i
        m.explore_i = i + 1 if i + 1 < n else 0
        r = order[1 + i]
        until, state, prov, pinf, plim = self._pick_cols
        if until[r] > now or (state[r] and not self._admit(r, now)):
            return -1
        p = prov[r]
        return r if pinf[p] < plim[p] else -1

    def _admit(self, r: int, now: float) -> bool:
        # Called when state[r] != CLOSED and until[r] <= now: the cooldown is over.
        t = self.table
        if t.state[r] == OPEN:
            self._to_half_open(r, now)
        return t.probes_out[r] < self._model_of[r].probes

    def _to_half_open(self, r: int, now: float = 0.0) -> None:
        breaker.to_half_open(self.table, r)
        m = self._model_of[r]
        m.rank_due = m.next_rank  # the probe list changed
        if self.events is not None:
            self.events.route_event("breaker_half_open", r, "cooldown over, probing", "", now)

    def _trip(self, r: int, now: float, cooldown: float, reason: str, request_id: str) -> None:
        breaker.trip(self.table, r, now, cooldown)
        if self.events is not None:
            self.events.route_event("breaker_open", r, f"{reason}; open for {cooldown:g} s", request_id, now)

    def _rerank(self, m: _Model, now: float) -> None:
        t = self.table
        routes = m.routes
        m.rank_due = _INF
        m.next_rank = now + m.interval
        if m.kind >= _WEIGHTED:  # static orders: built once, never dirtied
            m.next_rank = _INF
            if m.kind == _PRIORITY:
                m.orders = (routes,)  # the listed order, always; a one-slot wheel keeps the cursor at 0
                m.wheel = (0,)
            elif m.kind == _ROUND_ROBIN:
                m.orders = rank.rotations(routes)
                m.wheel = routes  # only its length is used
            else:
                m.orders, m.wheel = rank.weighted_orders(routes, [self.routes[r].weight for r in routes])
            return
        est, measured = rank.latency_estimates(t, routes, m.ttfb)
        s = m.settings
        n_ok = sum(t.successes[r] for r in routes)
        out_tokens = (s.assumed_output_tokens * _OUT_PRIOR_N + sum(t.out_tokens[r] for r in routes)) / (
            _OUT_PRIOR_N + n_ok
        )
        p_in = [self._prices_in[r] for r in routes]
        p_out = [self._prices_out[r] for r in routes]
        meets = rank.sla_meets(t, routes, est, m.sla_s) if m.kind == _COST_SLA else []
        orders: list[tuple[int, ...]] = []
        for tokens_in in rank.BUCKET_TOKENS:
            cost = rank.request_costs(p_in, p_out, tokens_in, out_tokens)
            if m.kind == _COST_SLA:
                order = rank.rank_cost_sla(routes, est, meets, cost)
            else:
                order = rank.rank_latency(routes, est, cost, s.latency_weight, s.cost_weight)
            orders.append(orders[-1] if orders and orders[-1] == order else order)
        m.orders = tuple(orders)
        m.probe = rank.probe_list(t, routes, measured)
