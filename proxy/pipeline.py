"""The request path, top to bottom, as plain functions named after its phases.

    handle ─ endpoint ─ parse_request ─ lookup_cache ─ pick_route ─ forward ─ send
                                                                               │
    finish ◄─ on_upstream_done ◄─ on_upstream_data ◄─ on_upstream_head ◄───────┘
       ▲
       └── fail (before any byte reached the client: an error response; after: an error
           event or a close)

`handle` is called by the downstream protocol with a complete request; the `on_upstream_*`
callbacks are called by the upstream protocol as the response arrives. No phase awaits
anything: the exchange is driven by callbacks, so a warm request creates no Task. `finish`
runs exactly once per exchange, whatever happened: it records stats and releases the
downstream connection for its next request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from proxy import admin, body, errors
from proxy.config import Route
from proxy.wire import (
    CONNECTION_CLOSE,
    CRLF,
    LAST_CHUNK,
    NO_BUFFERING,
    STATUS_LINE,
    chunk,
    error_response,
    openai_error_body,
    strip_hop_by_hop,
)

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.server import Gateway
    from proxy.upstream import UpstreamProtocol

log = logging.getLogger("llm_edge.pipeline")


# handle: which endpoint


def handle(ex: Exchange) -> None:
    """Answer one complete request (called in order, one at a time per connection)."""
    try:
        if ex.error is not None:
            raise ex.error
        if ex.method == b"CONNECT":
            raise errors.ConnectNotAllowed("CONNECT is not supported: llm-edge is not a forward proxy")
        path = ex.url
        query = path.find(b"?")
        if query >= 0:
            path = path[:query]
        entry = ENDPOINTS.get(path)
        if entry is None:
            if path.startswith(b"/v1/models/") and ex.method in (b"GET", b"HEAD"):
                reply(ex, admin.model(ex.gateway, path[11:].decode("utf-8", "replace")))
                return
            raise errors.NotFound(f"unknown path {path.decode('latin-1')[:200]!r}")
        method, handler = entry
        if ex.method != method and not (method == b"GET" and ex.method == b"HEAD"):
            raise errors.MethodNotAllowed(f"{ex.method.decode('latin-1')} is not allowed here; use {method.decode()}")
        handler(ex)
    except errors.GatewayError as exc:
        reply_error(ex, exc)
    except Exception:
        log.exception("unexpected error handling a request")
        reply_error(ex, errors.GatewayError("internal gateway error"))


def chat_completions(ex: Exchange) -> None:
    """POST /v1/chat/completions: validate, then cache → route → upstream."""
    payload = parse_request(ex)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.BadRequest("'messages' must be a non-empty array", param="messages")
    ex.endpoint = "/chat/completions"
    forward_to_model(ex)


def embeddings(ex: Exchange) -> None:
    """POST /v1/embeddings: passed through to an OpenAI-compatible route."""
    payload = parse_request(ex)
    if "input" not in payload:
        raise errors.BadRequest("'input' is required", param="input")
    ex.endpoint = "/embeddings"
    forward_to_model(ex)


def forward_to_model(ex: Exchange) -> None:
    routes = resolve_model(ex)
    if lookup_cache(ex):
        return
    pick_route(ex, routes)
    forward(ex)


# parse_request: the body


def parse_request(ex: Exchange) -> dict[str, Any]:
    """Parse and check the JSON body's common fields; sets `ex.model`, `ex.stream`, `ex.payload`."""
    try:
        payload = orjson.loads(ex.body)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"the request body is not valid JSON: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise errors.BadRequest("the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise errors.BadRequest("'model' must be a non-empty string", param="model")
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise errors.BadRequest("'stream' must be a boolean", param="stream")
    ex.payload = payload
    ex.model = model
    ex.stream = stream is True
    return payload


def resolve_model(ex: Exchange) -> tuple[Route, ...]:
    """The routes that may serve the requested model, best first."""
    gateway = ex.gateway
    model = gateway.settings.models.get(ex.model)
    if model is not None:
        return model.routes
    provider_name, slash, _ = ex.model.partition("/")
    if slash:
        route = gateway.settings.direct_routes.get(provider_name)
        if route is not None:
            return (route,)
    raise errors.ModelNotFound(f"the model {ex.model!r} does not exist on this gateway")


# lookup_cache: the response cache plugs in here


def lookup_cache(ex: Exchange) -> bool:
    """Answer from the cache if possible; True when the exchange has been answered."""
    return False


# pick_route: the router plugs in here


def pick_route(ex: Exchange, routes: tuple[Route, ...]) -> None:
    """Choose the route for this attempt (for now: the model's first route)."""
    ex.route = routes[0]


# forward / send: the upstream request


def forward(ex: Exchange) -> None:
    """Get a connection to the chosen route's provider and send the request on it."""
    route = ex.route
    assert route is not None
    ex.attempts += 1
    conn = ex.gateway.pools[route.provider.id].acquire(ex)
    if conn is not None:
        send(ex, conn)


def send(ex: Exchange, conn: UpstreamProtocol) -> None:
    """Write the request upstream: precomputed prefix, our framing, the client's other headers."""
    route = ex.route
    assert route is not None and ex.payload is not None
    if route.upstream_model is None:  # a direct route: provider/model
        upstream_json = orjson.dumps(ex.model.partition("/")[2])
    else:
        upstream_json = route.upstream_model_json
    payload_bytes = body.replace_model(ex.body, ex.payload, upstream_json)
    head = b"".join(
        (
            conn.pool.request_prefixes[ex.endpoint],
            b"content-length: %d\r\n" % len(payload_bytes),
            *ex.forward_headers,
            CRLF,
        )
    )
    conn.send(ex, head, payload_bytes)
    ex.t_sent = perf_counter()


