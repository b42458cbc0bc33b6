"""proxy.cache.key: stable under reordering, blind to excluded fields, sensitive to everything else."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy.cache.formats import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS
from proxy.cache.key import EXCLUDED_FIELDS, FLOAT_FIELDS, KEY_HEADERS, key_hex, make_key

BASE: dict[str, Any] = {
    "model": "gpt-4.1-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    ],
    "temperature": 0,
    "top_p": 1,
    "max_tokens": 100,
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}


def key(body: Any = None, **kw: Any) -> bytes | None:
    args = {"fmt": OPENAI_CHAT, "model": "gpt-4.1-mini", "body": BASE if body is None else body}
    args.update(kw)
    return make_key(**args)


def reorder(value: Any, rnd: random.Random) -> Any:
    """The same JSON value with every object's key order shuffled."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [reorder(v, rnd) for v in value]
    return value


def test_key_is_16_bytes_and_hex_is_32_ascii_digits() -> None:
    k = key()
    assert isinstance(k, bytes) and len(k) == 16
    assert key_hex(k) == k.hex().encode() and len(key_hex(k)) == 32


def test_key_is_deterministic_across_calls_and_copies() -> None:
    assert key() == key(copy.deepcopy(BASE))


def test_key_order_of_json_keys_does_not_matter_at_any_depth() -> None:
    raw_a = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"b":1,"a":2}}}}'
    raw_b = b'{"response_format":{"json_schema":{"schema":{"a":2,"b":1},"name":"a"},"type":"json_schema"},"temperature":0,"messages":[{"content":"hi","role":"user"}],"model":"m"}'
    assert key(orjson.loads(raw_a)) == key(orjson.loads(raw_b))


@pytest.mark.parametrize(
    "field,value",
    [
        ("stream", True),
        ("stream_options", {"include_usage": True}),
        ("user", "user-42"),
        ("metadata", {"trace": "x"}),
        ("safety_identifier", "sid"),
        ("prompt_cache_key", "pck"),
        ("store", True),
        ("service_tier", "flex"),
    ],
)
def test_excluded_fields_do_not_change_the_key(field: str, value: Any) -> None:
    assert field in EXCLUDED_FIELDS
    assert key({**BASE, field: value}) == key()


def test_streamed_and_plain_requests_share_a_key() -> None:
    assert key({**BASE, "stream": True, "stream_options": {"include_usage": True}}) == key({**BASE, "stream": False})


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", 0.7),
        ("top_p", 0.5),
        ("top_k", 40),
        ("max_tokens", 101),
        ("max_completion_tokens", 100),
        ("stop", ["\n"]),
        ("stop_sequences", ["END"]),
        ("seed", 7),
        ("n", 2),
        ("tools", []),
        ("tool_choice", "required"),
        ("parallel_tool_calls", False),
        ("response_format", {"type": "json_object"}),
        ("messages", [{"role": "user", "content": "Weather in Lyon?"}]),
        ("model", "gpt-4.1"),
        ("system", "You are terse."),
        ("frequency_penalty", 0.5),
        ("presence_penalty", 0.5),
        ("logit_bias", {"50256": -100}),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("reasoning_effort", "high"),
        ("thinking", {"type": "enabled", "budget_tokens": 1024}),
        ("output_config", {"format": "json"}),
        ("some_future_param", 1),  # unknown fields stay in the key
    ],
)
def test_every_output_changing_field_changes_the_key(field: str, value: Any) -> None:
    assert BASE.get(field) != value
    assert key({**BASE, field: value}) != key()


def test_nested_message_change_changes_the_key() -> None:
    body = copy.deepcopy(BASE)
    body["messages"][1]["content"][0]["text"] = "Weather in Paris!"
    assert key(body) != key()


@pytest.mark.parametrize(
    "kw",
    [
        {"fmt": ANTHROPIC_MESSAGES},
        {"fmt": OPENAI_EMBEDDINGS},
        {"model": "gpt-4.1"},
        {"tenant": b"team-a"},
        {"anthropic_version": b"2023-06-01"},
        {"anthropic_beta": b"prompt-caching-2024-07-31"},
        {"seed": 1},
    ],
)
def test_every_non_body_input_changes_the_key(kw: dict[str, Any]) -> None:
    assert key(**kw) != key()


