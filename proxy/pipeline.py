"""The request path, top to bottom, as plain functions named after its phases.

    handle ─ endpoint ─ parse_request ─ resolve_model ─ lookup_cache ─ attempt ─ send
                                                                          ▲        │
                            retry (nothing sent to the client yet) ───────┤        │
                                                                          │        ▼
    finish ◄─ on_upstream_done ◄─ on_upstream_data ◄─ on_upstream_head ◄── (provider)
       ▲
       └── fail: an error response if nothing reached the client yet; else an error
           event or a close

`handle` is called by the downstream protocol with a complete request; the `on_upstream_*`
callbacks are called by the upstream protocol as the response arrives. No phase awaits
anything: the exchange is driven by callbacks, so a warm request creates no Task.

An exchange may make several attempts, each on a route the router picks: a failure before
any byte reached the client falls back to the next route, within the model's
`max_attempts` and `attempt_deadline_s`. With `hedge_after_ms`, a second attempt starts when
the first has not answered in time; the first head to arrive wins and the other connection
is closed. Every attempt ends in exactly one router outcome: success, failure or cancel.
`finish` runs exactly once per exchange, whatever happened.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from proxy import adapt, admin, caching, errors, response
from proxy.adapt import ANTHROPIC, OPENAI
from proxy.limits import cost_header, cost_nusd_at
from proxy.routing import Failure, failure_kind, is_route_failure, summarize_failures
from proxy.stats import scan_usage
from proxy.wire import (
    CONNECTION_CLOSE,
    CRLF,
    LAST_CHUNK,
    NO_BUFFERING,
    STATUS_LINE,
    chunk,
    error_response,
    json_response,
    openai_error_body,
    strip_hop_by_hop,
)

if TYPE_CHECKING:
    from proxy.config import Route
    from proxy.exchange import Exchange
    from proxy.server import Gateway
    from proxy.upstream import UpstreamProtocol

log = logging.getLogger("llm_edge.pipeline")

# Failure kinds as module constants: an enum member read through its class costs ~150 ns on 3.11.
F_CLIENT, F_CONNECT, F_CONNECT_TIMEOUT = Failure.CLIENT, Failure.CONNECT, Failure.CONNECT_TIMEOUT
F_TIMEOUT, F_MALFORMED, F_BROKEN = Failure.TIMEOUT, Failure.MALFORMED, Failure.BROKEN


# handle: which endpoint


def handle(ex: Exchange) -> None:
    """Answer one complete request (called in order, one at a time per connection)."""
    try:
        if ex.error is not None:
            raise ex.error
        if ex.method == b"CONNECT":
            raise errors.ConnectNotAllowedError("CONNECT is not supported: llm-edge is not a forward proxy")
        path = ex.url
        query = path.find(b"?")
        if query >= 0:
            path = path[:query]
        entry = ENDPOINTS.get(path)
        if entry is None:
            if path.startswith(b"/v1/models/") and ex.method in (b"GET", b"HEAD"):
                reply(ex, admin.model(ex.gateway, path[11:].decode("utf-8", "replace")))
                return
            raise errors.NotFoundError(f"unknown path {path.decode('latin-1')[:200]!r}")
        method, handler, ex.api, guarded = entry
        if ex.method != method and not (method == b"GET" and ex.method == b"HEAD"):
            raise errors.MethodNotAllowedError(f"{ex.method.decode('latin-1')} is not allowed here; use {method.decode()}")
        if guarded and ex.gen.keys.required:
            admit(ex)
        handler(ex)
    except errors.GatewayError as exc:
        reply_error(ex, exc)
    except Exception:
        log.exception("unexpected error handling a request")
        reply_error(ex, errors.GatewayError("internal gateway error"))


def admit(ex: Exchange) -> None:
    """Gateway keys: who is asking, and are they within their limits? Before any upstream contact."""
    keys = ex.gen.keys
    key = keys.authenticate(ex.client_key)
    if key < 0:
        raise keys.rejection(ex.client_key)
    estimate = len(ex.body) // 4  # a rough token count of the prompt; settled against the real usage
    allowed, wait, why = keys.admit(key, ex.gateway.loop.time(), estimate)
    if not allowed:
        raise keys.refusal(key, why, wait)
    ex.key_index = key
    ex.tenant = keys.tenants[key]
    ex.reserved_tokens = estimate


def chat_completions(ex: Exchange) -> None:
    """POST /v1/chat/completions (OpenAI's API): validate, then cache → route → upstream."""
    payload = parse_request(ex)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.BadRequestError("'messages' must be a non-empty array", param="messages")
    ex.endpoint = "/chat/completions"
    forward_to_model(ex)


def messages(ex: Exchange) -> None:
    """POST /v1/messages (Anthropic's API): validate, then cache → route → upstream."""
    payload = parse_request(ex)
    if not isinstance(payload.get("messages"), list):
        raise errors.BadRequestError("messages: Field required", param="messages")
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise errors.BadRequestError("max_tokens: Field required (a positive integer)", param="max_tokens")
    ex.endpoint = "/messages"
    forward_to_model(ex)


def embeddings(ex: Exchange) -> None:
    """POST /v1/embeddings: passed through to an OpenAI-compatible route."""
    payload = parse_request(ex)
    if "input" not in payload:
        raise errors.BadRequestError("'input' is required", param="input")
    ex.endpoint = "/embeddings"
    forward_to_model(ex)


def forward_to_model(ex: Exchange) -> None:
    resolve_model(ex)
    if caching.lookup(ex, proceed):  # answered from memory, or parked behind an identical request
        return
    proceed(ex)


def proceed(ex: Exchange) -> None:
    """Go upstream: the first attempt on the router's best route."""
    if not attempt(ex):
        no_route_left(ex)


def no_route_left(ex: Exchange) -> None:
    """Every route is open, cooling down or full: say when to come back rather than wait."""
    gateway = ex.gateway
    wait = ex.gen.router.retry_after(ex.model_id, gateway.loop.time())
    fail(ex, errors.AllRoutesFailedError(
        f"no route for model {ex.model!r} is available right now", status=503,
        retry_after=max(1, min(60, math.ceil(wait))), final=False,
    ))  # fmt: skip


# parse_request: the body


def parse_request(ex: Exchange) -> dict[str, Any]:
    """Parse and check the JSON body's common fields; sets `ex.model`, `ex.stream`, `ex.payload`."""
    try:
        payload = orjson.loads(ex.body)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequestError(f"the request body is not valid JSON: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise errors.BadRequestError("the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise errors.BadRequestError("'model' must be a non-empty string", param="model")
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise errors.BadRequestError("'stream' must be a boolean", param="stream")
    ex.payload = payload
    ex.model = model
    ex.stream = stream is True
    return payload


def resolve_model(ex: Exchange) -> None:
    """Which router model serves the requested name; sets `ex.model_id` and the attempt budget."""
    settings = ex.gen.settings
    model = settings.models.get(ex.model)
    if model is not None:
        ex.model_id = model.id
        router_settings = model.router
    else:
        provider_name, slash, _ = ex.model.partition("/")
        route = settings.direct_routes.get(provider_name) if slash else None
        if route is None:
            raise errors.ModelNotFoundError(f"the model {ex.model!r} does not exist on this gateway")
        ex.model_id = route.model_id
        router_settings = settings.router
    ex.attempts_left = router_settings.max_attempts
    ex.attempt_deadline_s = router_settings.attempt_deadline_s
    ex.hedge_after_s = router_settings.hedge_after_ms / 1000.0


# attempt / send: the upstream request


def attempt(ex: Exchange, hedge: bool = False) -> bool:
    """Start an attempt on the router's next route; False when no route is left."""
    gateway = ex.gateway
    now = gateway.loop.time()
    if ex.attempts_left <= 0:
        return False
    route_id = ex.gen.router.pick(ex.model_id, len(ex.body), ex.tried, now)
    if route_id < 0:
        return False
    ex.gen.router.on_start(route_id)
    route = ex.gen.settings.routes[route_id]
    ex.tried |= 1 << route_id
    ex.attempts += 1
    ex.attempts_left -= 1
    if hedge:
        ex.hedge_route = route
        ex.t_hedge = now
    else:
        ex.route = route
        ex.t_attempt = now
        if ex.hedge_after_s and ex.attempts == 1:
            ex.hedge_timer = gateway.loop.call_later(ex.hedge_after_s, _hedge_due, ex)  # opt-in: a timer per request
    conn = ex.gen.pools[route.provider.id].acquire(ex, route)
    if conn is not None:
        send(ex, conn, route)
    return True


def send(ex: Exchange, conn: UpstreamProtocol, route: Route) -> None:
    """Write the request upstream: precomputed prefix, our framing, the forwarded headers, the body."""
    if ex.done or (route is not ex.route and route is not ex.hedge_route):
        conn.pool.release(conn)  # the attempt was abandoned while its connection was being made
        return
    try:
        endpoint, payload_bytes, translation = adapt.upstream_request(ex, route)
    except errors.GatewayError as exc:  # a request this provider's API cannot express: a 400 that says so
        conn.pool.release(conn)
        ex.gen.router.on_failure(route.id, F_CLIENT, 0.0, ex.gateway.loop.time())
        if route is ex.route:
            ex.route = None
        fail(ex, exc)
        return
    head = b"".join(
        (
            conn.pool.request_prefixes[endpoint],
            b"content-length: %d\r\n" % len(payload_bytes),
            *ex.forward_headers,
            CRLF,
        )
    )
    conn.route = route
    if route is ex.route:
        ex.upstream = conn
    else:
        ex.hedge = conn
    conn.send(ex, head, payload_bytes, translation, ex.attempt_deadline_s)
    if not ex.t_sent:
        ex.t_sent = perf_counter()


def on_connect_failed(ex: Exchange, route: Route, exc: errors.UpstreamError) -> None:
    """The pool could not give this attempt a connection."""
    if ex.done or (route is not ex.route and route is not ex.hedge_route):
        return  # an abandoned attempt: its outcome was already recorded
    kind = F_CONNECT_TIMEOUT if isinstance(exc, errors.UpstreamTimeout) else F_CONNECT
    attempt_failed(ex, route, kind, 0.0, exc)


# on_upstream_*: the response, relayed as it arrives


def on_upstream_head(ex: Exchange, conn: UpstreamProtocol, head: bytes, rest: bytes) -> None:
    """Relay the response head, adjusted for this hop, with whatever body bytes came with it."""
    lower = head.lower()
    status = conn.status
    problem = response.not_an_answer(ex, status, lower)
    if problem is not None:  # caught before a byte reached the client: another route may do better
        route = conn.route
        assert route is not None
        attempt_failed(ex, route, F_MALFORMED, 0.0, errors.UpstreamProtocolError(problem), conn)
        return
    retry_after = response.retry_after_s(head, lower) if status >= 400 else 0.0
    if not _head_accepted(ex, conn, retry_after):
        return
    if status >= 400 and (response.content_length(lower) == 0 or b"json" not in response.header(lower, b"content-type")):
        # The provider's error is not in any API's shape (an HTML page from a proxy, nothing at
        # all): the client gets its own API's error, with the status and Retry-After kept.
        _close(conn)
        ex.upstream = None
        name = conn.pool.provider.name
        fail(ex, errors.AllRoutesFailedError(f"provider {name!r} answered {status} without an API error body",
                                        status=status, retry_after=round(retry_after) or None, final=False))  # fmt: skip
        return
    chunked = lower.find(b"\r\ntransfer-encoding:") >= 0
    ex.close_delimited = not chunked and lower.find(b"\r\ncontent-length:") < 0
    ex.chunked_out = chunked
    head = strip_hop_by_hop(head, lower)
    ours = _our_headers(ex)
    if ex.stream:
        ours += NO_BUFFERING
    elif conn.message_done and status < 400:  # the whole answer is here: its cost can go in the head
        _account(ex, *scan_usage(rest))
        ours += cost_header(ex.cost_nusd)
    if ex.close_delimited:
        ours += CONNECTION_CLOSE if ex.keep_alive else b""
        ex.close_after = True
    if not head.startswith(b"HTTP/1.1 "):  # an HTTP/1.0 provider: our hop is 1.1
        head = STATUS_LINE[status] + head[head.find(b"\r\n") + 2 :]
    line_end = head.find(b"\r\n") + 2
    if status >= 400:
        head, rest = response.redacted(ex, head), response.redacted(ex, rest)
    if ex.followers is not None:  # a cache leader: live followers get the same bytes
        ex.capture_chunked = not ex.close_delimited and lower.find(b"\r\ncontent-length:") < 0
        caching.on_leader_head(ex, head, line_end, rest)
    ex.tail = ex.first_body = rest
    if conn.message_done and ex.stream and status == 200:
        rest = response.end_of_stream(ex, rest)
    ex.head_sent = True
    ex.downstream.write(head[:line_end] + ours + head[line_end:] + rest)  # head and first body bytes: one syscall
    ex.t_relayed = perf_counter()




def on_decoded_head(ex: Exchange, conn: UpstreamProtocol) -> None:
    """A head on the translated path: the response is rebuilt in the client's format."""
    if not _head_accepted(ex, conn, conn.retry_after):
        return
    translation = conn.translation
    assert translation is not None
    ex.translation = translation
    if conn.retry_after:
        translation.extra = b"retry-after: %d\r\n" % max(1, round(conn.retry_after))
    if translation.head(conn.status, _our_headers(ex)):
        ex.head_sent = True
        ex.t_relayed = perf_counter()
    elif ex.followers:
        caching.stop_live_following(ex)  # a buffered answer: followers are served from the stored entry


def on_decoded_body(ex: Exchange, conn: UpstreamProtocol, data: bytes) -> None:
    """A decoded piece of a body being translated."""
    if conn is ex.upstream and ex.translation is not None:
        ex.translation.body(data)


def _head_accepted(ex: Exchange, conn: UpstreamProtocol, retry_after: float) -> bool:
    """Route bookkeeping for a response head; False when another attempt takes over."""
    status = conn.status
    route = conn.route
    assert route is not None
    if status >= 400 and is_route_failure(status):
        if attempt_failed(ex, route, failure_kind(status), retry_after, None, conn):
            return False  # another attempt carries on; this response is dropped with its connection
    _won(ex, conn, route)
    ex.status = status
    if status < 400:
        now = ex.gateway.loop.time()
        ex.gen.router.on_first_byte(route.id, now - ex.t_attempt, now)
    return True


def _our_headers(ex: Exchange) -> bytes:
    """The header lines llm-edge adds to every relayed response."""
    gateway = ex.gateway
    route = ex.route
    assert route is not None
    ours = ex.gen.provider_headers[route.provider.id] + gateway.attempt_headers[min(ex.attempts, 9)]
    if ex.cache_outcome is not None:
        ours += caching.X_CACHE[ex.cache_outcome]
    if not ex.keep_alive:
        ours += CONNECTION_CLOSE
        ex.close_after = True
    return ours


def on_upstream_data(ex: Exchange, data: bytes, last: bool = False) -> None:
    """Relay body bytes exactly as the provider framed them, as they arrive."""
    ex.tail_prev = ex.tail  # usage is read from the tail when the response ends
    ex.tail = data
    if last and ex.stream and ex.status == 200:
        data = response.end_of_stream(ex, data)
    elif ex.status >= 400:
        data = response.redacted(ex, data)
    ex.downstream.write(data)
    if ex.followers is not None:
        caching.on_leader_data(ex, data)


def on_upstream_done(ex: Exchange, conn: UpstreamProtocol, reusable: bool) -> None:
    """The response is complete: account for it, give the connection back, finish."""
    route = conn.route
    assert route is not None
    ex.upstream = None
    gateway = ex.gateway
    translation = ex.translation
    if translation is not None:
        try:
            translation.done(_our_headers(ex) + translation.extra)
        except errors.UpstreamError as exc:  # e.g. a 200 whose body is not JSON: nothing was sent yet
            if reusable:
                conn.pool.release(conn)
            attempt_failed(ex, route, F_MALFORMED, 0.0, exc)
            return
        ex.head_sent = True
        if not ex.t_relayed:
            ex.t_relayed = perf_counter()
    now = gateway.loop.time()
    if ex.stream and ex.status == 200 and not response.stream_completed(ex, translation):
        # The provider ended its 200 stream with its own error event, or without its
        # terminator: the client has what the provider sent; the route failed all the same.
        ex.gen.router.on_failure(route.id, F_BROKEN, 0.0, now)
        if reusable:
            conn.pool.release(conn)
        finish(ex)
        return
    ex.clean = True
    if ex.status < 400:
        if translation is not None:
            _account(ex, translation.tokens_in, translation.tokens_out)
        elif not ex.cost_nusd and not ex.tokens_out:
            _account(ex, *gateway.stats.usage(ex))
        ex.gen.router.on_success(route.id, now - ex.t_attempt, ex.tokens_in, ex.tokens_out, now)
    elif is_route_failure(ex.status):
        pass  # already recorded when the head arrived
    else:
        ex.gen.router.on_failure(route.id, F_CLIENT, 0.0, now)
    if reusable:
        conn.pool.release(conn)
    finish(ex)


def _account(ex: Exchange, tokens_in: int, tokens_out: int) -> None:
    """Usage and its cost at the answering route's prices (spend, the cost header, key budgets)."""
    route = ex.route
    assert route is not None
    ex.tokens_in = tokens_in
    ex.tokens_out = tokens_out
    ex.cost_nusd = cost_nusd_at(tokens_in, tokens_out, route.input_pusd, route.output_pusd)


def on_upstream_error(ex: Exchange, conn: UpstreamProtocol, exc: errors.UpstreamError) -> None:
    """An upstream connection failed mid-attempt (it is already closed)."""
    route = conn.route
    assert route is not None
    if conn is not ex.upstream and conn is not ex.hedge:
        return  # an abandoned attempt: its outcome was already recorded
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
        ex.gen.router.on_failure(route.id, F_BROKEN, 0.0, ex.gateway.loop.time())
        ex.upstream = conn  # for the chunk-boundary check in fail()
        fail(ex, exc)
        ex.upstream = None
        return
    kind = F_TIMEOUT if isinstance(exc, errors.UpstreamTimeout) else F_MALFORMED
    if isinstance(exc, errors.UpstreamClosedError):
        kind = F_CONNECT if not conn.status else F_MALFORMED
    attempt_failed(ex, route, kind, 0.0, exc)


# failures, fallback and hedging


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
    gateway = ex.gateway
    ex.gen.router.on_failure(route.id, kind, retry_after, gateway.loop.time())
    if ex.outcomes is None:
        ex.outcomes = []
    ex.outcomes.append((kind, retry_after))
    if route is ex.hedge_route:  # the hedge failed; the main attempt carries on
        _close(ex.hedge or conn)
        ex.hedge = ex.hedge_route = None
        return True
    failed = conn if conn is not None else ex.upstream
    ex.upstream = None
    if ex.hedge_route is not None:  # the hedge becomes the main attempt
        ex.route, ex.upstream, ex.t_attempt = ex.hedge_route, ex.hedge, ex.t_hedge
        ex.hedge = ex.hedge_route = None
        _close(failed)
        return True
    if attempt(ex):
        _close(failed)
        return True
    if exc is None and ex.attempts == 1:
        ex.upstream = conn  # relay the provider's own error as it is
        return False
    _close(failed)
    status, hint = summarize_failures(ex.outcomes)
    if ex.attempts > 1:
        message = f"all {ex.attempts} attempts for model {ex.model!r} failed"
    else:
        message = exc.message if exc is not None else f"the provider for model {ex.model!r} failed"
    fail(ex, errors.AllRoutesFailedError(message, status=status, retry_after=hint, final=ex.attempts > 1))
    return True


def _close(conn: UpstreamProtocol | None) -> None:
    if conn is not None:
        conn.detach()  # closed, never pooled: its response was not read to the end


def _won(ex: Exchange, conn: UpstreamProtocol, route: Route) -> None:
    """`conn`'s head came first: it serves the client; a racing attempt is cancelled."""
    if ex.hedge_timer is not None:
        ex.hedge_timer.cancel()
        ex.hedge_timer = None
    if route is ex.hedge_route:  # the hedge won: it becomes the main attempt
        loser, loser_route = ex.upstream, ex.route
        ex.route, ex.upstream, ex.t_attempt = route, conn, ex.t_hedge
    else:
        loser, loser_route = ex.hedge, ex.hedge_route
    ex.hedge = ex.hedge_route = None
    if loser_route is not None:
        ex.gen.router.on_cancel(loser_route.id)
        _close(loser)


def _hedge_due(ex: Exchange) -> None:
    ex.hedge_timer = None
    if ex.done or ex.head_sent or ex.hedge_route is not None or ex.route is None:
        return
    attempt(ex, hedge=True)


def fail(ex: Exchange, exc: errors.GatewayError) -> None:
    """End an exchange that went wrong: an error response if we still can, else an error event or a close."""
    if ex.done or ex.aborted:
        return
    if not ex.head_sent:
        reply_error(ex, exc)
        return
    conn = ex.upstream
    if ex.translation is not None:
        ex.translation.flush()
        event = ex.translation.error_event(exc.message, exc.type)
        if event:
            ex.downstream.write(chunk(event) + LAST_CHUNK)
    elif ex.stream and conn is not None and ex.chunked_out and not conn.in_chunk:
        # The client already has a 200 and some events, and we sit between two chunks: an
        # error event is the only honest end left (the SDKs raise on it), never a clean end
        # that looks like success. Mid-chunk, closing is the only way to say it.
        if ex.api == ANTHROPIC:
            event = adapt.anthropic_stream_error(exc.message, exc.status)
        else:
            event = b"data: " + openai_error_body(exc.message, exc.type, exc.code) + b"\n\n"
        ex.downstream.write(chunk(event) + LAST_CHUNK)
    # Closed even after a clean error event: a failed exchange's connection is not worth the risk
    # of reuse (its upstream ended abnormally; the client may have a read in flight).
    ex.close_after = True
    if not ex.status or ex.status < 400:
        ex.status = exc.status
    finish(ex)


def abort(ex: Exchange) -> None:
    """The client went away: drop every upstream connection (never pooled) and finish."""
    ex.aborted = True
    if ex.leader is not None:
        caching.drop_follower(ex)
    elif ex.upstream is not None and any(f.follows_live for f in ex.followers or ()):
        return  # live followers still read this answer: it carries on, and finishes when it ends
    router = ex.gen.router
    if ex.hedge_timer is not None:
        ex.hedge_timer.cancel()
        ex.hedge_timer = None
    if not ex.done:
        for route in (ex.route, ex.hedge_route):
            if route is not None:
                router.on_cancel(route.id)
    _close(ex.upstream)
    _close(ex.hedge)
    ex.upstream = ex.hedge = None
    ex.hedge_route = None
    if not ex.status or ex.status < 400:
        ex.status = 499  # nginx's "client closed request"
    finish(ex)


# reply: the gateway's own answers


def reply_error(ex: Exchange, exc: errors.GatewayError) -> None:
    """Answer with an error in the OpenAI shape, closing the connection when it can't be trusted."""
    close = exc.close or not ex.keep_alive
    ex.status = exc.status
    ex.close_after = close
    gateway = ex.gateway
    if ex.api == ANTHROPIC:
        answer = json_response(
            exc.status, adapt.anthropic_error_body(exc.status, exc.message), close=close, extra=exc.headers(),
            date=gateway.date_header,
        )  # fmt: skip
    else:
        answer = error_response(
            exc.status, exc.message, exc.type, exc.code, exc.param, close=close, extra=exc.headers(),
            date=gateway.date_header,
        )  # fmt: skip
    reply(ex, answer)


def reply(ex: Exchange, answer: bytes) -> None:
    """Write a complete response built by the gateway itself, and finish."""
    if ex.method == b"HEAD":
        answer = answer[: answer.find(b"\r\n\r\n") + 4]
    ex.downstream.write(answer)
    ex.head_sent = True
    finish(ex)


# finish: always runs, once


def finish(ex: Exchange) -> None:
    """Record the exchange and let the connection move on."""
    if ex.done:
        return
    ex.done = True
    ex.t_end = perf_counter()
    if ex.hedge_timer is not None:
        ex.hedge_timer.cancel()
        ex.hedge_timer = None
    gateway = ex.gateway
    gateway.stats.record(ex)
    route = ex.route
    ex.gen.requests.record(route.id if route is not None else -1, ex.status)
    if ex.key_index >= 0:  # settle the key's reservation against what was really used
        ex.gen.keys.charge(ex.key_index, gateway.loop.time(), ex.tokens_in, ex.tokens_out, ex.cost_nusd,
                            ex.reserved_tokens)  # fmt: skip
    if gateway.access_log is not None:
        gateway.access_log.append(_log_row(ex))
    ex.downstream.exchange_done(ex)
    if ex.followers is not None:  # a cache leader: store its answer, then its followers get theirs
        caching.on_leader_finished(ex)


def _log_row(ex: Exchange) -> tuple[Any, ...]:
    """The access log's row (see `accesslog.ROW`): names and numbers only, never keys or content."""
    gateway = ex.gateway
    gateway.request_ids += 1
    route = ex.route
    return (
        ex.t_end, f"{gateway.request_id_prefix}{gateway.request_ids:x}", ex.endpoint or ex.url[:64].decode("latin-1"),
        ex.model, route.provider.name if route is not None else "", route.id if route is not None else -1, ex.status,
        ex.stream, ex.t_end - ex.t_start, ex.overhead(), (ex.t_relayed - ex.t_start) if ex.t_relayed else 0.0,
        ex.tokens_in, ex.tokens_out, ex.cost_nusd, ex.cache_outcome, ex.attempts, ex.gen.keys.names[ex.key_index],
    )  # fmt: skip


def _admin(build: Callable[[Gateway], bytes]) -> Callable[[Exchange], None]:
    def handler(ex: Exchange) -> None:
        reply(ex, build(ex.gateway))

    return handler


def models(ex: Exchange) -> None:
    """GET /v1/models, in the shape of the caller's SDK (Anthropic's sends `anthropic-version`)."""
    reply(ex, admin.models(ex.gateway, anthropic=bool(ex.anthropic_version)))


# path: (method, handler, the client's API, whether a gateway key is required when keys are configured)
ENDPOINTS: dict[bytes, tuple[bytes, Callable[[Exchange], None], int, bool]] = {
    b"/v1/chat/completions": (b"POST", chat_completions, OPENAI, True),
    b"/v1/messages": (b"POST", messages, ANTHROPIC, True),
    b"/v1/embeddings": (b"POST", embeddings, OPENAI, True),
    b"/v1/models": (b"GET", models, OPENAI, True),
    b"/healthz": (b"GET", _admin(admin.healthz), OPENAI, False),
    b"/stats": (b"GET", _admin(admin.stats), OPENAI, False),
    b"/metrics": (b"GET", _admin(admin.metrics), OPENAI, False),
}
