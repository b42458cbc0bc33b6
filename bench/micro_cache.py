# bench/micro_cache.py: micro benchmarks behind the numbers quoted in proxy/cache/*.py.
#
# Run (bench/ is outside the test paths; -s prints the hit ratios of the eviction comparison):
#   python -m pytest bench/micro_cache.py --benchmark-only -p no:cacheprovider -o testpaths=bench -s
# Groups: hash (xxh3-128 vs blake3 vs sha256 on request-sized inputs), key (whole make_key, and the
# bytes-join variant it replaced), sketch (unrolled vs looped record), store-hit (one get on each store
# kind), zipf (hit ratio and ops/s of LRU / SIEVE, with and without TinyLFU admission, on a Zipf(1.0)
# trace and on the same trace mixed with one-off requests), replay (entry build and assembly, cold path).
from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import blake3
import orjson
import pytest
import xxhash

from proxy.cache.entry import CacheEntry, entry_from_answer, entry_from_sse
from proxy.cache.formats import OPENAI_CHAT
from proxy.cache.key import EXCLUDED_FIELDS, FLOAT_FIELDS, make_key
from proxy.cache.policy import Planner
from proxy.cache.settings import CacheSettings
from proxy.cache.sketch import FrequencySketch
from proxy.cache.store import LRUStore, SieveStore

SIZES = (200, 2048, 51200)
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
]


