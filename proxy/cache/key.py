# proxy/cache/key.py: the cache key, a 128-bit hash of the normalised request.
#
# WARNING: a wrong key is cache poisoning. If two requests that can get different answers share a
# key, one client is served the other's answer (possibly another tenant's). Every input that can change
# the output MUST be in the key; when in doubt, leave a field in (a needless miss costs money, a wrong
# hit leaks data). Change the construction only together with KEY_VERSION, so old entries in a shared
# tier (Redis) can never be read back under the new meaning.
#
# Exact construction, in this order (pure: no I/O, no clock):
#   1. body' = the parsed JSON body minus EXCLUDED_FIELDS (top level only: stream, stream_options, user,
#      metadata, safety_identifier, prompt_cache_key, store, service_tier). Everything else stays,
#      including unknown and provider-specific fields, and `model` itself.
#   2. in body', each FLOAT_FIELDS value that is an int (not a bool) becomes a float: 1 and 1.0 key alike.
#   3. material = orjson.dumps([KEY_VERSION, fmt, tenant, model, anthropic-version, anthropic-beta, body'],
#      OPT_SORT_KEYS): dict keys sorted at every depth, no whitespace. The byte fields are decoded as
#      latin-1 (a bijection), so JSON string escaping keeps every field boundary unambiguous.
#   4. key = xxh3_128(material, seed).digest(): 16 bytes. `key_hex()` gives the 32 hex digits for an
#      `x-llm-edge-cache-key` header.
# `model` is passed on top of body["model"] so a caller can key on the resolved upstream model or caching
# group; body["model"] stays in the key too, so passing the wrong value can only cause misses.
#
# Hash choice: bench/micro_cache.py::test_hash, medians on request-sized inputs (CPython 3.11, 2 shared cores):
#   input          xxh3-128    blake3     sha256
#   200 B          0.08 us     0.65 us    0.58 us
#   2 KB           0.11 us     1.6 us     1.9 us
#   50 KB          1.1 us      10 us      36 us
# xxh3-128 is 8-15x faster than blake3 at every size (blake3's per-call object cost dominates small
# inputs). It is not a cryptographic hash: 128 bits make accidental collisions negligible, but an
# attacker able to craft colliding bodies could poison entries inside their own tenant namespace.
# A secret per-deployment `seed` makes crafting collisions much harder (xxh3 is still no MAC); use
# one when untrusted clients share a namespace: `[cache] key_seed_env` names the environment variable
# holding it, and `CacheSettings.key_seed` is what the caller passes as `seed` (every gateway sharing a
# Redis tier needs the same one, or their keys never match). The whole key
# costs 1.6 / 2.3 / 16 us at 200 B / 2 KB / 50 KB (test_make_key), dominated by the sorted orjson.dumps,
# not by the hash.
#
# Known limits: orjson parses integers beyond 64 bits as floats, so two such huge numbers that round
# to the same float key alike (upstreams reject them anyway). Duplicate JSON keys are resolved by
# orjson (last wins); the gateway must forward what it keyed on, or an upstream that keeps the first
# duplicate answers a different request than the one keyed.
from __future__ import annotations

from typing import Any

from orjson import OPT_SORT_KEYS, JSONEncodeError, dumps
from xxhash import xxh3_128_digest

KEY_VERSION = "llm-edge.cache.v1"

# Fields that never change the answer's content. Everything not listed here is kept.
EXCLUDED_FIELDS = frozenset(
    ("stream", "stream_options", "user", "metadata", "safety_identifier", "prompt_cache_key", "store", "service_tier")
)
# Sampling parameters where an int and the equal float mean the same request.
FLOAT_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
)
# Request headers (lowercase) whose values are key inputs; the downstream parser keeps these.
KEY_HEADERS = (b"anthropic-version", b"anthropic-beta")


def make_key(
    fmt: bytes,
    model: str,
    body: Any,
    tenant: bytes = b"",
    anthropic_version: bytes = b"",
    anthropic_beta: bytes = b"",
    seed: int = 0,
) -> bytes | None:
    """Return the 16-byte cache key of a request, or None when the body cannot be keyed.

    `fmt` is the client API format tag (proxy.cache.formats), `model` the model the request is routed
    by, `body` the dict from orjson.loads(request body), `tenant` the namespace (b"" for none),
    `anthropic_version` / `anthropic_beta` the raw header values (b"" when absent). None means "do not
    cache" (body is not a JSON object, or holds something orjson cannot write back).
    """
    if type(body) is not dict:
        return None
    canon = {k: v for k, v in body.items() if k not in EXCLUDED_FIELDS}
    for name in FLOAT_FIELDS:
        value = canon.get(name)
        if type(value) is int:
            canon[name] = float(value)
    try:
        # One tuple, one dumps, one hash. Measured vs length-prefixed bytes joined in front of the body
        # (test_make_key_join_variant): 0.1-0.7 us faster (~4%), within noise; kept because it is simpler.
        material = dumps(
            (
                KEY_VERSION,
                fmt.decode("latin-1"),
                tenant.decode("latin-1"),
                model,
                anthropic_version.decode("latin-1"),
                anthropic_beta.decode("latin-1"),
                canon,
            ),
            option=OPT_SORT_KEYS,
        )
    except JSONEncodeError:
        return None
    return xxh3_128_digest(material, seed)


def key_hex(key: bytes) -> bytes:
    """The key as 32 lowercase hex digits (ASCII bytes), for an `x-llm-edge-cache-key` header."""
    return key.hex().encode("ascii")
