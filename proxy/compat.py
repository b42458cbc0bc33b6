"""Small things each API's clients expect of the gateway's answers. Pure.

- `decode_model_path`: `GET /v1/models/{id}` with the id percent-decoded (the SDKs send
  `openai%2Fgpt-4o-mini` for `openai/gpt-4o-mini`).
- `openai_status`: statuses an OpenAI client can be given for a provider's status (Anthropic's
  529 "overloaded" is not an OpenAI status: it becomes 503, which the OpenAI SDK retries).
- `ratelimit_headers`: the `x-ratelimit-*` lines OpenAI sends, from a key's bucket state.
"""

from __future__ import annotations

import math
from urllib.parse import unquote_to_bytes

MODELS_PREFIX = b"/v1/models/"
MAX_MODEL_ID_BYTES = 256


def decode_model_path(path: bytes) -> str:
    """The model id in `/v1/models/{id}` (or the id part alone), percent-decoded.

    Invalid UTF-8 is replaced, control characters are dropped, and the result is cut to
    `MAX_MODEL_ID_BYTES`, so the id is safe to echo in a 404 message.
    """
    raw = path[len(MODELS_PREFIX):] if path.startswith(MODELS_PREFIX) else path
    query = raw.find(b"?")
    if query >= 0:
        raw = raw[:query]
    text = unquote_to_bytes(raw.rstrip(b"/")).decode("utf-8", "replace")
    return "".join(c for c in text if c.isprintable())[:MAX_MODEL_ID_BYTES]


# Anthropic's statuses that OpenAI's API never uses, and what an OpenAI client gets instead.
_OPENAI_STATUS = {529: 503}


def openai_status(status: int) -> int:
    """The status to give an OpenAI client for a provider's `status`."""
    return _OPENAI_STATUS.get(status, status)


def ratelimit_headers(rpm: int, remaining_requests: float, tpm: int, remaining_tokens: float) -> bytes:
    """OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` header lines (CRLF-ended),
    from a key's per-minute buckets (limits.KeyState: its rpm/tpm and what is left in each).

    A limit of 0 means the key has none: its three lines are left out. Remaining counts are
    floored and never negative; the reset is the time until the bucket is full again, in
    OpenAI's duration format (`120ms`, `1s`, `6m0s`).
    """
    lines = []
    for kind, limit, remaining in (("requests", rpm, remaining_requests), ("tokens", tpm, remaining_tokens)):
        if limit <= 0:
            continue
        left = max(0, min(limit, math.floor(remaining)))
        reset = (limit - max(0.0, min(float(limit), remaining))) * 60.0 / limit
        lines.append(f"x-ratelimit-limit-{kind}: {limit}\r\nx-ratelimit-remaining-{kind}: {left}\r\n"
                     f"x-ratelimit-reset-{kind}: {duration(reset)}\r\n")  # fmt: skip
    return "".join(lines).encode("ascii")


def duration(seconds: float) -> str:
    """OpenAI's reset format: `0s`, `120ms`, `1.5s`, `6m0s`, `1h2m3s`."""
    if not seconds > 0.0:
        return "0s"
    if seconds < 1.0:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    if seconds < 60.0:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"
