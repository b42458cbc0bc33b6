"""proxy.cache.store: bounds, TTL, counters and eviction order of the L1 store."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from proxy.cache.entry import ENTRY_OVERHEAD, CacheEntry
from proxy.cache.formats import OPENAI_EMBEDDINGS
from proxy.cache.sketch import FrequencySketch
from proxy.cache.store import DEFAULT_STORE, LRUStore, SieveStore, new_store

Factory = Callable[[int, int], Any]
KINDS: dict[str, Factory] = {
    "lru": lambda n, b: LRUStore(n, b),
    "sieve": lambda n, b: SieveStore(n, b),
    "lru+tinylfu": lambda n, b: LRUStore(n, b, FrequencySketch(n)),
    "sieve+tinylfu": lambda n, b: SieveStore(n, b, FrequencySketch(n)),
}
PLAIN = {k: v for k, v in KINDS.items() if "tinylfu" not in k}


def entry(payload: int = 100) -> CacheEntry:
    return CacheEntry(OPENAI_EMBEDDINGS, b"x" * payload)  # not streamable: size is payload + overhead


@pytest.fixture(params=list(KINDS))
def make(request: pytest.FixtureRequest) -> Factory:
    return KINDS[request.param]


@pytest.fixture(params=list(PLAIN))
def make_plain(request: pytest.FixtureRequest) -> Factory:
    return PLAIN[request.param]


def test_default_store_is_sieve() -> None:
    assert DEFAULT_STORE is SieveStore
    assert isinstance(new_store(10, 10_000), SieveStore)
    assert new_store(10, 10_000, admission=True)._sketch is not None


def test_put_then_get_hits_and_counts(make: Factory) -> None:
    s = make(10, 100_000)
    e = entry()
    assert s.put(b"k", e, now=100.0, ttl=60)
    assert s.get(b"k", 101.0) is e
    assert s.get(b"nope", 101.0) is None
    assert (s.hits, s.misses, s.entries, s.bytes) == (1, 1, 1, e.size)
    assert (e.created_at, e.expires_at) == (100.0, 160.0)
    assert e.age(130.0) == 30.0
    assert s.counters() == {
        "hits": 1,
        "misses": 1,
        "evictions": 0,
        "expirations": 0,
        "rejections": 0,
        "entries": 1,
        "bytes": e.size,
    }
    assert b"k" in s and len(s) == 1
    s.check()


def test_entry_expires_lazily_on_get(make: Factory) -> None:
    s = make(10, 100_000)
    s.put(b"k", entry(), 0.0, 10)
    assert s.get(b"k", 9.999) is not None
    assert s.get(b"k", 10.0) is None  # expires_at is exclusive
    assert (s.expirations, s.entries, s.bytes) == (1, 0, 0)
    assert b"k" not in s
    s.check()


def test_max_age_refuses_old_entries_but_keeps_them(make: Factory) -> None:
    s = make(10, 100_000)
    s.put(b"k", entry(), 0.0, 100)
    assert s.get(b"k", 30.0, max_age=10) is None
    assert s.get(b"k", 30.0, max_age=30) is not None  # age <= max-age is fresh (RFC 9111)
    assert b"k" in s and s.misses == 1 and s.hits == 1


def test_max_entries_is_enforced(make_plain: Factory) -> None:
    s = make_plain(3, 1 << 30)
    for i in range(5):
        assert s.put(b"k%d" % i, entry(), 0.0, 60)
    assert (s.entries, s.evictions) == (3, 2)
    s.check()


def test_max_bytes_is_enforced(make_plain: Factory) -> None:
    size = entry(616).size
    assert size == 1000
    s = make_plain(100, 2500)
    for i in range(4):
        assert s.put(b"k%d" % i, entry(616), 0.0, 60)
        assert s.bytes <= 2500
    assert (s.entries, s.bytes, s.evictions) == (2, 2000, 2)
    big = entry(2000)  # 2384 bytes: fits alone, so it evicts everything else
    assert s.put(b"big", big, 0.0, 60)
    assert (s.entries, s.bytes) == (1, big.size)
    s.check()


def test_entry_larger_than_max_bytes_is_refused(make: Factory) -> None:
    s = make(10, 1000)
    assert s.put(b"small", entry(100), 0.0, 60)
    assert not s.put(b"huge", entry(1000), 0.0, 60)
    assert (s.entries, s.rejections, s.evictions) == (1, 1, 0)
    assert b"small" in s and b"huge" not in s


def test_refused_replacement_drops_the_stale_entry(make: Factory) -> None:
    s = make(10, 1000)
    s.put(b"k", entry(100), 0.0, 60)
    assert not s.put(b"k", entry(1000), 1.0, 60)
    assert b"k" not in s and s.bytes == 0


def test_zero_ttl_is_refused(make: Factory) -> None:
    s = make(10, 100_000)
    assert not s.put(b"k", entry(), 0.0, 0)
    assert not s.put(b"k", entry(), 0.0, -1)
    assert s.entries == 0 and s.rejections == 2


def test_replacing_a_key_counts_bytes_once(make: Factory) -> None:
    s = make(10, 100_000)
    s.put(b"k", entry(100), 0.0, 60)
    new = entry(300)
    assert s.put(b"k", new, 5.0, 60)
    assert (s.entries, s.bytes, s.evictions) == (1, new.size, 0)
    assert s.get(b"k", 6.0) is new
    s.check()


def test_delete(make: Factory) -> None:
    s = make(10, 100_000)
    s.put(b"k", entry(), 0.0, 60)
    assert s.delete(b"k") and not s.delete(b"k")
    assert (s.entries, s.bytes, s.evictions) == (0, 0, 0)
    s.check()


def test_sweep_drops_only_expired_entries(make: Factory) -> None:
    s = make(100, 1 << 30)
    for i in range(10):
        s.put(b"k%d" % i, entry(), 0.0, 10 + i)  # expire at 10..19
    assert s.sweep(5.0) == 0
    assert s.sweep(13.5) == 3  # expired at 10, 11, 12; the one at 13 waits for its second to end
    assert s.entries == 7 and s.expirations == 3
    assert s.sweep(13.9) == 0  # idempotent within a second
    assert s.sweep(100.0) == 7
    assert (s.entries, s.bytes, s.expirations) == (0, 0, 10)
    s.check()


def test_sweep_after_a_long_gap_and_with_replaced_keys(make: Factory) -> None:
    s = make(100, 1 << 30)
    s.put(b"a", entry(), 0.0, 5)
    s.put(b"a", entry(), 1.0, 1000)  # replaced: the old filing must not expire the new entry
    s.put(b"b", entry(), 0.0, 5)
    assert s.sweep(10_000_000.0 - 1) == 2  # jumps far: walks occupied buckets, not every second
    assert s.sweep(10.0) == 0  # time went backwards: harmless
    s.check()


def test_put_after_time_went_backwards_still_expires(make: Factory) -> None:
    s = make(100, 1 << 30)
    s.sweep(100.0)
    s.put(b"k", entry(), 10.0, 5)  # expires at 15, before the last sweep
    assert s.get(b"k", 16.0) is None  # lazy expiry still applies on get
    s.put(b"j", entry(), 10.0, 5)
    assert s.sweep(102.0) == 1 and s.entries == 0
    s.check()


def test_lru_keeps_the_recently_used_entry() -> None:
    s = LRUStore(3, 1 << 30)
    for k in (b"a", b"b", b"c"):
        s.put(k, entry(), 0.0, 60)
    s.get(b"a", 1.0)
    s.put(b"d", entry(), 1.0, 60)
    assert sorted(s._map) == [b"a", b"c", b"d"]


def test_sieve_hand_evicts_the_first_unvisited_entry() -> None:
    s = SieveStore(3, 1 << 30)
    for k in (b"a", b"b", b"c"):
        s.put(k, entry(), 0.0, 60)
    s.get(b"a", 1.0)  # a visited
    s.put(b"d", entry(), 1.0, 60)  # hand: a (clear) -> b evicted
    assert sorted(s._map) == [b"a", b"c", b"d"]
    s.put(b"e", entry(), 1.0, 60)  # hand resumes at c: unvisited -> evicted
    assert sorted(s._map) == [b"a", b"d", b"e"]
    s.get(b"d", 2.0)
    s.get(b"e", 2.0)
    s.put(b"f", entry(), 2.0, 60)  # hand wraps to the oldest, a (bit cleared earlier) -> evicted
    assert sorted(s._map) == [b"d", b"e", b"f"]
    assert s.evictions == 3
    s.check()


def test_sieve_prefers_evicting_expired_entries() -> None:
    s = SieveStore(2, 1 << 30)
    s.put(b"old", entry(), 0.0, 5)
    s.put(b"live", entry(), 0.0, 500)
    s.get(b"old", 1.0)  # visited, but about to expire
    s.put(b"new", entry(), 10.0, 60)
    assert sorted(s._map) == [b"live", b"new"]
    assert (s.expirations, s.evictions) == (1, 0)


def test_tinylfu_refuses_a_cold_newcomer_but_not_a_popular_one() -> None:
    s = SieveStore(2, 1 << 30, FrequencySketch(2))
    for k in (b"a", b"b"):
        s.put(k, entry(), 0.0, 60)
        for _ in range(3):
            s.get(k, 1.0)
    assert not s.put(b"cold", entry(), 1.0, 60)
    assert s.rejections == 1 and b"cold" not in s
    for _ in range(6):
        s.get(b"hot", 1.0)
    assert s.put(b"hot", entry(), 1.0, 60)
    assert b"hot" in s and s.entries == 2


def test_tinylfu_admits_when_the_victim_has_expired() -> None:
    s = LRUStore(1, 1 << 30, FrequencySketch(1))
    s.put(b"a", entry(), 0.0, 5)
    for _ in range(5):
        s.get(b"a", 1.0)
    assert s.put(b"b", entry(), 10.0, 60)
    assert s.expirations == 1


def test_sketch_counts_saturate_and_age() -> None:
    sk = FrequencySketch(16, sample_factor=10)  # halves every 160 records
    for _ in range(20):
        sk.record(b"x")
    assert sk.estimate(b"x") == 15
    assert sk.estimate(b"never") <= 15
    for i in range(140):
        sk.record(b"y%d" % i)
    assert sk.estimate(b"x") <= 8


def test_store_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        SieveStore(0, 10)
    with pytest.raises(ValueError):
        LRUStore(10, 0)


def test_repr_shows_the_counters() -> None:
    s = SieveStore(3, 5000)
    s.put(b"k", entry(), 0.0, 1)
    assert repr(s).startswith("<SieveStore entries=1/3 bytes=")


@pytest.mark.parametrize("kind", list(KINDS))
def test_randomized_operations_never_break_the_bounds(kind: str) -> None:
    rnd = random.Random(kind)
    s = KINDS[kind](20, 20 * (ENTRY_OVERHEAD + 300))
    now = 0.0
    live: dict[bytes, CacheEntry] = {}
    for step in range(4000):
        key = b"k%d" % rnd.randrange(60)
        op = rnd.random()
        if op < 0.5:
            got = s.get(key, now, rnd.choice([None, None, 5.0]))
            if got is not None:
                assert live[key] is got and got.expires_at > now
        elif op < 0.85:
            e = entry(rnd.randrange(0, 1500))
            if s.put(key, e, now, rnd.choice([1, 10, 100])):
                live[key] = e
        elif op < 0.9:
            s.delete(key)
        elif op < 0.95:
            s.sweep(now)
        else:
            now += rnd.random() * 5
        assert s.entries <= s.max_entries and s.bytes <= s.max_bytes
        if step % 100 == 0:
            s.check()
    s.check()


class StoreMachine(RuleBasedStateMachine):
    """Model-checks a store: what it returns is the last entry put for that key, alive and fresh."""

    factory = staticmethod(KINDS["sieve"])

    def __init__(self) -> None:
        super().__init__()
        self.store = self.factory(4, 4 * (ENTRY_OVERHEAD + 200))
        self.now = 0.0
        self.last: dict[bytes, CacheEntry] = {}

    keys = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"])

    @rule(key=keys, payload=st.integers(0, 1200), ttl=st.sampled_from([0, 1, 3, 50]))
    def put(self, key: bytes, payload: int, ttl: int) -> None:
        e = entry(payload)
        ok = self.store.put(key, e, self.now, ttl)
        self.last.pop(key, None)
        if ok:
            self.last[key] = e
            assert self.store.get(key, self.now) is e
        else:
            assert key not in self.store

    @rule(key=keys, max_age=st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.0])))
    def get(self, key: bytes, max_age: float | None) -> None:
        got = self.store.get(key, self.now, max_age)
        if got is not None:
            assert got is self.last[key]
            assert got.expires_at > self.now
            assert max_age is None or self.now - got.created_at <= max_age

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        self.store.delete(key)
        assert key not in self.store

    @rule(dt=st.sampled_from([0.5, 1.0, 2.5]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.store.entries > 0)
    @rule()
    def sweep(self) -> None:
        self.store.sweep(self.now)
        for key in list(self.last):
            if key in self.store:
                assert self.last[key].expires_at >= int(self.now)

    @invariant()
    def bounded_and_consistent(self) -> None:
        s = self.store
        assert s.entries <= s.max_entries and s.bytes <= s.max_bytes
        s.check()


_machine_settings = settings(max_examples=40, stateful_step_count=30, deadline=None, database=None)


class TestSieveStoreMachine(StoreMachine.TestCase):
    settings = _machine_settings


class _LRUMachine(StoreMachine):
    factory = staticmethod(KINDS["lru"])


class TestLRUStoreMachine(_LRUMachine.TestCase):
    settings = _machine_settings


class _SieveAdmissionMachine(StoreMachine):
    factory = staticmethod(KINDS["sieve+tinylfu"])


class TestSieveAdmissionStoreMachine(_SieveAdmissionMachine.TestCase):
    settings = _machine_settings
