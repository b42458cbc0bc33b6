# proxy/cache/policy.py: should this request use the cache, and how? (pure, no I/O, no clock)
#
# Two inputs decide: the per-model policy and the request's own cache headers.
#   policy "never"          -> BYPASS.
#   policy "deterministic"  -> cache only when the answer is meant to repeat: temperature == 0 or a
#                              `seed` is given, and `n` absent or 1. Embeddings always qualify.
#   policy "always"         -> cache every request that can be keyed.
# Then the request headers, strongest first:
#   Cache-Control: no-store      -> BYPASS: no lookup, no store.
#   Cache-Control: no-cache      -> REFRESH: no lookup, store the fresh answer.
#   Cache-Control: max-age=N     -> look up, but accept only entries with age <= N (s-maxage too;
#                                   the smaller wins; a malformed value counts as 0).
#   x-llm-edge-cache-ttl: N      -> store with min(N, ttl_s): a request can only shorten the TTL.
#                                   0 or a malformed value means "do not store".
# `Planner.plan()` returns a `Plan`; the common plans are prebuilt, so the usual request allocates
# nothing here. After a lookup, the caller reports HIT or `plan.outcome` (MISS, BYPASS or REFRESH).
from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from proxy.cache.formats import OPENAI_EMBEDDINGS
from proxy.cache.settings import POLICY_MODES, CacheSettings
from proxy.errors import ConfigError

_MAX_DELTA_SECONDS = 2**31  # RFC 9111 5.2: larger delta-seconds values are clamped to this


class Outcome(enum.Enum):
    """What the cache did for one exchange; `.value` is the header value."""

    HIT = b"HIT"
    MISS = b"MISS"
    BYPASS = b"BYPASS"
    REFRESH = b"REFRESH"


class Mode(enum.IntEnum):
    NEVER = 0
    DETERMINISTIC = 1
    ALWAYS = 2


_MODES = {"never": Mode.NEVER, "deterministic": Mode.DETERMINISTIC, "always": Mode.ALWAYS}
# Module constants for `plan`: reading an enum member through its class costs ~150 ns on 3.11 (EnumType.__getattr__).
_NEVER, _DETERMINISTIC = Mode.NEVER, Mode.DETERMINISTIC


def parse_mode(value: object, where: str) -> Mode:
    """Turn a configured policy string into a Mode; raise ConfigError naming `where` otherwise."""
    mode = _MODES.get(value) if isinstance(value, str) else None
    if mode is None:
        raise ConfigError(f"{where}: expected one of {', '.join(POLICY_MODES)}, got {value!r}")
    return mode


class Plan:
    """The cache actions for one request. Plans are shared: never mutate one.

    lookup:  read the cache before going upstream.
    store:   write a cacheable answer back, with `ttl` seconds to live.
    max_age: when not None, only entries with age <= max_age may be served.
    outcome: what to report when the lookup does not hit (MISS), or when there is none (BYPASS, REFRESH).
    """

    __slots__ = ("lookup", "max_age", "outcome", "store", "ttl")

    def __init__(self, lookup: bool, store: bool, ttl: float, max_age: float | None, outcome: Outcome) -> None:
        self.lookup = lookup
        self.store = store
        self.ttl = ttl
        self.max_age = max_age
        self.outcome = outcome

    def __repr__(self) -> str:
        return (
            f"Plan(lookup={self.lookup}, store={self.store}, ttl={self.ttl}, "
            f"max_age={self.max_age}, outcome={self.outcome.name})"
        )


BYPASS_PLAN = Plan(False, False, 0.0, None, Outcome.BYPASS)


def is_deterministic(fmt: bytes, body: Mapping[str, Any]) -> bool:
    """True when the request asks for a repeatable answer (the "deterministic" policy's test)."""
    if fmt == OPENAI_EMBEDDINGS:
        return True
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        return False
    temperature = body.get("temperature")
    if (type(temperature) is int or type(temperature) is float) and temperature == 0:
        return True
    return body.get("seed") is not None


def _delta_seconds(raw: bytes) -> int:
    raw = raw.strip().strip(b'"')
    if not raw.isdigit():
        return 0  # malformed: be strict, serve nothing older than now
    return min(int(raw), _MAX_DELTA_SECONDS)


def parse_cache_control(value: bytes) -> tuple[bool, bool, int | None]:
    """Parse a request Cache-Control value into (no_cache, no_store, max_age or None)."""
    no_cache = no_store = False
    max_age: int | None = None
    for part in value.lower().split(b","):
        name, _, arg = part.partition(b"=")
        name = name.strip()
        if name == b"no-store":
            no_store = True
        elif name == b"no-cache":
            no_cache = True
        elif name == b"max-age" or name == b"s-maxage":
            secs = _delta_seconds(arg)
            max_age = secs if max_age is None else min(max_age, secs)
    return no_cache, no_store, max_age


def parse_ttl(value: bytes) -> int:
    """Parse an `x-llm-edge-cache-ttl` value in whole seconds; malformed means 0 (do not store)."""
    return _delta_seconds(value)


class Planner:
    """Decides a `Plan` per request from the settings, per-model policies and request headers."""

    __slots__ = ("_default_mode", "_enabled", "_model_modes", "_normal", "_refresh", "_ttl")

    def __init__(self, settings: CacheSettings, model_modes: Mapping[str, str] | None = None) -> None:
        """`model_modes` maps a model name to "always" | "deterministic" | "never" (ConfigError if bad)."""
        self._enabled = settings.enabled
        self._default_mode = parse_mode(settings.policy, "cache.policy")
        self._model_modes = {
            model: parse_mode(mode, f"models.{model}.cache") for model, mode in (model_modes or {}).items()
        }
        self._ttl = float(settings.ttl_s)
        self._normal = Plan(True, True, self._ttl, None, Outcome.MISS)
        self._refresh = Plan(False, True, self._ttl, None, Outcome.REFRESH)

    def mode_for(self, model: str) -> Mode:
        """The policy for `model` (the default policy when it has no override)."""
        return self._model_modes.get(model, self._default_mode)

    def plan(
        self,
        fmt: bytes,
        model: str,
        body: Mapping[str, Any],
        cache_control: bytes | None = None,
        ttl_header: bytes | None = None,
    ) -> Plan:
        """Return the plan for one request. Header values are raw bytes, None when absent."""
        if not self._enabled:
            return BYPASS_PLAN
        mode = self._model_modes.get(model, self._default_mode)
        if mode is _NEVER or (mode is _DETERMINISTIC and not is_deterministic(fmt, body)):
            return BYPASS_PLAN
        if cache_control is None and ttl_header is None:
            return self._normal
        no_cache = no_store = False
        max_age: int | None = None
        if cache_control is not None:
            no_cache, no_store, max_age = parse_cache_control(cache_control)
            if no_store:
                return BYPASS_PLAN
        ttl = self._ttl if ttl_header is None else min(self._ttl, float(parse_ttl(ttl_header)))
        store = ttl > 0
        if no_cache:
            if not store:
                return BYPASS_PLAN
            return self._refresh if ttl == self._ttl else Plan(False, True, ttl, None, Outcome.REFRESH)
        if max_age is None and ttl == self._ttl:
            return self._normal
        return Plan(True, store, ttl, None if max_age is None else float(max_age), Outcome.MISS)
