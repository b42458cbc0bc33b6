"""Property tests of the cache key against arbitrary request bodies: it never raises, it is 16
bytes or None, it does not depend on key order, and it tells tenants, formats and models apart."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache.key import make_key
from tests.fuzz.strategies import json_values

SETTINGS = settings(max_examples=100, deadline=None)
bodies = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


def _reversed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(v) for v in value]
    return value


@SETTINGS
@given(body=st.one_of(bodies, json_values), tenant=st.binary(max_size=8), model=st.text(max_size=10))
def test_key_never_raises_and_is_16_bytes_or_none(body: Any, tenant: bytes, model: str) -> None:
    key = make_key(b"oc", model, body, tenant=tenant)
    assert key is None or (isinstance(key, bytes) and len(key) == 16)
    if isinstance(body, dict):
        assert key is not None
        assert make_key(b"oc", model, _reversed(body), tenant=tenant) == key


@SETTINGS
@given(body=bodies, a=st.binary(max_size=8), b=st.binary(max_size=8), model=st.text(max_size=10))
def test_tenants_never_share_a_key(body: dict[str, Any], a: bytes, b: bytes, model: str) -> None:
    if a != b:
        assert make_key(b"oc", model, body, tenant=a) != make_key(b"oc", model, body, tenant=b)


@SETTINGS
@given(body=bodies, m1=st.text(max_size=10), m2=st.text(max_size=10), f1=st.sampled_from([b"oc", b"am"]),
       f2=st.sampled_from([b"oc", b"am"]))  # fmt: skip
def test_models_and_formats_never_share_a_key(body: dict[str, Any], m1: str, m2: str, f1: bytes, f2: bytes) -> None:
    if (m1, f1) != (m2, f2):
        assert make_key(f1, m1, body) != make_key(f2, m2, body)
