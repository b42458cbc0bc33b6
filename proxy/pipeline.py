"""The request path, top to bottom, as plain functions named after its phases.

    handle ─ forward ─ cache step ─ go_upstream ─ attempt ─ on_connected ──► (provider)
                          │                          ▲                          │
                  hit: serve, finish        retry ───┘ (relay.attempt_failed)   ▼
                                                                   relay.on_upstream_*
    finish ◄──────────────────────────────────────────────────────────────────┘
       ▲
       └── fail: an error response while nothing reached the client; else an error event or a close

The client protocol calls `handle` with a complete request, and `abort` when its client leaves.
The answer's side, from the provider's head to the end of its body, is `relay`'s: it calls
back into the doors below. No phase awaits: a warm request creates no Task.

Three rules hold everywhere:
- Only `write` writes to a client (`broadcast` adds live cache followers and the capture). The
  cache step and translation return bytes and decisions.
- Every attempt the router started ends in exactly one outcome (success, failure or cancel),
  and `finish` cancels whatever is still open, so no in-flight count can leak.
- Every exchange ends in `finish` exactly once. Each entry point from a callback is guarded:
  an unexpected exception becomes a failed attempt or a 500, logged once (`crashed`).
"""

from __future__ import annotations

import logging
import time
from time import perf_counter
from typing import TYPE_CHECKING, Any

from proxy import adapt, admin, caching, endpoints, errors
from proxy.prices import route_prices
from proxy.request import parse
from proxy.routing import Failure
from proxy.wire import CRLF, LAST_CHUNK, chunk, error_answer, stream_error_event

if TYPE_CHECKING:
    from proxy.config import Route
    from proxy.exchange import Exchange
    from proxy.upstream import UpstreamProtocol

log = logging.getLogger("llm_edge.pipeline")

# Failure kinds as module constants: an enum member read through its class costs ~150 ns on 3.11.
F_CLIENT, F_CONNECT, F_CONNECT_TIMEOUT = Failure.CLIENT, Failure.CONNECT, Failure.CONNECT_TIMEOUT
F_TIMEOUT, F_MALFORMED, F_BROKEN = Failure.TIMEOUT, Failure.MALFORMED, Failure.BROKEN


# the one door to the client


def write(ex: Exchange, data: bytes, *more: bytes) -> None:
    """Every byte a client gets goes through here (several buffers: one writev, never joined)."""
    if more:
        ex.client.writelines((data, *more))
    else:
        ex.client.write(data)


# handle: which endpoint


def handle(ex: Exchange) -> None:
    """Answer one complete request (called in order, one at a time per connection)."""
    try:
        if ex.error is not None:
            raise ex.error
        # The usual requests are found by one probe; the rest are routed (a call saved per request).
        endpoint, ex.api, guarded, argument = endpoints.USUAL.get((ex.method, ex.url)) or endpoints.route(
            ex.method, ex.url
        )
        if guarded and ex.gen.keys.required:  # gateway keys: who is asking, and within their limits?
            keys = ex.gen.keys
            ex.reserved_tokens = len(ex.body) // 4  # a rough prompt size, settled against the real usage
            ex.key_index = keys.admit_request(ex.client_key, ex.gateway.loop.time(), ex.reserved_tokens)
            ex.tenant = keys.tenants[ex.key_index]
        if endpoint[0] == "/":  # an API endpoint, forwarded
            forward(ex, endpoint)
        else:
            reply(ex, admin.page(ex.gateway, endpoint, ex, argument))
    except errors.GatewayError as exc:
        fail(ex, exc)
    except Exception as exc:
        crashed(ex, exc)


