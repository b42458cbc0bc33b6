# bench/traffic.py: the requests every target receives, byte for byte the same whatever the target.
#
# Rules: three kinds of request and nothing else. A miss-path chat request is unique (a per-run nonce
# and a per-request counter in the user message), so a response cache can never answer it; a cache-hit
# request is one deterministic (temperature 0) request repeated; a stream request asks for SSE from the
# mock. Every request carries the same client `authorization` header (LiteLLM requires its master key;
# llm-edge drops the header, nginx forwards it, the upstreams ignore it). Bodies are padded to about
# `body_bytes` with an ordinary-looking system prompt, because parsing a request costs in proportion to
# its size and a realistic request is not 60 bytes.
from __future__ import annotations

import orjson

from bench.wrk import COUNTER_DIGITS
from sim.loadgen import request_bytes

PATH = "/v1/chat/completions"
_SYSTEM = (
    "You are a helpful assistant for an online bookshop. Answer briefly and politely, recommend at most "
    "three titles, never invent prices, and ask a clarifying question when the request is ambiguous. "
)


def _pad(target_bytes: int, base_len: int) -> str:
    missing = max(0, target_bytes - base_len)
    return (_SYSTEM * (missing // len(_SYSTEM) + 1))[:missing]


def chat_body(model: str, user: str, body_bytes: int, stream: bool = False) -> bytes:
    """A chat request of about `body_bytes` bytes: system prompt + one user message, temperature 0."""
    doc: dict[str, object] = {"model": model, "temperature": 0, "max_tokens": 64}
    if stream:
        doc["stream"] = True
    doc["messages"] = [{"role": "system", "content": ""}, {"role": "user", "content": user}]
    base = len(orjson.dumps(doc))
    doc["messages"] = [{"role": "system", "content": _pad(body_bytes, base)}, {"role": "user", "content": user}]
    return orjson.dumps(doc)


def miss_template(nonce: str, body_bytes: int) -> bytes:
    """A chat body with `%COUNTER%` where wrk puts its per-request counter (see bench.wrk.script)."""
    return chat_body("bench", f"Question {nonce}-%COUNTER%: which novel should I read next?", body_bytes)


def hit_body(body_bytes: int) -> bytes:
    """The one deterministic request a cache-hit run repeats."""
    return chat_body("bench", "Question cached-0: which novel should I read next?", body_bytes)


def json_bodies(nonce: str, body_bytes: int, count: int, hit: bool) -> list[bytes]:
    """`count` miss-path bodies (unique) or cache-hit bodies (all the same), for the load generator."""
    if hit:
        return [hit_body(body_bytes)] * count
    template = miss_template(nonce, body_bytes)
    return [template.replace(b"%COUNTER%", b"%0*d" % (COUNTER_DIGITS, i)) for i in range(count)]


def stream_bodies(nonce: str, body_bytes: int, count: int) -> list[bytes]:
    """`count` unique streaming requests (the mock answers them as SSE)."""
    return [
        chat_body("bench-stream", f"Question {nonce}-{i:0{COUNTER_DIGITS}d}: tell me a story.", body_bytes, stream=True)
        for i in range(count)
    ]


def requests_for(host: str, port: int, bodies: list[bytes], auth: str) -> list[bytes]:
    """Complete HTTP/1.1 requests for the load generator."""
    headers = [("content-type", "application/json"), ("authorization", f"Bearer {auth}")]
    return [request_bytes("POST", PATH, f"{host}:{port}", headers, body) for body in bodies]
