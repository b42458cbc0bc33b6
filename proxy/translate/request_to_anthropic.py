# proxy/translate/request_to_anthropic.py: OpenAI chat request body -> Anthropic Messages body.
#
# Owns: the request half of "OpenAI client, Claude upstream" (API-FORMATS §3.1, §3.9).
# Input is the client's parsed JSON body, output a new dict ready for orjson; the input is
# never mutated. Strict by default: anything whose meaning cannot be carried over raises
# `BadRequestError` naming the param (a 400 the client can read). Two kinds of drop are allowed,
# and each dropped name is appended to the caller's `dropped` list so the gateway can report
# it (e.g. `x-gateway-dropped-params`): sampling params the target version or model rejects
# (`anthropic-version` 2026-10-21+), and, only with `drop_params=True`, OpenAI extras with no
# Anthropic slot (penalties, logit_bias, seed, logprobs, reasoning_effort, verbosity).
# Ignored without a trace, because they do not change the generated text: store, metadata,
# service_tier, prompt_cache_*, stream_options, image `detail`, message `name`, tool `strict`.
# Nothing here does I/O.
from __future__ import annotations

import re
from typing import Any

import orjson

from proxy.errors import BadRequestError
from proxy.translate.ids import anthropic_tool_id

SAMPLING_REMOVED_IN = "2026-10-21"  # this version answers 400 to temperature/top_p/top_k (§0.1, §2.2)
DEFAULT_MAX_TOKENS = 4096  # LiteLLM's default; Anthropic requires max_tokens, OpenAI does not
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PERSONAL = re.compile(r"[^@\s]+@[^@\s]+|\+?[\d\s().-]{7,}")

# Accepted and ignored: they change nothing in the generated output.
_IGNORED = frozenset(
    {"stream_options", "store", "metadata", "service_tier", "prompt_cache_key", "prompt_cache_retention"}
)
# No Anthropic equivalent; dropped only with drop_params=True, else 400. A value equal to
# the OpenAI default (the listed one) asks for nothing and is accepted.
_DROPPABLE: dict[str, Any] = {
    "logit_bias": {},
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "top_logprobs": 0,
    "seed": None,
    "reasoning_effort": None,
    "verbosity": None,
}
# No Anthropic equivalent and dropping would change the answer's shape: always 400.
_REJECTED = frozenset({"audio", "prediction", "web_search_options", "functions", "function_call"})


def sampling_allowed(anthropic_version: str) -> bool:
    """True when `anthropic_version` still accepts temperature/top_p/top_k.

    Versions are ISO dates compared as strings. A value that is not a date is treated as a
    new version (sampling dropped): forwarding it could only earn a 400.
    """
    return _DATE.fullmatch(anthropic_version) is not None and anthropic_version < SAMPLING_REMOVED_IN


def _unsupported(param: str, detail: str = "") -> BadRequestError:
    msg = f"{param} is not supported when the upstream is an Anthropic model" + (f": {detail}" if detail else "")
    return BadRequestError(msg, param=param, code="unsupported_parameter")


def _number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | int:
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise BadRequestError(f"{key} must be a number between {lo:g} and {hi:g} for Anthropic models", param=key)
    return v


def _int(body: dict[str, Any], key: str) -> int:
    v = body[key]
    if type(v) is not int or v < 0:
        raise BadRequestError(f"{key} must be a non-negative integer", param=key)
    return v


