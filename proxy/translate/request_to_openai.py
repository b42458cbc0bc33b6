# proxy/translate/request_to_openai.py: Anthropic Messages body -> OpenAI chat request body.
#
# Owns: the request half of "Anthropic client, OpenAI or local upstream" (API-FORMATS
# §3.4, §3.9). Input is the client's parsed JSON body, output a new dict; the input is
# never mutated. `for_local` selects the dialect: local servers (vLLM, Ollama, llama.cpp)
# read only `max_tokens` and accept `top_k`; OpenAI wants `max_completion_tokens`, rejects
# `max_tokens` on reasoning models, has no `top_k`, allows 4 stop strings and 64-character
# tool names. Untranslatable content raises `BadRequestError` naming the param. Dropped params
# (`top_k` for OpenAI per §3.9, `thinking`, `output_config.effort`) are appended to the
# caller's `dropped` list. Thinking blocks and `cache_control` in the history are dropped
# (§3.9: OpenAI ignores or rejects them). Nothing here does I/O.
from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import BadRequestError

OPENAI_MAX_STOP = 4
OPENAI_MAX_TOOL_NAME = 64

_IGNORED = frozenset({"service_tier", "cache_control", "anthropic_version", "anthropic_beta", "inference_geo"})


def _unsupported(param: str, detail: str) -> BadRequestError:
    return BadRequestError(
        f"{param} is not supported when the upstream is an OpenAI-compatible model: {detail}",
        param=param,
        code="unsupported_parameter",
    )


def anthropic_to_openai_request(
    body: dict[str, Any],
    *,
    model: str,
    for_local: bool = False,
    dropped: list[str] | None = None,
) -> dict[str, Any]:
    """Translate an Anthropic `/v1/messages` body into an OpenAI `/v1/chat/completions` body.

    `model` is the upstream model name. `for_local=True` targets vLLM/Ollama/llama.cpp
    (`max_tokens`, `top_k` kept, no stop/tool-name limits); False targets OpenAI
    (`max_completion_tokens`, `top_k` dropped). Streaming requests get
    `stream_options.include_usage` so the final chunk carries the token counts.
    Raises `BadRequestError` (400, with `param`) for anything untranslatable.
    """
    if dropped is None:
        dropped = []
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequestError("messages must be a non-empty array", param="messages")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        messages.extend({"role": "system", "content": t} for t in _texts(system, "system") if t)
    _messages(msgs, messages, for_local)
    out: dict[str, Any] = {"model": model, "messages": messages}
    choice: Any = None
    disable_parallel = False
    for key, value in body.items():
        if value is None or key in ("messages", "model", "system") or key in _IGNORED:
            continue
        if key == "max_tokens":
            if type(value) is not int or value < 0:
                raise BadRequestError("max_tokens must be a non-negative integer", param="max_tokens")
            out["max_tokens" if for_local else "max_completion_tokens"] = value
        elif key == "stop_sequences":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise BadRequestError("stop_sequences must be an array of strings", param="stop_sequences")
            if len(value) > OPENAI_MAX_STOP and not for_local:
                raise _unsupported("stop_sequences", f"OpenAI accepts at most {OPENAI_MAX_STOP}")
            if value:
                out["stop"] = list(value)
        elif key in ("temperature", "top_p"):
            out[key] = value  # Anthropic's 0-1 ranges fit inside OpenAI's
        elif key == "top_k":
            if for_local:
                out["top_k"] = value  # vLLM and llama.cpp read it; Ollama's /v1 ignores it
            else:
                dropped.append("top_k")
        elif key == "stream":
            out["stream"] = bool(value)
            if value:
                out["stream_options"] = {"include_usage": True}
        elif key == "tools":
            out["tools"] = _tools(value, for_local)
        elif key == "tool_choice":
            choice, disable_parallel = _tool_choice(value)
        elif key == "metadata":
            uid = value.get("user_id") if isinstance(value, dict) else None
            if isinstance(uid, str) and uid:
                out["user"] = uid
        elif key == "thinking":
            if not (isinstance(value, dict) and value.get("type") == "disabled"):
                dropped.append("thinking")
        elif key == "output_config":
            _output_config(value, out, dropped)
        else:
            raise _unsupported(key, "unknown parameter")
    if out.get("tools") and choice is not None:  # without tools a tool_choice means nothing
        out["tool_choice"] = choice
        if disable_parallel:
            out["parallel_tool_calls"] = False
    return out


# messages


