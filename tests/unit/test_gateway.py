"""GatewayState on a fake loop: request ids, the 1 Hz tick and what it sweeps, and reloads."""

from __future__ import annotations

from typing import Any

from proxy import config, relay
from proxy.gateway import GatewayState
from tests.fakes import FakeLoop
from tests.unit.protocol_harness import idle_upstream

TABLE: dict[str, Any] = {
    "server": {"listen": "127.0.0.1:0"},
    "providers": [
        {"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1", "pool_idle_timeout_s": 5},
        {"name": "b", "kind": "local", "base_url": "http://127.0.0.1:10/v1"},
    ],
    "models": [{"name": "fast", "routes": [{"provider": "a", "model": "m1"}]}],
}


def state(table: dict[str, Any] = TABLE) -> tuple[GatewayState, FakeLoop]:
    loop = FakeLoop()
    return GatewayState(config.from_table(table, env={}), loop, relay), loop  # type: ignore[arg-type]


def test_request_ids_are_unique_and_name_the_process() -> None:
    gw, _ = state()
    ids = [gw.next_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(i.startswith(gw.request_id_prefix) for i in ids)


def test_the_tick_sets_the_date_and_comes_back_each_second() -> None:
    gw, loop = state()
    assert gw.date_header.startswith(b"date: ") and gw.date_header.endswith(b" GMT\r\n")
    assert [t.callback for t in loop.pending_timers] == [gw._tick]
    loop.advance(1.01)
    assert [t.callback for t in loop.pending_timers] == [gw._tick]  # re-armed, one timer only


def test_the_tick_sweeps_stale_pooled_connections() -> None:
    gw, loop = state()
    conn, transport = idle_upstream(gw, loop, 0)  # type: ignore[arg-type]
    loop.advance(3)
    assert not transport.closed
    for _ in range(4):
        loop.advance(1.01)
    assert transport.closed and gw.pools[0].idle == []


def test_attempt_headers_are_prebuilt() -> None:
    gw, _ = state()
    assert gw.attempt_headers[1] == b"x-llm-edge-attempts: 1\r\n" and len(gw.attempt_headers) == 10


def test_reload_swaps_the_generation_and_retires_dropped_pools() -> None:
    gw, loop = state()
    old = gw.gen
    kept = gw.pools[0]
    dropped = gw.pools[1]
    conn, transport = idle_upstream(gw, loop, 1)  # type: ignore[arg-type]
    gw.reload(config.from_table({**TABLE, "providers": TABLE["providers"][:1]}, env={}))
    assert gw.gen is not old and gw.pools == [kept]
    assert dropped.retired and transport.closed
    assert gw.settings is gw.gen.settings and gw.router is gw.gen.router


def test_a_cache_is_made_only_when_enabled() -> None:
    assert state()[0].cache is not None
    assert state({**TABLE, "cache": {"enabled": False}})[0].cache is None


def test_no_connections_at_start() -> None:
    gw, _ = state()
    assert gw.connections == set() and not gw.draining
