# The Anthropic Messages mock: /v1/messages, /v1/messages/count_tokens, /v1/models[/{id}].
#
# Renders answers in Anthropic's exact wire shape (API-FORMATS.md §2.3-2.6): Message objects with
# content blocks, `stop_reason` and usage; SSE streams where every event has an `event:` line
# (message_start, content_block_start, ping, content_block_delta per token, content_block_stop,
# message_delta with stop_reason and usage.output_tokens, message_stop; no [DONE]); errors as
# {"type": "error", "error": {type, message}} with a `request-id` header. Like the real API it
# requires the `anthropic-version` header and `max_tokens`, and with version 2026-10-21 it rejects
# temperature/top_p/top_k. Tool use: with `tools` and a last user turn that is not a tool_result, the
# answer is a short text block then a `tool_use` block (streamed as input_json_delta).
# No I/O here; templates go through provider.ProviderApi's cache.

from __future__ import annotations

import random
from typing import Any

import orjson

from .config import MockConfig
from .content import argument_word, first_parameter, fragments, prompt_seed, prompt_tokens, reply_tokens, safe
from .provider import ApiError, ProviderApi, bearer, max_tokens_field, retry_after_header
from .wire import (
    CHUNK_END,
    PH_ID,
    Reply,
    Request,
    chunk,
    json_reply,
    reason_phrase,
    sse_head,
    stream_parts,
    text_frame,
)

