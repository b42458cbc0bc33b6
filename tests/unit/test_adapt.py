"""adapt: which body goes upstream for each client API and provider API, and the translations that
rebuild the answer in the client's format. Pure: bytes in, bytes out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy import adapt, config, errors
from proxy.apis import ANTHROPIC, OPENAI
from proxy.wire import LAST_CHUNK, chunk, dechunk
from tests.unit.protocol_harness import splits

SECRET = "sk-upstream-SECRET"


def settings() -> config.Settings:
    return config.from_table(
        {
            "server": {"listen": "127.0.0.1:0"},
            "providers": [
                {"name": "oa", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": SECRET},
                {"name": "anth", "kind": "anthropic", "base_url": "http://127.0.0.1:10/v1", "api_key": SECRET},
                {"name": "local", "kind": "local", "base_url": "http://127.0.0.1:11/v1"},
            ],
            "models": [
                {"name": "gpt", "routes": [{"provider": "oa", "model": "gpt-up"}]},
                {"name": "claude", "routes": [{"provider": "anth", "model": "claude-up"}]},
                {"name": "llama", "routes": [{"provider": "local", "model": "llama-up"}]},
            ],
        },
        env={},
    )


SETTINGS = settings()
GPT, CLAUDE, LLAMA = SETTINGS.routes[0], SETTINGS.routes[1], SETTINGS.routes[2]


def request(api: int, endpoint: str, raw: bytes, route: config.Route, model: str = "m") -> tuple[str, bytes, Any]:
    payload = orjson.loads(raw)
    return adapt.upstream_request(api, endpoint, payload, raw, model, bool(payload.get("stream")), route)


@pytest.mark.parametrize("route,api", [(GPT, OPENAI), (CLAUDE, ANTHROPIC), (LLAMA, OPENAI)])
def test_provider_api(route: config.Route, api: int) -> None:
    assert adapt.provider_api(route.provider) == api


def test_same_api_splices_the_model_and_nothing_else() -> None:
    raw = b'{"model":"gpt","messages":[{"role":"user","content":"hi"}],"temperature":0}'
    endpoint, body, translation = request(OPENAI, "/chat/completions", raw, GPT)
    assert endpoint == "/chat/completions" and translation is None
    assert body == raw.replace(b'"gpt"', b'"gpt-up"')


def test_anthropic_to_anthropic_is_spliced() -> None:
    raw = b'{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    endpoint, body, translation = request(ANTHROPIC, "/messages", raw, CLAUDE)
    assert endpoint == "/messages" and translation is None and body == raw.replace(b'"claude"', b'"claude-up"')


def test_an_openai_stream_asks_for_usage_and_strips_it_later() -> None:
    raw = b'{"model":"gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    _, body, translation = request(OPENAI, "/chat/completions", raw, GPT)
    assert isinstance(translation, adapt.UsageOnly)
    assert orjson.loads(body) == {**orjson.loads(raw), "model": "gpt-up", "stream_options": {"include_usage": True}}
    assert body.startswith(b'{"stream_options":{"include_usage":true},')  # prefixed, not re-encoded


def test_an_openai_stream_that_asked_for_usage_itself_is_relayed_raw() -> None:
    raw = b'{"model":"gpt","stream":true,"stream_options":{"include_usage":true},"messages":[]}'
    _, body, translation = request(OPENAI, "/chat/completions", raw, GPT)
    assert translation is None and body == raw.replace(b'"gpt"', b'"gpt-up"')


def test_other_stream_options_are_kept_when_usage_is_added() -> None:
    raw = b'{"model":"gpt","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[]}'
    _, body, translation = request(OPENAI, "/chat/completions", raw, GPT)
    assert isinstance(translation, adapt.UsageOnly)
    assert orjson.loads(body)["stream_options"] == {"include_usage": True, "x": 1}


def test_openai_client_to_anthropic_provider_is_translated() -> None:
    raw = b'{"model":"claude","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}'
    endpoint, body, translation = request(OPENAI, "/chat/completions", raw, CLAUDE)
    sent = orjson.loads(body)
    assert endpoint == "/messages" and isinstance(translation, adapt.Translation)
    assert sent["model"] == "claude-up" and sent["system"] and sent["max_tokens"] == CLAUDE.provider.default_max_tokens


def test_anthropic_client_to_openai_provider_is_translated() -> None:
    raw = b'{"model":"gpt","max_tokens":7,"messages":[{"role":"user","content":"hi"}]}'
    endpoint, body, translation = request(ANTHROPIC, "/messages", raw, GPT)
    sent = orjson.loads(body)
    assert endpoint == "/chat/completions" and translation is not None
    assert sent["model"] == "gpt-up" and sent["messages"][-1]["content"] == "hi"


def test_embeddings_have_no_anthropic_endpoint() -> None:
    with pytest.raises(errors.BadRequestError, match="no embeddings endpoint"):
        request(OPENAI, "/embeddings", b'{"model":"claude","input":"x"}', CLAUDE)


def test_embeddings_to_openai_are_spliced() -> None:
    endpoint, body, translation = request(OPENAI, "/embeddings", b'{"model":"gpt","input":"x"}', GPT)
    assert endpoint == "/embeddings" and translation is None and b'"gpt-up"' in body


def test_a_direct_route_sends_the_name_after_the_slash() -> None:
    direct = [r for r in SETTINGS.routes if r.upstream_model is None and r.provider.name == "oa"][0]
    raw = b'{"model":"oa/gpt-4o","messages":[]}'
    _, body, _ = request(OPENAI, "/chat/completions", raw, direct, model="oa/gpt-4o")
    assert orjson.loads(body)["model"] == "gpt-4o"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    "raw,api,route",
    [
        (b'{"model":"gpt","messages":[{"role":"user","content":"\\u0061"}],"x":%b}' % nested(300), OPENAI, GPT),
        (b'{"model":"gpt","model":"gpt","messages":[],"x":%b}' % nested(300), OPENAI, GPT),
        (b'{"model":"claude","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":'
         b'{"name":"f","parameters":%b}}]}' % deep_object(300), OPENAI, CLAUDE),
    ],
    ids=["escape", "model-twice", "translated"],
)
def test_a_body_too_deep_to_re_encode_is_a_400_not_a_crash(raw: bytes, api: int, route: config.Route) -> None:
    with pytest.raises(errors.BadRequestError, match="254"):
        request(api, "/chat/completions", raw, route)


# Translation: the buffered answer


ANTHROPIC_ANSWER = (
    b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-up","content":[{"type":"text","text":"hi"}],'
    b'"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}'
)


def translation(api: int = OPENAI, stream: bool = False, route: config.Route = CLAUDE) -> adapt.Translation:
    return adapt.Translation(api, "claude-up", stream, {}, b"x" * 40, route)


def test_a_buffered_answer_is_rebuilt_and_counted() -> None:
    t = translation()
    assert t.head(200) is None and not t.streaming
    for piece in (ANTHROPIC_ANSWER[:10], ANTHROPIC_ANSWER[10:]):
        t.body(piece)
    status, body = t.answer()
    answer = orjson.loads(body)
    assert status == 200 and answer["choices"][0]["message"]["content"] == "hi"
    assert (t.tokens_in, t.tokens_out) == (3, 1)


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b""])
def test_a_buffered_answer_that_is_not_an_object_is_an_upstream_error(raw: bytes) -> None:
    t = translation()
    t.head(200)
    t.body(raw)
    with pytest.raises(errors.UpstreamProtocolError):
        t.answer()


def test_an_error_answer_is_translated_with_the_key_masked() -> None:
    t = translation()
    t.head(401)
    t.body(b'{"type":"error","error":{"type":"authentication_error","message":"bad key %b"}}' % SECRET.encode())
    status, body = t.answer()
    assert status == 401 and SECRET.encode() not in body
    assert orjson.loads(body)["error"]["message"].startswith("bad key ")


def test_a_buffered_answer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapt, "MAX_TRANSLATED_BYTES", 100)
    t = translation()
    t.head(200)
    t.body(b"x" * 60)
    with pytest.raises(errors.UpstreamProtocolError, match="too large"):
        t.body(b"x" * 60)


def test_kept_answers_are_handed_to_the_cache_once() -> None:
    t = translation()
    t.keeping = True
    t.head(200)
    t.body(ANTHROPIC_ANSWER)
    _, body = t.answer()
    assert t.take_kept() == body and t.take_kept() == b""


# Translation: streams


ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"model":"claude-up","content":[],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
    b'"text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":'
    b'{"output_tokens":1}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def run_stream(t: adapt.Translation, pieces: list[bytes]) -> bytes:
    out = b""
    for piece in pieces:
        t.body(piece)
        out += t.flush()
    return out + t.end_stream()


SEVEN_BYTE_READS = [ANTHROPIC_STREAM[i : i + 7] for i in range(0, len(ANTHROPIC_STREAM), 7)]


@pytest.mark.parametrize("pieces", [[ANTHROPIC_STREAM], SEVEN_BYTE_READS], ids=["whole", "7-byte reads"])
def test_a_translated_stream_is_framed_as_chunks_and_ends_once(pieces: list[bytes]) -> None:
    t = translation(stream=True)
    assert t.head(200) == adapt.STREAM_HEAD and t.streaming
    out = run_stream(t, pieces)
    assert out.endswith(LAST_CHUNK) and out.count(LAST_CHUNK) == 1
    events = dechunk(out)
    assert b'"content":"hi"' in events and events.rstrip().endswith(b"data: [DONE]")
    assert t.completed and not t.errored and t.tokens_in == 3 and t.tokens_out == 1


def test_a_translated_stream_cut_short_ends_with_an_error_event() -> None:
    t = translation(stream=True)
    t.head(200)
    out = run_stream(t, [ANTHROPIC_STREAM[:300]])
    assert b'"error"' in dechunk(out) and t.errored and not t.completed


def test_a_streamed_request_answered_with_an_error_is_buffered() -> None:
    t = translation(stream=True)
    assert t.head(429) is None and not t.streaming


def test_error_event_before_any_stream_is_empty() -> None:
    assert translation().error_event("m", "server_error") == b""


# UsageOnly: the usage chunk the gateway asked for is counted and dropped


OPENAI_EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n',
    b"data: [DONE]\n\n",
]
OPENAI_STREAM = b"".join(OPENAI_EVENTS)


@pytest.mark.parametrize("pieces", splits(OPENAI_STREAM)[:2] + splits(OPENAI_STREAM)[2::9], ids=lambda p: f"{len(p)}")
def test_usage_only_strips_the_usage_chunk_however_the_stream_is_split(pieces: list[bytes]) -> None:
    t = adapt.UsageOnly(GPT)
    assert t.head(200) == adapt.STREAM_HEAD
    out = run_stream(t, pieces)
    payload = dechunk(out)
    assert payload == OPENAI_EVENTS[0] + OPENAI_EVENTS[2]
    assert (t.tokens_in, t.tokens_out) == (5, 2) and t.completed and not t.errored


def test_usage_only_says_when_the_stream_was_cut_short() -> None:
    t = adapt.UsageOnly(GPT)
    t.head(200)
    out = run_stream(t, [OPENAI_EVENTS[0]])
    assert b"the provider ended the stream before it was complete" in dechunk(out)
    assert t.errored and not t.completed and out.endswith(LAST_CHUNK)


def test_usage_only_terminator_text_in_model_output_is_not_the_end() -> None:
    t = adapt.UsageOnly(GPT)
    t.head(200)
    run_stream(t, [b'data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n'])
    assert t.errored


def test_usage_only_keeps_the_whole_stream_for_the_cache() -> None:
    t = adapt.UsageOnly(GPT)
    t.keeping = True
    t.head(200)
    run_stream(t, [OPENAI_STREAM])
    assert t.take_kept() == OPENAI_STREAM


def test_usage_only_error_answer_is_relayed_with_the_key_masked() -> None:
    t = adapt.UsageOnly(GPT)
    assert t.head(401) is None
    error = b'{"error":{"message":"key %b"}}' % SECRET.encode()
    t.body(error)
    status, body = t.answer()
    assert status == 401 and SECRET.encode() not in body and len(body) == len(error)


def test_usage_only_error_event_is_openai_shaped() -> None:
    event = adapt.UsageOnly(GPT).error_event("went wrong", "")
    assert orjson.loads(event[6:])["error"] == {"message": "went wrong", "type": "server_error", "param": None,
                                                "code": None}  # fmt: skip
    assert chunk(event).endswith(b"\n\n\r\n")
