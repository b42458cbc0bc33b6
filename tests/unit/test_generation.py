"""Generation: what one configuration builds, and what a reload keeps (warm pools, learned route state)."""

from __future__ import annotations

from typing import Any

from proxy import config, relay
from proxy.generation import Generation
from tests.fakes import FakeLoop

TABLE: dict[str, Any] = {
    "server": {"listen": "127.0.0.1:0"},
    "providers": [
        {"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1"},
        {"name": "b", "kind": "local", "base_url": "http://127.0.0.1:10/v1", "max_in_flight": 4},
    ],
    "models": [
        {"name": "fast", "routes": [{"provider": "a", "model": "m1"}]},
        {"name": "duo", "routes": [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}]},
    ],
}


def build(table: dict[str, Any], previous: Generation | None = None, loop: FakeLoop | None = None) -> Generation:
    return Generation(config.from_table(table, env={}), loop or FakeLoop(), relay, previous=previous)  # type: ignore[arg-type]


def test_what_a_generation_builds() -> None:
    gen = build(TABLE)
    assert [p.provider.name for p in gen.pools] == ["a", "b"] and all(p.handler is relay for p in gen.pools)
    assert gen.provider_headers == [b"x-llm-edge-provider: a\r\n", b"x-llm-edge-provider: b\r\n"]
    assert set(gen.resolved) == {"fast", "duo"}
    model_id, router_settings = gen.resolved["duo"]
    assert router_settings.max_attempts >= 1 and model_id == gen.settings.models["duo"].id
    assert gen.router.table.provider_limit[1] == 4
    assert b'"id":"fast"' in gen.models_body
    assert gen.header_actions[b"authorization"] is not None


def test_a_reload_keeps_the_pools_of_unchanged_providers() -> None:
    loop = FakeLoop()
    old = build(TABLE, loop=loop)
    changed = {**TABLE, "providers": [TABLE["providers"][0], {**TABLE["providers"][1], "max_connections": 3}]}
    new = build(changed, previous=old, loop=loop)
    assert new.pools[0] is old.pools[0]  # same provider: warm connections kept
    assert new.pools[1] is not old.pools[1]
    old.retire(new)
    assert old.pools[1].retired and not old.pools[0].retired


def test_a_moved_provider_keeps_its_pool() -> None:
    loop = FakeLoop()
    old = build(TABLE, loop=loop)
    swapped = {**TABLE, "providers": list(reversed(TABLE["providers"]))}
    new = build(swapped, previous=old, loop=loop)
    assert new.pools[0] is old.pools[1] and new.pools[1] is old.pools[0]


def test_learned_route_state_carries_over_for_unchanged_routes() -> None:
    old = build(TABLE)
    table = old.router.table
    table.requests[0] = 7  # fast via a
    table.requests[2] = 5  # duo via b
    duo = {"name": "duo", "routes": [{"provider": "a", "model": "m1"},
                                     {"provider": "b", "model": "m2", "input_per_mtok": 1.0}]}  # fmt: skip
    repriced = {**TABLE, "models": [TABLE["models"][0], duo]}
    new = build(repriced, previous=old)
    assert new.router.table.requests[0] == 7
    assert new.router.table.requests[2] == 0  # its price changed: a new route, learning afresh
