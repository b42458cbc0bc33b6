"""Where a client's API and a provider's API meet: same format, or translated. Bytes in, bytes out.

A client speaks OpenAI (`/v1/chat/completions`) or Anthropic (`/v1/messages`); a provider
speaks OpenAI (`openai`, `local`) or Anthropic (`anthropic`). When they match, the body goes
up as sent with only the model name spliced in, and the response comes back byte for byte
(the pipeline's raw relay). When they differ, `upstream_request` translates the request and a
`Translation` rebuilds the response in the client's format from the decoded upstream body:
buffered for JSON answers and errors, event by event for streams.

The translation itself lives in `proxy.translate` (pure); this module decides when to use it
and frames the result. It writes nothing: the pipeline sends what it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from proxy import body, errors, translate
from proxy.apis import ANTHROPIC, OPENAI
from proxy.translate.sse import SSEParser
from proxy.wire import CHUNKED, LAST_CHUNK, STATUS_LINE, chunk, openai_stream_error

if TYPE_CHECKING:
    from proxy.config import ProviderSettings, Route

MAX_TRANSLATED_BYTES = 64 * 1024 * 1024  # a JSON answer is buffered to be translated; bound it

_SSE_TYPE = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
STREAM_HEAD = STATUS_LINE[200] + _SSE_TYPE + CHUNKED
JSON_TYPE = b"content-type: application/json\r\n"


def provider_api(provider: ProviderSettings) -> int:
    """The API format a provider speaks."""
    return ANTHROPIC if provider.kind == "anthropic" else OPENAI


def upstream_request(
    client_api: int, endpoint: str, payload: dict[str, Any], raw: bytes, model: str, stream: bool, route: Route
) -> tuple[str, bytes, Translation | None]:
    """(endpoint, body, translation) for one attempt: the body as the provider must get it."""
    provider = route.provider
    api = provider_api(provider)
    upstream_model = route.upstream_model if route.upstream_model is not None else model.partition("/")[2]
    model_json = route.upstream_model_json if route.upstream_model is not None else orjson.dumps(upstream_model)
    try:
        if endpoint == "/embeddings":
            if api == ANTHROPIC:
                raise errors.BadRequestError(
                    f"provider {provider.name!r} (anthropic) has no embeddings endpoint", param="model"
                )
            return "/embeddings", body.replace_model(raw, payload, model_json), None
        if api == client_api:
            if api == OPENAI and stream and not translate.client_wants_usage(payload):
                # Ask for usage so spend is known, and take the extra chunk out before the client sees it.
                return "/chat/completions", _with_usage(raw, payload, model_json), UsageOnly(route)
            spliced = body.replace_model(raw, payload, model_json)
            return ("/messages" if api == ANTHROPIC else "/chat/completions"), spliced, None
        if api == ANTHROPIC:
            translated = translate.openai_to_anthropic_request(
                payload, model=upstream_model, anthropic_version=provider.anthropic_version,
                default_max_tokens=provider.default_max_tokens,
            )  # fmt: skip
            return "/messages", orjson.dumps(translated), Translation(OPENAI, upstream_model, stream, payload, raw, route)
        translated = translate.anthropic_to_openai_request(payload, model=upstream_model, for_local=provider.kind == "local")
        return "/chat/completions", orjson.dumps(translated), Translation(ANTHROPIC, upstream_model, stream, payload, raw, route)
    except orjson.JSONEncodeError:
        # orjson reads 1024 levels of nesting but writes only 254: a body that must be re-encoded
        # (escapes, a duplicate "model", another API) cannot go deeper than that.
        raise errors.BadRequestError("the request nests too deeply to be forwarded (at most 254 levels)") from None


def _with_usage(raw: bytes, payload: dict[str, Any], model_json: bytes) -> bytes:
    spliced = body.replace_model(raw, payload, model_json)
    if "stream_options" not in payload and spliced[:1] == b"{":
        return b'{"stream_options":{"include_usage":true},' + spliced[1:]  # no re-encoding
    payload = dict(payload)
    payload["model"] = orjson.loads(model_json)
    options = payload.get("stream_options")
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(payload)


class Translation:
    """Rebuilds one upstream response in the client's format, from its decoded body.

    `body` takes decoded pieces; `flush` returns what one upstream read produced for the client
    (one write per read: 20 SSE events in one read were 20 syscalls, strace in bench/), and
    `take_kept` the same in the client's format for the cache, unframed."""

    __slots__ = (
        "client_api", "model", "stream_mode", "wants_usage", "input_estimate", "secret", "status", "extra",
        "stream", "streaming", "parts", "size", "tokens_in", "tokens_out", "outbox", "kept", "keeping", "errored",
    )  # fmt: skip

    def __init__(
        self, client_api: int, model: str, stream: bool, payload: dict[str, Any], raw: bytes, route: Route
    ) -> None:
        self.client_api = client_api
        self.model = model  # the upstream model: answers name who answered, as relayed ones do
        self.stream_mode = stream
        self.wants_usage = translate.client_wants_usage(payload)
        self.input_estimate = len(raw) // 4
        key = route.provider.api_key
        self.secret = key.encode("latin-1", "replace") if key else b""
        self.status = 0
        self.extra = b""  # header lines carried over from the provider's head (Retry-After)
        self.stream: translate.AnthropicToOpenAIStream | translate.OpenAIToAnthropicStream | None = None
        self.streaming = False  # the client's answer is a stream, started by `head`
        self.parts: list[bytes] = []
        self.size = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.outbox: list[bytes] = []
        self.kept: list[bytes] = []  # the client-format payload, for the cache when `keeping`
        self.keeping = False
        self.errored = False  # the client's stream ended with an error event

    def head(self, status: int) -> bytes | None:
        """The upstream head was accepted: the client's head prefix if its answer streams, else None
        (a buffered answer is framed whole by `answer`)."""
        self.status = status
        if status != 200 or not self.stream_mode:
            return None
        if self.client_api == OPENAI:
            self.stream = translate.AnthropicToOpenAIStream(self.model, include_usage=self.wants_usage)
        else:
            self.stream = translate.OpenAIToAnthropicStream(self.model, input_tokens=self.input_estimate)
        self.streaming = True
        return STREAM_HEAD

    def body(self, data: bytes) -> None:
        """One decoded piece of the upstream body."""
        stream = self.stream
        if stream is not None:
            out = stream.feed(data)
            if out:
                self.outbox.append(chunk(out))
                if self.keeping:
                    self.kept.append(out)
            return
        self.size += len(data)
        if self.size > MAX_TRANSLATED_BYTES:
            raise errors.UpstreamProtocolError("the provider's answer is too large to translate")
        self.parts.append(data)

    def flush(self) -> bytes:
        outbox = self.outbox
        if not outbox:
            return b""
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        return data

    def take_kept(self) -> bytes:
        kept = self.kept
        if not kept:
            return b""
        data = b"".join(kept)
        kept.clear()
        return data

    def end_stream(self) -> bytes:
        """The upstream stream is complete: the client's closing bytes."""
        stream = self.stream
        assert stream is not None
        out = stream.close()  # b"" after a clean end; an error frame if the upstream cut it short
        self.outbox.append((chunk(out) if out else b"") + LAST_CHUNK)
        self.tokens_in, self.tokens_out = stream.input_tokens, stream.output_tokens
        self.errored = stream.errored
        return self.flush()

    def answer(self) -> tuple[int, bytes]:
        """A buffered answer is complete: (status, body) in the client's format."""
        raw = b"".join(self.parts)
        status = self.status
        if status >= 400:
            if self.secret:  # a provider that echoes the credential in its error never gets it to the client
                raw = raw.replace(self.secret, b"*" * len(self.secret))
            if self.client_api == OPENAI:
                return translate.to_openai_error(status, raw)
            return translate.to_anthropic_error(status, raw)
        out = self._translate_answer(raw)
        if self.keeping:
            self.kept.append(out)
        return status, out

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
    def completed(self) -> bool:
        """True when a streamed answer ended cleanly (no error event, not cut short)."""
        stream = self.stream
        return stream is not None and stream.complete and not stream.errored