def forward(ex: Exchange, endpoint: str) -> None:
    """An API request: validate, resolve the model, then the cache step, then upstream."""
    payload, ex.model, ex.stream = parse(endpoint, ex.body)
    ex.payload = payload
    ex.endpoint = endpoint
    resolved = ex.gen.resolved.get(ex.model) or ex.gen.settings.resolve(ex.model)  # configured names: one probe
    if resolved is None:
        raise errors.ModelNotFoundError(f"the model {ex.model!r} does not exist on this gateway")
    ex.model_id, router = resolved
    ex.attempts_left, ex.attempt_deadline_s, ex.hedge_after_s = (
        router.max_attempts, router.attempt_deadline_s, router.hedge_after_ms / 1000.0
    )
    gateway = ex.gateway
    decision = caching.lookup(ex, gateway.cache, gateway.loop.time())
    if decision == caching.UPSTREAM or decision == caching.LEAD:
        if not attempt(ex):  # go_upstream, inline: this is every miss
            no_route(ex)
    elif decision == caching.SERVE:
        serve(ex, ex.cache_entry, caching.HIT)
    elif decision == caching.ASK_L2:
        assert gateway.cache is not None and gateway.cache.l2 is not None
        gateway.cache.l2.get(caching.l2_key(ex), lambda value: on_l2_answer(ex, value))
    # FOLLOW: the leader serves this request when it finishes, or sends it upstream itself


def on_l2_answer(ex: Exchange, value: bytes | None) -> None:
    """The shared tier answered (a callback: guarded)."""
    try:
        if ex.done:
            return
        cache = ex.gateway.cache
        assert cache is not None
        if caching.l2_answered(ex, cache, value, ex.gateway.loop.time()) and serve(ex, ex.cache_entry, caching.HIT):
            return
        go_upstream(ex)
    except errors.GatewayError as exc:
        fail(ex, exc)
    except Exception as exc:
        crashed(ex, exc)


def serve(ex: Exchange, entry: Any, outcome: Any) -> bool:
    """Answer from a cache entry in one write, and finish; False if it cannot serve this mode."""
    parts = caching.answer(ex, entry, outcome, ex.gateway.date_header)
    if parts is None:
        return False
    ex.status = 200
    ex.head_sent = True
    write(ex, *parts)
    finish(ex)
    return True


# attempts: the upstream request


def go_upstream(ex: Exchange) -> None:
    """The first attempt on the router's best route, or an answer saying why there is none."""
    if not attempt(ex):
        no_route(ex)


def no_route(ex: Exchange) -> None:
    """Every route is open, cooling down or full: say when to come back rather than wait."""
    router = ex.gen.router
    now = ex.gateway.loop.time()
    why = router.unavailable_reasons(ex.model_id, now, time.time())
    fail(ex, errors.AllRoutesFailedError(
        f"no route for model {ex.model!r} is available right now: {why}",
        status=router.refusal_status(ex.model_id, now),
        retry_after=max(1, min(60, round(router.retry_after(ex.model_id, now) + 0.5))), final=False,
    ))  # fmt: skip


def attempt(ex: Exchange, hedge: bool = False) -> bool:
    """Start an attempt on the router's next route; False when no route is left."""
    gateway = ex.gateway
    now = gateway.loop.time()
    if ex.attempts_left <= 0:
        return False
    router = ex.gen.router
    route_id = router.pick(ex.model_id, len(ex.body), ex.tried, now)
    if route_id < 0:
        return False
    route = ex.gen.settings.routes[route_id]
    if ex.key_index >= 0 and not ex.gen.keys.may_use(ex.key_index, route_prices(route, ex.model)):
        ex.tried |= 1 << route_id
        if ex.attempts == 0:
            raise ex.gen.keys.unpriced(ex.key_index, ex.model)
        return False
    router.on_start(route_id)
    ex.tried |= 1 << route_id
    ex.attempts += 1
    ex.attempts_left -= 1
    if hedge:
        ex.hedge_route = route
        ex.t_hedge = now
    else:
        ex.route = route
        ex.main_open = True
        ex.t_attempt = now
        if ex.hedge_after_s and ex.attempts == 1:
            ex.hedge_timer = gateway.loop.call_later(ex.hedge_after_s, on_hedge_due, ex)  # opt-in: a timer per request
    conn = ex.gen.pools[route.provider.id].acquire(ex, route)
    if conn is not None:
        on_connected(ex, conn, route)
    return True