def openai_to_anthropic_request(
    body: dict[str, Any],
    *,
    model: str,
    anthropic_version: str = "2023-06-01",
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    allow_sampling: bool | None = None,
    drop_params: bool = False,
    dropped: list[str] | None = None,
) -> dict[str, Any]:
    """Translate an OpenAI `/v1/chat/completions` body into an Anthropic `/v1/messages` body.

    `model` is the upstream model name. `anthropic_version` is the version the upstream
    request will carry; `allow_sampling` overrides the version rule (pass False for models
    that accept only default sampling). `default_max_tokens` is used when the client sent
    neither `max_completion_tokens` nor `max_tokens`. Dropped param names are appended to
    `dropped`. Raises `BadRequestError` (400, with `param`) for anything untranslatable.
    """
    if allow_sampling is None:
        allow_sampling = sampling_allowed(anthropic_version)
    if dropped is None:
        dropped = []
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequestError("messages must be a non-empty array", param="messages")
    system: list[dict[str, Any]] = []
    out: dict[str, Any] = {"model": model, "max_tokens": default_max_tokens}
    messages = _messages(msgs, system)
    if system:
        out["system"] = _collapse(system)
    out["messages"] = messages
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    no_parallel = False
    user_id: str | None = None
    for key, value in body.items():
        if value is None or key in ("messages", "model") or key in _IGNORED:
            continue
        if key == "max_completion_tokens":
            out["max_tokens"] = _int(body, key)
        elif key == "max_tokens":
            if body.get("max_completion_tokens") is None:
                out["max_tokens"] = _int(body, key)
        elif key == "stream":
            out["stream"] = bool(value)
        elif key == "stop":
            stops = _stop(value)
            if stops:
                out["stop_sequences"] = stops
        elif key in ("temperature", "top_p", "top_k"):
            if not allow_sampling:
                dropped.append(key)
            elif key == "top_k":
                out[key] = _int(body, key)
            else:
                out[key] = _number(body, key, 0, 1)
        elif key == "tools":
            tools = _tools(value)
        elif key == "tool_choice":
            tool_choice = _tool_choice(value)
        elif key == "parallel_tool_calls":
            no_parallel = value is False
        elif key in ("user", "safety_identifier"):
            if isinstance(value, str) and value and not _PERSONAL.fullmatch(value):
                user_id = value
        elif key == "n":
            if value != 1 or type(value) is not int:
                msg = f"n>1 is not supported for {model}" if type(value) is int and value > 1 else "n must be 1"
                raise BadRequestError(msg, param="n", code="unsupported_parameter")
        elif key == "response_format":
            fmt = _response_format(value)
            if fmt is not None:
                out["output_config"] = {"format": fmt}
        elif key == "modalities":
            if value != ["text"]:
                raise _unsupported(key, "only text output is available")
        elif key == "thinking":  # Anthropic-native extension some OpenAI clients send in extra_body
            out["thinking"] = value
        elif key in _DROPPABLE:
            default = _DROPPABLE[key]
            if default is not None and value == default and isinstance(value, bool) == isinstance(default, bool):
                continue
            if not drop_params:
                raise _unsupported(key)
            dropped.append(key)
        elif key in _REJECTED:
            raise _unsupported(key)
        else:
            raise _unsupported(key, "unknown parameter")
    if tools:
        out["tools"] = tools
        if no_parallel and (tool_choice is None or tool_choice["type"] != "none"):
            tool_choice = dict(tool_choice or {"type": "auto"})
            tool_choice["disable_parallel_tool_use"] = True
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
    # Without tools a tool_choice means nothing, and Anthropic rejects it: leave it out.
    if user_id is not None:
        out["metadata"] = {"user_id": user_id}
    return out


def client_wants_usage(body: dict[str, Any]) -> bool:
    """True when an OpenAI streaming request asked for the final usage chunk."""
    so = body.get("stream_options")
    return isinstance(so, dict) and so.get("include_usage") is True


# messages


