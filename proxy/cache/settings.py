# proxy/cache/settings.py: the validated `[cache]` table.
#
# `CacheSettings.from_table()` is the only way a raw config table becomes settings. It rejects unknown
# keys, wrong types and out-of-range values with a `ConfigError` whose message starts with the dotted key
# (`cache.max_entries: ...`), so an operator can find the mistake. Runs once at startup (cold path).
# Nothing here does I/O. Values are never echoed for `redis_url` (it may carry a password).
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from proxy.errors import ConfigError

# Per-model cache policies (see proxy/cache/policy.py).
POLICY_MODES = ("always", "deterministic", "never")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(slots=True, frozen=True)
class CacheSettings:
    """Settings of the response cache, as read from the `[cache]` table.

    `policy` is the default per-model policy ("always" | "deterministic" | "never"); per-model
    overrides are passed to `policy.Planner` by whoever owns the model table.
    """

    enabled: bool = True
    max_entries: int = 10_000
    max_bytes: int = 256 * 1024 * 1024
    ttl_s: float = 3600
    redis_url: str | None = None
    redis_timeout_ms: float = 5
    policy: str = "deterministic"
    key_seed_env: str | None = None  # environment variable holding the cache key's secret seed
    key_seed: int = field(default=0, repr=False)  # derived from it: the xxh3 seed of `make_key`

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any], prefix: str = "cache", env: Mapping[str, str] | None = None
    ) -> CacheSettings:
        """Build settings from a parsed config table; raise ConfigError naming the first bad key.

        `env` supplies the `key_seed_env` variable (never echoed: it is a secret).
        """
        if not isinstance(table, Mapping):
            raise ConfigError(f"{prefix}: expected a table, got {type(table).__name__}")
        known = {f.name for f in fields(cls)} - {"key_seed"}
        for name in table:
            if name not in known:
                raise ConfigError(f"{prefix}.{name}: unknown key (expected one of: {', '.join(sorted(known))})")
        for name, value in table.items():
            problem = _CHECKS[name](value)
            if problem is not None:
                raise ConfigError(f"{prefix}.{name}: {problem}")
        seed_env = table.get("key_seed_env")
        if seed_env is None:
            return cls(**table)
        secret = (env or {}).get(seed_env, "")
        if not secret:
            raise ConfigError(f"{prefix}.key_seed_env: the environment variable {seed_env!r} is not set or empty")
        return cls(**table, key_seed=seed_from_secret(secret))


def seed_from_secret(secret: str) -> int:
    """A 64-bit xxh3 seed from any secret string (its SHA-256's first 8 bytes): the whole secret counts."""
    return int.from_bytes(hashlib.sha256(secret.encode("utf-8")).digest()[:8], "big")


def _bool(value: Any) -> str | None:
    return None if type(value) is bool else f"expected true or false, got {value!r}"


def _positive_int(value: Any) -> str | None:
    ok = type(value) is int and value > 0  # `type() is` so that true/false are not integers
    return None if ok else f"expected a positive integer, got {value!r}"


def _positive_number(value: Any) -> str | None:
    ok = type(value) in (int, float) and math.isfinite(value) and value > 0
    return None if ok else f"expected a positive number, got {value!r}"


def _redis_url(value: Any) -> str | None:
    ok = value is None or (type(value) is str and value.startswith(_REDIS_SCHEMES))
    return None if ok else "expected a redis://, rediss:// or unix:// URL"  # never echo: may hold a password


def _policy(value: Any) -> str | None:
    ok = type(value) is str and value in POLICY_MODES
    return None if ok else f"expected one of {', '.join(POLICY_MODES)}, got {value!r}"


_CHECKS = {
    "enabled": _bool,
    "max_entries": _positive_int,
    "max_bytes": _positive_int,
    "ttl_s": _positive_number,
    "redis_url": _redis_url,
    "redis_timeout_ms": _positive_number,
    "policy": _policy,
    "key_seed_env": lambda v: None if type(v) is str and v else "expected the name of an environment variable",
}
