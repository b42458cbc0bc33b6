# The OpenAI-compatible mock: /v1/chat/completions, /v1/embeddings, /v1/models[/{id}].
#
# Renders answers in OpenAI's exact wire shape (API-FORMATS.md §1.4-1.8): JSON completions with
# `usage`; SSE streams of `data: {chunk}` events (no `event:` lines), role delta first, one event per
# token, a `finish_reason` chunk, the `choices: []` usage chunk only with
# `stream_options.include_usage`, then `data: [DONE]`; errors as {"error": {message,type,param,code}}
# with `x-request-id`. Tool calls: with `tools` and a last message from the user, the answer calls the
# first tool (or the one `tool_choice` names) with {"<first parameter>": "<last word of the prompt>"}.
# No I/O here; templates go through provider.ProviderApi's cache.

from __future__ import annotations

import base64
import random
from typing import Any

import orjson

from .config import MockConfig
from .content import (
    argument_word,
    embedding,
    first_parameter,
    floats,
    fragments,
    prompt_seed,
    prompt_tokens,
    reply_tokens,
    safe,
)
from .provider import ApiError, ProviderApi, max_tokens_field, retry_after_header
from .wire import (
    CHUNK_END,
    CREATED_SENTINEL,
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

ID_HEADER = b"x-request-id: req_" + PH_ID + b"\r\n"
_UID = PH_ID.decode()
FINGERPRINT = "fp_mock0001"
DEFAULT_DIMENSIONS = 1536
MODELS: tuple[tuple[str, int, str], ...] = (
    ("gpt-4.1", 1744316542, "system"),
    ("gpt-4.1-mini", 1744318173, "system"),
    ("gpt-4o", 1715367049, "system"),
    ("gpt-4o-mini", 1721172741, "system"),
    ("o4-mini", 1744225351, "system"),
    ("text-embedding-3-small", 1705948997, "system"),
    ("text-embedding-3-large", 1705953180, "system"),
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "requests",
}
_INJECTED: dict[int, tuple[str, str, str | None]] = {
    429: ("Rate limit reached for requests (mock provider).", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
MID_STREAM_ERROR = (
    chunk(
        b'data: {"error":{"message":"The server had an error while processing your request. Sorry about that!",'
        b'"type":"server_error","param":null,"code":null}}\n\n'
    )
    + CHUNK_END
)
_DONE = chunk(b"data: [DONE]\n\n")


class OpenAIApi(ProviderApi):
    """The OpenAI mock's endpoints and error shapes."""

    __slots__ = ("_models",)

    def __init__(self, config: MockConfig, rng: random.Random) -> None:
        super().__init__(config, rng)
        self.routes = {
            "/chat/completions": {"POST": self.chat},
            "/embeddings": {"POST": self.embeddings},
            "/models": {"GET": self.models},
        }
        self._models = json_reply(200, {"object": "list", "data": [_model(m) for m in MODELS]}, ID_HEADER)

    # -- routes ------------------------------------------------------------------------------------

    def chat(self, req: Request) -> Reply:
        """POST /v1/chat/completions."""
        return self.cached("chat", req, self._render_chat)

    def embeddings(self, req: Request) -> Reply:
        """POST /v1/embeddings."""
        return self.cached("embeddings", req, _render_embeddings)

    def models(self, req: Request) -> Reply:
        """GET /v1/models."""
        return self._models

    def model(self, req: Request) -> Reply:
        """GET /v1/models/{id}."""
        wanted = req.path.rstrip("/").rpartition("/models/")[2]
        for m in MODELS:
            if m[0] == wanted:
                return json_reply(200, _model(m), ID_HEADER)
        raise ApiError(404, f"The model '{safe(wanted)}' does not exist", param="model", code="model_not_found")

    # -- errors ------------------------------------------------------------------------------------

    def auth_error(self) -> Reply:
        """401 with `invalid_api_key`, as OpenAI answers a wrong key."""
        return self.error_reply(401, "Incorrect API key provided.", code="invalid_api_key")

    def error_reply(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        etype: str | None = None,
        extra: bytes = b"",
    ) -> Reply:
        """{"error": {"message", "type", "param", "code"}} with `x-request-id`."""
        if etype is None:
            etype = _ERROR_TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
        err = {"message": message, "type": etype, "param": param, "code": code}
        return json_reply(status, {"error": err}, ID_HEADER, extra)

    def injected_error(self, status: int, retry_after: float) -> Reply:
        """The error sent for requests picked by `error_rate`, with `retry-after` on 429/503/529."""
        message, etype, code = _INJECTED.get(status) or (reason_phrase(status), "", None)
        return self.error_reply(
            status, message, code=code, etype=etype or None, extra=retry_after_header(status, retry_after)
        )

    # -- rendering ---------------------------------------------------------------------------------

    def _render_chat(self, body: dict[str, Any], req: Request) -> Reply:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(
                400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
            )
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise ApiError(400, "Invalid 'messages': each message needs a 'role'.", param="messages")
        text = "\n".join(_message_texts(messages))
        seed = prompt_seed(text)
        cap = max_tokens_field(body, "max_completion_tokens", "max_tokens")
        call = _tool_call(body, messages, seed)
        if call is not None:
            tokens = fragments(call[1])
            finish = "tool_calls"
        else:
            n = self.config.tokens
            finish = "stop"
            if cap is not None and cap < n:
                n, finish = cap, "length"
            tokens = reply_tokens(seed, n)
        ptoks = prompt_tokens(text)
        usage = {"prompt_tokens": ptoks, "completion_tokens": len(tokens), "total_tokens": ptoks + len(tokens)}
        model = safe(model)
        if body.get("stream") is True:
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
            return _chat_stream(model, tokens, call, finish, usage if include_usage else None)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(tokens), "refusal": None, "annotations": []}
        if call is not None:
            message["content"] = None
            message["tool_calls"] = [
                {"id": "call_" + _UID, "type": "function", "function": {"name": call[0], "arguments": call[1]}}
            ]
        usage_out: dict[str, Any] = dict(usage)
        usage_out["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage_out["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
        obj = {
            "id": "chatcmpl-" + _UID,
            "object": "chat.completion",
            "created": CREATED_SENTINEL,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage_out,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        return json_reply(200, obj, ID_HEADER, timed=True)


def _chat_stream(
    model: str, tokens: list[str], call: tuple[str, str] | None, finish: str, usage: dict[str, int] | None
) -> Reply:
    # Every chunk is prefix + delta JSON + suffix; only the delta differs (saves a dumps per chunk).
    head = orjson.dumps(
        {
            "id": "chatcmpl-" + _UID,
            "object": "chat.completion.chunk",
            "created": CREATED_SENTINEL,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )
    prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
    tail = b',"usage":null}\n\n' if usage is not None else b"}\n\n"
    open_suffix = b',"logprobs":null,"finish_reason":null}]' + tail

    def frame(delta: Any, suffix: bytes = open_suffix) -> bytes:
        return chunk(prefix + orjson.dumps(delta) + suffix)

    events: list[tuple[bool, bytes]] = []
    if call is None:
        events.append((False, frame({"role": "assistant", "content": "", "refusal": None})))
        content = prefix + b'{"content":'
        close = b"}" + open_suffix
        events.extend((True, text_frame(content, t, close)) for t in tokens)
    else:
        first = {"index": 0, "id": "call_" + _UID, "type": "function", "function": {"name": call[0], "arguments": ""}}
        events.append((False, frame({"role": "assistant", "content": None, "tool_calls": [first]})))
        events.extend((True, frame({"tool_calls": [{"index": 0, "function": {"arguments": t}}]})) for t in tokens)
    events.append((False, frame({}, b',"logprobs":null,"finish_reason":"%s"}]%s' % (finish.encode(), tail))))
    if usage is not None:
        events.append(
            (False, chunk(b"data: " + head[:-1] + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n"))
        )
    events.append((False, _DONE))
    return Reply(200, stream_parts(sse_head(ID_HEADER), events), stream=True, timed=True, error_frame=MID_STREAM_ERROR)


def _render_embeddings(body: dict[str, Any], req: Request) -> Reply:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    items, ptoks = _embedding_inputs(body.get("input"))
    dims = body.get("dimensions")
    if dims is None:
        dims = DEFAULT_DIMENSIONS
    elif isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 8192:
        raise ApiError(400, "Invalid 'dimensions': expected an integer between 1 and 8192.", param="dimensions")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, "Invalid 'encoding_format': expected 'float' or 'base64'.", param="encoding_format")
    data = []
    for i, key in enumerate(items):
        packed = embedding(key, dims)
        vec: Any = base64.b64encode(packed).decode() if fmt == "base64" else floats(packed)
        data.append({"object": "embedding", "index": i, "embedding": vec})
    obj = {
        "object": "list",
        "data": data,
        "model": safe(model),
        "usage": {"prompt_tokens": ptoks, "total_tokens": ptoks},
    }
    return json_reply(200, obj, ID_HEADER, timed=True)


def _embedding_inputs(inp: Any) -> tuple[list[bytes], int]:
    """(one key per input item, prompt tokens) for a str | [str] | [int] | [[int]] input."""
    bad = ApiError(400, "Invalid 'input': expected a string, an array of strings or token arrays.", param="input")
    if isinstance(inp, str):
        return [inp.encode()], prompt_tokens(inp)
    if not isinstance(inp, list) or not inp or len(inp) > 2048:
        raise bad
    if all(isinstance(x, str) for x in inp):
        return [x.encode() for x in inp], sum(prompt_tokens(x) for x in inp)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in inp):
        return [orjson.dumps(inp)], len(inp)
    if all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in inp):
        return [orjson.dumps(x) for x in inp], sum(len(x) for x in inp)
    raise bad


def _message_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The text of each message (string content, or its text parts), in order."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return out


def _tool_call(body: dict[str, Any], messages: list[dict[str, Any]], seed: int) -> tuple[str, str] | None:
    """(function name, JSON arguments) when the answer should be a tool call, else None."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or messages[-1].get("role") != "user":
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    fns = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    fns = [f for f in fns if isinstance(f.get("name"), str)]
    if not fns:
        raise ApiError(400, "Invalid 'tools': each tool needs a function with a name.", param="tools")
    fn = fns[0]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        fn = next((f for f in fns if f["name"] == wanted), fn)
    word = argument_word("\n".join(_message_texts(messages[-1:])), seed)
    args = orjson.dumps({first_parameter(fn.get("parameters")): word}).decode()
    return safe(fn["name"]), args


def _model(m: tuple[str, int, str]) -> dict[str, Any]:
    return {"id": m[0], "object": "model", "created": m[1], "owned_by": m[2]}
