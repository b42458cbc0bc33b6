"""The response side of the request path: what the provider answers, as it arrives.

Upstream connections call the `on_*` functions here (this module is their handler, handed in
through the pools). A streamed 200 goes out as it arrives, byte for byte; any other answer is
held whole (up to `hold_answer_bytes`) and checked before a byte reaches the client, so a broken
one can still fall back to the next route. A failed attempt goes on elsewhere while nothing was
sent (`attempt_failed`); a hedge that answers first wins (`_won`). Everything ends through the
pipeline's doors: `write`/`broadcast` to send, `fail` and `finish` to end.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING

import orjson

from proxy import adapt, caching, errors, response
from proxy.apis import ANTHROPIC
from proxy.limits import cost_header, cost_nusd_at
from proxy.pipeline import (
    F_BROKEN,
    F_CLIENT,
    F_CONNECT,
    F_CONNECT_TIMEOUT,
    F_MALFORMED,
    F_TIMEOUT,
    attempt,
    attempt_over,
    broadcast,
    crashed,
    drop,
    fail,
    finish,
    on_connected,
    write,
)  # fmt: skip
from proxy.prices import FREE, cost_nusd, disjoint, route_prices
from proxy.routing import failure_kind, is_route_failure, summarize_failures
from proxy.routing.failures import may_be_rejection, rejection_message, upstream_rejection
from proxy.stats import scan_usage
from proxy.translate import usage_from_anthropic
from proxy.wire import CONNECTION_CLOSE, CRLF, NO_BUFFERING, dechunk

if TYPE_CHECKING:
    from proxy.config import Route
    from proxy.exchange import Exchange
    from proxy.upstream import UpstreamProtocol

log = logging.getLogger("llm_edge.relay")

__all__ = ["on_connected"]  # the pool's handler calls it here; the request side is the pipeline's


def on_crash(ex: Exchange, exc: BaseException, conn: UpstreamProtocol | None) -> None:
    """An unexpected exception at an upstream boundary: a failed attempt while nothing was sent
    (another route may do better), else the pipeline's `crashed`."""
    if ex.done or conn is None or conn.route is None or ex.head_sent or conn not in (ex.upstream, ex.hedge):
        crashed(ex, exc)
        return
    log.error("unexpected error handling a provider's response (%r)", ex, exc_info=exc)
    try:
        error = errors.UpstreamProtocolError("the gateway could not handle the provider's response")
        attempt_failed(ex, conn.route, F_MALFORMED, 0.0, error, conn)
    except Exception as again:
        crashed(ex, again)


def on_connect_failed(ex: Exchange, route: Route, exc: errors.UpstreamError) -> None:
    """The pool could not give this attempt a connection."""
    if ex.done or (route is not ex.route and route is not ex.hedge_route):
        return  # an abandoned attempt: its outcome was already recorded
    kind = F_CONNECT_TIMEOUT if isinstance(exc, errors.UpstreamTimeout) else F_CONNECT
    attempt_failed(ex, route, kind, 0.0, exc)


def on_upstream_head(ex: Exchange, conn: UpstreamProtocol, head: bytes, rest: bytes) -> None:
    """A relayed response's head: streams go out at once; anything else is held whole to be checked."""
    ex.t_upstream = conn.t_first
    lower = head.lower()
    status = conn.status
    problem = response.not_an_answer(ex.stream, status, lower)
    if problem is not None:  # caught before a byte reached the client: another route may do better
        attempt_failed(ex, conn.route, F_MALFORMED, 0.0, errors.UpstreamProtocolError(problem), conn)  # type: ignore[arg-type]
        return
    retry_after = 0.0
    if status >= 400:
        cap = ex.gen.router.settings(ex.model_id).breaker_cooldown_max_s
        retry_after = response.head_retry_after_s(head, lower, cap)
    if not _head_accepted(ex, conn, retry_after, rest):
        return
    if status >= 400 and (response.content_length(lower) == 0 or b"json" not in response.header(lower, b"content-type")):
        # The provider's error is not in any API's shape (an HTML page from a proxy, nothing at
        # all): the client gets its own API's error, with the status and Retry-After kept.
        fail(ex, errors.AllRoutesFailedError(
            f"provider {conn.pool.provider.name!r} answered {status} without an API error body",
            status=status if status < 600 else 502, retry_after=round(retry_after) or None, final=False,
        ))  # fmt: skip
        return
    chunked = lower.find(b"\r\ntransfer-encoding:") >= 0
    ex.close_delimited = conn.close_delimited = not chunked and lower.find(b"\r\ncontent-length:") < 0
    head = response.public_head(head, lower)
    if not head.startswith(b"HTTP/1.1 "):  # an HTTP/1.0 provider: our hop is 1.1
        head = response.status_line(status) + head[head.find(b"\r\n") + 2 :]
    if not ex.stream or status != 200:
        ex.chunked_out = chunked  # as the provider framed it; a held answer goes out with a length
        ex.held = [head, rest]  # relayed by on_upstream_done once whole and checked
        ex.held_size = len(rest)
        return
    ex.chunked_out = chunked
    ex.tail = ex.first_body = rest
    if conn.message_done and not response.stream_completed(ex.api, rest):
        rest = _cut_short(ex, rest)
    _relay_head(ex, head, rest, NO_BUFFERING, chunked, rest)


