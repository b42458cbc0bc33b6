# Failure kinds: what went wrong on one attempt, whether it counts against the route,
# whether another route may be tried, and what the downstream gets when every attempt failed.
#
# Rules for this file:
# 1. Pure: no I/O, no clock. Everything is a table lookup indexed by the `Failure` value.
# 2. A failure counts against a route (breaker, error rate) only when the route is to blame.
#    A 4xx caused by the request itself (400, 401, 403, 404, 413, 422, ...) is `CLIENT`: the
#    upstream answered properly, so the route is neither penalised nor retried.
# 3. `RETRYABLE[kind]` says whether another route may be tried *provided nothing has been
#    relayed downstream yet*. Once the response head went out, nothing is retryable; that
#    case is `BROKEN`. For SERVER, TIMEOUT and MALFORMED the upstream may already have
#    processed (and billed) the request: retrying trades a possible double charge for
#    availability, which is what a gateway is for.

from __future__ import annotations

import enum
import math
from collections.abc import Iterable


class Failure(enum.IntEnum):
    """Why an attempt on a route failed. Values index the tables below."""

    CLIENT = 0  # request's own fault (400/401/403/404/413/422...): not a route failure
    CONNECT = 1  # refused/reset/DNS/TLS before the request was sent
    CONNECT_TIMEOUT = 2  # connect did not complete in time
    SERVER = 3  # 5xx other than 503 and 504
    UNAVAILABLE = 4  # 503, or Anthropic's 529 (Retry-After honoured)
    RATE_LIMITED = 5  # 429 (Retry-After honoured)
    TIMEOUT = 6  # 408 or 504 from upstream, or our first-byte deadline passed
    MALFORMED = 7  # unparseable response head/body from upstream
    BROKEN = 8  # failed after the head was relayed downstream (mid-stream): never retried


# Indexed by Failure value.
ROUTE_FAILURE = (False, True, True, True, True, True, True, True, True)
RETRYABLE = (False, True, True, True, True, True, True, True, False)
_TIMEOUT = (False, False, True, False, False, False, True, False, False)
# Kinds whose Retry-After puts the route on a cooldown.
HONOURS_RETRY_AFTER = (False, False, False, False, True, True, False, False, False)


def is_route_failure(status: int) -> bool:
    """True when an upstream response with `status` counts against the route.

    408, 429 and every 5xx do; 1xx-4xx caused by the request (400, 401, 403, 404, 413,
    422, ...) and all 2xx/3xx do not.
    """
    return status == 429 or status == 408 or 500 <= status <= 599


def failure_kind(status: int) -> Failure:
    """Classify a non-2xx upstream status. Request-caused 4xx map to `Failure.CLIENT`."""
    if status == 429:
        return Failure.RATE_LIMITED
    if status == 503 or status == 529:  # 529: Anthropic's "overloaded"
        return Failure.UNAVAILABLE
    if status == 408 or status == 504:
        return Failure.TIMEOUT
    if 500 <= status <= 599:
        return Failure.SERVER
    return Failure.CLIENT


def summarize_failures(outcomes: Iterable[tuple[int, float]]) -> tuple[int, int | None]:
    """Status (and Retry-After seconds, or None) to answer when every attempt failed.

    `outcomes` holds one `(kind, retry_after_s)` per attempt, `retry_after_s <= 0` meaning
    the upstream gave none. Rules, first match wins:

    - no attempt at all (every route blocked): 503; add Retry-After from
      `Router.retry_after(model_id, now)`.
    - every attempt was rate limited: 429, Retry-After = the smallest one given.
    - every attempt timed out (connect, first byte, 408, 504): 504.
    - some attempt gave a Retry-After (429/503): 503 with the smallest one.
    - every attempt was a 503 or 429 without Retry-After: 503.
    - otherwise: 502.
    """
    n = limited = timeouts = busy = 0
    ra = math.inf
    for kind, retry_after_s in outcomes:
        n += 1
        if kind == Failure.RATE_LIMITED:
            limited += 1
        if _TIMEOUT[kind]:
            timeouts += 1
        if HONOURS_RETRY_AFTER[kind]:
            busy += 1
            if 0.0 < retry_after_s < ra:
                ra = retry_after_s
    hint = None if ra == math.inf else max(1, math.ceil(ra))
    if n == 0:
        return 503, None
    if limited == n:
        return 429, hint
    if timeouts == n:
        return 504, None
    if hint is not None or busy == n:
        return 503, hint
    return 502, None
