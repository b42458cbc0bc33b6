"""Pool on a fake loop: the idle stack, staleness, the connection bound and its waiters, sweep,
retire, and the connect task's outcomes, scripted (no network)."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from proxy import errors
from proxy.pool import Pool
from proxy.upstream import ACTIVE, CLOSED, IDLE, UpstreamProtocol
from tests.fakes import FakeLoop, FakeTransport
from tests.unit.protocol_harness import (
    ConnectingLoop,
    DoneTask,
    RecordingHandler,
    Waiting,
    make_provider,
    make_route,
)


def make_pool(loop: FakeLoop | None = None, **provider: object) -> tuple[Pool, FakeLoop, RecordingHandler]:
    loop = loop or FakeLoop()
    handler = RecordingHandler()
    return Pool(make_provider(**provider), loop, handler), loop, handler  # type: ignore[arg-type]


def pooled(pool: Pool, loop: FakeLoop) -> tuple[UpstreamProtocol, FakeTransport]:
    """A connection that finished a response and was given back."""
    conn = UpstreamProtocol(pool)
    transport = FakeTransport(loop, conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    pool.open += 1
    pool.release(conn)
    return conn, transport


def test_request_prefixes_are_built_per_endpoint() -> None:
    pool, _, _ = make_pool(base_url="http://127.0.0.1:9/v1")
    prefix = pool.request_prefixes["/chat/completions"]
    assert prefix.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"content-type: application/json\r\n" in prefix
    assert pool.request_prefixes["/embeddings"].startswith(b"POST /v1/embeddings ")
    assert pool.ssl is None


def test_acquire_is_lifo_and_marks_reuse() -> None:
    pool, loop, _ = make_pool()
    first, _ = pooled(pool, loop)
    second, _ = pooled(pool, loop)
    assert pool.idle == [first, second] and first.state == IDLE
    route = make_route(pool.provider)
    assert pool.acquire(Waiting(), route) is second  # the warmest first
    assert pool.acquire(Waiting(), route) is first
    assert second.reused and first.reused
    assert pool.idle == [] and not loop.tasks


def test_a_stale_idle_connection_is_closed_and_skipped() -> None:
    pool, loop, _ = make_pool(pool_idle_timeout_s=30)
    old, old_transport = pooled(pool, loop)
    loop.advance(20)
    fresh, _ = pooled(pool, loop)
    loop.advance(15)  # old: 35 s idle; fresh: 15 s
    assert pool.acquire(Waiting(), make_route(pool.provider)) is fresh
    assert pool.idle == [old]  # under the stack: not looked at yet
    assert pool.acquire(Waiting(), make_route(pool.provider)) is None  # old is stale: closed, and a new one dialled
    loop.run_ready()
    assert old_transport.closed and old.state == CLOSED
    assert len(loop.tasks) == 1 and pool.open == 2  # fresh is out, plus one connecting


def test_a_closed_connection_left_on_the_stack_is_skipped() -> None:
    pool, loop, _ = make_pool()
    conn, _ = pooled(pool, loop)
    conn.state = CLOSED  # closed between its release and its connection_lost
    assert pool.acquire(Waiting(), make_route(pool.provider)) is None
    assert len(loop.tasks) == 1


def test_release_of_a_closed_connection_is_ignored() -> None:
    pool, loop, _ = make_pool()
    conn, _ = pooled(pool, loop)
    pool.acquire(Waiting(), make_route(pool.provider))
    conn.state = CLOSED
    pool.release(conn)
    assert pool.idle == []


def test_release_stamps_the_time() -> None:
    pool, loop, _ = make_pool()
    loop.advance(5)
    conn, _ = pooled(pool, loop)
    assert conn.released_at == loop.time() and conn.state == IDLE


def test_max_connections_queues_waiters_in_order_and_release_hands_over() -> None:
    pool, loop, handler = make_pool(max_connections=1)
    route = make_route(pool.provider)
    a, b, c = Waiting(), Waiting(), Waiting()
    assert pool.acquire(a, route) is None  # dials
    assert pool.open == 1 and len(loop.tasks) == 1
    pool.acquire(b, route)
    pool.acquire(c, route)
    assert [w[0] for w in pool.waiters] == [b, c] and len(loop.tasks) == 1  # bounded: queued, not dialled
    conn = UpstreamProtocol(pool)
    conn.connection_made(FakeTransport(loop, conn))  # type: ignore[arg-type]
    b.done = True  # b's client left while it waited
    pool.release(conn)
    assert handler.of("connected") == [("connected", c, conn, route)]  # b skipped, c served
    assert conn.state == ACTIVE and conn.reused
    assert not pool.waiters and pool.idle == []


def test_release_with_only_finished_waiters_pools_the_connection() -> None:
    pool, loop, handler = make_pool(max_connections=1)
    route = make_route(pool.provider)
    pool.acquire(Waiting(), route)
    gone = Waiting()
    pool.acquire(gone, route)
    gone.done = True
    conn, _ = pooled(pool, loop)
    assert pool.idle == [conn] and not handler.of("connected") and not pool.waiters


def test_discard_forgets_the_connection_and_dials_for_a_waiter() -> None:
    pool, loop, _ = make_pool(max_connections=1)
    conn, transport = pooled(pool, loop)
    route = make_route(pool.provider)
    pool.acquire(Waiting(), route)  # takes conn
    waiting = Waiting()
    pool.acquire(waiting, route)
    assert list(w[0] for w in pool.waiters) == [waiting]
    conn.close()  # ACTIVE: connection_lost comes from the transport
    loop.run_ready()
    assert pool.open == 1 and not pool.waiters and len(loop.tasks) == 1  # the waiter's connection is being made


def test_an_idle_connection_the_provider_closes_leaves_the_stack() -> None:
    pool, loop, _ = make_pool()
    conn, transport = pooled(pool, loop)
    conn.eof_received()
    loop.run_ready()
    assert pool.idle == [] and pool.open == 0 and transport.closed


def test_sweep_closes_expired_idle_connections_oldest_first() -> None:
    pool, loop, _ = make_pool(pool_idle_timeout_s=10)
    old, old_t = pooled(pool, loop)
    loop.advance(6)
    young, young_t = pooled(pool, loop)
    loop.advance(6)
    pool.sweep(loop.time())
    loop.run_ready()
    assert old_t.closed and not young_t.closed and pool.idle == [young] and pool.open == 1


def test_sweep_fails_waiters_past_the_connect_timeout() -> None:
    pool, loop, handler = make_pool(max_connections=1, connect_timeout_s=5)
    route = make_route(pool.provider)
    pool.acquire(Waiting(), route)
    late, gone = Waiting(), Waiting()
    pool.acquire(gone, route)
    loop.advance(1)
    pool.acquire(late, route)
    gone.done = True
    pool.sweep(loop.time() + 4.5)  # gone's deadline passed, late's not: gone is dropped silently
    assert [w[0] for w in pool.waiters] == [late] and not handler.events
    pool.sweep(loop.time() + 5)
    (failed,) = handler.of("connect_failed")
    assert failed[1] is late and failed[2] is route
    assert isinstance(failed[3], errors.PoolTimeout) and failed[3].status == 503
    assert not pool.waiters


def test_retire_closes_idle_now_and_busy_ones_when_they_come_back() -> None:
    pool, loop, _ = make_pool()
    idle, idle_t = pooled(pool, loop)
    busy, busy_t = pooled(pool, loop)
    pool.acquire(Waiting(), make_route(pool.provider))  # busy is out
    pool.retire()
    loop.run_ready()
    assert idle_t.closed and pool.idle == []
    pool.release(busy)
    loop.run_ready()
    assert busy_t.closed and pool.idle == [] and pool.open == 0


def test_close_closes_idle_connections_and_cancels_connects() -> None:
    loop = ConnectingLoop([])
    pool, _, _ = make_pool(loop)
    conn, transport = pooled(pool, loop)
    pool._connect(Waiting(), make_route(pool.provider))
    pool.close()
    assert transport.closed
    assert [task.cancels for task in pool.tasks] == [1]
    for coro in loop.coros:
        coro.close()


# the connect task


def connect_once(
    outcome: BaseException | str, **provider: object
) -> tuple[Pool, ConnectingLoop, RecordingHandler, Waiting]:
    loop = ConnectingLoop([outcome])
    pool, _, handler = make_pool(loop, **provider)
    waiter = Waiting()
    assert pool.acquire(waiter, make_route(pool.provider)) is None
    assert pool.open == 1
    return pool, loop, handler, waiter


def test_connect_success_hands_an_active_connection_over() -> None:
    pool, loop, handler, waiter = connect_once("ok")
    assert loop.run_connects() == [None]
    (connected,) = handler.of("connected")
    conn = connected[2]
    assert connected[1] is waiter and conn.state == ACTIVE and not conn.reused
    assert pool.open == 1 and pool.opened_total == 1
    assert loop.dialled == [(pool.provider.host, pool.provider.port)]
    assert waiter.t_waited >= 0.0


def ssl_error(reason: str | None) -> ssl.SSLError:
    exc = ssl.SSLError(1, "tls")
    exc.reason = reason  # what the ssl module sets on the errors it raises
    return exc


@pytest.mark.parametrize(
    "exc,kind,words",
    [
        (TimeoutError(), errors.ConnectTimeout, "timed out"),
        (ConnectionRefusedError(111, "Connection refused"), errors.ConnectError, "Connection refused"),
        (OSError(), errors.ConnectError, "OSError"),
        (ssl_error("CERTIFICATE_VERIFY_FAILED"), errors.ConnectError, "TLS to provider 'p' failed: CERTIFICATE_VERIFY"),
        (ssl_error(None), errors.ConnectError, "handshake failed"),
    ],
)
def test_connect_failures_reach_the_handler(exc: BaseException, kind: type, words: str) -> None:
    pool, loop, handler, waiter = connect_once(exc)
    assert loop.run_connects() == [None]  # reported, never raised out of the task
    (failed,) = handler.of("connect_failed")
    assert failed[1] is waiter and type(failed[3]) is kind and words in failed[3].message
    assert "'p'" in failed[3].message
    assert pool.open == 0 and not handler.of("connected")


def test_a_connection_closed_at_once_is_a_connect_failure() -> None:
    pool, loop, handler, waiter = connect_once("closed")
    assert loop.run_connects() == [None]
    (failed,) = handler.of("connect_failed")
    assert "closed the connection at once" in failed[3].message
    assert pool.open == 0  # counted down once, by connection_lost


def test_a_cancelled_connect_gives_its_slot_back() -> None:
    pool, loop, handler, _ = connect_once(asyncio.CancelledError())
    (result,) = loop.run_connects()
    assert isinstance(result, asyncio.CancelledError)
    assert pool.open == 0 and handler.events == []


def test_a_handler_exception_in_on_connected_closes_the_connection_and_is_reported() -> None:
    pool, loop, handler, waiter = connect_once("ok")
    boom = RuntimeError("on_connected failed")
    handler.raise_on["connected"] = boom
    assert loop.run_connects() == [None]
    (crash,) = handler.of("crash")
    conn = crash[3]
    assert crash[1] is waiter and crash[2] is boom
    loop.run_ready()
    assert loop.transports[0].closed and conn.state == CLOSED and pool.open == 0


def test_a_handler_exception_in_on_connect_failed_is_reported() -> None:
    pool, loop, handler, waiter = connect_once(ConnectionRefusedError(111, "refused"))
    handler.raise_on["connect_failed"] = RuntimeError("on_connect_failed failed")
    assert loop.run_connects() == [None]
    assert handler.names() == ["connect_failed", "crash"]
    assert handler.of("crash")[0][3] is None


def test_a_handover_from_release_that_raises_closes_the_connection() -> None:
    pool, loop, handler = make_pool(max_connections=1)
    route = make_route(pool.provider)
    pool.acquire(Waiting(), route)
    waiter = Waiting()
    pool.acquire(waiter, route)
    handler.raise_on["connected"] = ValueError("bad")
    conn = UpstreamProtocol(pool)
    transport = FakeTransport(loop, conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    pool.release(conn)
    assert handler.names() == ["connected", "crash"]
    loop.run_ready()
    assert transport.closed


def test_an_unexpected_task_exception_is_logged_not_left_unretrieved(caplog: pytest.LogCaptureFixture) -> None:
    pool, _, _ = make_pool()
    with caplog.at_level(logging.ERROR, logger="llm_edge.pool"):
        pool._task_done(DoneTask(RuntimeError("escaped")))  # type: ignore[arg-type]
        pool._task_done(DoneTask(None))  # type: ignore[arg-type]
        pool._task_done(DoneTask(None, cancelled=True))  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == ["connecting to provider 'p' failed unexpectedly"]


def test_repr_names_the_counts() -> None:
    pool, loop, _ = make_pool()
    pooled(pool, loop)
    assert repr(pool) == "<Pool p open=1 idle=1 waiting=0>" and pool.idle_count == 1
