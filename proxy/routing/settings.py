# Router settings: the `[router]` table, its per-`[[models]]` overrides, and the route list.
#
# Rules for this file:
# 1. Cold path only: everything here runs once at config load. Validation is table-driven
#    (`_KEYS`), and every ConfigError names the offending key as `<where>.<key>`.
# 2. Every key of `[router]` may be repeated inside a `[[models]]` entry to override it for
#    that model; `strategy`, `sla_ms` and `hedge_after_ms` are usually set per model.
# 3. Prices are converted here, once, to integer pico-dollars per token so that spend
#    accounting on the hot path is exact integer arithmetic (no float drift).
"""Router settings.

Keys of ``[router]`` (each may be overridden inside a ``[[models]]`` entry):

==========================  ==========  =========================================================
key                         default     meaning
==========================  ==========  =========================================================
``strategy``                cost-sla    ``cost-sla``, ``latency``, ``weighted``, ``round-robin`` or
                                        ``priority`` (the routes in the order listed)
``sla_ms``                  0 (off)     cost-sla: a route "meets the SLA" when its latency
                                        estimate is at most this; 0 = every route meets it
                                        (cheapest healthy route wins)
``latency_metric``          total       what "latency" means for ``sla_ms`` and the latency
                                        strategy: ``total`` (whole exchange) or ``ttfb``
``latency_weight``          1.0         latency strategy: weight of latency / mean latency
``cost_weight``             0.0         latency strategy: weight of cost / mean cost
``assumed_output_tokens``   256         output size assumed when ranking by price, until the
                                        model's observed mean takes over
``explore_ratio``           0.02        share of first attempts sent to a non-best route so
                                        its recovery is noticed (0 disables)
``ewma_half_life_s``        30.0        half-life of latency, TTFB and error-rate averages
``rerank_interval_s``       1.0         minimum time between ranking recomputations
``breaker_failures``        5           consecutive failures that open the breaker
``breaker_error_rate``      0.5         error rate over ``breaker_window_s`` that opens it...
``breaker_window_s``        30.0        ...measured over this sliding window...
``breaker_min_requests``    20          ...once the window holds at least this many attempts
``breaker_cooldown_s``      10.0        open time before the first half-open probe
``breaker_backoff``         2.0         cooldown multiplier on each failed half-open probe
``breaker_cooldown_max_s``  300.0       cap on the backed-off cooldown and on Retry-After
``half_open_probes``        1           probes let through while half-open; that many
                                        successes close the breaker, one failure re-opens it
``max_attempts``            3           routes tried per request (first attempt included)
``attempt_deadline_s``      600.0       time for one attempt to produce its response head;
                                        a non-streaming response only sends its head when
                                        generation ends, so size this for long completions
``hedge_after_ms``          0 (off)     start a second attempt on the next route when the
                                        first has no first byte after this long
==========================  ==========  =========================================================

Per route (``[[models.routes]]``): ``provider`` (name, required), ``model`` (upstream model
name, required), ``input_per_mtok`` / ``output_per_mtok`` (USD per million tokens, default 0)
and ``weight`` (integer 0-1000, default 1; used by the ``weighted`` strategy).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Collection, Mapping
from typing import Any

from proxy.errors import ConfigError

STRATEGIES = ("cost-sla", "latency", "weighted", "round-robin", "priority")
LATENCY_METRICS = ("total", "ttfb")
MAX_WEIGHT = 1000


@dataclasses.dataclass(slots=True, frozen=True)
class RouterSettings:
    """Validated router settings for one model (or the `[router]` defaults). See module doc."""

    strategy: str = "cost-sla"
    sla_ms: float = 0.0
    latency_metric: str = "total"
    latency_weight: float = 1.0
    cost_weight: float = 0.0
    assumed_output_tokens: int = 256
    explore_ratio: float = 0.02
    ewma_half_life_s: float = 30.0
    rerank_interval_s: float = 1.0
    breaker_failures: int = 5
    breaker_error_rate: float = 0.5
    breaker_window_s: float = 30.0
    breaker_min_requests: int = 20
    breaker_cooldown_s: float = 10.0
    breaker_backoff: float = 2.0
    breaker_cooldown_max_s: float = 300.0
    half_open_probes: int = 1
    max_attempts: int = 3
    attempt_deadline_s: float = 600.0
    hedge_after_ms: float = 0.0

    @classmethod
    def from_table(
        cls,
        table: Mapping[str, Any] | None,
        where: str,
        base: RouterSettings | None = None,
        ignore: Collection[str] = (),
    ) -> RouterSettings:
        """Validate `table` (a parsed TOML table) on top of `base` (defaults if None).

        `where` prefixes error messages ("router", "models[2]"). Keys in `ignore` are
        skipped (the other keys of a `[[models]]` entry); any other unknown key is an error.
        """
        values: dict[str, Any] = {}
        for key, value in (table or {}).items():
            rule = _KEYS.get(key)
            if rule is None:
                if key in ignore:
                    continue
                raise ConfigError(unknown_key(f"{where}.{key}", key, (*_KEYS, *ignore)))
            values[key] = _check(f"{where}.{key}", value, *rule)
        out = dataclasses.replace(base or cls(), **values)
        if out.breaker_cooldown_max_s < out.breaker_cooldown_s:
            raise ConfigError(f"{where}.breaker_cooldown_max_s: must be >= breaker_cooldown_s")
        return out


# key -> (type, lowest, highest, lowest allowed itself?, choices)
_KEYS: dict[str, tuple[type, float, float, bool, tuple[str, ...]]] = {
    "strategy": (str, 0, 0, True, STRATEGIES),
    "sla_ms": (float, 0.0, math.inf, True, ()),
    "latency_metric": (str, 0, 0, True, LATENCY_METRICS),
    "latency_weight": (float, 0.0, 1e6, True, ()),
    "cost_weight": (float, 0.0, 1e6, True, ()),
    "assumed_output_tokens": (int, 1, 10_000_000, True, ()),
    "explore_ratio": (float, 0.0, 0.5, True, ()),
    "ewma_half_life_s": (float, 0.0, 1e7, False, ()),
    "rerank_interval_s": (float, 0.0, 3600.0, False, ()),
    "breaker_failures": (int, 1, 1_000_000, True, ()),
    "breaker_error_rate": (float, 0.0, 1.0, False, ()),
    "breaker_window_s": (float, 0.0, 1e7, False, ()),
    "breaker_min_requests": (int, 1, 1_000_000, True, ()),
    "breaker_cooldown_s": (float, 0.0, 1e7, False, ()),
    "breaker_backoff": (float, 1.0, 1000.0, True, ()),
    "breaker_cooldown_max_s": (float, 0.0, 1e7, False, ()),
    "half_open_probes": (int, 1, 1000, True, ()),
    "max_attempts": (int, 1, 100, True, ()),
    "attempt_deadline_s": (float, 0.0, 1e6, False, ()),
    "hedge_after_ms": (float, 0.0, 1e9, True, ()),
}


def _check(name: str, value: Any, kind: type, lo: float, hi: float, lo_ok: bool, choices: tuple[str, ...]) -> Any:
    if kind is str:
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(f"{name}: must be one of {', '.join(choices)} (got {value!r})")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{name}: must be {'an integer' if kind is int else 'a number'} (got {value!r})")
    if not (value > lo or (lo_ok and value == lo)) or not value <= hi:  # also rejects NaN
        bound = ">=" if lo_ok else ">"
        raise ConfigError(f"{name}: must be {bound} {lo} and <= {hi} (got {value!r})")
    return kind(value)


def unknown_key(path: str, key: str, allowed: Collection[str]) -> str:
    """`<path>: unknown key 'base_ur' (did you mean 'base_url'?)`, the hint only when one is close."""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{path}: unknown key {key!r}{hint}"


_ROUTE_KEYS = ("provider", "model", "input_per_mtok", "output_per_mtok", "weight", "cached_input_per_mtok",
               "cache_write_per_mtok")  # fmt: skip


@dataclasses.dataclass(slots=True, frozen=True)
class RouteSpec:
    """One way to serve a model: a provider, its model name, its prices and a weight."""

    provider_id: int
    upstream_model: str
    input_per_mtok: float = 0.0  # USD per million input tokens
    output_per_mtok: float = 0.0  # USD per million output tokens
    weight: int = 1

    @property
    def input_pusd(self) -> int:
        """Input price in integer pico-dollars per token (USD/Mtok x 1e6)."""
        return round(self.input_per_mtok * 1e6)

    @property
    def output_pusd(self) -> int:
        """Output price in integer pico-dollars per token."""
        return round(self.output_per_mtok * 1e6)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str, providers: Mapping[str, int]) -> RouteSpec:
        """Validate one `[[models.routes]]` table; `providers` maps provider name -> id."""
        for key in table:
            # The cache prices bill usage (proxy/prices.py, read by proxy/config.py); the router ranks
            # routes by the input and output prices only.
            if key not in _ROUTE_KEYS:
                raise ConfigError(unknown_key(f"{where}.{key}", key, _ROUTE_KEYS))
        provider = table.get("provider")
        if not isinstance(provider, str) or provider not in providers:
            raise ConfigError(f"{where}.provider: unknown provider {provider!r}")
        upstream = table.get("model")
        if not isinstance(upstream, str) or not upstream:
            raise ConfigError(f"{where}.model: must be a non-empty string (got {upstream!r})")
        price_in = _check(f"{where}.input_per_mtok", table.get("input_per_mtok", 0.0), float, 0.0, 1e6, True, ())
        price_out = _check(f"{where}.output_per_mtok", table.get("output_per_mtok", 0.0), float, 0.0, 1e6, True, ())
        weight = _check(f"{where}.weight", table.get("weight", 1), int, 0, MAX_WEIGHT, True, ())
        return cls(providers[provider], upstream, price_in, price_out, weight)


@dataclasses.dataclass(slots=True, frozen=True)
class ModelSpec:
    """A model name clients send, its routes (in config order) and its settings."""

    name: str
    routes: tuple[RouteSpec, ...]
    settings: RouterSettings = RouterSettings()

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any], where: str, base: RouterSettings, providers: Mapping[str, int]
    ) -> ModelSpec:
        """Validate one `[[models]]` entry: `name`, `routes` and any router-key overrides."""
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: must be a non-empty string (got {name!r})")
        raw = table.get("routes")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{where}.routes: must be a non-empty list of tables")
        routes = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}.routes[{i}]: must be a table")
            routes.append(RouteSpec.from_table(item, f"{where}.routes[{i}]", providers))
        settings = RouterSettings.from_table(table, where, base, ignore=("name", "routes", "cache"))
        if settings.strategy == "weighted" and not any(r.weight for r in routes):
            raise ConfigError(f"{where}.routes: weighted strategy needs at least one route with weight > 0")
        return cls(name, tuple(routes), settings)
