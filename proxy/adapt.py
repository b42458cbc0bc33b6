"""Where a client's API and a provider's API meet: same format, or translated.

A client speaks OpenAI (`/v1/chat/completions`) or Anthropic (`/v1/messages`); a provider
speaks OpenAI (`openai`, `local`) or Anthropic (`anthropic`). When they match, the body goes
up as sent with only the model name spliced in, and the response comes back byte for byte
(pipeline's raw relay). When they differ, `upstream_request` translates the request and a
`Translation` rebuilds the response in the client's format from the decoded upstream body:
buffered for JSON answers and errors, event by event for streams.

The translation itself lives in `proxy.translate` (pure); this module only decides when to
use it and frames the result for the client. Nothing here does I/O beyond
`downstream.write`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from proxy import body, caching, errors, translate
from proxy.limits import cost_header, cost_nusd
from proxy.translate.error_bodies import anthropic_type_for_status
from proxy.translate.sse import SSEParser
from proxy.wire import CHUNKED, LAST_CHUNK, NO_BUFFERING, STATUS_LINE, chunk

if TYPE_CHECKING:
    from proxy.config import ProviderSettings, Route
    from proxy.exchange import Exchange

OPENAI, ANTHROPIC = 0, 1  # API formats, for clients and providers alike
MAX_TRANSLATED_BYTES = 64 * 1024 * 1024  # a JSON answer is buffered to be translated; bound it

_SSE_TYPE = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
_STREAM_HEAD = STATUS_LINE[200] + _SSE_TYPE + CHUNKED + NO_BUFFERING
_JSON_TYPE = b"content-type: application/json\r\n"


def provider_api(provider: ProviderSettings) -> int:
    """The API format a provider speaks."""
    return ANTHROPIC if provider.kind == "anthropic" else OPENAI


def upstream_request(ex: Exchange, route: Route) -> tuple[str, bytes, Translation | None]:
    """(endpoint, body, translation) for this attempt: the body as the provider must get it."""
    provider = route.provider
    api = provider_api(provider)
    payload = ex.payload
    assert payload is not None
    upstream_model = route.upstream_model if route.upstream_model is not None else ex.model.partition("/")[2]
    if ex.endpoint == "/embeddings":
        if api == ANTHROPIC:
            raise errors.BadRequestError(f"provider {provider.name!r} (anthropic) has no embeddings endpoint", param="model")
        return "/embeddings", _spliced(ex, route, upstream_model), None
    if api == ex.api:
        if api == OPENAI and ex.stream and not translate.client_wants_usage(payload):
            # Ask for usage so spend is known, and take the extra chunk out before the client sees it.
            return "/chat/completions", _with_usage(ex, route, upstream_model), UsageOnly(ex)
        return ("/messages" if api == ANTHROPIC else "/chat/completions"), _spliced(ex, route, upstream_model), None
    if api == ANTHROPIC:
        translated = translate.openai_to_anthropic_request(
            payload, model=upstream_model, anthropic_version=provider.anthropic_version,
            default_max_tokens=provider.default_max_tokens,
        )  # fmt: skip
        return "/messages", orjson.dumps(translated), Translation(ex, OPENAI, upstream_model)
    translated = translate.anthropic_to_openai_request(payload, model=upstream_model, for_local=provider.kind == "local")
    return "/chat/completions", orjson.dumps(translated), Translation(ex, ANTHROPIC, upstream_model)


def _with_usage(ex: Exchange, route: Route, upstream_model: str) -> bytes:
    spliced = _spliced(ex, route, upstream_model)
    assert ex.payload is not None
    if "stream_options" not in ex.payload and spliced[:1] == b"{":
        return b'{"stream_options":{"include_usage":true},' + spliced[1:]  # no re-encoding
    payload = dict(ex.payload)
    payload["model"] = upstream_model
    options = payload.get("stream_options")
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(payload)


def _spliced(ex: Exchange, route: Route, upstream_model: str) -> bytes:
    model_json = route.upstream_model_json if route.upstream_model is not None else orjson.dumps(upstream_model)
    assert ex.payload is not None
    return body.replace_model(ex.body, ex.payload, model_json)


class Translation:
    """Rebuilds one upstream response in the client's format, from its decoded body."""

    __slots__ = (
        "ex", "client_api", "model", "status", "extra", "stream", "parts", "size", "tokens_in", "tokens_out", "outbox",
    )  # fmt: skip

    def __init__(self, ex: Exchange, client_api: int, model: str) -> None:
        self.ex = ex
        self.client_api = client_api
        self.model = model  # the upstream model: answers name who answered, as relayed ones do
        self.status = 0
        self.extra = b""  # header lines carried over from the provider's head (Retry-After)
        self.stream: translate.AnthropicToOpenAIStream | translate.OpenAIToAnthropicStream | None = None
        self.parts: list[bytes] = []
        self.size = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.outbox: list[bytes] = []  # what one upstream read produced, written once by `flush`

    def send(self, data: bytes) -> None:
        """Queue bytes for the client; `flush` writes everything one upstream read produced at once."""
        self.outbox.append(data)

    def flush(self) -> None:
        """One write per upstream read: 20 SSE events in one read were 20 syscalls (strace, bench/)."""
        outbox = self.outbox
        if not outbox:
            return
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        ex = self.ex
        if ex.followers:
            caching.relay(ex, data)  # live cache followers get the same stream
        else:
            ex.downstream.write(data)

    def head(self, status: int, ours: bytes) -> bool:
        """The upstream head was accepted: start the client's response if it streams (True then)."""
        ex = self.ex
        self.status = status
        if status != 200 or not ex.stream:
            return False  # buffered: written whole by `done`
        assert ex.payload is not None
        if self.client_api == OPENAI:
            wants_usage = translate.client_wants_usage(ex.payload)
            self.stream = translate.AnthropicToOpenAIStream(self.model, include_usage=wants_usage)
        else:
            self.stream = translate.OpenAIToAnthropicStream(self.model, input_tokens=len(ex.body) // 4)
        caching.relay_head(ex, _STREAM_HEAD, ours)
        ex.chunked_out = True
        return True

    def body(self, data: bytes) -> None:
        """One decoded piece of the upstream body."""
        stream = self.stream
        if stream is not None:
            out = stream.feed(data)
            if out:
                self.send(chunk(out))
                if self.ex.capture is not None:
                    self.ex.capture.append(out)  # the client-format stream, for the cache
            return
        self.size += len(data)
        if self.size > MAX_TRANSLATED_BYTES:
            raise errors.UpstreamProtocolError("the provider's answer is too large to translate")
        self.parts.append(data)

    def done(self, ours: bytes) -> None:
        """The upstream body is complete: finish the client's response."""
        ex = self.ex
        stream = self.stream
        if stream is not None:
            out = stream.close()  # b"" after a clean end; an error frame if the upstream cut it short
            self.send((chunk(out) if out else b"") + LAST_CHUNK)
            self.flush()
            self.tokens_in, self.tokens_out = stream.input_tokens, stream.output_tokens
            if stream.errored:
                ex.close_after = True
            return
        raw = b"".join(self.parts)
        status = self.status
        if status >= 400:
            route = ex.route
            key = route.provider.api_key if route is not None else None
            if key:  # a provider that echoes the credential in its error never gets it to the client
                raw = raw.replace(key.encode("latin-1", "replace"), b"*" * len(key))
            if self.client_api == OPENAI:
                status, out_body = translate.to_openai_error(status, raw)
            else:
                status, out_body = translate.to_anthropic_error(status, raw)
        else:
            out_body = self._translate_answer(raw)
            if ex.capture is not None:
                ex.capture.append(out_body)
            route = ex.route
            assert route is not None
            ours += cost_header(cost_nusd(self.tokens_in, self.tokens_out, route.input_per_mtok, route.output_per_mtok))
        ex.downstream.write(
            STATUS_LINE[status] + _JSON_TYPE + b"content-length: %d\r\n" % len(out_body) + ours + b"\r\n" + out_body
        )

    def _translate_answer(self, raw: bytes) -> bytes:
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise errors.UpstreamProtocolError("the provider answered 200 with a body that is not JSON") from None
        if not isinstance(answer, dict):
            raise errors.UpstreamProtocolError("the provider answered 200 with JSON that is not an object")
        if self.client_api == OPENAI:
            self.tokens_in, self.tokens_out = translate.usage_from_anthropic(answer)
            return orjson.dumps(translate.anthropic_to_openai_response(answer, model=self.model))
        self.tokens_in, self.tokens_out = translate.usage_from_openai(answer)
        return orjson.dumps(translate.openai_to_anthropic_response(answer, model=self.model))

    def error_event(self, message: str, type_: str) -> bytes:
        """The client format's mid-stream error frame (b"" if the stream already ended)."""
        return self.stream.error(message, type_) if self.stream is not None else b""

    @property
    def streaming(self) -> bool:
        """True once the client's streamed response has started."""
        return self.ex.chunked_out

    @property
    def completed(self) -> bool:
        """True when a streamed answer ended cleanly (no error event, not cut short)."""
        stream = self.stream
        return stream is not None and stream.complete and not stream.errored


class UsageOnly(Translation):
    """An OpenAI stream relayed to an OpenAI client as it is, but for the usage chunk the gateway
    asked for: its tokens are counted, and the chunk is dropped before the client sees it."""

    __slots__ = ("parser", "done_seen")

    def __init__(self, ex: Exchange) -> None:
        super().__init__(ex, OPENAI, ex.model)
        self.parser = SSEParser()
        self.done_seen = False

    @property
    def completed(self) -> bool:
        return self.done_seen

    def head(self, status: int, ours: bytes) -> bool:
        self.status = status
        if status != 200:
            return False  # an error answer: relayed whole by `done`
        caching.relay_head(self.ex, _STREAM_HEAD, ours)
        self.ex.chunked_out = True
        return True

    def body(self, data: bytes) -> None:
        if self.status != 200:
            super().body(data)
            return
        ex = self.ex
        if ex.capture is not None:
            ex.capture.append(data)  # the whole stream, usage included, is what the cache keeps
        if b"data: [DONE]" in data:
            self.done_seen = True
        if self.parser.idle and data.endswith(b"\n\n") and b'"choices":[]' not in data:
            self.send(chunk(data))  # whole events, none of them the usage chunk: no parsing
            return
        kept = []
        for _name, payload in self.parser.feed(data):
            if payload == b"[DONE]":
                self.done_seen = True
            if payload.startswith(b"{") and b'"choices":[]' in payload:
                usage = orjson.loads(payload).get("usage") or {}
                self.tokens_in = int(usage.get("prompt_tokens") or 0)
                self.tokens_out = int(usage.get("completion_tokens") or 0)
                continue
            kept.append(b"data: " + payload + b"\n\n")
        if kept:
            self.send(chunk(b"".join(kept)))

    def done(self, ours: bytes) -> None:
        if self.status != 200:
            raw = b"".join(self.parts)
            route = self.ex.route
            key = route.provider.api_key if route is not None else None
            if key:
                raw = raw.replace(key.encode("latin-1", "replace"), b"*" * len(key))
            self.ex.downstream.write(
                STATUS_LINE[self.status] + _JSON_TYPE + b"content-length: %d\r\n" % len(raw) + ours + b"\r\n" + raw
            )
            return
        if not self.done_seen:  # the provider ended without its terminator: say so, never end cleanly
            self.send(chunk(self.error_event("the provider ended the stream before it was complete", "server_error")))
        self.send(LAST_CHUNK)
        self.flush()

    def error_event(self, message: str, type_: str) -> bytes:
        return b"data: " + orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": None}}) + b"\n\n"


def anthropic_error_body(status: int, message: str) -> bytes:
    """Anthropic's error shape for the gateway's own errors."""
    return orjson.dumps({"type": "error", "error": {"type": anthropic_type_for_status(status), "message": message}})


def anthropic_stream_error(message: str, status: int) -> bytes:
    """Anthropic's mid-stream error event."""
    payload = orjson.dumps({"type": "error", "error": {"type": anthropic_type_for_status(status), "message": message}})
    return b"event: error\ndata: " + payload + b"\n\n"


def anthropic_models_body(names: list[str], created: str) -> bytes:
    """`GET /v1/models` in Anthropic's shape."""
    data: list[dict[str, Any]] = [
        {"type": "model", "id": name, "display_name": name, "created_at": created} for name in names
    ]
    return orjson.dumps(
        {"data": data, "has_more": False, "first_id": names[0] if names else None, "last_id": names[-1] if names else None}
    )
