"""Request validation: is a body a request the endpoint can serve? Pure: bytes in, values out.

Only what the gateway itself needs is checked here (a JSON object, a model name, the fields
without which the endpoint means nothing); everything else is the provider's to judge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from proxy.errors import BadRequestError


def parse_body(body: bytes) -> tuple[dict[str, Any], str, bool]:
    """(payload, model, stream) of a JSON request body, or BadRequestError saying what is wrong."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc.msg}") from None
    if not isinstance(payload, dict):
        raise BadRequestError("the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("'model' must be a non-empty string", param="model")
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise BadRequestError("'stream' must be a boolean", param="stream")
    return payload, model, stream is True


def check_chat(payload: dict[str, Any]) -> None:
    """POST /v1/chat/completions (OpenAI)."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("'messages' must be a non-empty array", param="messages")


def check_messages(payload: dict[str, Any]) -> None:
    """POST /v1/messages (Anthropic)."""
    if not isinstance(payload.get("messages"), list):
        raise BadRequestError("messages: Field required", param="messages")
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequestError("max_tokens: Field required (a positive integer)", param="max_tokens")


def check_embeddings(payload: dict[str, Any]) -> None:
    """POST /v1/embeddings (OpenAI)."""
    if "input" not in payload:
        raise BadRequestError("'input' is required", param="input")


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "/chat/completions": check_chat,
    "/messages": check_messages,
    "/embeddings": check_embeddings,
}


def parse(endpoint: str, body: bytes) -> tuple[dict[str, Any], str, bool]:
    """`parse_body`, then the endpoint's own checks."""
    parsed = parse_body(body)
    CHECKS[endpoint](parsed[0])
    return parsed
