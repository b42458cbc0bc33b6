# proxy/cache: the pure core of the L1 response cache (no I/O, no event loop, no clock).
#
# Request path, as the pipeline uses it:
#   plan = planner.plan(fmt, model, body, cache_control, ttl_header)      policy.py
#   key  = make_key(fmt, model, body, tenant, anthropic_version, beta)    key.py   (None: don't cache)
#   hit  = store.get(key, now, plan.max_age) if plan.lookup               store.py
#          -> hit.body(stream, include_usage): prebuilt JSON or SSE bytes entry.py
#   on a complete 2xx upstream answer, if plan.store:
#          entry = entry_from_json(...) / entry_from_sse(...)             entry.py (None: not cacheable)
#          store.put(key, entry, now, plan.ttl)
# Modules: formats (API tags), settings (CacheSettings), key, policy, store (+ sketch), entry,
# assemble (SSE -> JSON), replay (JSON -> SSE).
from __future__ import annotations

from proxy.cache.entry import CacheEntry, entry_from_answer, entry_from_json, entry_from_sse, is_cacheable_answer
from proxy.cache.key import key_hex, make_key
from proxy.cache.policy import Outcome, Plan, Planner
from proxy.cache.settings import CacheSettings
from proxy.cache.store import LRUStore, SieveStore, new_store

__all__ = [
    "CacheEntry",
    "CacheSettings",
    "LRUStore",
    "Outcome",
    "Plan",
    "Planner",
    "SieveStore",
    "entry_from_answer",
    "entry_from_json",
    "entry_from_sse",
    "is_cacheable_answer",
    "key_hex",
    "make_key",
    "new_store",
]