class UsageOnly(Translation):
    """An OpenAI stream relayed to an OpenAI client as it is, but for the usage chunk the gateway
    asked for: its tokens are counted, and the chunk is dropped before the client sees it."""

    __slots__ = ("parser", "done_seen")

    def __init__(self, route: Route) -> None:
        super().__init__(OPENAI, "", True, {}, b"", route)
        self.parser = SSEParser()
        self.done_seen = False

    @property
    def completed(self) -> bool:
        return self.done_seen

    def head(self, status: int) -> bytes | None:
        self.status = status
        self.streaming = status == 200
        return STREAM_HEAD if status == 200 else None  # an error answer: relayed whole by `answer`

    def body(self, data: bytes) -> None:
        if self.status != 200:
            super().body(data)
            return
        if self.keeping:
            self.kept.append(data)  # the whole stream, usage included, is what the cache keeps
        if self.parser.idle and data.endswith(b"\n\n") and b'"choices":[]' not in data:
            # Whole events, none of them the usage chunk: no parsing. Only the stream's last
            # event may be its terminator; model output cannot end a read with it.
            self.done_seen = data.endswith(b"data: [DONE]\n\n")
            self.outbox.append(chunk(data))
            return
        kept = []
        for _name, payload in self.parser.feed(data):
            self.done_seen = payload == b"[DONE]"
            if payload.startswith(b"{") and b'"choices":[]' in payload:
                usage = orjson.loads(payload).get("usage")
                if isinstance(usage, dict):  # a usage chunk; Azure's prompt_filter_results chunks have none
                    self.tokens_in = int(usage.get("prompt_tokens") or 0)
                    self.tokens_out = int(usage.get("completion_tokens") or 0)
                    continue
            kept.append(b"data: " + payload + b"\n\n")
        if kept:
            self.outbox.append(chunk(b"".join(kept)))

    def end_stream(self) -> bytes:
        if not self.done_seen:  # the provider ended without its terminator: say so, never end cleanly
            self.outbox.append(chunk(self.error_event("the provider ended the stream before it was complete", "")))
            self.errored = True
        self.outbox.append(LAST_CHUNK)
        return self.flush()

    def answer(self) -> tuple[int, bytes]:
        raw = b"".join(self.parts)
        if self.secret:
            raw = raw.replace(self.secret, b"*" * len(self.secret))
        return self.status, raw

    def error_event(self, message: str, type_: str) -> bytes:
        return openai_stream_error(message, type_ or "server_error")
