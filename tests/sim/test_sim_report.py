"""sim.report, sim.results and sim.workload: pure code, no loop, no processes."""
from __future__ import annotations

import tomllib

import httptools
import orjson

from sim import report, workload
from sim.hist import Histogram
from sim.results import Results, merge
from sim.stack import DEFAULT_PROVIDERS, gateway_config

STATS = {
    "requests": 10,
    "overhead_us": {"count": 10, "p50": 41.5, "p90": 80.0, "p99": 350.0, "max": 900.0},
    "routes": [
        {"id": 0, "model": "sim-model", "provider": "local-fast", "upstream_model": "a", "requests": 6, "errors": 1,
         "input_tokens": 60, "output_tokens": 96, "spend_usd": 0.25, "future_key": [1]},
        {"id": 1, "model": "sim-model", "provider": "cloud-pricier", "upstream_model": "b", "requests": 3, "errors": 0,
         "input_tokens": 30, "output_tokens": 48, "spend_usd": 0.5},
        {"id": 2, "model": "other", "provider": "local-fast", "upstream_model": "c", "requests": 1, "errors": 0,
         "input_tokens": 10, "output_tokens": 16, "spend_usd": 0.125},
    ],
    "unknown": {"ignored": True},
}
RUN = {"mode": "closed", "concurrency": 4, "rate": None, "stream": False, "connections": 4}


def results(ok: int = 9, errors: int = 1) -> Results:
    r = Results(mode="closed", requests=ok + errors, ok=ok, errors=errors, elapsed_s=2.0, connections=4)
    for v in range(1, 101):
        r.latency.record(v * 2)  # below 256 µs the histogram is exact
        r.ttfb.record(v * 10)
    r.status = {200: ok, 500: errors}
    r.error_kinds = {"http": errors}
    return r


def test_providers_are_summed_by_name_with_shares() -> None:
    p = report.providers_from_stats(STATS)
    assert [x["name"] for x in p] == ["local-fast", "cloud-pricier"]
    assert p[0] == {"name": "local-fast", "requests": 7, "errors": 1, "input_tokens": 70, "output_tokens": 112,
                    "spend_usd": 0.375, "share": 0.7}
    assert p[1]["share"] == 0.3
    assert report.providers_from_stats(None) == []
    assert report.providers_from_stats({"routes": [{"provider": "x"}]})[0]["share"] == 0.0


def test_text_report_has_the_labelled_lines() -> None:
    text = report.format_text(report.build(results(), STATS, RUN))
    lines = text.splitlines()
    for expected in [
        "Total Requests: 10", "Success: 9", "Errors: 1", "Total Time: 2.00s", "RPS: 5",
        "Latency p50: 100 µs", "Latency p90: 180 µs", "Latency p99: 198 µs", "Latency max: 200 µs",
        "Overhead p50: 41.5 µs", "Overhead p99: 350 µs",
        "Provider local-fast: 7 requests (70.0%), 1 errors, $0.375000",
        "Provider cloud-pricier: 3 requests (30.0%), 0 errors, $0.500000",
        "Total Cost: $0.875000", "Status 500: 1", "Error http: 1",
    ]:
        assert expected in lines, expected
    assert lines[0] == "llm-edge sim: closed loop, concurrency 4, non-streaming"


def test_missing_gateway_stats_show_na() -> None:
    text = report.format_text(report.build(results(10, 0), None, RUN))
    assert "Overhead p50: n/a µs" in text.splitlines()
    assert "Provider" not in text and "Error " not in text


def test_json_report_is_one_object() -> None:
    r = results()
    r.mode = "open"
    r.send_lag.record(123)
    rep = report.build(r, STATS, {**RUN, "mode": "open", "rate": 50.0, "stream": True})
    again = orjson.loads(orjson.dumps(rep))
    assert again["total_requests"] == 10 and again["overhead_us"]["p99"] == 350.0
    assert again["latency_us"]["p50"] == 100 and again["send_lag_us"]["max"] == 123
    text = report.format_text(rep)
    assert text.startswith("llm-edge sim: open loop at 50 req/s over 4 connections, streaming")
    assert "Send lag p99: 123 µs" in text


def test_results_round_trip_and_merge() -> None:
    a = results()
    d = orjson.loads(orjson.dumps(a.to_dict()))
    b = Results.from_dict(d)
    assert b.to_dict() == a.to_dict()
    assert "histograms" not in a.to_dict(histograms=False)
    m = merge([a, b])
    assert (m.requests, m.ok, m.errors, m.elapsed_s, m.connections) == (20, 18, 2, 2.0, 8)
    assert m.status == {200: 18, 500: 2} and m.error_kinds == {"http": 2}
    assert m.latency.n == 200 and m.rps == 10.0
    assert Results(mode="closed").rps == 0.0


def test_histogram_summary_in_results_uses_microseconds() -> None:
    h = Histogram()
    h.record(1500.7)
    assert h.summary()["p50"] == 1500


def parse(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    got: dict[str, object] = {"h": {}, "b": b""}

    class P:
        def on_url(self, url: bytes) -> None:
            got["u"] = url

        def on_header(self, n: bytes, v: bytes) -> None:
            got["h"][n] = v  # type: ignore[index]

        def on_body(self, b: bytes) -> None:
            got["b"] += b  # type: ignore[operator]

    httptools.HttpRequestParser(P()).feed_data(raw)
    return got["u"], got["h"], got["b"]  # type: ignore[return-value]


def test_workload_builds_distinct_chat_requests() -> None:
    reqs = workload.build(workload.Workload(unique=50), "127.0.0.1:9")
    assert len(reqs) == 50 and len(set(reqs)) == 50
    assert reqs == workload.build(workload.Workload(unique=50), "127.0.0.1:9")  # deterministic
    url, headers, body = parse(reqs[0])
    assert url == b"/v1/chat/completions"
    assert headers[b"host"] == b"127.0.0.1:9" and headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    doc = orjson.loads(body)
    assert doc["model"] == "sim-model" and doc["stream"] is False and "stream_options" not in doc
    assert doc["messages"][-1]["role"] == "user"


def test_streamed_workload_asks_for_usage() -> None:
    _, headers, body = parse(workload.build(workload.Workload(stream=True, unique=1), "h:1")[0])
    doc = orjson.loads(body)
    assert doc["stream"] is True and doc["stream_options"] == {"include_usage": True}
    assert headers[b"accept"] == b"text/event-stream"
    assert len(workload.build(workload.Workload(unique=10**9), "h:1")) == workload.MAX_UNIQUE


def test_gateway_config_routes_one_model_over_both_providers() -> None:
    cfg = tomllib.loads(gateway_config("sim-model", DEFAULT_PROVIDERS, [("127.0.0.1", 1), ("127.0.0.1", 2)]))
    assert cfg["server"]["listen"] == "127.0.0.1:0"
    assert [p["name"] for p in cfg["providers"]] == ["local-fast", "cloud-pricier"]
    assert cfg["providers"][0] == {"name": "local-fast", "kind": "local", "base_url": "http://127.0.0.1:1/v1"}
    assert cfg["providers"][1]["api_key_env"] == "SIM_PROVIDER_KEY"
    (model,) = cfg["models"]
    assert model["name"] == "sim-model"
    assert model["routes"] == [
        {"provider": "local-fast", "model": "llama-3.1-8b-instruct", "input_per_mtok": 0.1, "output_per_mtok": 0.4},
        {"provider": "cloud-pricier", "model": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.6},
    ]
