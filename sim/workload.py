# sim/workload.py: the request mix, as prebuilt HTTP request bytes for the load generator.
#
# Rules: pure (no I/O, no clock); deterministic for a given seed. Every prompt carries a
# request number, so with `unique` requests no two bodies are equal (a response cache in the
# gateway sees only misses). With `repeat_ratio` > 0 that fraction of the requests (drawn with
# their own seeded RNG) repeats an earlier request byte for byte, at least `repeat_gap`
# positions back so the original has normally been answered (and stored) by then; every
# request then asks for temperature 0, so the answers are deterministic and cacheable.
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
    repeat_ratio: float = 0.0  # share of requests that repeat an earlier one (see module header)
    repeat_gap: int = 64  # a repeat copies a request at least this many positions back


def prompt(rng: random.Random, n: int) -> str:
    """Prompt number ``n``: a task, a topic, some context of varying length, and the number."""
    context = _FILLER[: rng.randrange(0, len(_FILLER))]
    return f"{rng.choice(_TASKS)} {rng.choice(_TOPICS)}. {context} (request {n})"


def chat_body(model: str, text: str, *, stream: bool, max_tokens: int, temperature: float | None = None) -> bytes:
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
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def build(w: Workload, host: str) -> list[bytes]:
    """Prebuild ``w.unique`` (capped at MAX_UNIQUE) request byte strings for ``host``.

    All distinct, unless ``w.repeat_ratio`` > 0: then about that share are repeats (see
    :func:`repeats`).
    """
    if not 0.0 <= w.repeat_ratio < 1.0:
        raise ValueError("repeat_ratio must be in [0, 1)")
    rng = random.Random(w.seed)
    headers = (
        ("content-type", "application/json"),
        ("authorization", f"Bearer {w.api_key}"),
        ("accept", "text/event-stream" if w.stream else "application/json"),
    )
    count = max(1, min(w.unique, MAX_UNIQUE))
    temperature = 0.0 if w.repeat_ratio > 0 else None
    plan = repeats(count, w.repeat_ratio, w.repeat_gap, w.seed)
    out: list[bytes] = []
    for n, source in enumerate(plan):
        if source >= 0:
            out.append(out[source])
        else:
            body = chat_body(w.model, prompt(rng, n), stream=w.stream, max_tokens=w.max_tokens, temperature=temperature)
            out.append(request_bytes("POST", CHAT_PATH, host, headers, body))
    return out


def repeats(count: int, ratio: float, gap: int, seed: int = 1) -> list[int]:
    """For each of ``count`` positions: the earlier position it repeats, or -1 for a new prompt.

    The first ``gap`` positions are always new; after them each position is a repeat with
    probability ``ratio * count / (count - gap)``, so repeats make up about ``ratio`` of the
    whole list. A repeat copies a uniformly drawn position at least ``gap`` back.
    """
    if ratio <= 0.0 or count <= gap:
        return [-1] * count
    p = min(1.0, ratio * count / (count - gap))
    rng = random.Random(seed * 7919 + 1)  # independent of the prompt RNG: prompts stay the same
    return [rng.randrange(0, n - gap + 1) if n >= gap and rng.random() < p else -1 for n in range(count)]