ID_HEADER = b"request-id: req_" + PH_ID + b"\r\n"
_UID = PH_ID.decode()
TOOL_PREFIX_TOKENS = 3  # text tokens before a tool_use block, as Claude usually says something first
VERSION_WITHOUT_SAMPLING = b"2026-10-21"
MODELS: tuple[tuple[str, str, str], ...] = (
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_INJECTED_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit (mock provider).",
    500: "Internal server error",
    529: "Overloaded",
}
MID_STREAM_ERROR = (
    chunk(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    + CHUNK_END
)


class AnthropicApi(ProviderApi):
    """The Anthropic mock's endpoints and error shapes."""

    __slots__ = ("_models",)

    def __init__(self, config: MockConfig, rng: random.Random) -> None:
        super().__init__(config, rng)
        self.routes = {
            "/messages": {"POST": self.messages},
            "/messages/count_tokens": {"POST": self.count_tokens},
            "/models": {"GET": self.models},
        }
        data = [_model(m) for m in MODELS]
        listing = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        self._models = json_reply(200, listing, ID_HEADER)

    # -- routes ------------------------------------------------------------------------------------

    def messages(self, req: Request) -> Reply:
        """POST /v1/messages."""
        return self.cached("messages", req, self._render_message)

    def count_tokens(self, req: Request) -> Reply:
        """POST /v1/messages/count_tokens."""
        return self.cached("count_tokens", req, _render_count)

    def models(self, req: Request) -> Reply:
        """GET /v1/models (one page, `has_more: false`)."""
        return self._models

    def model(self, req: Request) -> Reply:
        """GET /v1/models/{id}."""
        wanted = req.path.rstrip("/").rpartition("/models/")[2]
        for m in MODELS:
            if m[0] == wanted:
                return json_reply(200, _model(m), ID_HEADER)
        raise ApiError(404, f"model: {safe(wanted)}")

    # -- checks and errors -------------------------------------------------------------------------

    def authorized(self, req: Request, key: bytes) -> bool:
        """`x-api-key: KEY` (curl, older SDKs) or `Authorization: Bearer KEY` (SDK >= 2.0)."""
        return req.x_api_key == key or bearer(req.authorization) == key

    def precheck(self, req: Request) -> Reply | None:
        """400 without an `anthropic-version` header, as the real API answers."""
        if req.anthropic_version is None:
            return self.error_reply(400, "anthropic-version: header is required")
        return None

    def auth_error(self) -> Reply:
        """401 `authentication_error`."""
        return self.error_reply(401, "invalid x-api-key")

    def error_reply(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None, extra: bytes = b""
    ) -> Reply:
        """{"type": "error", "error": {"type", "message"}, "request_id"} with `request-id`."""
        etype = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
        obj = {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_" + _UID}
        return json_reply(status, obj, ID_HEADER, extra)

    def injected_error(self, status: int, retry_after: float) -> Reply:
        """The error sent for requests picked by `error_rate`, with `retry-after` on 429/503/529."""
        message = _INJECTED_MESSAGES.get(status) or reason_phrase(status)
        return self.error_reply(status, message, extra=retry_after_header(status, retry_after))

    # -- rendering ---------------------------------------------------------------------------------

    def _render_message(self, body: dict[str, Any], req: Request) -> Reply:
        model, messages, text = _validate(body)
        if body.get("max_tokens") is None:
            raise ApiError(400, "max_tokens: Field required")
        cap = max_tokens_field(body, "max_tokens")
        if req.anthropic_version == VERSION_WITHOUT_SAMPLING:
            for name in ("temperature", "top_p", "top_k"):
                if name in body:
                    raise ApiError(400, f"{name}: is not supported with anthropic-version 2026-10-21")
        seed = prompt_seed(text)
        n = self.config.tokens if cap is None else min(cap, self.config.tokens)
        tool = _tool_use(body, messages, seed)
        if tool is not None:
            words = reply_tokens(seed, min(TOOL_PREFIX_TOKENS, n))
            pieces = fragments(tool[1])
            stop = "tool_use"
        else:
            words = reply_tokens(seed, n)
            pieces = []
            stop = "max_tokens" if cap is not None and cap < self.config.tokens else "end_turn"
        usage = {"input_tokens": prompt_tokens(text), "output_tokens": len(words) + len(pieces)}
        model = safe(model)
        if body.get("stream") is True:
            return _message_stream(model, words, tool, pieces, stop, usage)
        content: list[dict[str, Any]] = []
        if words:
            content.append({"type": "text", "text": "".join(words)})
        if tool is not None:
            content.append({"type": "tool_use", "id": "toolu_" + _UID, "name": tool[0], "input": orjson.loads(tool[1])})
        obj = {
            "id": "msg_" + _UID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "output_tokens": usage["output_tokens"],
                "service_tier": "standard",
            },
        }
        return json_reply(200, obj, ID_HEADER, timed=True)


def _message_stream(
    model: str, words: list[str], tool: tuple[str, str] | None, pieces: list[str], stop: str, usage: dict[str, int]
) -> Reply:
    def ev(name: bytes, obj: Any) -> bytes:
        return chunk(b"event: %s\ndata: %s\n\n" % (name, orjson.dumps(obj)))

    start_usage = {
        "input_tokens": usage["input_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
        "service_tier": "standard",
    }
    message: dict[str, Any] = {
        "id": "msg_" + _UID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events: list[tuple[bool, bytes]] = [(False, ev(b"message_start", {"type": "message_start", "message": message}))]
    ping = (False, ev(b"ping", {"type": "ping"}))
    index = 0
    if words:
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        events += [(False, ev(b"content_block_start", block)), ping]
        text_prefix = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":'
        )
        events.extend((True, text_frame(text_prefix, w, b"}}\n\n")) for w in words)
        events.append((False, ev(b"content_block_stop", {"type": "content_block_stop", "index": 0})))
        index = 1
    else:
        events.append(ping)
    if tool is not None:
        block = {"type": "tool_use", "id": "toolu_" + _UID, "name": tool[0], "input": {}}
        events.append(
            (False, ev(b"content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        )
        json_prefix = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
            b'"delta":{"type":"input_json_delta","partial_json":' % index
        )
        events.append((False, chunk(json_prefix + b'""}}\n\n')))  # the real API often opens with ""
        events.extend((True, chunk(json_prefix + orjson.dumps(p) + b"}}\n\n")) for p in pieces)
        events.append((False, ev(b"content_block_stop", {"type": "content_block_stop", "index": index})))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    events.append((False, ev(b"message_delta", delta)))
    events.append((False, ev(b"message_stop", {"type": "message_stop"})))
    return Reply(200, stream_parts(sse_head(ID_HEADER), events), stream=True, timed=True, error_frame=MID_STREAM_ERROR)


def _render_count(body: dict[str, Any], req: Request) -> Reply:
    _, _, text = _validate(body)
    return json_reply(200, {"input_tokens": prompt_tokens(text)}, ID_HEADER)


def _validate(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    """(model, messages, prompt text) of a Messages body; `ApiError` 400 when malformed."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: Field required")
    if not all(isinstance(m, dict) and m.get("role") in ("user", "assistant", "system") for m in messages):
        raise ApiError(400, "messages: each message needs a role of 'user' or 'assistant'")
    texts = _block_texts(body.get("system"))
    for m in messages:
        texts.extend(_block_texts(m.get("content")))
    return model, messages, "\n".join(texts)


def _block_texts(content: Any) -> list[str]:
    """Text of a string or of text/tool_result blocks (what the prompt-derived output hashes)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                out.append(block["text"])
            elif block.get("type") == "tool_result":
                out.extend(_block_texts(block.get("content")))
    return out


def _tool_use(body: dict[str, Any], messages: list[dict[str, Any]], seed: int) -> tuple[str, str] | None:
    """(tool name, JSON input) when the answer should use a tool, else None."""
    tools = body.get("tools")
    last = messages[-1]
    if not isinstance(tools, list) or not tools or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "none":
        return None
    named = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
    if not named:
        raise ApiError(400, "tools: each tool needs a name")
    tool = named[0]
    if isinstance(choice, dict) and choice.get("type") == "tool":
        tool = next((t for t in named if t["name"] == choice.get("name")), tool)
    word = argument_word("\n".join(_block_texts(content)), seed)
    return safe(tool["name"]), orjson.dumps({first_parameter(tool.get("input_schema")): word}).decode()


def _model(m: tuple[str, str, str]) -> dict[str, Any]:
    return {"type": "model", "id": m[0], "display_name": m[1], "created_at": m[2]}
