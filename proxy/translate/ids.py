# proxy/translate/ids.py: identifiers and the clock, the only non-deterministic inputs.
#
# Owns: minting response / tool-call ids, making foreign tool-call ids acceptable to
# Anthropic (`^[a-zA-Z0-9_-]+$`, API-FORMATS §3.1), and "now" for `created`. Callers may
# pass explicit values instead (tests do), so the translators stay reproducible.
from __future__ import annotations

import re
import secrets
import time

_BAD_TOOL_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def mint_id(prefix: str) -> str:
    """A fresh random id such as `chatcmpl-3f1c…` or `msg_9a0e…` (96 random bits)."""
    return prefix + secrets.token_hex(12)


def anthropic_tool_id(tool_id: object) -> str:
    """A tool-use id Anthropic accepts. Deterministic, so a call and its result still match."""
    if not isinstance(tool_id, str) or not tool_id:
        return mint_id("toolu_")
    return _BAD_TOOL_ID_CHARS.sub("_", tool_id)


def now() -> int:
    """Unix seconds, for OpenAI's `created`."""
    return int(time.time())
