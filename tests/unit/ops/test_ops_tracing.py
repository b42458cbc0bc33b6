"""Traces and OTLP logs: trace context (pure), and `proxy.tracing` exporting through the official SDK
and OTLP/HTTP exporter to a real receiver on a loopback port, decoded with the official protobufs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import pytest

from proxy import config
from proxy.errors import ConfigError
from proxy.tracecontext import (
    Attempt,
    TracingSettings,
    attempt_span_id,
    parse_traceparent,
    sampled,
    trace_id_hex,
    trace_ids,
    upstream_traceparent,
)
from tests.otel.receiver import Receiver, attributes

PROVIDER_KEY = "sk-provider-TRACE-CANARY-77"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
SETTINGS = config.from_table({
    "providers": [{"name": "oa", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": PROVIDER_KEY},
                  {"name": "local", "kind": "local", "base_url": "http://127.0.0.1:8/v1"}],
    "models": [{"name": "fast", "routes": [{"provider": "oa", "model": "gpt-4o-mini"},
                                            {"provider": "local", "model": "llama"}]}],
}, {})  # fmt: skip
OA, LOCAL = SETTINGS.routes[0], SETTINGS.routes[1]


@dataclass
class Finished:
    """A finished exchange as the pipeline leaves it (the fields `tracing.record` reads)."""

    traceparent: bytes = b""
    trace: Any = None
    endpoint: str = "/chat/completions"
    model: str = "fast"
    stream: bool = False
    payload: dict[str, Any] | None = field(default_factory=lambda: {
        "model": "fast", "messages": [{"role": "user", "content": "the secret prompt"}], "temperature": 0.2,
        "max_tokens": 64, "top_p": 0.9})  # fmt: skip
    route: Any = OA
    status: int = 200
    tokens_in: int = 12
    tokens_out: int = 34
    cost_nusd: int = 4200
    cache_outcome: Any = "miss"
    attempts: int = 1
    t_start: float = field(default_factory=perf_counter)
    t_relayed: float = 0.0
    t_end: float = 0.0

    def overhead(self) -> float:
        return 0.000041


def attempt(route: Any, t0: float, t1: float, status: int = 200, error: str = "", first: float = 0.0) -> Attempt:
    return Attempt(f"{route.provider.name}/{route.upstream_model}", route.provider.name, route.provider.kind,
                   route.upstream_model, route.provider.host, route.provider.port, t0, t1, first, status, error)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def make_tracer(receiver: Receiver, **options: Any) -> Any:
    from proxy.tracing import Tracer

    return Tracer(TracingSettings.from_table({"otlp_endpoint": receiver.endpoint, **options}))


def by_name(spans: list[Any]) -> dict[str, Any]:
    return {s.name: s for s in spans}


# -- trace context (pure) ----------------------------------------------------------------------


def test_traceparent_parsing() -> None:
    good = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01".encode()
    assert parse_traceparent(good) == (int(CLIENT_TRACE, 16), int(CLIENT_PARENT, 16), 1)
    assert parse_traceparent(good.upper().replace(b"00-", b"00-", 1)) is not None  # case is tolerated
    assert parse_traceparent(b"01-" + good[3:] + b"-later-fields") is not None  # a future version's extra fields
    for bad in (b"", b"garbage", good[:-1], b"ff" + good[2:], good + b"-x",  # version 00 has exactly 4 fields
                f"00-{'0' * 32}-{CLIENT_PARENT}-01".encode(), f"00-{CLIENT_TRACE}-{'0' * 16}-01".encode(),
                f"00-{CLIENT_TRACE[:-1]}g-{CLIENT_PARENT}-01".encode()):  # fmt: skip
        assert parse_traceparent(bad) is None, bad


def test_a_client_trace_is_continued_and_a_new_one_started_otherwise() -> None:
    continued = Finished(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01".encode())
    trace_id, span_id, parent, flags = trace_ids(continued)
    assert (trace_id, parent, flags) == (int(CLIENT_TRACE, 16), int(CLIENT_PARENT, 16), 1) and span_id
    assert trace_ids(continued) == (trace_id, span_id, parent, flags)  # made once
    assert trace_id_hex(continued) == CLIENT_TRACE
    fresh, broken = Finished(), Finished(traceparent=b"00-nonsense")
    assert trace_ids(fresh)[2] == 0 and trace_ids(broken)[2] == 0
    assert trace_ids(fresh)[0] != trace_ids(broken)[0]
    line = upstream_traceparent(continued, 2)
    assert line == f"traceparent: 00-{CLIENT_TRACE}-{attempt_span_id(span_id, 2):016x}-01\r\n".encode()
    assert attempt_span_id(span_id, 1) != attempt_span_id(span_id, 2)


def test_sampling_follows_the_client_flag_then_the_ratio() -> None:
    assert not sampled((1 << 100, 5, 7, 0), 1.0)  # the client said not sampled
    assert sampled((1 << 100, 5, 7, 1), 0.0)  # ...or sampled
    assert sampled((5, 5, 0, 1), 0.5) and not sampled(((1 << 64) - 2, 5, 0, 1), 0.5)
    assert not sampled((5, 5, 0, 1), 0.0)
    line = upstream_traceparent(Finished(trace=((1 << 64) - 2, 9, 0, 1)), 1, ratio=0.5)
    assert line.endswith(b"-00\r\n")


def test_settings_are_validated() -> None:
    assert not TracingSettings.from_table(None).enabled
    s = TracingSettings.from_table({"otlp_endpoint": "http://c:4318/v1/traces", "sample_ratio": 0.25})
    assert s.enabled and s.url("traces") == "http://c:4318/v1/traces" and s.url("logs") == "http://c:4318/v1/logs"
    for bad, key in (({"otlp_endpoint": "c:4318"}, "otlp_endpoint"), ({"sample_ratio": 2}, "sample_ratio"),
                     ({"capture_content": "yes"}, "capture_content"), ({"service_name": ""}, "service_name"),
                     ({"max_queue": 0}, "max_queue"), ({"nope": 1}, "nope")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"tracing.{key}"):
            TracingSettings.from_table(bad)
    with pytest.raises(ConfigError, match="tracing.sample_ratio"):
        config.from_table({"tracing": {"sample_ratio": -1}}, {})


# -- spans through the SDK to a real receiver ----------------------------------------------------


def test_plain_call_server_span_with_one_client_span(receiver: Receiver) -> None:
    tracer = make_tracer(receiver)
    ex = Finished(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01".encode())
    t0 = ex.t_start
    ex.t_relayed, ex.t_end = t0 + 0.05, t0 + 0.06
    tracer.record(ex, [attempt(OA, t0 + 0.0001, t0 + 0.0599, first=t0 + 0.05)])
    tracer.provider.force_flush()
    spans = by_name(receiver.wait_spans(2))
    server, client = spans["POST /v1/chat/completions"], spans["chat gpt-4o-mini"]
    assert server.trace_id.hex() == client.trace_id.hex() == CLIENT_TRACE
    assert server.parent_span_id.hex() == CLIENT_PARENT and client.parent_span_id == server.span_id
    assert server.kind == server.SPAN_KIND_SERVER and client.kind == client.SPAN_KIND_CLIENT
    assert int.from_bytes(client.span_id, "big") == attempt_span_id(int.from_bytes(server.span_id, "big"), 1)
    assert server.start_time_unix_nano <= client.start_time_unix_nano < client.end_time_unix_nano <= (
        server.end_time_unix_nano)  # fmt: skip
    assert abs((server.end_time_unix_nano - server.start_time_unix_nano) - 60_000_000) < 1000  # explicit times
    a = attributes(server.attributes)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "fast"
    assert a["gen_ai.response.model"] == "gpt-4o-mini" and a["gen_ai.provider.name"] == "openai"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 34)
    assert (a["gen_ai.request.temperature"], a["gen_ai.request.max_tokens"], a["gen_ai.request.top_p"]) == (
        0.2, 64, 0.9)  # fmt: skip
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    assert a["llm_edge.cache"] == "miss" and a["llm_edge.route"] == "oa/gpt-4o-mini"
    assert a["llm_edge.attempts"] == 1 and a["llm_edge.hedged"] is False
    assert a["llm_edge.cost_usd"] == pytest.approx(4.2e-6) and a["llm_edge.overhead_us"] == 41
    c = attributes(client.attributes)
    assert c["server.address"] == "127.0.0.1" and c["server.port"] == 9 and c["http.response.status_code"] == 200
    assert c["gen_ai.request.model"] == "gpt-4o-mini"
    assert receiver.resources[0]["service.name"] == "llm-edge"
    assert b"the secret prompt" not in receiver.raw and PROVIDER_KEY.encode() not in receiver.raw
    tracer.shutdown()


def test_stream_has_its_time_to_first_chunk(receiver: Receiver) -> None:
    tracer = make_tracer(receiver)
    ex = Finished(stream=True)
    t0 = ex.t_start
    ex.t_relayed, ex.t_end = t0 + 0.2, t0 + 1.0
    tracer.record(ex, [attempt(OA, t0, t0 + 1.0, first=t0 + 0.19)])
    tracer.provider.force_flush()
    spans = by_name(receiver.wait_spans(2))
    server = attributes(spans["POST /v1/chat/completions"].attributes)
    assert server["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.2)
    assert server["llm_edge.stream"] is True
    client = attributes(spans["chat gpt-4o-mini"].attributes)
    assert client["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.19)
    assert not spans["POST /v1/chat/completions"].parent_span_id  # no client traceparent: a root span
    tracer.shutdown()


def test_fallback_is_two_client_spans_the_first_failed(receiver: Receiver) -> None:
    tracer = make_tracer(receiver)
    ex = Finished(route=LOCAL, attempts=2)
    t0 = ex.t_start
    ex.t_end = t0 + 0.3
    tracer.record(ex, [attempt(OA, t0, t0 + 0.1, 500, "500"), attempt(LOCAL, t0 + 0.1, t0 + 0.3)])
    tracer.provider.force_flush()
    spans = receiver.wait_spans(3)
    server = next(s for s in spans if s.kind == s.SPAN_KIND_SERVER)
    first, second = sorted((s for s in spans if s.kind == s.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano)
    assert first.parent_span_id == second.parent_span_id == server.span_id
    assert attributes(first.attributes)["error.type"] == "500" and first.status.code == first.status.STATUS_CODE_ERROR
    assert "error.type" not in attributes(second.attributes)
    assert attributes(second.attributes)["gen_ai.provider.name"] == "local"  # not a well-known one: as configured
    assert attributes(server.attributes)["llm_edge.attempts"] == 2
    server_id = int.from_bytes(server.span_id, "big")
    ids = [int.from_bytes(s.span_id, "big") for s in (first, second)]
    assert ids == [attempt_span_id(server_id, n) for n in (1, 2)]
    tracer.shutdown()


def test_cache_hit_is_a_server_span_alone(receiver: Receiver) -> None:
    tracer = make_tracer(receiver)
    ex = Finished(route=None, attempts=0, cache_outcome="HIT", tokens_in=0, tokens_out=0)
    ex.t_end = ex.t_start + 0.0001
    tracer.record(ex, [])
    tracer.provider.force_flush()
    [span] = receiver.wait_spans(1)
    a = attributes(span.attributes)
    assert a["llm_edge.cache"] == "hit" and a["llm_edge.attempts"] == 0 and "gen_ai.provider.name" not in a
    tracer.shutdown()


def test_content_only_when_asked_and_unsampled_traces_cost_nothing(receiver: Receiver) -> None:
    tracer = make_tracer(receiver, capture_content=True)
    ex = Finished()
    ex.t_end = ex.t_start + 0.01
    tracer.record(ex, [], completion=b'{"choices":[{"message":{"content":"the answer"}}]}')
    tracer.record(Finished(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-00".encode()), [])  # client: not sampled
    tracer.provider.force_flush()
    [span] = receiver.wait_spans(1)
    a = attributes(span.attributes)
    assert "the secret prompt" in a["gen_ai.input.messages"] and "the answer" in a["gen_ai.output.messages"]
    assert PROVIDER_KEY.encode() not in receiver.raw
    tracer.shutdown()
    nothing = make_tracer(receiver, sample_ratio=0.0)
    nothing.record(Finished(), [])
    nothing.provider.force_flush()
    assert len(receiver.spans) == 1
    nothing.shutdown()


def test_access_log_lines_as_otlp_logs_under_their_trace(receiver: Receiver) -> None:
    tracer = make_tracer(receiver)
    line = {"t_end": perf_counter(), "request_id": "req_1", "status": 502, "trace_id": CLIENT_TRACE,
            "span_id": CLIENT_PARENT, "model": "fast", "route": None}  # fmt: skip
    tracer.emit_logs([line], 0.0)
    tracer.logs.force_flush()
    from tests.harness import wait_for

    assert wait_for(lambda: receiver.logs, 10)
    [record] = receiver.logs
    assert record.trace_id.hex() == CLIENT_TRACE and record.span_id.hex() == CLIENT_PARENT
    a = attributes(record.attributes)
    assert a["llm_edge.request_id"] == "req_1" and a["llm_edge.status"] == 502 and "llm_edge.route" not in a
    assert record.severity_text == "ERROR"
    tracer.shutdown()


def test_attempt_of_a_route() -> None:
    from proxy.tracecontext import attempt_of

    a = attempt_of(OA, "fast", 1.0, 2.0, 1.5, 200, "")
    assert a == attempt(OA, 1.0, 2.0, first=1.5)
    direct = SETTINGS.direct_routes["local"]
    d = attempt_of(direct, "local/qwen", 1.0, 2.0, 0.0, 0, "connect", hedge=True)
    assert (d.route, d.upstream_model, d.kind, d.hedge, d.error_type) == ("local/*", "qwen", "local", True, "connect")
