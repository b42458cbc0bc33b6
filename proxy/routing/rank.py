# Ranking: turn the measured state of a model's routes into ordered tuples of route ids.
#
# Rules for this file:
# 1. Cold path. These functions run when stats moved (at most every `rerank_interval_s`)
#    or on the tick, never per request; sorting is allowed here and only here.
# 2. Pure: inputs are the route table and plain numbers, outputs are tuples. No clock.
# 3. Price-aware strategies rank once per prompt-size bucket (`BUCKET_OF_BITLEN`), because
#    which route is cheapest depends on the input/output mix: a route with cheap input and
#    dear output wins on long prompts and loses on short ones. The request picks its bucket
#    with one `int.bit_length()` and a tuple lookup.

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

from proxy.routing.table import CLOSED, RouteTable

# Input-size buckets, in estimated tokens (prompt bytes / 4): <256, <1k, <4k, <16k, <64k, more.
_THRESHOLDS = (256, 1024, 4096, 16384, 65536)
BUCKET_TOKENS = (128, 512, 2048, 8192, 32768, 131072)  # representative input size per bucket


def _bucket(bitlen: int) -> int:
    lowest_tokens = (1 << (bitlen - 1)) >> 2 if bitlen else 0  # smallest prompt with this bit length
    return sum(1 for t in _THRESHOLDS if lowest_tokens >= t)


# prompt_bytes.bit_length() -> bucket, for prompts below 2**255 bytes.
BUCKET_OF_BITLEN = tuple(_bucket(b) for b in range(256))

# A route that fell out of the SLA comes back only below 90% of it, so a route hovering at the
# limit does not flip the ranking on every recomputation.
SLA_REENTRY = 0.9
# Error rate used in latency estimates is capped so 1/(1-p) stays finite.
_MAX_ERR = 0.9


def latency_estimates(table: RouteTable, routes: Sequence[int], ttfb: bool) -> tuple[list[float], list[bool]]:
    """Expected latency (s) per route and whether it was measured.

    The mean is divided by (1 - error rate): the expected time when failed attempts must be
    repeated, so a flaky route looks as slow as it feels. Unmeasured routes get the mean of the
    measured ones (0.0 if none is measured), a neutral prior until their probe comes back.
    """
    est: list[float] = []
    measured: list[bool] = []
    for r in routes:
        mean = table.ttfb_of(r) if ttfb else table.latency_of(r)
        measured.append(mean >= 0.0)
        est.append(mean / (1.0 - min(table.error_rate_of(r), _MAX_ERR)) if mean >= 0.0 else 0.0)
    known = [e for e, ok in zip(est, measured) if ok]
    prior = sum(known) / len(known) if known else 0.0
    return [e if ok else prior for e, ok in zip(est, measured)], measured


def request_costs(
    prices_in: Sequence[int], prices_out: Sequence[int], tokens_in: float, tokens_out: float
) -> list[float]:
    """Expected price of one request (pico-dollars) per route."""
    return [tokens_in * pi + tokens_out * po for pi, po in zip(prices_in, prices_out)]


def rank_cost_sla(
    routes: Sequence[int], est: Sequence[float], meets: Sequence[bool], cost: Sequence[float]
) -> tuple[int, ...]:
    """Routes meeting the SLA cheapest first, then the others fastest first."""
    inside = sorted((cost[i], est[i], r) for i, r in enumerate(routes) if meets[i])
    outside = sorted((est[i], cost[i], r) for i, r in enumerate(routes) if not meets[i])
    return tuple(x[2] for x in inside) + tuple(x[2] for x in outside)


def rank_latency(
    routes: Sequence[int], est: Sequence[float], cost: Sequence[float], latency_weight: float, cost_weight: float
) -> tuple[int, ...]:
    """Routes by `latency_weight * est/mean(est) + cost_weight * cost/mean(cost)`, lowest first.

    Both terms are relative to the model's mean, so the weights are unit-free: with 1 and 1, a
    route twice as slow as average but half the average price ties with an average one.
    """
    mean_est = sum(est) / len(est) or 1.0
    mean_cost = sum(cost) / len(cost) or 1.0
    scored = sorted(
        (latency_weight * est[i] / mean_est + cost_weight * cost[i] / mean_cost, r) for i, r in enumerate(routes)
    )
    return tuple(r for _, r in scored)


def sla_meets(table: RouteTable, routes: Sequence[int], est: Sequence[float], sla_s: float) -> list[bool]:
    """Whether each route meets the SLA, with re-entry hysteresis (updates `table.sla_ok`)."""
    out = []
    for i, r in enumerate(routes):
        ok = sla_s <= 0.0 or est[i] <= (sla_s if table.sla_ok[r] else sla_s * SLA_REENTRY)
        table.sla_ok[r] = int(ok)
        out.append(ok)
    return out


def rotations(routes: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Round-robin orders: rotation i starts at the i-th route, the rest follow as fallback."""
    rs = tuple(routes)
    return tuple(rs[i:] + rs[:i] for i in range(len(rs)))


def weighted_orders(
    routes: Sequence[int], weights: Sequence[int]
) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """(orders, wheel) for the weighted strategy.

    The wheel is the expanded index array: position i appears weights[i]/g times (g = gcd),
    spread evenly (slot j of route i sits at (j + 0.5) / w_i), so a pick is `wheel[cursor]`.
    orders[i] is route i followed by the others, heaviest first, as the fallback order.
    """
    g = 0
    for w in weights:
        g = gcd(g, w)
    marks = sorted(((j + 0.5) / (w // g), i) for i, w in enumerate(weights) if w for j in range(w // g))
    wheel = tuple(i for _, i in marks)
    by_weight = sorted(range(len(routes)), key=lambda i: (-weights[i], i))
    orders = tuple((routes[i],) + tuple(routes[k] for k in by_weight if k != i) for i in range(len(routes)))
    return orders, wheel


def probe_list(table: RouteTable, routes: Sequence[int], measured: Sequence[bool]) -> tuple[int, ...]:
    """Routes a first attempt should probe before the ranking: unmeasured or breaker not closed."""
    return tuple(r for i, r in enumerate(routes) if not measured[i] or table.state[r] != CLOSED)