def on_connected(ex: Exchange, conn: UpstreamProtocol, route: Route) -> None:
    """A connection for this attempt: write the request (prefix, framing, forwarded headers, body)."""
    if ex.done or (route is not ex.route and route is not ex.hedge_route):
        conn.pool.release(conn)  # the attempt was abandoned while its connection was being made
        return
    try:
        endpoint, body, translation = adapt.upstream_request(
            ex.api, ex.endpoint, ex.payload, ex.body, ex.model, ex.stream, route  # type: ignore[arg-type]
        )
    except Exception as exc:
        conn.pool.release(conn)  # unused: back to the pool, and the attempt is over
        attempt_over(ex, route, F_CLIENT)
        if not isinstance(exc, errors.GatewayError):
            raise
        fail(ex, exc)  # a request this provider's API cannot express: a 400 that says so
        return
    head = b"".join(
        (conn.pool.request_prefixes[endpoint], b"content-length: %d\r\n" % len(body), *ex.forward_headers, CRLF)
    )
    conn.route = route
    if route is ex.route:
        ex.upstream = conn
    else:
        ex.hedge = conn
    conn.send(ex, head, body, translation, ex.attempt_deadline_s)
    if not ex.t_sent:
        ex.t_sent = perf_counter()


def on_hedge_due(ex: Exchange) -> None:
    """The first attempt is slow: race a second route (a timer: guarded)."""
    ex.hedge_timer = None
    try:
        if not (ex.done or ex.head_sent or ex.hedge_route is not None or ex.route is None):
            attempt(ex, hedge=True)
    except Exception as exc:
        crashed(ex, exc)


# to every reader of the answer


def broadcast(ex: Exchange, data: bytes, kept: bytes) -> None:
    """More of the answer: to the client, to live followers, and into the capture."""
    write(ex, data)
    if ex.followers:
        for follower in caching.live_followers(ex):
            write(follower, data)
    if ex.capture is not None and kept:
        caching.capture(ex, kept)


def drop(conn: UpstreamProtocol | None) -> None:
    if conn is not None:
        conn.detach()  # closed, never pooled: its response was not read to the end


def fail(ex: Exchange, exc: errors.GatewayError, conn: UpstreamProtocol | None = None) -> None:
    """End an exchange that went wrong: an error response if we still can, else an error event or a close."""
    if ex.done:
        return
    if not ex.head_sent:
        _reply_error(ex, exc)
        return
    translation = ex.translation
    if translation is not None and translation.streaming:
        event = translation.error_event(exc.message, exc.type)
        out = translation.flush() + (chunk(event) + LAST_CHUNK if event else b"")
        if out:
            broadcast(ex, out, b"")
    elif ex.stream and ex.chunked_out and (conn is None or not conn.in_chunk):
        # The client already has a 200 and some events, and we sit between two chunks: an
        # error event is the only honest end left (the SDKs raise on it), never a clean end
        # that looks like success. Mid-chunk, closing is the only way to say it.
        broadcast(ex, chunk(stream_error_event(ex.api, exc)) + LAST_CHUNK, b"")
    # Closed even after a clean error event: a failed exchange's connection is not worth the risk
    # of reuse (its upstream ended abnormally; the client may have a read in flight).
    ex.close_after = True
    if not ex.status or ex.status < 400:
        ex.status = exc.status
    finish(ex)


def abort(ex: Exchange) -> None:
    """The client went away: drop every upstream connection (never pooled) and finish."""
    if ex.leader is not None:
        caching.drop_follower(ex)
    elif ex.upstream is not None and caching.live_followers(ex):
        return  # live followers still read this answer: it carries on, and finishes when it ends
    if not ex.status or ex.status < 400:
        ex.status = 499  # nginx's "client closed request"
    finish(ex)


def crashed(ex: Exchange, exc: BaseException) -> None:
    """An unexpected exception reached a boundary: a 500 if nothing was sent, else an error event or a
    close; logged once with its traceback. The exchange still ends through `finish`."""
    log.error("unexpected error in the request path (%r)", ex, exc_info=exc)
    if ex.done:
        return
    try:
        fail(ex, errors.GatewayError("internal gateway error"), ex.upstream)
    except Exception:
        log.exception("unexpected error while failing a request")
        ex.close_after = True
        ex.status = ex.status or 500
        finish(ex)


def attempt_over(ex: Exchange, route: Route, kind: int, retry_after: float = 0.0) -> None:
    """The router learns an attempt's failure, once: the main attempt's or the hedge's."""
    now = ex.gateway.loop.time()
    if route is ex.hedge_route:
        ex.gen.router.on_failure(route.id, kind, retry_after, now)
    elif route is ex.route and ex.main_open:
        ex.main_open = False
        ex.gen.router.on_failure(route.id, kind, retry_after, now)