def _messages(msgs: list[Any], system: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequestError(f"{where} must be an object", param=where)
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            system.extend(_text_blocks(content, where))
            continue
        if role == "user":
            blocks = _user_blocks(content, where)
        elif role == "assistant":
            blocks = _assistant_blocks(m, where)
        elif role == "tool":
            blocks = [_tool_result(m, where)]
            role = "user"
        else:
            raise BadRequestError(f"{where}.role {role!r} is not supported for Anthropic models", param=f"{where}.role")
        if not blocks:
            continue
        if out and out[-1]["role"] == role:  # Anthropic wants alternating turns: merge
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if out and out[-1]["role"] == "assistant":
        _strip_prefill(out)
    if not out:
        raise BadRequestError("messages must contain at least one non-empty user or assistant message", param="messages")
    for m in out:
        m["content"] = _collapse(m["content"])
    return out


def _collapse(blocks: list[dict[str, Any]]) -> Any:
    """A lone plain text block is sent as a string (same meaning, smaller)."""
    if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:
        return blocks[0]["text"]
    return blocks


def _strip_prefill(out: list[dict[str, Any]]) -> None:
    # A final assistant turn is a prefill and must not end in whitespace (§2.2).
    blocks = out[-1]["content"]
    while blocks and blocks[-1]["type"] == "text":
        text = blocks[-1]["text"].rstrip()
        if text:
            blocks[-1] = {**blocks[-1], "text": text}
            return
        blocks.pop()
    if not blocks:
        out.pop()


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):  # Anthropic rejects whitespace-only text blocks: drop them
        return [{"type": "text", "text": content}] if content.strip() else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise BadRequestError(f"{where}.content must be a string or an array", param=f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadRequestError(f"{where}.content[{j}] must be a text part", param=f"{where}.content[{j}]")
        blocks.append(_text_block(part))
    return [b for b in blocks if b["text"].strip()]


def _text_block(part: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": part["text"]}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        pw = f"{where}.content[{j}]"
        ptype = part.get("type") if isinstance(part, dict) else None
        if ptype == "text" and isinstance(part.get("text"), str):
            if part["text"].strip():
                blocks.append(_text_block(part))
        elif ptype == "image_url":
            blocks.append(_image(part.get("image_url"), pw))
        elif ptype == "file":
            blocks.append(_document(part.get("file"), pw))
        else:
            raise BadRequestError(f"{pw}: content part type {ptype!r} is not supported for Anthropic models", param=pw)
    return blocks


def _data_uri(url: str, pw: str) -> tuple[str, str]:
    head, comma, data = url[5:].partition(",")
    params = head.split(";")
    if not comma or "base64" not in params[1:]:
        raise BadRequestError(f"{pw}: data URIs must be base64-encoded", param=pw)
    return params[0].lower(), data


def _image(image_url: Any, pw: str) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise BadRequestError(f"{pw}.image_url.url must be a string", param=pw)
    if url.startswith("data:"):
        media_type, data = _data_uri(url, pw)
        if media_type not in IMAGE_MEDIA_TYPES:
            raise BadRequestError(f"{pw}: image type {media_type!r} is not supported (jpeg, png, gif, webp)", param=pw)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise BadRequestError(f"{pw}: image URLs must be http(s) or base64 data URIs", param=pw)


def _document(file: Any, pw: str) -> dict[str, Any]:
    data_uri = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_uri, str) or not data_uri.startswith("data:"):
        raise BadRequestError(f"{pw}: only inline PDF file_data (a data URI) is supported for Anthropic models", param=pw)
    media_type, data = _data_uri(data_uri, pw)
    if media_type != "application/pdf":
        raise BadRequestError(f"{pw}: file type {media_type!r} is not supported (application/pdf only)", param=pw)
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _assistant_blocks(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if m.get("function_call") is not None:
        raise _unsupported(f"{where}.function_call", "use tool_calls")
    content = m.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for j, part in enumerate(content):
            ptype = part.get("type") if isinstance(part, dict) else None
            key = "refusal" if ptype == "refusal" else "text"
            if ptype not in ("text", "refusal") or not isinstance(part.get(key), str):
                raise BadRequestError(f"{where}.content[{j}] must be a text part", param=f"{where}.content[{j}]")
            if part[key].strip():
                blocks.append({"type": "text", "text": part[key]})
    else:
        blocks = _text_blocks(content, where)
    calls = m.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise BadRequestError(f"{where}.tool_calls must be an array", param=f"{where}.tool_calls")
        for j, call in enumerate(calls):
            blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
    return blocks


def _tool_use(call: Any, cw: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or call.get("type", "function") != "function" or not isinstance(fn.get("name"), str):
        raise BadRequestError(f"{cw} must be a function tool call with a name", param=cw)
    args = fn.get("arguments")
    if args in (None, ""):
        tool_input: Any = {}
    else:
        try:
            tool_input = orjson.loads(args) if isinstance(args, str) else None
        except orjson.JSONDecodeError:
            tool_input = None
        if not isinstance(tool_input, dict):
            raise BadRequestError(f"{cw}.function.arguments must be a JSON object string", param=f"{cw}.function.arguments")
    return {"type": "tool_use", "id": anthropic_tool_id(call.get("id")), "name": fn["name"], "input": tool_input}


def _tool_result(m: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequestError(f"{where}.tool_call_id is required", param=f"{where}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": anthropic_tool_id(call_id)}
    parts = _text_blocks(m.get("content"), where)
    if parts:
        block["content"] = _collapse(parts)
    return block


# parameters


def _stop(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequestError("stop must be a string or an array of strings", param="stop")
    return [s for s in stops if s.strip()]  # Anthropic rejects whitespace-only sequences


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise BadRequestError("tools must be an array", param="tools")
    out = []
    for j, t in enumerate(value):
        tw = f"tools[{j}]"
        if not isinstance(t, dict) or t.get("type") != "function":
            raise _unsupported(tw, "only function tools can be translated")
        fn = t.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequestError(f"{tw}.function.name is required", param=f"{tw}.function.name")
        tool: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            tool["description"] = fn["description"]
        tool["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        if "cache_control" in t:
            tool["cache_control"] = t["cache_control"]
        out.append(tool)
    return out


def _tool_choice(value: Any) -> dict[str, Any]:
    if value == "auto":
        return {"type": "auto"}
    if value == "required":
        return {"type": "any"}
    if value == "none":
        return {"type": "none"}
    if isinstance(value, dict) and value.get("type") == "function":
        fn = value.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return {"type": "tool", "name": fn["name"]}
    raise _unsupported("tool_choice", "use auto, none, required or a function name")


def _response_format(value: Any) -> dict[str, Any] | None:
    rtype = value.get("type") if isinstance(value, dict) else None
    if rtype == "text":
        return None
    if rtype == "json_schema":
        js = value.get("json_schema")
        if isinstance(js, dict) and isinstance(js.get("schema"), dict):
            return {"type": "json_schema", "schema": js["schema"]}
        raise BadRequestError("response_format.json_schema.schema is required", param="response_format")
    raise _unsupported("response_format", f"type {rtype!r} has no Anthropic equivalent (use json_schema)")