def on_upstream_data(ex: Exchange, data: bytes, last: bool) -> None:
    """More of a relayed body: held, or passed on exactly as the provider framed it."""
    held = ex.held
    if held is not None:
        held.append(data)
        ex.held_size += len(data)
        if ex.held_size > ex.gen.settings.server.hold_answer_bytes:
            _spill(ex, held)  # too big to hold: relayed from here on as it arrives, unchecked
        return
    ex.tail_prev = ex.tail  # usage is read from the tail when the response ends
    ex.tail = data
    if ex.status >= 400:  # a large error answer, spilled: never with the provider's key in it
        data = response.redacted(_secret(ex.route), data)
    elif last and ex.stream and not response.stream_completed(ex.api, ex.tail_prev[-64:] + data):
        data = _cut_short(ex, data)
    if ex.followers is None:  # not a cache leader, the usual case: straight to the client
        write(ex, data)
    else:
        broadcast(ex, data, data)


def on_decoded_head(ex: Exchange, conn: UpstreamProtocol) -> None:
    """A head on the translated path: the response is rebuilt in the client's format."""
    ex.t_upstream = conn.t_first
    if not 100 <= conn.status <= 599:
        raise errors.UpstreamProtocolError(f"the provider answered with status {conn.status}")
    cap = ex.gen.router.settings(ex.model_id).breaker_cooldown_max_s
    retry_after = min(conn.retry_after, cap)
    if not _head_accepted(ex, conn, retry_after):
        return
    translation = ex.translation = conn.translation
    translation.keeping = ex.capture is not None  # the cache wants the client-format stream
    if retry_after:
        translation.extra = b"retry-after: %d\r\n" % max(1, round(retry_after))
    prefix = translation.head(conn.status)
    if prefix is not None:
        _relay_head(ex, prefix + CRLF, b"", NO_BUFFERING, False)
        ex.chunked_out = True
    elif ex.followers:
        caching.stop_live_following(ex)  # a buffered answer: followers are served from the stored entry


def on_decoded_body(ex: Exchange, conn: UpstreamProtocol, data: bytes) -> None:
    """A decoded piece of a body being translated."""
    if conn is ex.upstream and ex.translation is not None:
        ex.translation.body(data)


def on_decoded_read(ex: Exchange, conn: UpstreamProtocol) -> None:
    """One upstream read was translated: what it produced goes out in one write."""
    translation = ex.translation
    if conn is ex.upstream and translation is not None and ex.head_sent:
        out = translation.flush()
        if not out:
            return
        if ex.followers is None:  # not a cache leader, the usual case: straight to the client
            write(ex, out)
        else:
            broadcast(ex, out, translation.take_kept())


