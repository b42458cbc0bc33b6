# proxy/translate/response_to_anthropic.py: OpenAI chat.completion -> Anthropic Message.
#
# Owns: the non-streamed response half of "Anthropic client, OpenAI or local upstream"
# (API-FORMATS §3.5, §3.6, §3.7). `content` is a text block (when the text is non-empty;
# a refusal counts as text) followed by one `tool_use` block per tool call. Only choice 0
# is read (requests never ask for n>1). Reasoning text (`reasoning_content`, `reasoning`)
# is left out: an Anthropic thinking block needs a signature we cannot make. Tool-call
# arguments that are not a JSON object cannot become `input`: that is an upstream fault
# (`UpstreamProtocolError`, 502), not something to hide. Nothing here does I/O.
from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import UpstreamProtocolError
from proxy.translate.ids import mint_id
from proxy.translate.reasons import stop_reason_from_openai
from proxy.translate.usage import anthropic_usage, openai_usage_detail


def anthropic_message_id(upstream_id: Any) -> str:
    """`msg_…` id for the client, keeping the upstream id inside it for tracing."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("msg_") else "msg_" + upstream_id
    return mint_id("msg_")


def openai_to_anthropic_response(completion: dict[str, Any], *, model: str) -> dict[str, Any]:
    """Translate a non-streamed OpenAI chat.completion dict into an Anthropic Message dict.

    `model` is the model name the client asked for. Raises `UpstreamProtocolError` when a
    tool call's arguments are not a JSON object.
    """
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    content: list[dict[str, Any]] = []
    text = msg.get("content")
    if isinstance(text, list):  # a few servers answer with text parts
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    if not text and isinstance(msg.get("refusal"), str):
        text = msg["refusal"]
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = msg.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        args = fn.get("arguments")
        try:
            tool_input = orjson.loads(args) if args else {}
        except (orjson.JSONDecodeError, TypeError):
            tool_input = None
        if not isinstance(tool_input, dict):
            raise UpstreamProtocolError("upstream returned tool call arguments that are not a JSON object")
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or mint_id("toolu_"),
                "name": fn.get("name") or "",
                "input": tool_input,
            }
        )
    stop_reason, stop_sequence = stop_reason_from_openai(choice.get("finish_reason"), choice.get("stop_reason"))
    return {
        "id": anthropic_message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(openai_usage_detail(completion.get("usage"))),
    }