def test_anthropic_versions_and_tenants_are_told_apart() -> None:
    a = key(fmt=ANTHROPIC_MESSAGES, anthropic_version=b"2023-06-01")
    b = key(fmt=ANTHROPIC_MESSAGES, anthropic_version=b"2026-10-21")
    assert a != b
    assert key(tenant=b"team-a") != key(tenant=b"team-b")
    assert KEY_HEADERS == (b"anthropic-version", b"anthropic-beta")


def test_field_boundaries_are_unambiguous() -> None:
    # Shifting bytes from one field into the next must never produce the same key.
    assert key(tenant=b"ab", anthropic_version=b"c") != key(tenant=b"a", anthropic_version=b"bc")
    assert key(anthropic_version=b"x", anthropic_beta=b"") != key(anthropic_version=b"", anthropic_beta=b"x")
    assert key(tenant=b'a","b') != key(tenant=b"a", model='b"')


def test_tenant_may_be_any_bytes() -> None:
    assert key(tenant=b"\xff\x00\xfe") != key(tenant=b"\xff\x00")


@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_int_and_float_sampling_values_key_alike(field: str) -> None:
    assert key({**BASE, field: 1}) == key({**BASE, field: 1.0})
    assert key({**BASE, field: 0}) == key({**BASE, field: 0.0})
    assert key({**BASE, field: 1}) != key({**BASE, field: 2.0})


def test_bools_are_not_numbers() -> None:
    assert key({**BASE, "temperature": True}) != key({**BASE, "temperature": 1.0})


def test_null_and_absent_differ() -> None:
    body = {k: v for k, v in BASE.items() if k != "top_p"}
    assert key(body) != key({**body, "top_p": None})


def test_input_dict_is_not_mutated() -> None:
    body = copy.deepcopy(BASE)
    body["stream"] = True
    snapshot = copy.deepcopy(body)
    key(body)
    assert body == snapshot and type(body["temperature"]) is int


@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_non_object_bodies_are_not_keyed(body: Any) -> None:
    assert make_key(OPENAI_CHAT, "m", body) is None


def test_unserialisable_bodies_are_not_keyed() -> None:
    assert make_key(OPENAI_CHAT, "m", {"x": object()}) is None


# --- properties ---------------------------------------------------------------------------------

_names = st.text(alphabet="abmnxyz_\u00e9", max_size=5)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_names, inner, max_size=4),
    max_leaves=10,
)
_bodies = st.dictionaries(_names, _json, max_size=6)
_OUTPUT_FIELDS = ["messages", "temperature", "top_p", "max_tokens", "stop", "seed", "tools", "response_format", "n"]


def _canonical(field: str, value: Any) -> bytes:
    if field in FLOAT_FIELDS and type(value) is int:
        value = float(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@settings(max_examples=80, deadline=None, database=None)
@given(body=_bodies, seed=st.integers(0, 2**32))
def test_property_permuted_key_order_gives_the_same_key(body: dict[str, Any], seed: int) -> None:
    assert key(reorder(body, random.Random(seed))) == key(body)


@settings(max_examples=80, deadline=None, database=None)
@given(body=_bodies, extra=st.fixed_dictionaries({}, optional={f: _json for f in sorted(EXCLUDED_FIELDS)}))
def test_property_excluded_fields_never_matter(body: dict[str, Any], extra: dict[str, Any]) -> None:
    base = {k: v for k, v in body.items() if k not in EXCLUDED_FIELDS}
    assert key({**base, **extra}) == key(base)


@settings(max_examples=100, deadline=None, database=None)
@given(body=_bodies, field=st.sampled_from(_OUTPUT_FIELDS), old=_json, new=_json)
def test_property_changing_an_output_field_changes_the_key(
    body: dict[str, Any], field: str, old: Any, new: Any
) -> None:
    assume(_canonical(field, old) != _canonical(field, new))
    assert key({**body, field: old}) != key({**body, field: new})