def on_upstream_done(ex: Exchange, conn: UpstreamProtocol, reusable: bool) -> None:
    """The response is complete: relay what was held, account for it, finish, give the connection back."""
    route = conn.route
    assert route is not None
    ex.upstream = None
    now = ex.gateway.loop.time()
    translation = ex.translation
    if translation is not None and not translation.streaming:
        try:
            status, body = translation.answer()
        except Exception as exc:  # a 200 whose body is not JSON, or an answer of the wrong shape: nothing sent yet
            if not isinstance(exc, errors.UpstreamError):
                log.warning("provider %r sent an answer that cannot be translated: %r", route.provider.name, exc)
                exc = errors.UpstreamProtocolError(f"provider {route.provider.name!r} sent an answer of the wrong shape")
            _release(conn, reusable)
            attempt_failed(ex, route, F_MALFORMED, 0.0, exc)
            return
        extra = translation.extra
        if status < 400:
            _account(ex, translation.tokens_in, translation.tokens_out)
            extra += cost_header(ex.cost_nusd)
        head = response.status_line(status) + adapt.JSON_TYPE + b"content-length: %d\r\n" % len(body) + CRLF
        _relay_head(ex, head, body, extra, False, translation.take_kept())
    elif translation is not None:
        broadcast(ex, translation.end_stream(), translation.take_kept())
        if translation.errored:
            ex.close_after = True
    elif ex.held is not None:
        if not _relay_held(ex, conn, route):
            return  # the attempt failed, and its connection was closed with it
    if ex.stream and ex.status == 200 and not (
        translation.completed if translation is not None else response.stream_completed(
            ex.api, ex.tail_prev[-64:] + ex.tail
        )
    ):
        # The provider ended its 200 stream with its own error event, or without its terminator:
        # the client has what the provider sent, and an error event; the route failed all the same.
        attempt_over(ex, route, F_BROKEN)
        ex.close_after = True
    else:
        ex.clean = True
        if ex.status < 400:
            if translation is None and not ex.cost_nusd and not ex.tokens_out:
                tokens_in, tokens_out = scan_usage(ex.tail, ex.tail_prev) if ex.tail else (0, 0)
                if not tokens_in and ex.first_body:  # Anthropic streams give input tokens first
                    tokens_in = scan_usage(ex.first_body)[0]
                _account(ex, tokens_in, tokens_out)
            elif translation is not None and ex.stream:
                _account(ex, translation.tokens_in, translation.tokens_out)
            if ex.main_open:
                ex.main_open = False
                ex.gen.router.on_success(route.id, now - ex.t_attempt, ex.tokens_in, ex.tokens_out, now)
        else:
            attempt_over(ex, route, F_CLIENT)  # a route failure status was recorded with its head
    finish(ex)
    if reusable:  # last: once given back, the connection may serve another exchange at once
        conn.pool.release(conn)


def _spill(ex: Exchange, held: list[bytes]) -> None:
    """A held answer outgrew `hold_answer_bytes`: what is held goes out now, the rest as it arrives."""
    ex.held = None
    head = held[0]
    chunked = head.lower().find(b"\r\ntransfer-encoding:") >= 0
    ex.chunked_out = chunked
    body = b"".join(held[1:])
    ex.tail_prev, ex.tail = held[-2] if len(held) > 2 else b"", held[-1]
    ex.first_body = held[1]
    if ex.status >= 400:
        secret = _secret(ex.route)
        head, body = response.redacted(secret, head), response.redacted(secret, body)
    _relay_head(ex, head, body, b"", chunked, body)


def _relay_held(ex: Exchange, conn: UpstreamProtocol, route: Route) -> bool:
    """A held answer is whole: check a 2xx is JSON, then relay it in one write. False: the attempt failed."""
    assert ex.held is not None
    held = ex.held
    ex.held = None
    head = held[0]
    body = held[1] if len(held) == 2 else b"".join(held[1:])
    if ex.chunked_out:  # relayed with a length instead: it is whole now
        ex.chunked_out = False
        body = dechunk(body)
        at = head.lower().find(b"\r\ntransfer-encoding:")
        head = head[:at] + b"\r\ncontent-length: %d" % len(body) + head[head.find(b"\r\n", at + 2) :]
    extra = b""
    parsed = None
    if ex.status < 300:
        try:
            parsed = orjson.loads(body)  # ~1 µs for a typical answer: a broken one never reaches the client
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            problem = f"provider {conn.pool.provider.name!r} answered {ex.status} with a body that is not a JSON object"
            attempt_failed(ex, route, F_MALFORMED, 0.0, errors.UpstreamProtocolError(problem), conn)
            return False
        if ex.api == ANTHROPIC:
            _account(ex, *usage_from_anthropic(parsed))
        else:  # read directly: the general usage reader costs a few µs more (cProfile, bench.inproc)
            usage = parsed.get("usage")
            tokens_in = usage.get("prompt_tokens") if type(usage) is dict else 0
            tokens_out = usage.get("completion_tokens") if type(usage) is dict else 0
            _account(ex, tokens_in if type(tokens_in) is int else 0, tokens_out if type(tokens_out) is int else 0)
        extra = cost_header(ex.cost_nusd)
    else:
        secret = _secret(route)
        head, body = response.redacted(secret, head), response.redacted(secret, body)
    _relay_head(ex, head, body, extra, False, body)
    return True


