# proxy/translate/frames.py: the downstream SSE frames, as bytes (API-FORMATS §1.5, §2.4).
#
# Owns: the exact framing of each client format, so it is written in one place.
#   OpenAI side:    only `data: <json>\n\n` frames and a final `data: [DONE]\n\n`; never an
#                   `event:` line (openai-python JSON-parses every non-[DONE] event).
#   Anthropic side: `event: <type>\ndata: <json>\n\n` pairs; the JSON `type` equals the event
#                   name; no [DONE].
# Fixed frames are precomputed at import; variable ones are built with orjson and byte
# concatenation. Nothing here does I/O.
from __future__ import annotations

from typing import Any

import orjson

_dumps = orjson.dumps

# OpenAI side
OPENAI_DONE = b"data: [DONE]\n\n"
PING_COMMENT = b": ping\n\n"  # an SSE comment: keeps the client's read timer alive, safe in both SDKs


def openai_frame(payload: Any) -> bytes:
    """`data: <json>\\n\\n`."""
    return b"data: " + _dumps(payload) + b"\n\n"


def openai_error_frame(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI mid-stream error: the SDK raises `APIError` on it (API-FORMATS §1.5)."""
    return openai_frame({"error": {"message": message, "type": type, "param": param, "code": code}})


# Anthropic side
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
BLOCK_STOP_HEAD = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
BLOCK_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
TEXT_DELTA_MID = b',"delta":{"type":"text_delta","text":'
JSON_DELTA_MID = b',"delta":{"type":"input_json_delta","partial_json":'
DELTA_TAIL = b"}}\n\n"


def anthropic_frame(event: str, payload: Any) -> bytes:
    """`event: <name>\\ndata: <json>\\n\\n`."""
    return b"event: " + event.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"


def anthropic_error_frame(type: str, message: str) -> bytes:
    """Anthropic mid-stream error: the SDK raises `APIStatusError` on it (API-FORMATS §2.4)."""
    return anthropic_frame("error", {"type": "error", "error": {"type": type, "message": message}})


def block_stop(index: int) -> bytes:
    """content_block_stop for block `index`."""
    return BLOCK_STOP_HEAD + str(index).encode() + b"}\n\n"
