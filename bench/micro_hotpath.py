# bench/micro_hotpath.py: one pytest-benchmark per step of the request path, plus whole exchanges.
#
# Run (bench/ is outside the test paths; on a shared machine add --benchmark-timer=time.process_time):
#   python -m pytest bench/micro_hotpath.py --benchmark-only -p no:cacheprovider -o testpaths=bench
# Steps, in request order: parse (request bytes -> Exchange, in DownstreamProtocol), body (orjson parse,
# checks, model lookup), rewrite (splice the upstream model into the body, and the re-encode fallback),
# head (pipeline.on_upstream_head: the relayed response head), stats (Stats.record, Histogram.record,
# scan_usage), translate (one stream chunk each way between OpenAI and Anthropic). The cache key and
# hit lookup are in micro_cache.py, the router pick in micro_router.py. `whole` runs complete exchanges
# through the real objects on fake transports (bench/inproc.py): the figure to optimise against.
# Compare two commits: python -m bench.ab REV (see BENCHMARKS.md).
from __future__ import annotations

from typing import Any

import orjson
import pytest

from bench import inproc
from proxy import body as body_mod
from proxy import wire
from proxy.downstream import DownstreamProtocol
from proxy.exchange import Exchange
from proxy.stats import Histogram, scan_usage
from proxy.translate import AnthropicToOpenAIStream, OpenAIToAnthropicStream

pytestmark = pytest.mark.benchmark(warmup=True)
SIZES = (200, 1024, 51200)


def _rig_exchange(size: int = 1024) -> tuple[inproc.Rig, Exchange]:
    """A rig with one exchange parsed and in flight (sent upstream, no response yet)."""
    rig = inproc.Rig(keep=True)
    rig.client.data_received(inproc.request(inproc.chat_body(1, size)))
    ex = rig.client.active
    assert ex is not None and ex.upstream is rig.conn, "the request did not reach the provider connection"
    return rig, ex


# parse: request bytes -> Exchange


class _ParseOnly(DownstreamProtocol):
    """DownstreamProtocol that keeps each parsed exchange instead of answering it."""

    __slots__ = ("parsed",)

    def _enqueue(self, ex: Exchange) -> None:
        self.parsed = ex


@pytest.mark.parametrize("size", SIZES)
def test_parse_request(benchmark: Any, size: int) -> None:
    rig = inproc.Rig()
    proto = _ParseOnly(rig.gateway)
    proto.connection_made(inproc.CountingTransport())  # type: ignore[arg-type]
    req = inproc.request(inproc.chat_body(1, size))
    benchmark(proto.data_received, req)
    assert proto.parsed.body_size == len(inproc.chat_body(1, size)) and proto.parsed.method == b"POST"


# body: JSON parse, field checks, model -> router model


@pytest.mark.parametrize("size", SIZES)
def test_parse_body_and_model(benchmark: Any, size: int) -> None:
    _, ex = _rig_exchange(size)

    from proxy.request import parse_body  # the request path's pure validation (not on commits before it)

    def step() -> None:
        payload, ex.model, ex.stream = parse_body(ex.body)
        ex.model_id = ex.gen.settings.resolve(ex.model)[0]  # type: ignore[index]

    benchmark(step)
    assert ex.model == "bench" and ex.model_id == 0


# rewrite: the upstream model spliced into the body


@pytest.mark.parametrize("size", SIZES)
def test_replace_model(benchmark: Any, size: int) -> None:
    raw = inproc.chat_body(1, size)
    payload = orjson.loads(raw)
    out = benchmark(body_mod.replace_model, raw, payload, b'"bench-upstream"')
    assert orjson.loads(out)["model"] == "bench-upstream"


@pytest.mark.parametrize("size", (200, 1024))
def test_replace_model_fallback(benchmark: Any, size: int) -> None:
    # A body the splice refuses (a \u escape): re-encoded with orjson. The slow path, for scale.
    raw = inproc.chat_body(1, size).replace(b"bookshop", b"bookshop \\u00e9")
    payload = orjson.loads(raw)
    out = benchmark(body_mod.replace_model, raw, payload, b'"bench-upstream"')
    assert orjson.loads(out)["model"] == "bench-upstream"


# head: the relayed response head


