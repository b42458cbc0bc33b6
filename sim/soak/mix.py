# sim/soak/mix.py: what the soak runs: its two providers, the gateway's router settings, and the
# seven kinds of clients with their rates, connections, prompts and request bytes.
#
# Rules: pure (no I/O, no clock). Every kind is paced at its own rate over its own keep-alive
# connections (see the package header). The answers are deterministic (mocks/content.py), so
# `expected_text` says exactly what a right answer to a prompt is, whichever provider or API.
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import orjson

from sim.loadgen import request_bytes
from sim.procs import ROOT
from sim.stack import Provider

try:
    from mocks.content import prompt_seed, reply_tokens
except ModuleNotFoundError:  # an install that lists only proxy and sim: the checkout has mocks/, as the
    sys.path.append(ROOT)  # children started with ROOT on PYTHONPATH do (sim.procs.child_env)
    from mocks.content import prompt_seed, reply_tokens

# the stack

TOKENS = 24  # completion tokens per answer
TOKEN_DELAY_MS = 1.0  # one token per ms: a stream lasts ~25 ms, so aborts land mid-stream
PROVIDERS = (
    Provider("local-fast", "local", "llama-3.1-8b-instruct", 2.0, TOKEN_DELAY_MS, 0.10, 0.40),
    Provider("cloud-pricier", "openai", "gpt-4o-mini", 8.0, TOKEN_DELAY_MS, 0.15, 0.60),
)
FAULTY = PROVIDERS[0]  # the cheaper: the router prefers it, so its faults force fallback
MODEL = "sim-model"
ATTEMPT_DEADLINE_S = 0.5
ROUTER: dict[str, Any] = {  # [[models]] settings: breakers that react (and recover) within a window
    "strategy": "cost-sla",
    "max_attempts": 3,
    "attempt_deadline_s": ATTEMPT_DEADLINE_S,
    "breaker_failures": 3,
    "breaker_cooldown_s": 0.3,
    "breaker_backoff": 1.5,
    "breaker_cooldown_max_s": 1.0,
    "ewma_half_life_s": 2.0,
    "explore_ratio": 0.05,
}
POOL_MAX_CONNECTIONS = 256  # the gateway's default `max_connections` per provider (sim.stack sets none)

# the clients

SYSTEM = "You are a concise assistant."
MAX_TOKENS = 64  # above TOKENS: every answer is whole (finish_reason "stop")
CLIENT_TIMEOUT_S = 15.0
CACHED_PROMPTS = 32
HEAD_LIMIT = 1 << 16


@dataclass(frozen=True)
class Kind:
    """One kind of client: what it sends, how often, over how many connections."""

    name: str
    api: str  # "openai" or "anthropic"
    stream: bool
    cached: bool  # temperature 0 over CACHED_PROMPTS: the cache answers
    rate: float  # requests per second, all its connections together
    conns: int


KINDS = (
    Kind("chat", "openai", False, False, 100.0, 10),
    Kind("chat_stream", "openai", True, False, 80.0, 12),
    Kind("cached", "openai", False, True, 80.0, 4),
    Kind("cached_stream", "openai", True, True, 40.0, 4),
    Kind("messages", "anthropic", False, False, 30.0, 4),
    Kind("messages_stream", "anthropic", True, False, 30.0, 6),
    Kind("abort", "openai", True, False, 25.0, 4),
)
CLIENT_CONNECTIONS = sum(k.conns for k in KINDS)
ABORT_STAGES = ("after_send", "after_head", "mid_body")


def expected_text(prompt: str) -> str:
    """The answer both mocks give `prompt` under SYSTEM (mocks/content.py), whichever API asked."""
    return "".join(reply_tokens(prompt_seed(f"{SYSTEM}\n{prompt}"), min(TOKENS, MAX_TOKENS)))


def cached_prompts() -> list[str]:
    """The few prompts the cached kinds ask, over and over."""
    return [f"Give a one-line answer about cached topic number {i}." for i in range(CACHED_PROMPTS)]


def fresh_prompt(kind: Kind, seq: int) -> str:
    """Prompt number `seq` of a kind that is never cached: never seen before."""
    return f"Soak {kind.name} request {seq}: summarize the notes on item {seq * 7919 % 100003}."


def request(kind: Kind, prompt: str, authority: str) -> bytes:
    """The HTTP request bytes a client of `kind` sends for `prompt`."""
    headers = [("content-type", "application/json"),
               ("accept", "text/event-stream" if kind.stream else "application/json")]  # fmt: skip
    body: dict[str, Any] = {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": kind.stream}
    if kind.api == "anthropic":
        headers.append(("anthropic-version", "2023-06-01"))
        body.update(system=SYSTEM, messages=[{"role": "user", "content": prompt}])
        path = "/v1/messages"
    else:
        body["messages"] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        if kind.stream:
            body["stream_options"] = {"include_usage": True}
        path = "/v1/chat/completions"
    if kind.cached:
        body["temperature"] = 0
    return request_bytes("POST", path, authority, headers, orjson.dumps(body))