def on_connect_failed(ex: Exchange, exc: errors.UpstreamError) -> None:
    """The pool could not give `ex` a connection."""
    fail(ex, exc)


# on_upstream_*: the response, relayed as it arrives


def on_upstream_head(ex: Exchange, conn: UpstreamProtocol, head: bytes, rest: bytes) -> None:
    """Relay the response head, adjusted for this hop, with whatever body bytes came with it."""
    status = conn.status
    ex.status = status
    gateway = ex.gateway
    route = ex.route
    assert route is not None
    lower = head.lower()
    ex.close_delimited = lower.find(b"\r\ntransfer-encoding:") < 0 and lower.find(b"\r\ncontent-length:") < 0
    head = strip_hop_by_hop(head, lower)
    ours = gateway.provider_headers[route.provider.id] + gateway.attempt_headers[min(ex.attempts, 9)]
    if ex.stream:
        ours += NO_BUFFERING
    if ex.close_delimited or not ex.keep_alive:
        ours += CONNECTION_CLOSE
        ex.close_after = True
    if head.startswith(b"HTTP/1.1 "):
        line_end = head.find(b"\r\n") + 2
        out = head[:line_end] + ours + head[line_end:] + rest
    else:  # an HTTP/1.0 provider: our hop is 1.1
        out = STATUS_LINE[status] + ours + head[head.find(b"\r\n") + 2 :] + rest
    ex.tail = rest
    ex.head_sent = True
    if not ex.aborted:
        ex.downstream.write(out)  # head and first body bytes in one write: one syscall, not two
    ex.t_relayed = perf_counter()


def on_upstream_data(ex: Exchange, data: bytes) -> None:
    """Relay body bytes exactly as the provider framed them, as they arrive."""
    ex.tail_prev = ex.tail  # usage is read from the tail when the response ends
    ex.tail = data
    if not ex.aborted:
        ex.downstream.write(data)


def on_upstream_done(ex: Exchange, conn: UpstreamProtocol, reusable: bool) -> None:
    """The response is complete: give the connection back and finish."""
    ex.upstream = None
    if reusable:
        conn.pool.release(conn)
    finish(ex)


def on_upstream_error(ex: Exchange, conn: UpstreamProtocol, exc: errors.UpstreamError) -> None:
    """The upstream connection failed mid-exchange (it is already closed)."""
    if ex.aborted:
        return
    if not ex.head_sent and conn.reused and not ex.t_upstream and isinstance(exc, errors.UpstreamClosed):
        # A pooled connection the provider had already closed: the request never reached
        # it, so sending it again on a fresh connection is safe. Once only.
        route = ex.route
        assert route is not None
        ex.upstream = None
        ex.gateway.pools[route.provider.id].connect_new(ex)
        return
    fail(ex, exc)
    ex.upstream = None


def fail(ex: Exchange, exc: errors.GatewayError) -> None:
    """End an exchange that went wrong: an error response if we still can, else an error event or a close."""
    if ex.done or ex.aborted:
        return
    if not ex.head_sent:
        reply_error(ex, exc)
        return
    conn = ex.upstream
    if ex.stream and conn is not None and not conn.in_chunk and not ex.close_delimited:
        # The client already has a 200 and some events, and we sit between two chunks: an
        # error event is the only honest end left (the SDKs raise on it), never a clean end
        # that looks like success. Mid-chunk, closing is the only way to say it.
        event = b"data: " + openai_error_body(exc.message, exc.type, exc.code) + b"\n\n"
        ex.downstream.write(chunk(event) + LAST_CHUNK)
    ex.close_after = True
    if not ex.status or ex.status < 400:
        ex.status = exc.status
    finish(ex)


def abort(ex: Exchange) -> None:
    """The client went away: drop the upstream connection (never pooled) and finish."""
    ex.aborted = True
    conn = ex.upstream
    if conn is not None:
        ex.upstream = None
        conn.detach()
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
    response = error_response(
        exc.status, exc.message, exc.type, exc.code, exc.param, close=close, date=gateway.date_header
    )
    reply(ex, response)


def reply(ex: Exchange, response: bytes) -> None:
    """Write a complete response built by the gateway itself, and finish."""
    downstream = ex.downstream
    assert downstream is not None
    if ex.method == b"HEAD":
        response = response[: response.find(b"\r\n\r\n") + 4]
    downstream.write(response)
    ex.head_sent = True
    finish(ex)


# finish: always runs, once


def finish(ex: Exchange) -> None:
    """Record the exchange and let the connection move on."""
    if ex.done:
        return
    ex.done = True
    ex.t_end = perf_counter()
    gateway = ex.gateway
    gateway.stats.record(ex)
    downstream = ex.downstream
    if downstream is not None:
        downstream.exchange_done(ex)


def _admin(build: Callable[[Gateway], bytes]) -> Callable[[Exchange], None]:
    def handler(ex: Exchange) -> None:
        reply(ex, build(ex.gateway))

    return handler


ENDPOINTS: dict[bytes, tuple[bytes, Callable[[Exchange], None]]] = {
    b"/v1/chat/completions": (b"POST", chat_completions),
    b"/v1/embeddings": (b"POST", embeddings),
    b"/v1/models": (b"GET", _admin(admin.models)),
    b"/healthz": (b"GET", _admin(admin.healthz)),
    b"/stats": (b"GET", _admin(admin.stats)),
}
