# proxy/translate/response_to_openai.py: Anthropic Message -> OpenAI chat.completion.
#
# Owns: the non-streamed response half of "OpenAI client, Claude upstream" (API-FORMATS
# §3.2, §3.6, §3.7). Text blocks are concatenated into `message.content` (null when there
# is none and tools were called); `tool_use` blocks become `tool_calls` with JSON-string
# arguments. Thinking and server-tool blocks have no standard slot and are left out
# (strict OpenAI output). The upstream id is kept for tracing; `model` is the name the
# client asked for. Nothing here does I/O.
from __future__ import annotations

from typing import Any

import orjson

from proxy.translate.ids import mint_id, now
from proxy.translate.reasons import finish_reason_from_anthropic
from proxy.translate.usage import anthropic_usage_detail, openai_usage


def anthropic_to_openai_response(message: dict[str, Any], *, model: str, created: int | None = None) -> dict[str, Any]:
    """Translate a non-streamed Anthropic Message dict into an OpenAI chat.completion dict.

    `model` is the model name the client asked for; `created` defaults to now.
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = message.get("content")
    for block in content if isinstance(content, list) else ():
        btype = block.get("type") if isinstance(block, dict) else None
        if btype == "text":
            texts.append(block.get("text") or "")
        elif btype == "tool_use":
            calls.append(
                {
                    "id": block.get("id") or mint_id("toolu_"),
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    text = "".join(texts)
    msg: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
    if calls:
        msg["tool_calls"] = calls
    msg_id = message.get("id")
    return {
        "id": msg_id if isinstance(msg_id, str) and msg_id else mint_id("chatcmpl-"),
        "object": "chat.completion",
        "created": now() if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": msg,
                "logprobs": None,
                "finish_reason": finish_reason_from_anthropic(message.get("stop_reason")),
            }
        ],
        "usage": openai_usage(anthropic_usage_detail(message.get("usage"))),
    }
