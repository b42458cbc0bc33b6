"""sim.loadgen against the in-test tiny server: closed loop, open-loop schedule, errors.

Everything that touches a loop runs on uvloop and stock asyncio (the `loop_kind` fixture).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import httptools
import orjson
import pytest

from sim import loadgen
from sim.loadgen import LoadgenError, LoadSpec, Progress, Results
from tests.sim import sim_testing, tiny_server
from tests.sim.sim_testing import arun

loop_kind = sim_testing.loop_kind  # the fixture: every test that takes it runs on both loops


def get(path: str) -> bytes:
    return loadgen.request_bytes("GET", path, "127.0.0.1")


async def load(
    paths: list[str], progress: list[Progress] | None = None, **kw: object
) -> tuple[Results, tiny_server.Recorder]:
    """Start the tiny server, run the load in the same loop, stop the server."""
    server, port, rec = await tiny_server.start()
    try:
        spec = LoadSpec("127.0.0.1", port, [get(p) for p in paths], **kw)  # type: ignore[arg-type]
        r = await loadgen.run_async(spec, progress.append if progress is not None else None)
    finally:
        server.close()
        await server.wait_closed()
    assert r.requests == r.ok + r.errors
    return r, rec


# closed loop


def test_closed_loop_counts_and_reuses_connections(loop_kind: str) -> None:
    r, rec = arun(lambda: load(["/ok"], requests=300, concurrency=8), loop_kind)
    assert (r.mode, r.requests, r.ok, r.errors, r.status) == ("closed", 300, 300, 0, {200: 300})
    assert len(rec.paths) == 300
    assert rec.connections == 8  # keep-alive: one connection per slot, never more
    assert r.latency.n == r.ttfb.n == 300
    assert r.ttfb.max <= r.latency.max
    assert r.send_lag.n == 0
    assert r.rps > 0


def test_payloads_are_cycled_in_order(loop_kind: str) -> None:
    r, rec = arun(lambda: load(["/ok", "/status/201", "/status/202"], requests=30, concurrency=1), loop_kind)
    assert rec.paths == [b"/ok", b"/status/201", b"/status/202"] * 10
    assert r.status == {200: 10, 201: 10, 202: 10}
    assert r.ok == 30


def test_budget_smaller_than_concurrency_opens_fewer_connections(loop_kind: str) -> None:
    r, rec = arun(lambda: load(["/ok"], requests=3, concurrency=32), loop_kind)
    assert (r.requests, r.connections, rec.connections) == (3, 3, 3)


def test_duration_closed_loop(loop_kind: str) -> None:
    r, _ = arun(lambda: load(["/ok"], duration=0.3, concurrency=4), loop_kind)
    assert 0.29 <= r.elapsed_s < 1.5
    assert r.requests > 20
    assert r.errors == 0


def test_connection_close_is_followed_by_a_new_connection(loop_kind: str) -> None:
    r, rec = arun(lambda: load(["/close"], requests=40, concurrency=4), loop_kind)
    assert (r.requests, r.ok) == (40, 40)
    assert rec.connections >= 40


# streams


def test_stream_succeeds_only_with_terminator(loop_kind: str) -> None:
    ok, _ = arun(lambda: load(["/sse"], requests=20, concurrency=4), loop_kind)
    assert (ok.ok, ok.errors) == (20, 0)  # the terminator arrives split over two chunks
    cut, _ = arun(lambda: load(["/sse-cut"], requests=20, concurrency=4), loop_kind)
    assert (cut.ok, cut.error_kinds, cut.status) == (0, {"stream": 20}, {200: 20})
    lax, _ = arun(lambda: load(["/sse-cut"], requests=5, concurrency=1, terminator=b""), loop_kind)
    assert lax.ok == 5  # an empty terminator disables the check


# errors


@pytest.mark.parametrize(
    ("path", "kind", "extra"),
    [
        ("/status/500", "http", {}),
        ("/status/404", "http", {}),
        ("/reset", "reset", {}),
        ("/garbage", "parse", {}),
        ("/hang", "timeout", {"timeout": 0.2}),
    ],
)
def test_error_kinds(loop_kind: str, path: str, kind: str, extra: dict[str, float]) -> None:
    r, rec = arun(lambda: load([path], requests=6, concurrency=3, **extra), loop_kind)
    assert (r.requests, r.ok, r.errors) == (6, 0, 6)
    assert r.error_kinds == {kind: 6}
    assert len(rec.paths) == 6
    if kind == "http":
        assert sum(r.status.values()) == 6
        assert r.latency.n == 6  # complete responses are timed whatever their status
    else:
        assert r.latency.n == 0


def test_timeout_ends_the_run_promptly(loop_kind: str) -> None:
    r, _ = arun(lambda: load(["/hang"], requests=4, concurrency=4, timeout=0.2), loop_kind)
    assert r.elapsed_s < 1.0


def test_no_listener_raises(loop_kind: str) -> None:
    with socket.socket() as s:  # bound, not listening: connects are refused, and no one can take the port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        spec = LoadSpec("127.0.0.1", port, [get("/ok")], requests=5, concurrency=2)
        with pytest.raises(LoadgenError, match="cannot connect"):
            arun(lambda: loadgen.run_async(spec), loop_kind)


# open loop


def test_open_loop_follows_the_schedule(loop_kind: str) -> None:
    rate, n = 200.0, 40
    r, rec = arun(lambda: load(["/ok"], rate=rate, requests=n, connections=4), loop_kind)
    assert (r.mode, r.requests, r.ok) == ("open", n, n)
    assert r.send_lag.n == n
    arrivals = sorted(rec.arrivals)
    first = arrivals[0]
    for i, t in enumerate(arrivals):
        assert t - first >= i / rate - 0.003, i  # never sent early
    assert arrivals[-1] - first < (n - 1) / rate + 0.1  # nor far behind
    assert (n - 1) / rate <= r.elapsed_s < 1.0


def test_open_loop_counts_latency_from_the_schedule(loop_kind: str) -> None:
    # 20 ms of service per request, one connection, a request due every 10 ms: the queue grows.
    # A closed-loop client would report ~20 ms for every request; from the schedule, the last
    # request waits ~190 ms more.
    r, _ = arun(lambda: load(["/delay/20"], rate=100, requests=20, connections=1), loop_kind)
    assert (r.requests, r.ok) == (20, 20)
    assert r.elapsed_s >= 0.38
    assert r.latency.min >= 18_000  # loop timers may fire up to ~1 ms early
    assert r.latency.max >= 150_000
    assert r.send_lag.max >= 100_000


def test_open_loop_queued_requests_time_out(loop_kind: str) -> None:
    r, _ = arun(lambda: load(["/hang"], rate=100, requests=5, connections=1, timeout=0.2), loop_kind)
    assert (r.requests, r.error_kinds) == (5, {"timeout": 5})
    assert r.elapsed_s < 2.0


def test_open_loop_duration_sets_the_count(loop_kind: str) -> None:
    r, _ = arun(lambda: load(["/ok"], rate=100, duration=0.2, connections=2), loop_kind)
    assert r.requests == 20


# progress


def test_progress_is_reported(loop_kind: str) -> None:
    seen: list[Progress] = []
    r, _ = arun(lambda: load(["/ok"], seen, duration=0.65, concurrency=2, progress_interval=0.1), loop_kind)
    assert len(seen) >= 3
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert seen[-1].done <= r.requests
    assert all(p.in_flight <= 2 and p.rps >= 0 for p in seen)


def test_failing_progress_callback_ends_the_run(loop_kind: str) -> None:
    def boom(p: Progress) -> None:
        raise ValueError("boom")

    async def go() -> None:
        server, port, _ = await tiny_server.start()
        try:
            spec = LoadSpec("127.0.0.1", port, [get("/ok")], duration=5.0, progress_interval=0.05)
            await loadgen.run_async(spec, boom)
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(ValueError, match="boom"):
        arun(go, loop_kind)


# spec, framing, request bytes


def test_spec_validation_and_planning() -> None:
    p = [b"x"]
    assert LoadSpec("h", 1, p * 7).planned() == 7
    assert LoadSpec("h", 1, p, requests=9).planned() == 9
    assert LoadSpec("h", 1, p, duration=2).planned() is None
    assert LoadSpec("h", 1, p, rate=50, duration=2).planned() == 100
    assert LoadSpec("h", 1, p, rate=50, duration=2, requests=10).planned() == 10
    assert LoadSpec("h", 1, p, rate=50, duration=2, connections=4, concurrency=9).slots() == 4
    assert LoadSpec("h", 1, p, requests=2, concurrency=9).slots() == 2
    for bad in ({"payloads": []}, {"concurrency": 0}, {"requests": 0}, {"duration": 0}, {"rate": -1},
                {"timeout": 0}, {"loop": "tokio"}, {"connections": 0}):
        kw = {"host": "h", "port": 1, "payloads": p, **bad}
        with pytest.raises(LoadgenError):
            LoadSpec(**kw).validate()  # type: ignore[arg-type]


def test_payload_framing_round_trip() -> None:
    payloads = [b"", b"a", b"GET / HTTP/1.1\r\n\r\n" * 100]
    assert loadgen.decode_payloads(loadgen.encode_payloads(payloads)) == payloads
    with pytest.raises(LoadgenError):
        loadgen.decode_payloads(loadgen.encode_payloads([b"abc"])[:-1])
    with pytest.raises(LoadgenError):
        loadgen.decode_payloads(b"\x00\x00")


def test_request_bytes_is_valid_http() -> None:
    raw = loadgen.request_bytes("POST", "/v1/x", "h:1", [("content-type", "application/json")], b'{"a":1}')
    got: dict[str, object] = {"headers": []}

    class P:
        def on_url(self, url: bytes) -> None:
            got["url"] = url

        def on_header(self, name: bytes, value: bytes) -> None:
            got["headers"].append((name, value))  # type: ignore[union-attr]

        def on_body(self, body: bytes) -> None:
            got["body"] = body

    parser = httptools.HttpRequestParser(P())
    parser.feed_data(raw)
    assert parser.get_method() == b"POST" and parser.should_keep_alive()
    assert got["url"] == b"/v1/x" and got["body"] == b'{"a":1}'
    assert (b"content-length", b"7") in got["headers"]  # type: ignore[operator]
    assert b"content-length" not in loadgen.request_bytes("GET", "/", "h")


def test_parse_cpus() -> None:
    assert loadgen.parse_cpus("3") == [3]
    assert loadgen.parse_cpus("0,2") == [0, 2]
    assert loadgen.parse_cpus("1-3,5") == [1, 2, 3, 5]


# in its own process


def test_run_process_relays_progress_and_results() -> None:
    cpu = sorted(os.sched_getaffinity(0))[-1]
    with tiny_server.ThreadedServer() as srv:
        spec = LoadSpec("127.0.0.1", srv.port, [get("/ok"), get("/status/201")], duration=1.0,
                        concurrency=4, progress_interval=0.25)
        seen: list[Progress] = []
        r = loadgen.run_process(spec, cpu=[cpu], progress=seen.append)
    assert r.requests > 50 and r.errors == 0
    assert set(r.status) == {200, 201}
    assert len(seen) >= 2 and seen[-1].done <= r.requests
    assert r.latency.n == r.requests


def test_load_processes_merge() -> None:
    with tiny_server.ThreadedServer() as srv:
        spec = LoadSpec("127.0.0.1", srv.port, [get("/ok")], requests=100, concurrency=2)
        with loadgen.LoadProcess(spec) as a, loadgen.LoadProcess(spec) as b:
            both = loadgen.merge([a.result(), b.result()])
        assert len(srv.rec.paths) == 200
    assert (both.requests, both.ok, both.connections, both.status) == (200, 200, 4, {200: 200})
    assert both.latency.n == 200


def test_run_process_reports_child_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        spec = LoadSpec("127.0.0.1", s.getsockname()[1], [get("/ok")], requests=3)
        with pytest.raises(LoadgenError, match="cannot connect"):
            loadgen.run_process(spec)


def test_run_in_this_process() -> None:
    with tiny_server.ThreadedServer() as srv:
        r = loadgen.run(LoadSpec("127.0.0.1", srv.port, [get("/ok")], requests=50, loop="asyncio"))
    assert r.ok == 50


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "sim.loadgen", *args], capture_output=True, timeout=60)


def test_cli_json_and_exit_status() -> None:
    with tiny_server.ThreadedServer() as srv:
        target = f"127.0.0.1:{srv.port}"
        good = cli("--target", target, "--path", "/ok", "--requests", "50", "--json")
        bad = cli("--target", target, "--path", "/status/500", "--requests", "5", "--quiet")
        streamed = cli("--target", target, "--method", "POST", "--path", "/sse", "--header", "x-a: 1",
                       "--body", "{}", "--rate", "100", "--requests", "5")
    assert good.returncode == 0, good.stderr
    d = orjson.loads(good.stdout)
    assert (d["requests"], d["ok"], d["status"]) == (50, 50, {"200": 50})
    assert Results.from_dict(d).latency.n == 50
    assert bad.returncode == 1
    assert b"http: 5" in bad.stdout
    assert streamed.returncode == 0, streamed.stderr
    assert b"send_lag_us" in streamed.stdout  # the open-loop text summary
    assert cli("--target", "127.0.0.1:1", "--requests", "1").returncode == 2
