# proxy/translate/usage.py: token usage conversion and extraction (API-FORMATS §3.7, §5.1).
#
# Owns: converting a usage object between the two conventions, and pulling the counts the
# gateway bills from a non-streamed response. The conventions differ: OpenAI
# `prompt_tokens` INCLUDES cache reads and writes, Anthropic `input_tokens` EXCLUDES them.
# Every "input_tokens" this package hands to the gateway (helpers here, stream machines'
# attributes) uses the OpenAI convention (all prompt tokens, cached or not), with the cache
# parts reported separately, so spend accounting sees one meaning whatever the upstream.
# Nothing here does I/O. Missing or null counts read as 0.
from __future__ import annotations

from typing import Any, NamedTuple


class UsageDetail(NamedTuple):
    """One normalised usage record (API-FORMATS §5.1)."""

    input_tokens: int  # every prompt token, cached or not (OpenAI convention)
    output_tokens: int  # includes reasoning / thinking tokens
    cache_read_tokens: int
    cache_write_tokens: int

    @property
    def input_uncached(self) -> int:
        """Prompt tokens billed at the plain input price."""
        return max(self.input_tokens - self.cache_read_tokens - self.cache_write_tokens, 0)


def _int(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def anthropic_usage_detail(usage: Any) -> UsageDetail:
    """Normalise an Anthropic `usage` object (message, message_start or message_delta)."""
    if not isinstance(usage, dict):
        return UsageDetail(0, 0, 0, 0)
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    return UsageDetail(_int(usage.get("input_tokens")) + read + write, _int(usage.get("output_tokens")), read, write)


def openai_usage_detail(usage: Any) -> UsageDetail:
    """Normalise an OpenAI `usage` object (completion or final stream chunk)."""
    if not isinstance(usage, dict):
        return UsageDetail(0, 0, 0, 0)
    details = usage.get("prompt_tokens_details")
    read = write = 0
    if isinstance(details, dict):
        read = _int(details.get("cached_tokens"))
        write = _int(details.get("cache_write_tokens"))
    return UsageDetail(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), read, write)


def usage_from_anthropic(response: Any) -> tuple[int, int]:
    """(input_tokens incl. cache, output_tokens) of a non-streamed Anthropic Message dict."""
    d = anthropic_usage_detail(response.get("usage") if isinstance(response, dict) else None)
    return d.input_tokens, d.output_tokens


def usage_from_openai(response: Any) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) of a non-streamed OpenAI chat.completion dict."""
    d = openai_usage_detail(response.get("usage") if isinstance(response, dict) else None)
    return d.input_tokens, d.output_tokens


def openai_usage(d: UsageDetail) -> dict[str, Any]:
    """An OpenAI `usage` object: prompt + completion == total always holds."""
    details: dict[str, int] = {"cached_tokens": d.cache_read_tokens}
    if d.cache_write_tokens:
        details["cache_write_tokens"] = d.cache_write_tokens
    return {
        "prompt_tokens": d.input_tokens,
        "completion_tokens": d.output_tokens,
        "total_tokens": d.input_tokens + d.output_tokens,
        "prompt_tokens_details": details,
    }


def anthropic_usage(d: UsageDetail) -> dict[str, Any]:
    """An Anthropic `usage` object: `input_tokens` excludes the cache counts."""
    return {
        "input_tokens": d.input_uncached,
        "output_tokens": d.output_tokens,
        "cache_creation_input_tokens": d.cache_write_tokens,
        "cache_read_input_tokens": d.cache_read_tokens,
    }