def chat_body(target: int) -> dict[str, Any]:
    """A realistic OpenAI chat request of about `target` bytes (system prompt, turns, sampling params)."""
    rnd = random.Random(target)
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a concise assistant."}]
    body = {"model": "gpt-4.1-mini", "messages": messages, "temperature": 0, "max_tokens": 512, "stream": True}
    while len(orjson.dumps(body)) < target:
        n = max(1, min(60, (target - len(orjson.dumps(body))) // 6))
        role = "user" if len(messages) % 2 else "assistant"
        messages.append({"role": role, "content": " ".join(rnd.choice(_WORDS) for _ in range(n))})
    return body


BODIES = {n: chat_body(n) for n in SIZES}
RAW = {n: orjson.dumps(b) for n, b in BODIES.items()}


# --- hash ------------------------------------------------------------------------------------------

HASHES: dict[str, Callable[[bytes], bytes]] = {
    "xxh3_128": xxhash.xxh3_128_digest,
    "blake3": lambda data: blake3.blake3(data).digest(),
    "sha256": lambda data: hashlib.sha256(data).digest(),
}


@pytest.mark.benchmark(group="hash")
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(HASHES))
def test_hash(benchmark: Any, name: str, size: int) -> None:
    benchmark(HASHES[name], RAW[size])


# --- key -------------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="key")
@pytest.mark.parametrize("size", SIZES)
def test_make_key(benchmark: Any, size: int) -> None:
    benchmark(make_key, OPENAI_CHAT, "gpt-4.1-mini", BODIES[size], b"tenant-1")


_MAGIC = b"llm-edge.cache.v1\x00"


def _make_key_join(fmt: bytes, model: str, body: dict[str, Any], tenant: bytes) -> bytes:
    # The alternative make_key() replaced: length-prefixed byte fields joined in front of the JSON body.
    canon = {k: v for k, v in body.items() if k not in EXCLUDED_FIELDS}
    for name in FLOAT_FIELDS:
        value = canon.get(name)
        if type(value) is int:
            canon[name] = float(value)
    js = orjson.dumps(canon, option=orjson.OPT_SORT_KEYS)
    m = model.encode()
    head = b"%d:%d:%d:" % (len(fmt), len(tenant), len(m))
    return xxhash.xxh3_128_digest(b"".join((_MAGIC, head, fmt, tenant, m, js)))


@pytest.mark.benchmark(group="key")
@pytest.mark.parametrize("size", SIZES)
def test_make_key_join_variant(benchmark: Any, size: int) -> None:
    benchmark(_make_key_join, OPENAI_CHAT, "gpt-4.1-mini", BODIES[size], b"tenant-1")


@pytest.mark.benchmark(group="key")
def test_plan_default(benchmark: Any) -> None:
    planner = Planner(CacheSettings())
    benchmark(planner.plan, OPENAI_CHAT, "gpt-4.1-mini", BODIES[200], None, None)


# --- sketch ----------------------------------------------------------------------------------------


def _record_looped(sketch: FrequencySketch, key: bytes) -> None:
    # The rolled-up loop FrequencySketch.record() unrolls (same arithmetic, no halving).
    h = hash(key)
    mask, width, table = sketch._mask, sketch._width, sketch._table
    for row in range(4):
        i = row * width + ((h >> (16 * row)) & mask)
        if table[i] < 15:
            table[i] += 1


@pytest.mark.benchmark(group="sketch")
@pytest.mark.parametrize("variant", ["unrolled", "looped"])
def test_sketch_record(benchmark: Any, variant: str) -> None:
    sketch = FrequencySketch(10_000)
    key = xxhash.xxh3_128_digest(b"k")
    if variant == "unrolled":
        benchmark(sketch.record, key)
    else:
        benchmark(_record_looped, sketch, key)


# --- store -----------------------------------------------------------------------------------------

STORES: dict[str, Callable[[int], Any]] = {
    "lru": lambda n: LRUStore(n, 1 << 40),
    "sieve": lambda n: SieveStore(n, 1 << 40),
    "lru+tinylfu": lambda n: LRUStore(n, 1 << 40, FrequencySketch(n)),
    "sieve+tinylfu": lambda n: SieveStore(n, 1 << 40, FrequencySketch(n)),
}


def _small_entry() -> CacheEntry:
    return CacheEntry(OPENAI_CHAT, b'{"id":"x"}')


@pytest.mark.benchmark(group="store-hit")
@pytest.mark.parametrize("kind", list(STORES))
def test_store_get_hit(benchmark: Any, kind: str) -> None:
    store = STORES[kind](10_000)
    keys = [xxhash.xxh3_128_digest(b"%d" % i) for i in range(10_000)]
    for k in keys:
        store.put(k, _small_entry(), 0.0, 1e9)
    key = keys[1234]
    benchmark(store.get, key, 1.0, None)


@pytest.mark.benchmark(group="store-hit")
def test_hit_to_bytes(benchmark: Any) -> None:
    # The whole hit path after the key: lookup, then the prebuilt SSE bytes.
    store = SieveStore(10_000, 1 << 40)
    key = xxhash.xxh3_128_digest(b"k")
    store.put(key, _small_entry(), 0.0, 1e9)

    def hit() -> bytes | None:
        entry = store.get(key, 1.0)
        return None if entry is None else entry.body(True, False)

    benchmark(hit)


UNIVERSE = 100_000
REQUESTS = 1_000_000


def _zipf_trace(one_off_share: float) -> list[bytes]:
    rnd = random.Random(7)
    cum = list(accumulate(1.0 / (rank + 1) for rank in range(UNIVERSE)))  # Zipf, exponent 1.0
    ranks = rnd.choices(range(UNIVERSE), cum_weights=cum, k=REQUESTS)
    keys = [xxhash.xxh3_128_digest(b"r%d" % r) for r in range(UNIVERSE)]
    trace = [keys[r] for r in ranks]
    if one_off_share:
        for i in range(REQUESTS):
            if rnd.random() < one_off_share:
                trace[i] = xxhash.xxh3_128_digest(b"once%d" % i)  # a prompt nobody repeats
    return trace


_TRACES: dict[str, list[bytes]] = {}
_ENTRY = _small_entry()


def _replay(kind: str, capacity: int, trace: list[bytes]) -> tuple[float, float]:
    store = STORES[kind](capacity)
    get, put = store.get, store.put
    entry = _ENTRY
    t0 = time.perf_counter()
    for key in trace:
        if get(key, 1.0) is None:
            put(key, entry, 1.0, 1e9)
    elapsed = time.perf_counter() - t0
    return store.hits / len(trace), len(trace) / elapsed


@pytest.mark.benchmark(group="zipf")
@pytest.mark.parametrize("one_off", [0.0, 0.3], ids=["zipf", "zipf+30%once"])
@pytest.mark.parametrize("cache_pct", [1, 10])
@pytest.mark.parametrize("kind", list(STORES))
def test_zipf(benchmark: Any, kind: str, cache_pct: int, one_off: float) -> None:
    name = f"{one_off}"
    if name not in _TRACES:
        _TRACES[name] = _zipf_trace(one_off)
    trace = _TRACES[name]
    capacity = UNIVERSE * cache_pct // 100
    results: list[tuple[float, float]] = []
    benchmark.pedantic(lambda: results.append(_replay(kind, capacity, trace)), rounds=2, iterations=1)
    hit_ratio = results[-1][0]
    ops = max(r[1] for r in results)
    benchmark.extra_info.update(hit_ratio=round(hit_ratio, 4), ops_per_s=round(ops))
    print(f"\n  zipf one_off={one_off} cache={cache_pct}% {kind:14s} hit_ratio={hit_ratio:.4f} ops/s={ops:,.0f}")


# --- entry / replay (cold path: once per stored answer) ---------------------------------------------


def _answer(chars: int) -> dict[str, Any]:
    text = ("lorem ipsum dolor sit amet " * (chars // 27 + 1))[:chars]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4.1-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 19, "completion_tokens": 300, "total_tokens": 319},
    }


@pytest.mark.benchmark(group="replay")
def test_entry_from_answer_2k(benchmark: Any) -> None:
    benchmark(entry_from_answer, OPENAI_CHAT, _answer(2000))


def _token_stream(answer: dict[str, Any]) -> bytes:
    # What an upstream really sends: one chunk per ~4-character token, then finish, usage, [DONE].
    head = {
        "id": answer["id"],
        "object": "chat.completion.chunk",
        "created": answer["created"],
        "model": answer["model"],
    }
    text = answer["choices"][0]["message"]["content"]
    deltas = [{"role": "assistant", "content": ""}] + [{"content": text[i : i + 4]} for i in range(0, len(text), 4)]
    out = [
        b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}) + b"\n\n"
        for d in deltas
    ]
    out.append(
        b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
    )
    out.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": answer["usage"]}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


@pytest.mark.benchmark(group="replay")
def test_entry_from_sse_2k(benchmark: Any) -> None:
    raw = _token_stream(_answer(2000))
    assert entry_from_sse(OPENAI_CHAT, 200, raw) is not None
    benchmark(entry_from_sse, OPENAI_CHAT, 200, raw)
