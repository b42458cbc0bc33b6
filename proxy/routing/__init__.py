# proxy.routing: the pure core of the adaptive, cost-aware router (no I/O, no event loop).
#
# settings.py  RouterSettings / ModelSpec / RouteSpec: the [router] keys and their validation
# failures.py  Failure kinds, retry classification, the all-routes-failed status summary
# table.py     RouteTable: every per-route/per-provider counter as a preallocated column
# rank.py      ranking functions (cold path): ordered tuples of route ids per model
# router.py    Router: pick / on_start / on_first_byte / on_success / on_failure / on_cancel / tick
"""Adaptive, cost-aware route selection. See `Router` for the request-path protocol."""

from proxy.routing.failures import RETRYABLE, Failure, failure_kind, is_route_failure, summarize_failures
from proxy.routing.router import Router
from proxy.routing.settings import ModelSpec, RouterSettings, RouteSpec

__all__ = [
    "RETRYABLE",
    "Failure",
    "ModelSpec",
    "RouteSpec",
    "Router",
    "RouterSettings",
    "failure_kind",
    "is_route_failure",
    "summarize_failures",
]