# reply: the gateway's own answers


def _reply_error(ex: Exchange, exc: errors.GatewayError) -> None:
    """Answer with an error in the client API's shape, closing the connection when it can't be trusted."""
    ex.close_after = exc.close or not ex.keep_alive
    ex.status = exc.status
    reply(ex, error_answer(ex.api, exc, ex.close_after, ex.gateway.date_header))


def reply(ex: Exchange, answer: bytes) -> None:
    """Write a complete response built by the gateway itself, and finish."""
    if ex.method == b"HEAD":
        answer = answer[: answer.find(b"\r\n\r\n") + 4]
    ex.head_sent = True
    write(ex, answer)
    finish(ex)


# finish: always runs, once


def finish(ex: Exchange) -> None:
    """Settle everything the exchange holds, record it, and let the connection move on."""
    if ex.done:
        return
    ex.done = True
    try:
        ex.t_end = perf_counter()
        if ex.main_open or ex.upstream is not None or ex.hedge_route is not None or ex.hedge_timer is not None:
            _settle_attempts(ex)
        gateway = ex.gateway
        gateway.stats.record(ex)
        route = ex.route
        ex.gen.requests.record(route.id if route is not None else -1, ex.status)
        if ex.key_index >= 0:  # settle the key's reservation against what was really used
            ex.gen.keys.charge(ex.key_index, gateway.loop.time(), ex.tokens_in, ex.tokens_out, ex.cost_nusd,
                                ex.reserved_tokens)  # fmt: skip
        if gateway.access_log is not None:
            gateway.access_log.append(_log_row(ex))
        if ex.leader is not None:
            caching.drop_follower(ex)
        if ex.followers is not None:  # before the connection moves on: a pipelined repeat finds the entry
            _leader_finished(ex)
    finally:
        ex.client.exchange_done(ex)


def _settle_attempts(ex: Exchange) -> None:
    """Whatever attempt is still open ends here: released, nothing learned, its connection closed."""
    router = ex.gen.router
    if ex.hedge_timer is not None:
        ex.hedge_timer.cancel()
        ex.hedge_timer = None
    if ex.main_open and ex.route is not None:
        ex.main_open = False
        router.on_cancel(ex.route.id)
    if ex.hedge_route is not None:
        router.on_cancel(ex.hedge_route.id)
        ex.hedge_route = None
    if ex.upstream is not None or ex.hedge is not None:
        drop(ex.upstream)
        drop(ex.hedge)
        ex.upstream = ex.hedge = None


def _leader_finished(ex: Exchange) -> None:
    """Store the leader's answer, then its followers get theirs: finished, served, or their own attempt."""
    gateway = ex.gateway
    assert gateway.cache is not None
    finished, served, retry = caching.leader_finished(
        ex, gateway.cache, gateway.loop.time(), ex.capture_chunked
    )
    if not (finished or served or retry):
        return
    for follower in finished:
        if not (ex.clean and ex.status == 200):
            follower.close_after = True  # the leader's stream broke after bytes went out: so did this one
        _guarded(finish, follower)
    for follower, entry in served:
        _guarded(lambda f, e=entry: serve(f, e, caching.HIT), follower)
    for follower in retry:
        _guarded(go_upstream, follower)


def _guarded(step: Any, ex: Exchange) -> None:
    try:
        step(ex)
    except errors.GatewayError as exc:
        fail(ex, exc)
    except Exception as exc:
        crashed(ex, exc)


def _log_row(ex: Exchange) -> tuple[Any, ...]:
    """The access log's row (see `accesslog.ROW`): names and numbers only, never keys or content."""
    route = ex.route
    return (
        ex.t_end, ex.gateway.next_request_id(), ex.endpoint or ex.url[:64].decode("latin-1"),
        ex.model, route.provider.name if route is not None else "", route.id if route is not None else -1, ex.status,
        ex.stream, ex.t_end - ex.t_start, ex.overhead(), (ex.t_relayed - ex.t_start) if ex.t_relayed else 0.0,
        ex.tokens_in, ex.tokens_out, ex.cost_nusd, ex.cache_outcome, ex.attempts, ex.gen.keys.names[ex.key_index],
    )  # fmt: skip
