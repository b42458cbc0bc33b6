"""proxy.cache.settings: CacheSettings.from_table validates every key and names the bad one."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from proxy.cache.settings import CacheSettings
from proxy.errors import ConfigError


def test_defaults() -> None:
    s = CacheSettings.from_table({})
    assert s == CacheSettings()
    assert (s.enabled, s.max_entries, s.max_bytes, s.ttl_s) == (True, 10_000, 256 * 1024 * 1024, 3600)
    assert (s.redis_url, s.redis_timeout_ms, s.policy) == (None, 5, "deterministic")


def test_settings_are_slotted_and_frozen() -> None:
    s = CacheSettings()
    assert not hasattr(s, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_entries = 5  # type: ignore[misc]


def test_valid_table() -> None:
    s = CacheSettings.from_table(
        {
            "enabled": False,
            "max_entries": 50,
            "max_bytes": 1 << 20,
            "ttl_s": 1.5,
            "redis_url": "redis://localhost:6379/0",
            "redis_timeout_ms": 2,
            "policy": "always",
        }
    )
    assert (s.enabled, s.max_entries, s.max_bytes, s.ttl_s, s.redis_timeout_ms, s.policy) == (
        False,
        50,
        1 << 20,
        1.5,
        2,
        "always",
    )


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("enabled", "yes", "cache.enabled: expected true or false"),
        ("enabled", 1, "cache.enabled: expected true or false"),
        ("max_entries", 0, "cache.max_entries: expected a positive integer"),
        ("max_entries", -5, "cache.max_entries: expected a positive integer"),
        ("max_entries", 10.0, "cache.max_entries: expected a positive integer"),
        ("max_entries", True, "cache.max_entries: expected a positive integer"),
        ("max_entries", "100", "cache.max_entries: expected a positive integer"),
        ("max_bytes", 0, "cache.max_bytes: expected a positive integer"),
        ("ttl_s", 0, "cache.ttl_s: expected a positive number"),
        ("ttl_s", float("inf"), "cache.ttl_s: expected a positive number"),
        ("ttl_s", float("nan"), "cache.ttl_s: expected a positive number"),
        ("ttl_s", "1h", "cache.ttl_s: expected a positive number"),
        ("redis_timeout_ms", -1, "cache.redis_timeout_ms: expected a positive number"),
        ("redis_timeout_ms", False, "cache.redis_timeout_ms: expected a positive number"),
        ("redis_url", "http://x", "cache.redis_url: expected a redis://, rediss:// or unix:// URL"),
        ("redis_url", 6379, "cache.redis_url: expected a redis://, rediss:// or unix:// URL"),
        ("policy", "sometimes", "cache.policy: expected one of always, deterministic, never"),
        ("policy", ["always"], "cache.policy: expected one of always, deterministic, never"),
        ("max_entriez", 5, "cache.max_entriez: unknown key"),
    ],
)
def test_bad_values_name_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        CacheSettings.from_table({key: value})
    assert str(info.value).startswith(message)


def test_redis_url_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        CacheSettings.from_table({"redis_url": "http://user:hunter2@host"})
    assert "hunter2" not in str(info.value)


def test_table_must_be_a_table_and_prefix_is_configurable() -> None:
    with pytest.raises(ConfigError, match=r"^cache: expected a table"):
        CacheSettings.from_table(["max_entries"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^routes\.x\.cache\.ttl_s:"):
        CacheSettings.from_table({"ttl_s": -1}, prefix="routes.x.cache")


def test_every_field_has_a_validator() -> None:
    from proxy.cache.settings import _CHECKS

    # key_seed is derived from key_seed_env's variable, never written in the file
    assert set(_CHECKS) == {f.name for f in dataclasses.fields(CacheSettings)} - {"key_seed"}