def _texts(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise BadRequestError(f"{where} must be a string or an array of text blocks", param=where)
    texts = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise BadRequestError(f"{where}[{j}] must be a text block", param=f"{where}[{j}]")
        texts.append(block["text"])
    return texts


def _parts_content(parts: list[dict[str, Any]]) -> Any:
    """A lone text part is sent as a plain string: every local server reads that."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _messages(msgs: list[Any], out: list[dict[str, Any]], for_local: bool) -> None:
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequestError(f"{where} must be an object", param=where)
        role = m.get("role")
        content = m.get("content")
        if role == "system":  # newer SDKs allow a mid-conversation system turn
            out.extend({"role": "system", "content": t} for t in _texts(content, f"{where}.content") if t)
        elif role == "user":
            _user(content, where, out, for_local)
        elif role == "assistant":
            _assistant(content, where, out)
        else:
            raise BadRequestError(f"{where}.role must be user or assistant", param=f"{where}.role")


def _user(content: Any, where: str, out: list[dict[str, Any]], for_local: bool) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    if not isinstance(content, list):
        raise BadRequestError(f"{where}.content must be a string or an array", param=f"{where}.content")
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        bw = f"{where}.content[{j}]"
        btype = block.get("type") if isinstance(block, dict) else None
        if btype == "tool_result":
            # Tool results become `tool` messages, placed before the rest of the turn (§3.4).
            out.append(_tool_message(block, bw))
        elif btype == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif btype == "image":
            parts.append(_image(block, bw))
        elif btype == "document" and not for_local:
            parts.append(_document(block, bw))
        else:
            raise _unsupported(bw, f"content block type {btype!r}")
    if parts:
        out.append({"role": "user", "content": _parts_content(parts)})


def _image(block: dict[str, Any], bw: str) -> dict[str, Any]:
    src = block.get("source")
    if not isinstance(src, dict):
        raise _unsupported(f"{bw}.source", "images must be base64 or url sources")
    stype = src.get("type")
    if stype == "base64" and isinstance(src.get("media_type"), str) and isinstance(src.get("data"), str):
        url = f"data:{src['media_type']};base64,{src['data']}"
    elif stype == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    else:
        raise _unsupported(f"{bw}.source", "images must be base64 or url sources")
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: dict[str, Any], bw: str) -> dict[str, Any]:
    src = block.get("source")
    if not (
        isinstance(src, dict)
        and src.get("type") == "base64"
        and src.get("media_type") == "application/pdf"
        and isinstance(src.get("data"), str)
    ):
        raise _unsupported(f"{bw}.source", "only base64 PDF documents can be translated")
    title = block.get("title")
    return {
        "type": "file",
        "file": {
            "filename": title if isinstance(title, str) and title else "document.pdf",
            "file_data": f"data:application/pdf;base64,{src['data']}",
        },
    }


def _tool_message(block: dict[str, Any], bw: str) -> dict[str, Any]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str):
        raise BadRequestError(f"{bw}.tool_use_id is required", param=f"{bw}.tool_use_id")
    content = block.get("content")
    texts: list[str]
    if content is None:
        texts = []
    elif isinstance(content, str):
        texts = [content]
    elif isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            ptype = part.get("type") if isinstance(part, dict) else None
            if ptype != "text" or not isinstance(part.get("text"), str):
                # OpenAI tool messages carry text only.
                raise _unsupported(f"{bw}.content[{j}]", f"tool_result blocks of type {ptype!r}")
            texts.append(part["text"])
    else:
        raise BadRequestError(f"{bw}.content must be a string or an array", param=f"{bw}.content")
    if block.get("is_error") is True:  # no slot in OpenAI: keep the meaning in the text
        texts = ["Error: " + (texts[0] if texts else "")] + texts[1:]
    if len(texts) == 1:
        tool_content: Any = texts[0]
    elif texts:
        tool_content = [{"type": "text", "text": t} for t in texts]
    else:
        tool_content = ""
    return {"role": "tool", "tool_call_id": tool_use_id, "content": tool_content}


def _assistant(content: Any, where: str, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    if not isinstance(content, list):
        raise BadRequestError(f"{where}.content must be a string or an array", param=f"{where}.content")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        bw = f"{where}.content[{j}]"
        btype = block.get("type") if isinstance(block, dict) else None
        if btype == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif btype == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise BadRequestError(f"{bw} needs an id and a name", param=bw)
            tool_input = block.get("input")
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": orjson.dumps(tool_input if tool_input is not None else {}).decode(),
                    },
                }
            )
        elif btype in ("thinking", "redacted_thinking"):
            continue  # no OpenAI slot; the upstream model cannot use another model's reasoning
        else:
            raise _unsupported(bw, f"content block type {btype!r}")
    text = "".join(texts)
    if not text and not calls:
        return
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


# parameters


def _tools(value: Any, for_local: bool) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise BadRequestError("tools must be an array", param="tools")
    out = []
    for j, t in enumerate(value):
        tw = f"tools[{j}]"
        if not isinstance(t, dict) or t.get("type") not in (None, "custom"):
            ttype = t.get("type") if isinstance(t, dict) else None
            raise _unsupported(tw, f"server tool {ttype!r} cannot run on this upstream")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequestError(f"{tw}.name is required", param=f"{tw}.name")
        if len(name) > OPENAI_MAX_TOOL_NAME and not for_local:
            raise _unsupported(f"{tw}.name", f"OpenAI tool names are at most {OPENAI_MAX_TOOL_NAME} characters")
        fn: dict[str, Any] = {"name": name}
        if t.get("description"):
            fn["description"] = t["description"]
        fn["parameters"] = t.get("input_schema") or {"type": "object", "properties": {}}
        if isinstance(t.get("strict"), bool):
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(value: Any) -> tuple[Any, bool]:
    ctype = value.get("type") if isinstance(value, dict) else None
    disable_parallel = isinstance(value, dict) and value.get("disable_parallel_tool_use") is True
    if ctype == "auto":
        return "auto", disable_parallel
    if ctype == "any":
        return "required", disable_parallel
    if ctype == "none":
        return "none", False
    if ctype == "tool" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}, disable_parallel
    raise BadRequestError("tool_choice must be auto, any, none or a named tool", param="tool_choice")


def _output_config(value: Any, out: dict[str, Any], dropped: list[str]) -> None:
    if not isinstance(value, dict):
        raise BadRequestError("output_config must be an object", param="output_config")
    for key, item in value.items():
        if key == "format" and item is not None:
            if not (
                isinstance(item, dict) and item.get("type") == "json_schema" and isinstance(item.get("schema"), dict)
            ):
                raise _unsupported("output_config.format", "only json_schema formats can be translated")
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": item["schema"]},
            }
        elif key == "effort":
            dropped.append("output_config.effort")
        elif item is not None:
            raise _unsupported(f"output_config.{key}", "unknown parameter")