def on_upstream_error(ex: Exchange, conn: UpstreamProtocol, exc: errors.UpstreamError) -> None:
    """An upstream connection failed mid-attempt (it is already closed)."""
    route = conn.route
    assert route is not None
    if conn is not ex.upstream and conn is not ex.hedge:
        return  # an abandoned attempt: its outcome was already recorded
    if isinstance(exc, errors.UpstreamTimeout):
        ex.gateway.stats.timeout(exc.phase)
    if not ex.head_sent and conn.reused and not conn.status and isinstance(exc, errors.UpstreamClosedError):
        # A pooled connection the provider had closed while it sat idle: the request never
        # reached it, so sending it again on a fresh connection is safe. Once per attempt.
        if conn is ex.upstream:
            ex.upstream = None
        else:
            ex.hedge = None
        ex.gen.pools[route.provider.id].connect_new(ex, route)
        return
    if ex.head_sent:
        attempt_over(ex, route, F_BROKEN)
        fail(ex, exc, conn)
        return
    kind = F_TIMEOUT if isinstance(exc, errors.UpstreamTimeout) else F_MALFORMED
    if isinstance(exc, errors.UpstreamClosedError):
        kind = F_CONNECT if not conn.status else F_MALFORMED
    attempt_failed(ex, route, kind, 0.0, exc, conn)


def _head_accepted(ex: Exchange, conn: UpstreamProtocol, retry_after: float, body: bytes | None = None) -> bool:
    """Route bookkeeping for a response head; False when another attempt takes over.

    `body` is what came with the head (None on the translated path, where it is not seen yet)."""
    status = conn.status
    route = conn.route
    assert route is not None
    if status >= 400 and is_route_failure(status):
        if attempt_failed(ex, route, failure_kind(status), retry_after, None, conn):
            return False  # another attempt carries on; this response is dropped with its connection
    elif may_be_rejection(status) and (body is not None or status != 404):
        # The provider refused the gateway's own credentials or path: a route failure, never the
        # provider's 401 relayed to a client who would blame its own key.
        kind = upstream_rejection(status, body or b"")
        if kind != F_CLIENT:
            message = rejection_message(kind, route.provider.name)
            log.warning("provider %r rejected the gateway: %s (route %d)", route.provider.name, message, route.id)
            attempt_failed(ex, route, kind, 0.0, errors.UpstreamProtocolError(message), conn)
            return False
    _won(ex, conn, route)
    ex.status = status
    if status < 400:
        now = ex.gateway.loop.time()
        ex.gen.router.on_first_byte(route.id, now - ex.t_attempt, now)
    return True


def _relay_head(
    ex: Exchange, head: bytes, body: bytes, extra: bytes, chunked: bool, kept: bytes = b""
) -> None:
    """The client's head (the provider's, or one rebuilt), with our header lines, and the first body
    bytes: one write to the client, and one to each live cache follower."""
    route = ex.route
    assert route is not None
    line_end = head.find(b"\r\n") + 2
    close = b""
    if not ex.keep_alive:
        close = CONNECTION_CLOSE
    elif ex.close_delimited:
        close = CONNECTION_CLOSE
        ex.close_after = True
    ex.head_sent = True
    # Head, our lines and the first body bytes in one buffer, built by one join: one syscall, one copy.
    write(ex, b"".join((
        head[:line_end], ex.gen.provider_headers[route.provider.id], ex.gateway.attempt_headers[min(ex.attempts, 9)],
        extra, caching.X_CACHE[ex.cache_outcome] if ex.cache_outcome is not None else b"", close, head[line_end:],
        body,
    )))  # fmt: skip
    ex.t_relayed = perf_counter()
    if ex.followers is not None:
        if ex.status != 200:  # an error is the leader's own: each follower gets the router's treatment instead
            caching.stop_live_following(ex)
            ex.capture = None
            return
        ex.capture_chunked = chunked
        if ex.capture is not None:
            caching.capture(ex, kept)
        if not ex.followers:
            return
        for follower in caching.live_followers(ex):
            follower.head_sent = True
            follower.status = 200
            follower.close_after = ex.close_delimited
            write(follower, caching.follower_head(follower, head, line_end) + body)


