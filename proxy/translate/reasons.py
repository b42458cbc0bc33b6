# proxy/translate/reasons.py: stop reason <-> finish reason tables (API-FORMATS §3.6).
#
# Owns: the two mapping tables and their lenient lookups. Unknown or null values map to
# the "natural end" of the other side, because both enums grow within an API version.
# Nothing here does I/O.
from __future__ import annotations

from typing import Any

ANTHROPIC_TO_OPENAI: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}

OPENAI_TO_ANTHROPIC: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason_from_anthropic(stop_reason: Any) -> str:
    """Anthropic `stop_reason` -> OpenAI `finish_reason` ("stop" when unknown or null)."""
    return ANTHROPIC_TO_OPENAI.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_reason_from_openai(finish_reason: Any, matched_stop: Any = None) -> tuple[str, str | None]:
    """OpenAI `finish_reason` -> (Anthropic `stop_reason`, `stop_sequence`).

    `matched_stop` is vLLM's non-standard `choices[].stop_reason`: when it is a string the
    stop was a custom stop sequence, reported as `stop_sequence` with the string filled in.
    """
    if finish_reason == "stop" and isinstance(matched_stop, str) and matched_stop:
        return "stop_sequence", matched_stop
    if isinstance(finish_reason, str):
        return OPENAI_TO_ANTHROPIC.get(finish_reason, "end_turn"), None
    return "end_turn", None
