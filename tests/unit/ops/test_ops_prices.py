"""Prices per kind of token: the exact integer arithmetic, the config tables, direct routes, unpriced routes."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import config
from proxy.auth import AuthSettings, Keys, UnpricedRouteError
from proxy.errors import ConfigError
from proxy.limits import NANO
from proxy.prices import FREE, Prices, cost_nusd, cost_pusd, disjoint, price_list, prices, route_prices, tokens


def test_the_readme_worked_example() -> None:
    # $3 in, $15 out, cache reads $0.30, cache writes $3.75 per million tokens
    p = prices(3.0, 15.0, 0.30, 3.75)
    assert p == Prices(3_000_000, 15_000_000, 300_000, 3_750_000)
    # 12,200 prompt tokens of which 10,000 read from the cache and 2,000 written to it; 500 completion
    # tokens of which 300 reasoning
    usage = disjoint(12_200, 10_000, 2_000, 500, 300)
    assert usage == (200, 10_000, 2_000, 200, 300)
    assert cost_pusd(usage, p) == 600_000_000 + 3_000_000_000 + 7_500_000_000 + 7_500_000_000
    assert cost_nusd(usage, p) == 18_600_000  # $0.0186
    # every prompt token at the input price, as before: $0.0441
    assert cost_nusd((12_200, 0, 0, 500, 0), p) == 44_100_000
    assert tokens(usage) == 12_700


def test_cache_prices_default_to_the_input_price() -> None:
    p = prices(0.15, 0.60)
    assert p == Prices(150_000, 600_000, 150_000, 150_000)
    assert cost_nusd((1, 1, 1, 0, 0), p) == cost_nusd((3, 0, 0, 0, 0), p)


def test_reasoning_is_output() -> None:
    p = prices(1.0, 4.0)
    assert cost_pusd((0, 0, 0, 10, 90), p) == cost_pusd((0, 0, 0, 100, 0), p) == 400_000_000


def test_disjoint_never_goes_negative() -> None:
    assert disjoint(5, 10, 10, 3, 9) == (0, 10, 10, 0, 3)
    assert disjoint(0, -4, -1, -2, -3) == (0, 0, 0, 0, 0)


@given(
    st.tuples(*[st.integers(0, 10**9)] * 5),
    st.tuples(*[st.decimals(0, 1000, places=6, allow_nan=False)] * 4),
)
def test_cost_is_exact_and_rounded_once(usage: tuple[int, int, int, int, int], usd: tuple[Decimal, ...]) -> None:
    p = prices(float(usd[0]), float(usd[1]), float(usd[2]), float(usd[3]))
    plain, cached, written, output, reasoning = usage
    exact = (plain * usd[0] + cached * usd[2] + written * usd[3] + (output + reasoning) * usd[1]) / Decimal(10**6)
    nano = (exact * NANO).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert cost_nusd(usage, p) == int(nano)


def test_free_costs_nothing() -> None:
    assert cost_nusd((10**9,) * 5, FREE) == 0  # type: ignore[arg-type]


def test_price_list_validation() -> None:
    assert price_list(None, "p") == {}
    assert price_list({"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}, "p") == {
        "gpt-4o-mini": Prices(150_000, 600_000, 150_000, 150_000)
    }
    for bad, where in (
        ({"m": {"input_per_mtok": -1}}, "p.m.input_per_mtok"),
        ({"m": {"input_per_mtok": float("nan")}}, "p.m.input_per_mtok"),
        ({"m": {"input_per_mtok": True}}, "p.m.input_per_mtok"),
        ({"m": {"inptu_per_mtok": 1}}, "p.m.inptu_per_mtok"),
        ({"m": {}}, "p.m"),
        ({"m": 1.0}, "p.m"),
        ({"a/b": {"x": 1}}, 'p."a/b".x'),
    ):
        with pytest.raises(ConfigError) as info:
            price_list(bad, "p")
        assert str(info.value).startswith(where + ":"), str(info.value)
    with pytest.raises(ConfigError):
        price_list([1], "p")


def _table(**route: object) -> dict[str, object]:
    return {
        "providers": [
            {"name": "up", "kind": "local", "base_url": "http://127.0.0.1:9/v1",
             "prices": {"big": {"input_per_mtok": 2.0, "output_per_mtok": 8.0, "cached_input_per_mtok": 0.5}}},
        ],
        "models": [{"name": "fast", "routes": [{"provider": "up", "model": "m", **route}]}],
        "auth": {"keys": [{"name": "rich", "key": "sk-rich-000000"},
                          {"name": "capped", "key": "sk-capped-00000", "budget_usd": 1.0}]},
    }  # fmt: skip


def test_config_prices_configured_and_direct_routes() -> None:
    s = config.from_table(_table(input_per_mtok=1.0, output_per_mtok=2.0, cache_write_per_mtok=1.25), {})
    route = s.models["fast"].routes[0]
    assert route.prices == Prices(1_000_000, 2_000_000, 1_000_000, 1_250_000)
    assert route_prices(route, "fast") == route.prices
    direct = s.direct_routes["up"]
    assert route_prices(direct, "up/big") == Prices(2_000_000, 8_000_000, 500_000, 2_000_000)
    assert route_prices(direct, "up/unknown") is None


def test_a_route_without_prices_is_unpriced_and_a_free_one_is_priced() -> None:
    assert config.from_table(_table(), {}).models["fast"].routes[0].prices is None
    assert config.from_table(_table(input_per_mtok=0.0), {}).models["fast"].routes[0].prices == FREE
    with pytest.raises(ConfigError, match=r"models\[0\]\.routes\[0\]\.cached_input_per_mtok"):
        config.from_table(_table(cached_input_per_mtok="cheap"), {})


def test_a_key_with_a_budget_is_never_served_by_an_unpriced_route() -> None:
    s = config.from_table(_table(), {})
    keys = Keys(s.auth)
    rich, capped = keys.authenticate(b"sk-rich-000000"), keys.authenticate(b"sk-capped-00000")
    unpriced = route_prices(s.models["fast"].routes[0], "fast")
    assert keys.may_use(rich, unpriced)
    assert not keys.may_use(capped, unpriced)
    assert keys.may_use(capped, route_prices(s.direct_routes["up"], "up/big"))
    assert not keys.may_use(capped, route_prices(s.direct_routes["up"], "up/other"))
    assert keys.may_use(-1, None)  # no key: nothing to protect
    error = keys.unpriced(capped, "up/other")
    assert isinstance(error, UnpricedRouteError) and error.status == 403 and error.type.endswith("error")
    assert "'capped' has a budget" in error.message and "'up/other'" in error.message
    assert "sk-capped" not in error.message


def test_auth_settings_reject_bad_periods() -> None:
    with pytest.raises(ConfigError, match=r"budget_period: expected one of 1d, 7d, 30d, monthly"):
        AuthSettings.from_table({"keys": [{"name": "a", "key": "k", "budget_usd": 1, "budget_period": "1w"}]}, {})
    with pytest.raises(ConfigError, match="set budget_usd too"):
        AuthSettings.from_table({"keys": [{"name": "a", "key": "k", "budget_period": "1d"}]}, {})


def test_waste_counts_losing_attempts_per_route() -> None:
    from proxy.prices import Waste

    waste = Waste(3)
    p = prices(1.0, 2.0)
    usage = (100, 0, 0, 50, 0)
    waste.record(1, usage, cost_nusd(usage, p))
    waste.record(1, (0, 0, 0, 0, 0), 0)  # closed before it produced anything
    assert waste.snapshot(1) == {"wasted_attempts": 2, "wasted_tokens": 150, "wasted_usd": 0.0002}
    assert waste.snapshot(0)["wasted_attempts"] == 0
