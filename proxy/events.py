"""Operator events: breaker transitions, cooldowns, failovers and retries, as rate-limited log lines.

Rules for this file:
1. One line per (event, route) per `interval_s` at most. Repeats inside the interval are counted
   and the count rides on the next line that gets out (`suppressed=N`), so a flapping route or a
   burst of failovers costs one line per interval, never one per request.
2. State is bounded by design: a fixed set of event names times the configured routes.
3. Lines name the route (provider, upstream model, model), the reason and the request id; never a
   key, a prompt or an answer. Reasons come from the router and the pipeline, which only put kinds,
   statuses and durations in them.
4. Off the fast path: called on failures and transitions only. `now` is the caller's loop time.

The router calls `route_event` through its `events` attribute (proxy/routing/router.py `EventSink`);
the pipeline calls `failover` and `retry`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

EVENTS = ("breaker_open", "breaker_half_open", "breaker_closed", "cooldown", "failover", "retry")
# Breaker openings and cooldowns are worth a warning; the rest is information.
_LEVELS = {"breaker_open": logging.WARNING, "cooldown": logging.WARNING}
DEFAULT_INTERVAL_S = 10.0


def route_labels(routes: Iterable[Any]) -> list[str]:
    """One label per route id, from `Settings.routes`: `openai/gpt-4o-mini for 'fast'`."""
    return [f"{r.provider.name}/{r.upstream_model or '*'} for {r.model!r}" for r in routes]


class EventLog:
    """Rate-limited event lines about routes. See the module rules."""

    __slots__ = ("_last", "_suppressed", "interval_s", "labels", "logger")

    def __init__(
        self, labels: Sequence[str], interval_s: float = DEFAULT_INTERVAL_S, logger: logging.Logger | None = None
    ) -> None:
        self.labels = tuple(labels)
        self.interval_s = interval_s
        self.logger = logger or logging.getLogger("llm_edge.events")
        self._last: dict[tuple[int, int], float] = {}  # (event index, route) -> when a line last got out
        self._suppressed: dict[tuple[int, int], int] = {}

    def route_event(self, event: str, route_id: int, reason: str, request_id: str, now: float) -> bool:
        """Log `event` about `route_id` unless one was logged less than `interval_s` ago; True if logged."""
        key = (EVENTS.index(event), route_id)
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        label = self.labels[route_id] if 0 <= route_id < len(self.labels) else f"#{route_id}"
        line = f"{event} route={route_id} ({label}) reason={_quoted(reason)} request_id={_quoted(request_id or '-')}"
        if suppressed:
            line += f" suppressed={suppressed}"
        self.logger.log(_LEVELS.get(event, logging.INFO), "%s", line)
        return True

    def failover(self, route_id: int, next_route_id: int, reason: str, request_id: str, now: float) -> bool:
        """A request leaves `route_id` for `next_route_id` after a failure described by `reason`."""
        label = self.labels[next_route_id] if 0 <= next_route_id < len(self.labels) else f"#{next_route_id}"
        return self.route_event("failover", route_id, f"{reason}; next: route {next_route_id} ({label})",
                                request_id, now)  # fmt: skip

    def retry(self, route_id: int, reason: str, request_id: str, now: float) -> bool:
        """A request is sent again on the same route (e.g. a stale pooled connection)."""
        return self.route_event("retry", route_id, reason, request_id, now)

    def pending(self) -> int:
        """Events held back and not yet reported (for tests and `/stats`)."""
        return sum(self._suppressed.values())


def _quoted(text: str) -> str:
    # One line per event, whatever a reason or a client's request id holds.
    cleaned = "".join(c if " " <= c <= "~" and c != '"' else "?" for c in text[:300])
    return f'"{cleaned}"'
