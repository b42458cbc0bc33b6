# proxy/translate: pure translation between OpenAI Chat Completions and Anthropic Messages.
#
# Owns: request bodies, non-streamed responses, SSE streams, error bodies and usage, in
# both directions (API-FORMATS §3). Every module here is sans-IO: dicts and bytes in,
# dicts and bytes out; the gateway does the reading, writing and header work. One module
# per job:
#   request_to_anthropic   OpenAI request  -> Anthropic request
#   request_to_openai      Anthropic request -> OpenAI / local request
#   response_to_openai     Anthropic Message -> chat.completion
#   response_to_anthropic  chat.completion -> Anthropic Message
#   stream_to_openai       AnthropicToOpenAIStream (Anthropic SSE -> OpenAI SSE)
#   stream_to_anthropic    OpenAIToAnthropicStream (OpenAI SSE -> Anthropic SSE)
#   error_bodies           upstream error body -> client error body, status kept
#   usage, reasons         usage and stop-reason mappings; sse, frames, ids: shared pieces
from __future__ import annotations

from proxy.translate.error_bodies import read_upstream_error, to_anthropic_error, to_openai_error
from proxy.translate.request_to_anthropic import client_wants_usage, openai_to_anthropic_request, sampling_allowed
from proxy.translate.request_to_openai import anthropic_to_openai_request
from proxy.translate.response_to_anthropic import openai_to_anthropic_response
from proxy.translate.response_to_openai import anthropic_to_openai_response
from proxy.translate.stream_to_anthropic import OpenAIToAnthropicStream
from proxy.translate.stream_to_openai import AnthropicToOpenAIStream
from proxy.translate.usage import (
    UsageDetail,
    anthropic_usage_detail,
    openai_usage_detail,
    usage_from_anthropic,
    usage_from_openai,
)

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "UsageDetail",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "anthropic_usage_detail",
    "client_wants_usage",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
    "openai_usage_detail",
    "read_upstream_error",
    "sampling_allowed",
    "to_anthropic_error",
    "to_openai_error",
    "usage_from_anthropic",
    "usage_from_openai",
]
