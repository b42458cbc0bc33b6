"""Model-name splicing: exact bytes when safe, a correct re-encode otherwise."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.body import replace_model

NEW = b'"gpt-4o-mini"'


def run(body: bytes) -> bytes:
    return replace_model(body, orjson.loads(body), NEW)


def test_splices_without_touching_the_rest() -> None:
    body = b'{"messages": [{"role":"user","content":"\\u00e9 caf\\u00e9"}],   "model" :  "fast", "temperature": 0}'
    assert run(body) == body.replace(b'"fast"', NEW)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"fast","metadata":{"model":"other"},"messages":[]}',  # a nested "model" too
        b'{"model":"a","model":"fast","messages":[]}',  # duplicate keys: the last one counts
        b'{"mod\\u0065l":"fast","x":{"model":"fast"},"messages":[]}',  # an escaped top-level key
        b'{"model":"fa\\u0073t","messages":[]}',  # an escaped value
        b'{"messages":[{"role":"user","content":"say \\"model\\""}],"model":"fast"}',
    ],
)
def test_falls_back_to_a_correct_re_encode(body: bytes) -> None:
    out = orjson.loads(run(body))
    expected = orjson.loads(body)
    expected["model"] = "gpt-4o-mini"
    assert out == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["model", "a", "b"]), inner, max_size=3),
    max_leaves=10,
)


@given(
    extra=st.dictionaries(st.sampled_from(["metadata", "messages", "tools", "x"]), json_values, max_size=3),
    model=st.text(min_size=1, max_size=10),
    first=st.booleans(),
)
def test_property_only_the_top_level_model_changes(extra: dict, model: str, first: bool) -> None:
    doc = {"model": model, **extra} if first else {**extra, "model": model}
    body = orjson.dumps(doc)
    out = orjson.loads(replace_model(body, orjson.loads(body), NEW))
    assert out == {**doc, "model": "gpt-4o-mini"}