def test_response_head(benchmark: Any) -> None:
    rig, ex = _rig_exchange()
    conn = rig.conn
    conn.status = 200
    ex.followers = None  # measure the relay itself; the cache leader's capture is in `whole`
    head, rest = inproc.UPSTREAM_HEAD, inproc.UPSTREAM_JSON

    from proxy import relay  # the response side (not on commits before it)

    def step() -> None:
        ex.head_sent = False
        relay.on_upstream_head(ex, conn, head, rest)  # a JSON answer: held, then relayed whole at its end
        relay._relay_held(ex, conn, ex.route)

    benchmark(step)
    assert rig.client_out.last.startswith(b"HTTP/1.1 200 OK\r\nx-llm-edge-provider: static\r\n")


def test_json_response(benchmark: Any) -> None:
    # The gateway's own answers (errors, /healthz): one buffer, built per call.
    benchmark(wire.json_response, 200, b'{"status":"ok"}', date=b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n")


# stats: what finishing an exchange records


def test_stats_record(benchmark: Any) -> None:
    rig = inproc.Rig()
    rig.exchange(inproc.request(inproc.chat_body(1)))
    ex = Exchange(rig.gateway, rig.client)
    ex.status, ex.t_start, ex.t_sent, ex.t_upstream, ex.t_relayed, ex.t_end = 200, 1.0, 1.00002, 1.0004, 1.00042, 1.00045
    benchmark(rig.gateway.stats.record, ex)


def test_histogram_record(benchmark: Any) -> None:
    h = Histogram()
    benchmark(h.record, 0.000437)


def test_scan_usage(benchmark: Any) -> None:
    assert benchmark(scan_usage, inproc.UPSTREAM_JSON) == (19, 9)


# translate: one stream chunk


def test_translate_anthropic_chunk_to_openai(benchmark: Any) -> None:
    stream = AnthropicToOpenAIStream("claude-x", include_usage=False, created=1700000000, chunk_id="chatcmpl-1")
    stream.feed(b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
                b'"role":"assistant","model":"claude-x","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
                b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                b'"content_block":{"type":"text","text":""}}\n\n')  # fmt: skip
    delta = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
             b'"delta":{"type":"text_delta","text":"Hello there"}}\n\n')  # fmt: skip
    out = benchmark(stream.feed, delta)
    assert b"Hello there" in out


def test_translate_openai_chunk_to_anthropic(benchmark: Any) -> None:
    stream = OpenAIToAnthropicStream("gpt-x", message_id="msg_1", input_tokens=5)
    stream.feed(b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-x",'
                b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n')  # fmt: skip
    delta = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-x",'
             b'"choices":[{"index":0,"delta":{"content":"Hello there"},"finish_reason":null}]}\n\n')  # fmt: skip
    out = benchmark(stream.feed, delta)
    assert b"Hello there" in out


# whole: complete exchanges through the real objects (no loop, no kernel)


def _whole(benchmark: Any, make: Any, response: tuple[bytes, ...]) -> inproc.Rig:
    # Each call builds its request (a concatenation, see inproc.request_maker) and runs the exchange.
    rig = inproc.Rig(keep=True)
    state = [0]

    def one() -> None:
        i = state[0] = state[0] + 1
        rig.exchange(make(i), response)

    before = rig.gateway.stats.requests
    benchmark(one)
    assert rig.gateway.stats.requests > before and rig.client.active is None
    return rig


@pytest.mark.parametrize("size", (1024, 51200))
def test_whole_exchange_miss(benchmark: Any, size: int) -> None:
    rig = _whole(benchmark, inproc.request_maker(size), (inproc.UPSTREAM_OK,))
    assert rig.client_out.last.endswith(inproc.UPSTREAM_JSON[-40:])


def test_whole_exchange_cache_hit(benchmark: Any) -> None:
    _whole(benchmark, inproc.request_maker(hit=True), (inproc.UPSTREAM_OK,))


def test_whole_exchange_stream_16_chunks(benchmark: Any) -> None:
    rig = _whole(benchmark, inproc.request_maker(stream=True), inproc.STREAM_RESPONSE)
    assert rig.client_out.last.endswith(b"0\r\n\r\n")


def test_relay_one_stream_chunk(benchmark: Any) -> None:
    # One SSE chunk through an exchange in flight: upstream read -> parser -> relay -> client write.
    rig = inproc.Rig(keep=True)
    rig.client.data_received(inproc.request(inproc.chat_body(1, stream=True)))
    rig.conn.data_received(inproc.SSE_HEAD + inproc.sse_chunk(0))
    data = inproc.sse_chunk(1)
    benchmark(rig.conn.data_received, data)
    assert rig.client_out.last == data
