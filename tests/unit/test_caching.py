"""The cache step: hits, coalesced followers, the leader's exits, and the bounds on what it keeps.

Driven through the client protocol on a fake loop; the pure helpers are tested directly. After
every path, `cache.inflight` is empty and the gateway is at rest.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy import caching
from proxy.cache import CacheEntry, Outcome
from proxy.cache.formats import OPENAI_CHAT
from tests import samples
from tests.unit.protocol_harness import at_rest_problems, connect_client, idle_upstream, make_gateway_with

TABLE: dict[str, Any] = {
    "providers": [{"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1"}],
    "models": [{"name": "fast", "routes": [{"provider": "a", "model": "m1"}]}],
}
BODY = b'{"model":"fast","temperature":0,"messages":[{"role":"user","content":"same"}]}'
REQUEST = samples.post(b"/v1/chat/completions", BODY)


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def x_cache(data: bytes) -> bytes:
    head = data.partition(b"\r\n\r\n")[0]
    at = head.find(b"\r\nx-cache: ")
    return head[at + 11 : head.find(b"\r\n", at + 2)] if at >= 0 else b""


def settled(gw: Any, loop: Any) -> list[str]:
    loop.run_ready()
    return at_rest_problems(gw)


def test_a_repeat_is_served_from_memory_without_going_upstream() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, up = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(REQUEST)
    assert up.take().startswith(b"POST ")
    conn.data_received(samples.UPSTREAM_OK)
    first = client.take()
    assert x_cache(first) == b"MISS"
    proto.data_received(REQUEST)
    second = client.take()
    assert x_cache(second) == b"HIT" and second.endswith(samples.UPSTREAM_JSON)
    assert b"x-llm-edge-cost: 0.000000\r\n" in second
    assert up.take() == b"" and gw.cache.stored == 1  # type: ignore[union-attr]
    assert settled(gw, loop) == []


def test_a_nondeterministic_request_bypasses_the_cache() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(samples.CHAT)
    conn.data_received(samples.UPSTREAM_OK)
    assert x_cache(client.take()) == b"BYPASS" and gw.cache.stored == 0  # type: ignore[union-attr]


def test_identical_requests_in_flight_together_go_upstream_once() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, up = idle_upstream(gw, loop)
    leader, leader_client = connect_client(gw, loop)
    follower, follower_client = connect_client(gw, loop)
    leader.data_received(REQUEST)
    follower.data_received(REQUEST)
    assert up.take().count(b"POST ") == 1 and len(loop.tasks) == 0  # the follower did not dial
    assert gw.cache.coalesced == 1  # type: ignore[union-attr]
    conn.data_received(samples.UPSTREAM_OK)
    assert leader_client.take().endswith(samples.UPSTREAM_JSON)
    followed = follower_client.take()
    assert status_of(followed) == 200 and x_cache(followed) == b"HIT" and followed.endswith(samples.UPSTREAM_JSON)
    assert gw.cache.inflight == {} and settled(gw, loop) == []  # type: ignore[union-attr]
    assert gw.stats.requests == 2


def test_a_leader_whose_client_left_and_whose_upstream_failed_releases_its_followers() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop)
    leader, leader_client = connect_client(gw, loop)
    follower, follower_client = connect_client(gw, loop)
    leader.data_received(REQUEST)
    follower.data_received(REQUEST)  # joined before the leader's first byte
    leader.connection_lost(None)
    loop.run_ready()
    conn.data_received(b"SSH-2.0\r\n")  # then the upstream fails (issue 11, defect 1)
    loop.run_ready()
    assert follower_client.take() == b"" and not follower_client.closed
    assert len(loop.tasks) == 1  # the follower goes upstream on its own: it does not hang
    ex = follower.active
    assert ex is not None and ex.leader is None and ex.route is not None
    assert gw.cache.inflight == {}  # type: ignore[union-attr]
    later, later_client = connect_client(gw, loop)
    later.data_received(REQUEST)
    assert gw.cache.inflight  # type: ignore[union-attr]  # a new leader, not a follower of the dead one


def test_a_follower_that_leaves_is_forgotten() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop)
    leader, leader_client = connect_client(gw, loop)
    follower, follower_client = connect_client(gw, loop)
    leader.data_received(REQUEST)
    follower.data_received(REQUEST)
    follower.connection_lost(None)
    loop.run_ready()
    conn.data_received(samples.UPSTREAM_OK)
    assert leader_client.take().endswith(samples.UPSTREAM_JSON) and follower_client.take() == b""
    assert settled(gw, loop) == [] and gw.stats.requests == 2


def test_a_failed_leader_sends_its_followers_upstream_on_their_own() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop)
    conn2, up2 = idle_upstream(gw, loop)
    leader, leader_client = connect_client(gw, loop)
    follower, follower_client = connect_client(gw, loop)
    leader.data_received(REQUEST)  # takes conn2 (the warmest)
    follower.data_received(REQUEST)
    conn2.data_received(b"HTTP/1.1 500 Oops\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
    assert status_of(leader_client.take()) == 500
    assert b"POST " in conn.transport.take()  # type: ignore[union-attr]  # the follower's own attempt
    conn.data_received(samples.UPSTREAM_OK)
    assert follower_client.take().endswith(samples.UPSTREAM_JSON)
    assert settled(gw, loop) == []


def test_pipelined_identical_requests_go_upstream_once() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, up = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(REQUEST + REQUEST)
    conn.data_received(samples.UPSTREAM_OK)
    data = client.take()
    assert data.count(samples.UPSTREAM_JSON) == 2 and up.take().count(b"POST ") == 1  # issue 11, defect 4
    assert settled(gw, loop) == []


def test_an_answer_over_the_entry_bound_is_relayed_but_not_stored() -> None:
    gw, loop = make_gateway_with({**TABLE, "cache": {"max_bytes": 100}})
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(REQUEST)
    conn.data_received(samples.UPSTREAM_OK)  # longer than 100 bytes
    assert client.take().endswith(samples.UPSTREAM_JSON)
    assert gw.cache.stored == 0 and settled(gw, loop) == []  # type: ignore[union-attr]


def test_an_error_answer_is_never_stored() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(REQUEST)
    conn.data_received(b"HTTP/1.1 400 Bad\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
    client.take()
    assert gw.cache.stored == 0 and gw.cache.inflight == {}  # type: ignore[union-attr]


# the pure helpers


def test_x_cache_lines() -> None:
    assert caching.X_CACHE[Outcome.HIT] == b"x-cache: HIT\r\n"
    assert set(caching.X_CACHE) == set(Outcome)


def test_follower_head_marks_the_copy_as_a_hit() -> None:
    class Follower:
        keep_alive = False

    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n"
    out = caching.follower_head(Follower(), head, head.find(b"\r\n") + 2)  # type: ignore[arg-type]
    assert out == b"HTTP/1.1 200 OK\r\nx-cache: HIT\r\nconnection: close\r\ncontent-type: application/json\r\n\r\n"


@pytest.mark.parametrize(
    "payload,wants",
    [({"stream_options": {"include_usage": True}}, True), ({"stream_options": {"include_usage": 1}}, False),
     ({}, False), (None, False), ({"stream_options": "yes"}, False)],
)  # fmt: skip
def test_wants_usage(payload: Any, wants: bool) -> None:
    class Ex:
        pass

    ex = Ex()
    ex.payload = payload  # type: ignore[attr-defined]
    assert caching.wants_usage(ex) is wants  # type: ignore[arg-type]


def test_answer_is_one_writev_and_never_copies_the_body() -> None:
    class Ex:
        stream = False
        keep_alive = True
        payload: dict[str, Any] = {}
        cache_outcome = None

    entry = CacheEntry(OPENAI_CHAT, samples.UPSTREAM_JSON, verified=True)
    ex = Ex()
    parts = caching.answer(ex, entry, Outcome.REFRESH, b"date: d\r\n")  # type: ignore[arg-type]
    assert parts is not None
    whole = b"".join(parts)
    assert whole.startswith(b"HTTP/1.1 200 OK\r\n") and b"x-cache: REFRESH\r\n" in whole
    assert b"content-length: %d\r\n" % len(samples.UPSTREAM_JSON) in whole and whole.endswith(samples.UPSTREAM_JSON)
    assert ex.cache_outcome is Outcome.REFRESH
