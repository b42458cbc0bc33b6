# sim/workload.py: the request mix, as prebuilt HTTP request bytes for the load generator.
#
# Rules: pure (no I/O, no clock); deterministic for a given seed. Every prompt carries a
# request number, so with `unique` requests no two bodies are equal (a response cache in the
# gateway sees only misses). The hook for `--repeat-ratio` is here: it will draw a fraction of
# prompts from a small hot set instead of numbering them.
from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from sim.loadgen import request_bytes

CHAT_PATH = "/v1/chat/completions"
MAX_UNIQUE = 20000  # cap on distinct prebuilt requests; longer runs cycle through them

_TASKS = (
    "Summarize the following notes in two sentences",
    "Translate this paragraph into French",
    "Write a haiku about",
    "Explain to a new engineer",
    "List three risks of",
    "Draft a short reply to a customer asking about",
    "Give a one-line answer:",
    "Classify the sentiment of this review of",
)
_TOPICS = (
    "connection pooling in HTTP/1.1 proxies",
    "the quarterly infrastructure budget",
    "a delayed shipment of keyboards",
    "vector databases",
    "the migration from cron jobs to a queue",
    "cache invalidation",
    "retry storms after a regional outage",
    "the new onboarding checklist",
)
_FILLER = "Context: " + "the system handles many small requests and a few large ones. " * 6


@dataclass(frozen=True)
class Workload:
    """What the simulated clients send."""

    model: str = "sim-model"
    stream: bool = False
    max_tokens: int = 64
    unique: int = 1000  # distinct requests to prebuild (cycled by the load generator)
    seed: int = 1
    api_key: str = "sk-sim-client"


def prompt(rng: random.Random, n: int) -> str:
    """Prompt number ``n``: a task, a topic, some context of varying length, and the number."""
    context = _FILLER[: rng.randrange(0, len(_FILLER))]
    return f"{rng.choice(_TASKS)} {rng.choice(_TOPICS)}. {context} (request {n})"


def chat_body(model: str, text: str, *, stream: bool, max_tokens: int) -> bytes:
    """An OpenAI chat-completions request body (streams ask for the usage chunk)."""
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": text},
        ],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def build(w: Workload, host: str) -> list[bytes]:
    """Prebuild ``w.unique`` (capped at MAX_UNIQUE) distinct request byte strings for ``host``."""
    rng = random.Random(w.seed)
    headers = (
        ("content-type", "application/json"),
        ("authorization", f"Bearer {w.api_key}"),
        ("accept", "text/event-stream" if w.stream else "application/json"),
    )
    count = max(1, min(w.unique, MAX_UNIQUE))
    return [
        request_bytes("POST", CHAT_PATH, host, headers,
                      chat_body(w.model, prompt(rng, n), stream=w.stream, max_tokens=w.max_tokens))
        for n in range(count)
    ]
