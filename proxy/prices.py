# proxy/prices.py: what a route charges per kind of token, and the exact integer cost of a usage.
#
# Owns: the `Prices` of a route (four prices in integer pico-dollars per token), reading them from
# a config table, finding the prices of a direct `provider/model` route, and the cost formula.
# Rules: pure (no I/O, no clock); money is integer arithmetic only: prices in pico-dollars per
# token (1 pUSD = 1e-12 USD), a cost summed exactly in pico-dollars and rounded once, half up, to
# the nano-dollars that spend and budgets are kept in (1 nUSD = 1e-9 USD).
"""Prices per kind of token, and the cost of one response's usage.

Usage is five disjoint token counts, `(input, cached_input, cache_write, output, reasoning)`:

- `input`: prompt tokens billed at the plain input price (neither read from nor written to a cache);
- `cached_input`: prompt tokens read from the provider's prompt cache (OpenAI
  `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`);
- `cache_write`: prompt tokens written to the cache (Anthropic `cache_creation_input_tokens`);
- `output`: completion tokens that are not reasoning;
- `reasoning`: reasoning / thinking tokens, billed as output.

The APIs count differently (OpenAI's `prompt_tokens` includes the cached ones and its
`completion_tokens` includes the reasoning ones; Anthropic's `input_tokens` excludes cache reads
and writes): `disjoint()` turns the inclusive totals into these five.

Cost in pico-dollars, exactly::

    input*input_pusd + cached_input*cached_input_pusd + cache_write*cache_write_pusd
      + (output + reasoning)*output_pusd

A price given in USD per million tokens is the same number of pico-dollars per token times 10**6
(`0.15` USD/Mtok = 150_000 pUSD/token), rounded to the nearest pico-dollar per token (prices
with more than six decimals in USD/Mtok are rounded there, and only there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from proxy.errors import ConfigError

PRICE_KEYS = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok")
MAX_PRICE_PER_MTOK = 1e6


class Prices(NamedTuple):
    """A route's prices in integer pico-dollars per token."""

    input_pusd: int
    output_pusd: int
    cached_input_pusd: int
    cache_write_pusd: int


FREE = Prices(0, 0, 0, 0)


def pusd(usd_per_mtok: float) -> int:
    """USD per million tokens as integer pico-dollars per token."""
    return round(usd_per_mtok * 1_000_000)


def prices(
    input_per_mtok: float,
    output_per_mtok: float,
    cached_input_per_mtok: float | None = None,
    cache_write_per_mtok: float | None = None,
) -> Prices:
    """Prices from USD per million tokens; cache reads and writes default to the input price."""
    base = pusd(input_per_mtok)
    return Prices(
        base,
        pusd(output_per_mtok),
        base if cached_input_per_mtok is None else pusd(cached_input_per_mtok),
        base if cache_write_per_mtok is None else pusd(cache_write_per_mtok),
    )


def prices_from_table(t: Mapping[str, Any], where: str) -> Prices | None:
    """The prices a route table (or a `[providers.prices]` entry) sets, or None when it sets none.

    A table that sets any price is priced (the others default as in `prices()`; a missing output
    price is 0). Raises ConfigError naming the bad key.
    """
    given = {}
    for key in PRICE_KEYS:
        if key in t:
            value = t[key]
            if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= MAX_PRICE_PER_MTOK:
                raise ConfigError(f"{where}.{key}: expected a number of USD per million tokens, 0 to 1e6 "
                                  f"(got {value!r})")  # fmt: skip
            given[key] = float(value)
    if not given:
        return None
    return prices(
        given.get("input_per_mtok", 0.0), given.get("output_per_mtok", 0.0),
        given.get("cached_input_per_mtok"), given.get("cache_write_per_mtok"),
    )  # fmt: skip


