"""proxy.cache.policy: per-model policy, determinism test, Cache-Control and TTL headers."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.cache.formats import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS
from proxy.cache.policy import (
    BYPASS_PLAN,
    Mode,
    Outcome,
    Planner,
    is_deterministic,
    parse_cache_control,
    parse_mode,
    parse_ttl,
)
from proxy.cache.settings import CacheSettings
from proxy.errors import ConfigError

GREEDY = {"model": "m", "messages": [], "temperature": 0}
SAMPLED = {"model": "m", "messages": [], "temperature": 0.8}


def planner(**kw: Any) -> Planner:
    modes = kw.pop("model_modes", None)
    return Planner(CacheSettings(**kw), modes)


def test_outcome_names_are_exact() -> None:
    assert [o.name for o in Outcome] == ["HIT", "MISS", "BYPASS", "REFRESH"]
    assert [o.value for o in Outcome] == [b"HIT", b"MISS", b"BYPASS", b"REFRESH"]


@pytest.mark.parametrize(
    "body,expected",
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0}, True),
        ({"temperature": 0, "n": 1}, True),
        ({"temperature": 0, "n": None}, True),
        ({"temperature": 0, "n": 2}, False),
        ({"temperature": 0, "n": 1.0}, False),
        ({"temperature": 1, "seed": 42}, True),
        ({"seed": 0}, True),
        ({"seed": 42, "n": 3}, False),
        ({}, False),  # default temperature is 1
        ({"temperature": 0.2}, False),
        ({"temperature": False}, False),  # a bool is not a temperature
        ({"temperature": None}, False),
        ({"temperature": 0, "seed": None}, True),
    ],
)
def test_is_deterministic(body: dict[str, Any], expected: bool) -> None:
    assert is_deterministic(OPENAI_CHAT, body) is expected


def test_embeddings_are_always_deterministic() -> None:
    assert is_deterministic(OPENAI_EMBEDDINGS, {"input": "x"})


def test_default_policy_caches_greedy_and_bypasses_sampled_requests() -> None:
    p = planner()
    plan = p.plan(OPENAI_CHAT, "m", GREEDY)
    assert (plan.lookup, plan.store, plan.ttl, plan.max_age, plan.outcome) == (True, True, 3600.0, None, Outcome.MISS)
    assert p.plan(OPENAI_CHAT, "m", SAMPLED) is BYPASS_PLAN
    assert p.plan(ANTHROPIC_MESSAGES, "m", GREEDY).lookup


def test_common_plan_is_prebuilt_and_shared() -> None:
    p = planner()
    assert p.plan(OPENAI_CHAT, "m", GREEDY) is p.plan(OPENAI_CHAT, "x", {"temperature": 0})


def test_always_and_never_policies() -> None:
    assert planner(policy="always").plan(OPENAI_CHAT, "m", SAMPLED).lookup
    assert planner(policy="always").plan(OPENAI_CHAT, "m", {"n": 4}).store
    assert planner(policy="never").plan(OPENAI_CHAT, "m", GREEDY) is BYPASS_PLAN
    assert planner(policy="never").plan(OPENAI_EMBEDDINGS, "m", {"input": "x"}) is BYPASS_PLAN


def test_per_model_overrides() -> None:
    p = planner(model_modes={"creative": "never", "fixed": "always"})
    assert p.mode_for("creative") is Mode.NEVER and p.mode_for("other") is Mode.DETERMINISTIC
    assert p.plan(OPENAI_CHAT, "creative", GREEDY) is BYPASS_PLAN
    assert p.plan(OPENAI_CHAT, "fixed", SAMPLED).lookup
    assert p.plan(OPENAI_CHAT, "other", SAMPLED) is BYPASS_PLAN


def test_disabled_cache_bypasses_everything() -> None:
    p = planner(enabled=False, policy="always")
    assert p.plan(OPENAI_CHAT, "m", GREEDY, b"max-age=5", b"10") is BYPASS_PLAN


def test_bad_policy_names_raise_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^models\.gpt\.cache: expected one of always, deterministic, never"):
        planner(model_modes={"gpt": "sometimes"})
    with pytest.raises(ConfigError, match=r"^x\.y:"):
        parse_mode(3, "x.y")


@pytest.mark.parametrize(
    "value,expected",
    [
        (b"no-cache", (True, False, None)),
        (b"no-store", (False, True, None)),
        (b"no-cache, no-store", (True, True, None)),
        (b"No-Cache", (True, False, None)),
        (b"max-age=60", (False, False, 60)),
        (b'max-age="60"', (False, False, 60)),
        (b" max-age = 60 ", (False, False, 60)),
        (b"max-age=60, s-maxage=30", (False, False, 30)),
        (b"s-maxage=90,max-age=120", (False, False, 90)),
        (b"max-age=abc", (False, False, 0)),  # malformed: strict
        (b"max-age=-5", (False, False, 0)),
        (b"max-age", (False, False, 0)),
        (b"max-age=99999999999999", (False, False, 2**31)),
        (b"no-transform, private", (False, False, None)),
        (b"", (False, False, None)),
        (b'no-cache="set-cookie"', (True, False, None)),
    ],
)
def test_parse_cache_control(value: bytes, expected: tuple[bool, bool, int | None]) -> None:
    assert parse_cache_control(value) == expected


def test_no_store_bypasses_lookup_and_store() -> None:
    assert planner().plan(OPENAI_CHAT, "m", GREEDY, b"no-store") is BYPASS_PLAN
    assert planner().plan(OPENAI_CHAT, "m", GREEDY, b"no-cache, no-store") is BYPASS_PLAN


def test_no_cache_refreshes() -> None:
    plan = planner().plan(OPENAI_CHAT, "m", GREEDY, b"no-cache")
    assert (plan.lookup, plan.store, plan.ttl, plan.outcome) == (False, True, 3600.0, Outcome.REFRESH)


def test_max_age_limits_what_may_be_served() -> None:
    plan = planner().plan(OPENAI_CHAT, "m", GREEDY, b"max-age=60")
    assert (plan.lookup, plan.store, plan.max_age, plan.outcome) == (True, True, 60.0, Outcome.MISS)


def test_headers_never_enable_caching_of_a_bypassed_request() -> None:
    assert planner().plan(OPENAI_CHAT, "m", SAMPLED, b"max-age=60", b"30") is BYPASS_PLAN


@pytest.mark.parametrize(
    "header,ttl,store",
    [
        (b"10", 10.0, True),
        (b"3599", 3599.0, True),
        (b"7200", 3600.0, True),  # can only shorten
        (b"0", 0.0, False),
        (b"soon", 0.0, False),  # malformed: do not store
        (b"-1", 0.0, False),
    ],
)
def test_ttl_header_can_only_shorten(header: bytes, ttl: float, store: bool) -> None:
    plan = planner().plan(OPENAI_CHAT, "m", GREEDY, None, header)
    assert (plan.ttl, plan.store, plan.lookup) == (ttl, store, True)


def test_ttl_header_follows_the_configured_ttl() -> None:
    assert planner(ttl_s=5).plan(OPENAI_CHAT, "m", GREEDY, None, b"60").ttl == 5.0


def test_no_cache_with_zero_ttl_is_a_bypass() -> None:
    assert planner().plan(OPENAI_CHAT, "m", GREEDY, b"no-cache", b"0") is BYPASS_PLAN
    plan = planner().plan(OPENAI_CHAT, "m", GREEDY, b"no-cache", b"30")
    assert (plan.lookup, plan.store, plan.ttl, plan.outcome) == (False, True, 30.0, Outcome.REFRESH)


def test_parse_ttl() -> None:
    assert parse_ttl(b" 42 ") == 42 and parse_ttl(b"x") == 0


def test_plan_repr_names_the_outcome() -> None:
    assert "outcome=BYPASS" in repr(BYPASS_PLAN)
