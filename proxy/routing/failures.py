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
# 4. The client's credentials never go upstream, so a provider's 401/403 rejects the gateway's
#    own key, and a 404 on the endpoint path itself means a wrong `base_url`: both are the
#    route's fault (`UPSTREAM_AUTH`, `UPSTREAM_PATH`), open its breaker at once, fall back,
#    and reach the client as a 502 that names the provider, never as the provider's 401.

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Any

import orjson


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
    UPSTREAM_AUTH = 9  # provider 401/403: the gateway's own credentials were rejected
    UPSTREAM_PATH = 10  # provider 404 on the endpoint path itself (a wrong base_url), not on a model


# Indexed by Failure value.
ROUTE_FAILURE = (False, True, True, True, True, True, True, True, True, True, True)
RETRYABLE = (False, True, True, True, True, True, True, True, False, True, True)
_TIMEOUT = (False, False, True, False, False, False, True, False, False, False, False)
# Kinds whose Retry-After puts the route on a cooldown.
HONOURS_RETRY_AFTER = (False, False, False, False, True, True, False, False, False, False, False)
# Kinds that open the breaker on the first occurrence: a misconfiguration does not heal by retrying.
TRIPS_AT_ONCE = (False, False, False, False, False, False, False, False, False, True, True)
# What an event line or a "no route" reason calls each kind.
KIND_NAMES = ("client error", "connect error", "connect timeout", "server error", "unavailable", "rate limited",
              "timeout", "malformed response", "broken mid-stream", "upstream authentication failed",
              "upstream endpoint not found")  # fmt: skip
# The status a client gets for a rejection of the gateway's own configuration.
REJECTION_STATUS = 502


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


def may_be_rejection(status: int) -> bool:
    """True for the statuses `upstream_rejection` must look at (only a 404 needs the body)."""
    return status == 401 or status == 403 or status == 404


def upstream_rejection(status: int, body: bytes) -> Failure:
    """Whether a provider's 4xx blames the gateway rather than the request.

    401 and 403 are always `UPSTREAM_AUTH` (the client's key never goes upstream). A 404 is
    `UPSTREAM_PATH` unless its body is about a model: OpenAI's `code: model_not_found`,
    Anthropic's `model: ...`, vLLM's and Ollama's "model ... does not exist / not found". A
    404 body that is not JSON (a web server's page) is `UPSTREAM_PATH` too. Anything else is
    `CLIENT`. Cold path: runs on error answers only.
    """
    if status == 401 or status == 403:
        return Failure.UPSTREAM_AUTH
    if status != 404:
        return Failure.CLIENT
    return Failure.CLIENT if _mentions_model(body) else Failure.UPSTREAM_PATH


def _mentions_model(body: bytes) -> bool:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    texts: list[str] = []
    stack: list[Any] = [doc]
    while stack and len(texts) < 16:  # error bodies are a few fields deep; stop on anything bigger
        node = stack.pop()
        if isinstance(node, dict):
            for key in ("message", "code", "param", "error", "type"):
                value = node.get(key)
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node[:4])
    return any("model" in text.lower() for text in texts)


def rejection_message(kind: int, provider: str) -> str:
    """The client's message for an `UPSTREAM_AUTH` or `UPSTREAM_PATH` failure (no provider detail)."""
    if kind == Failure.UPSTREAM_AUTH:
        return f"upstream authentication failed for provider {provider!r}"
    return f"upstream endpoint not found for provider {provider!r} (check its base_url)"


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