def price_list(table: Any, where: str) -> dict[str, Prices]:
    """A provider's `[providers.prices]` table: upstream model name -> its prices."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table of model = {{ input_per_mtok = ..., output_per_mtok = ... }}")
    out: dict[str, Prices] = {}
    for model, entry in table.items():
        at = f"{where}.{_quoted(model)}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: expected a table such as {{ input_per_mtok = 0.15, output_per_mtok = 0.6 }}")
        for key in entry:
            if key not in PRICE_KEYS:
                raise ConfigError(f"{at}.{key}: unknown key (expected one of: {', '.join(PRICE_KEYS)})")
        found = prices_from_table(entry, at)
        if found is None:
            raise ConfigError(f"{at}: set at least input_per_mtok and output_per_mtok")
        out[model] = found
    return out


def _quoted(model: str) -> str:
    return model if model.replace("-", "").replace("_", "").isalnum() else f'"{model}"'


def direct_model(requested: str) -> str:
    """The upstream model a `provider/model` request names (everything after the first slash)."""
    return requested.partition("/")[2]


# -- the arithmetic (per request, off the parse path) ----------------------------------------


def disjoint(prompt_total: int, cache_read: int, cache_write: int, completion_total: int,
             reasoning: int = 0) -> tuple[int, int, int, int, int]:  # fmt: skip
    """The five disjoint counts from inclusive totals (OpenAI's convention).

    `prompt_total` includes the cache reads and writes, `completion_total` the reasoning tokens.
    Inconsistent counts from a provider never make a count negative.
    """
    cache_read = cache_read if cache_read > 0 else 0
    cache_write = cache_write if cache_write > 0 else 0
    plain = prompt_total - cache_read - cache_write
    reasoning = min(max(reasoning, 0), max(completion_total, 0))
    return (plain if plain > 0 else 0, cache_read, cache_write, max(completion_total - reasoning, 0), reasoning)


def cost_pusd(usage: tuple[int, int, int, int, int], p: Prices) -> int:
    """The exact cost of `usage` in pico-dollars."""
    plain, cached, written, output, reasoning = usage
    return plain * p[0] + (output + reasoning) * p[1] + cached * p[2] + written * p[3]


def cost_nusd(usage: tuple[int, int, int, int, int], p: Prices) -> int:
    """The cost of `usage` in nano-dollars, rounded once, half up."""
    return (cost_pusd(usage, p) + 500) // 1000


def tokens(usage: tuple[int, int, int, int, int]) -> int:
    """Every token of `usage`: what a tokens-per-minute limit counts."""
    return usage[0] + usage[1] + usage[2] + usage[3] + usage[4]


def route_prices(route: Any, requested_model: str) -> Prices | None:
    """The prices of serving `requested_model` on `route` (a `config.Route`), or None if unpriced.

    A configured route carries its own; a direct `provider/model` route is priced from its
    provider's `[providers.prices]` entry for the model after the slash.
    """
    if route.upstream_model is not None:
        return route.prices
    return route.provider.prices.get(direct_model(requested_model))


class Waste:
    """Per route: what hedges' losing attempts used. The provider bills it; the route's spend counts it,
    the client's key never does (`/stats` and `/metrics` show it as `wasted`)."""

    __slots__ = ("attempts", "nusd", "tokens")

    def __init__(self, routes: int) -> None:
        self.attempts = [0] * routes
        self.tokens = [0] * routes
        self.nusd = [0] * routes

    def record(self, route_id: int, usage: tuple[int, int, int, int, int], cost: int) -> None:
        """A losing attempt on route `route_id` used `usage`, costing `cost` nano-dollars."""
        self.attempts[route_id] += 1
        self.tokens[route_id] += tokens(usage)
        self.nusd[route_id] += cost

    def snapshot(self, route_id: int) -> dict[str, Any]:
        return {"wasted_attempts": self.attempts[route_id], "wasted_tokens": self.tokens[route_id],
                "wasted_usd": self.nusd[route_id] / 1e9}  # fmt: skip
