"""Exchange: a fresh exchange's defaults, its overhead arithmetic, and its slots."""

from __future__ import annotations

import pytest

from proxy.exchange import Exchange
from tests.unit.protocol_harness import connect_client, make_gateway


def fresh() -> Exchange:
    gw, loop = make_gateway()
    proto, _ = connect_client(gw, loop)
    return Exchange(gw, proto)  # type: ignore[arg-type]


def test_a_fresh_exchange_holds_nothing() -> None:
    ex = fresh()
    assert ex.gen is ex.gateway.gen  # it keeps the generation it started on
    assert (ex.route, ex.upstream, ex.hedge, ex.hedge_route, ex.translation, ex.held) == (None,) * 6
    assert (ex.status, ex.attempts, ex.tried, ex.key_index, ex.model_id) == (0, 0, 0, -1, -1)
    assert not ex.done and not ex.head_sent and ex.keep_alive and ex.followers is None and ex.leader is None


def test_slots_only() -> None:
    ex = fresh()
    with pytest.raises(AttributeError):
        ex.something_else = 1  # type: ignore[attr-defined]


def test_every_slot_is_set_by_init() -> None:
    ex = fresh()
    missing = [name for name in Exchange.__slots__ if not hasattr(ex, name)]
    assert missing == []


def test_overhead_is_zero_until_forwarded_and_relayed() -> None:
    ex = fresh()
    assert ex.overhead() == 0.0
    ex.t_start, ex.t_sent = 10.0, 10.004
    assert ex.overhead() == 0.0  # nothing relayed yet


def test_overhead_leaves_out_the_wait_for_a_connection_and_the_provider() -> None:
    ex = fresh()
    ex.t_start, ex.t_waited, ex.t_sent = 10.0, 0.5, 10.501  # 1 ms of our own before the request went out
    ex.t_upstream, ex.t_relayed = 12.0, 12.002  # 2 ms from the first byte in to the first byte out
    assert ex.overhead() == pytest.approx(0.003)


def test_repr_names_the_request_not_its_body() -> None:
    ex = fresh()
    ex.method, ex.url, ex.body = b"POST", b"/v1/chat/completions", b"secret prompt"
    text = repr(ex)
    assert "POST" in text and "/v1/chat/completions" in text and "secret prompt" not in text
