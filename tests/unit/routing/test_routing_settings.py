"""RouterSettings / RouteSpec / ModelSpec validation (pure, no loop)."""

from __future__ import annotations

import dataclasses

import pytest

import proxy.routing.settings as settings_mod
from proxy.errors import ConfigError
from proxy.routing import ModelSpec, Router, RouterSettings, RouteSpec

PROVIDERS = {"openai": 0, "anthropic": 1}


def test_defaults_are_sane() -> None:
    s = RouterSettings.from_table(None, "router")
    assert s == RouterSettings()
    assert s.strategy == "cost-sla"
    assert s.sla_ms == 0.0 and s.hedge_after_ms == 0.0  # both opt-in
    assert 0 < s.explore_ratio < 0.1
    assert s.breaker_cooldown_s <= s.breaker_cooldown_max_s


def test_every_key_is_documented_with_its_default() -> None:
    doc = settings_mod.__doc__ or ""
    for field in dataclasses.fields(RouterSettings):
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"``{field.name}``")), None)
        assert line is not None, field.name
        default = field.default
        shown = line.split()[1]
        if isinstance(default, str):
            assert shown == default
        else:
            assert float(shown) == default, field.name


def test_model_overrides_router_defaults() -> None:
    base = RouterSettings.from_table({"breaker_failures": 7, "sla_ms": 900}, "router")
    model = RouterSettings.from_table({"sla_ms": 1500, "name": "x"}, "models[0]", base, ignore=("name",))
    assert model.breaker_failures == 7
    assert model.sla_ms == 1500.0 and isinstance(model.sla_ms, float)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"strategy": "fastest"}, "router.strategy"),
        ({"latency_metric": "p99"}, "router.latency_metric"),
        ({"explore_ratio": 0.9}, "router.explore_ratio"),
        ({"explore_ratio": -0.1}, "router.explore_ratio"),
        ({"ewma_half_life_s": 0}, "router.ewma_half_life_s"),
        ({"ewma_half_life_s": float("nan")}, "router.ewma_half_life_s"),
        ({"breaker_failures": 2.5}, "router.breaker_failures"),
        ({"breaker_failures": True}, "router.breaker_failures"),
        ({"breaker_error_rate": 0}, "router.breaker_error_rate"),
        ({"breaker_error_rate": 1.5}, "router.breaker_error_rate"),
        ({"breaker_min_requests": 0}, "router.breaker_min_requests"),
        ({"breaker_backoff": 0.5}, "router.breaker_backoff"),
        ({"half_open_probes": 0}, "router.half_open_probes"),
        ({"max_attempts": "3"}, "router.max_attempts"),
        ({"sla_ms": -1}, "router.sla_ms"),
        ({"breaker_cooldown_s": 60, "breaker_cooldown_max_s": 30}, "router.breaker_cooldown_max_s"),
        ({"colour": "blue"}, "router.colour"),
    ],
)
def test_invalid_values_name_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RouterSettings.from_table(table, "router")


def test_model_from_table() -> None:
    table = {
        "name": "fast",
        "strategy": "weighted",
        "hedge_after_ms": 250,
        "routes": [
            {"provider": "openai", "model": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.6},
            {"provider": "anthropic", "model": "claude-haiku", "input_per_mtok": 1, "output_per_mtok": 5, "weight": 3},
        ],
    }
    spec = ModelSpec.from_table(table, "models[0]", RouterSettings(), PROVIDERS)
    assert spec.name == "fast" and spec.settings.strategy == "weighted" and spec.settings.hedge_after_ms == 250.0
    assert spec.routes[0] == RouteSpec(0, "gpt-4o-mini", 0.15, 0.6, 1)
    assert spec.routes[1].weight == 3 and spec.routes[1].provider_id == 1
    assert spec.routes[0].input_pusd == 150_000  # $0.15 / Mtok = 0.15e-6 USD = 150000 pUSD per token


@pytest.mark.parametrize(
    ("routes", "key"),
    [
        ([], "models[0].routes"),
        ([{"provider": "nope", "model": "m"}], "models[0].routes[0].provider"),
        ([{"provider": "openai"}], "models[0].routes[0].model"),
        ([{"provider": "openai", "model": "m", "weight": -1}], "models[0].routes[0].weight"),
        ([{"provider": "openai", "model": "m", "weight": 1.5}], "models[0].routes[0].weight"),
        ([{"provider": "openai", "model": "m", "input_per_mtok": -2}], "models[0].routes[0].input_per_mtok"),
        ([{"provider": "openai", "model": "m", "price": 1}], "models[0].routes[0].price"),
    ],
)
def test_bad_routes_name_the_key(routes: list[dict[str, object]], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        ModelSpec.from_table({"name": "m", "routes": routes}, "models[0]", RouterSettings(), PROVIDERS)


@pytest.mark.parametrize(
    ("table", "key"),
    [({"routes": [{"provider": "openai", "model": "m"}]}, "models[0].name"), ({"name": "m", "routes": [3]}, "routes")],
)
def test_bad_model_tables(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        ModelSpec.from_table(table, "models[0]", RouterSettings(), PROVIDERS)


def test_weighted_needs_a_positive_weight() -> None:
    table = {"name": "m", "strategy": "weighted", "routes": [{"provider": "openai", "model": "m", "weight": 0}]}
    with pytest.raises(ConfigError, match="weight"):
        ModelSpec.from_table(table, "models[0]", RouterSettings(), PROVIDERS)


def test_router_rejects_bad_topology() -> None:
    route = RouteSpec(0, "m")
    with pytest.raises(ConfigError, match="provider"):
        Router([ModelSpec("a", (RouteSpec(5, "m"),))], [0])
    with pytest.raises(ConfigError, match="unique"):
        Router([ModelSpec("a", (route,)), ModelSpec("a", (route,))], [0])
    with pytest.raises(ConfigError, match="routes"):
        Router([ModelSpec("a", ())], [0])
    assert Router([], [0]).models == ()  # no models configured: a router with nothing to pick
