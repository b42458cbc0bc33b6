"""proxy/tags.py: tag parsing with bounds, the end user of a body, and capped per-tag spend."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.apis import ANTHROPIC, OPENAI
from proxy.tags import OTHER, TagSpend, end_user, end_user_of, parse_tags


def test_tags_parse_into_pairs() -> None:
    assert parse_tags(b"team=search, feature=autocomplete") == (("team", "search"), ("feature", "autocomplete"))
    assert parse_tags(None) == () and parse_tags(b"") == ()


def test_bad_pairs_are_dropped_not_the_request() -> None:
    raw = b"team=search,=x,novalue,flag=,sp ace=1,team=dup,emoji=\xf0\x9f\x98\x80,ok=a.b:c/d-e_f"
    assert parse_tags(raw) == (("team", "search"), ("ok", "a.b:c/d-e_f"))


def test_count_and_length_are_bounded() -> None:
    raw = b",".join(b"k%d=v" % i for i in range(1000))
    assert len(parse_tags(raw, max_tags=8)) == 8
    assert parse_tags(b"k=" + b"v" * 100 + b",short=1", max_pair_bytes=64) == (("short", "1"),)


def body(doc: object) -> bytes:
    return orjson.dumps(doc)


def test_end_user_of_each_api() -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert end_user(OPENAI, body({"model": "m", "messages": messages, "user": "u-42"})) == "u-42"
    assert end_user(OPENAI, body({"model": "m", "messages": messages, "safety_identifier": "s-1"})) == "s-1"
    assert end_user(ANTHROPIC, body({"model": "m", "messages": messages, "metadata": {"user_id": "a-7"}})) == "a-7"
    assert end_user(ANTHROPIC, body({"model": "m", "messages": messages, "user": "not-anthropic"})) is None


def test_a_body_without_a_user_field_is_not_parsed() -> None:
    # `"role":"user"` alone does not mark a body; a broken body that has no mark is never parsed either.
    assert end_user(OPENAI, b'{"messages":[{"role":"user","content":"x"}] BROKEN') is None
    assert end_user(OPENAI, b'{"user": "x", BROKEN') is None  # marked, but not JSON: no user, no crash


def test_end_user_is_cut_and_cleaned() -> None:
    assert end_user_of(OPENAI, {"user": "a" * 500}, max_bytes=64) == "a" * 64
    assert end_user_of(OPENAI, {"user": 'x"\n\\y'}) == "x???y"
    assert end_user_of(OPENAI, {"user": 42}) is None and end_user_of(OPENAI, ["user"]) is None


def test_spend_per_tag_with_an_other_series_beyond_the_cap() -> None:
    spend = TagSpend(max_series=3)
    spend.record((("team", "search"), ("feature", "auto")), 10, 5, 1_000_000)  # 1e-6 USD
    spend.record((("team", "ads"),), 1, 1, 2_000_000)
    spend.record((("team", "new1"),), 1, 1, 3)
    spend.record((("team", "new2"), ("brand", "x")), 1, 1, 4)
    assert set(spend.series) == {("team", "search"), ("feature", "auto"), ("team", "ads"), ("team", OTHER),
                                 (OTHER, OTHER)}  # fmt: skip
    assert spend.series[("team", OTHER)] == [2, 2, 2, 7]
    for i in range(1000):
        spend.record(((f"t{i}", f"v{i}"),), 1, 1, 1)
    assert len(spend.series) == 5  # no growth


def test_metric_lines_parse_as_prometheus_text() -> None:
    spend = TagSpend()
    assert spend.render() == b""
    spend.record((("team", "search"),), 100, 50, 1_500_000_000)  # 0.0015 USD
    spend.record((("team", 'q"uote'),), 1, 2, 0)
    families = {f.name: f for f in text_string_to_metric_families(spend.render().decode())}
    assert set(families) == {"llm_edge_tag_requests", "llm_edge_tag_tokens", "llm_edge_tag_spend_usd"}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("llm_edge_tag_spend_usd_total", (("tag", "team"), ("value", "search")))] == pytest.approx(0.0015)
    assert samples[("llm_edge_tag_tokens_total", (("kind", "output"), ("tag", "team"), ("value", "search")))] == 50
    assert samples[("llm_edge_tag_requests_total", (("tag", "team"), ("value", 'q"uote')))] == 1