def _cut_short(ex: Exchange, data: bytes) -> bytes:
    """A relayed stream ended short of its terminator: add an error event where the framing allows."""
    if response.ended_with_error(ex.tail_prev[-64:] + data):
        return data  # the provider's own error event: the client has it already
    return response.with_cut_short_event(ex.api, data, ex.chunked_out, ex.close_delimited)


def _account(ex: Exchange, tokens_in: int, tokens_out: int) -> None:
    """Usage and its cost at the answering route's prices (spend, the cost header, key budgets)."""
    route = ex.route
    assert route is not None
    ex.tokens_in = tokens_in
    ex.tokens_out = tokens_out
    if route.upstream_model is not None:  # a configured route: its two prices, precomputed (one multiply-add)
        ex.cost_nusd = cost_nusd_at(tokens_in, tokens_out, route.input_pusd, route.output_pusd)
    else:  # `provider/model`: priced from the provider's list for that model
        ex.cost_nusd = cost_nusd(disjoint(tokens_in, 0, 0, tokens_out), route_prices(route, ex.model) or FREE)


def _secret(route: Route | None) -> bytes:
    key = route.provider.api_key if route is not None else None
    return key.encode("latin-1", "replace") if key else b""


def _release(conn: UpstreamProtocol, reusable: bool) -> None:
    if reusable:
        conn.pool.release(conn)


def attempt_failed(
    ex: Exchange,
    route: Route,
    kind: int,
    retry_after: float,
    exc: errors.GatewayError | None,
    conn: UpstreamProtocol | None = None,
) -> bool:
    """Record a failed attempt and carry on elsewhere if possible.

    Returns True when the exchange goes on (another attempt, or a hedge still running) or has
    been answered here; False when the caller must relay the provider's own error response
    (`exc` is None: the failure is an upstream status, and it was the only attempt).
    """
    attempt_over(ex, route, kind, retry_after)
    if ex.outcomes is None:
        ex.outcomes = []
    ex.outcomes.append((kind, retry_after))
    if route is ex.hedge_route or (conn is not None and conn is ex.hedge):  # the hedge failed; the main one goes on
        drop(ex.hedge or conn)
        ex.hedge = ex.hedge_route = None
        return True
    failed = conn if conn is not None else ex.upstream
    ex.upstream = None
    ex.translation = None
    if ex.hedge_route is not None:  # the hedge becomes the main attempt
        ex.route, ex.upstream, ex.t_attempt, ex.main_open = ex.hedge_route, ex.hedge, ex.t_hedge, True
        ex.hedge = ex.hedge_route = None
        drop(failed)
        return True
    if attempt(ex):
        drop(failed)
        return True
    if exc is None and ex.attempts == 1:
        ex.upstream = conn  # relay the provider's own error as it is
        return False
    drop(failed)
    status, hint = summarize_failures(ex.outcomes)
    if ex.attempts > 1:
        message = f"all {ex.attempts} attempts for model {ex.model!r} failed"
    else:
        message = exc.message if exc is not None else f"the provider for model {ex.model!r} failed"
    fail(ex, errors.AllRoutesFailedError(message, status=status, retry_after=hint, final=ex.attempts > 1))
    return True


def _won(ex: Exchange, conn: UpstreamProtocol, route: Route) -> None:
    """`conn`'s head came first: it serves the client; a racing attempt is cancelled."""
    if ex.hedge_timer is not None:
        ex.hedge_timer.cancel()
        ex.hedge_timer = None
    if route is ex.hedge_route:  # the hedge won: it becomes the main attempt
        loser, loser_route, loser_open = ex.upstream, ex.route, ex.main_open
        ex.route, ex.upstream, ex.t_attempt, ex.main_open = route, conn, ex.t_hedge, True
    else:
        loser, loser_route, loser_open = ex.hedge, ex.hedge_route, ex.hedge_route is not None
    if loser_route is None:
        return  # no race: the common case
    ex.hedge = ex.hedge_route = None
    if loser_open:
        ex.gen.router.on_cancel(loser_route.id)
    drop(loser)
