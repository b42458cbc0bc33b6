"""`python -m sim --soak`: the 1-minute soak end to end (what CI runs), an interrupted soak, and
the pure pieces: answer checks, the lost-request classification, the growth checks, the fault
schedule and the option parsing."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid

import orjson
import pytest

from sim.__main__ import parse_args
from sim.soak import answers, growth, mix, report, schedule, verdicts
from sim.soak.growth import Bounds, Snapshot, growth_checks
from sim.soak.verdicts import Result, classify
from tests.sim.sim_testing import arun, env, marked_pids, reap

FAULTY = mix.FAULTY.name
HEALTHY = mix.PROVIDERS[1].name
KIND = {k.name: k for k in mix.KINDS}


# the soak itself: the 1-minute version CI runs


@pytest.mark.timeout(300)
def test_one_minute_soak_loses_nothing_and_stays_within_bounds() -> None:
    marker = uuid.uuid4().hex
    try:
        done = subprocess.run([sys.executable, "-m", "sim", "--soak", "1", "--json"], capture_output=True,
                              text=True, timeout=240, env=env(marker), cwd="/", check=False)  # fmt: skip
    finally:
        left = reap(marker)
    assert left == [], "child processes outlived python -m sim --soak"
    assert done.stdout, done.stderr
    rep = orjson.loads(done.stdout)
    failed = [c for c in rep["checks"] if not c["ok"]]
    assert done.returncode == 0, (failed, rep["lost_examples"], done.stderr[-3000:])
    assert rep["verdict"] == "PASS" and rep["lost"] == 0 and rep["requests"]["lost"] == 0
    assert 59 <= rep["soak"]["duration_s"] < 75
    assert rep["requests"]["total"] > 10_000
    assert rep["requests"]["aborted"] > 500
    assert rep["cache"]["hits"] > 1000
    for name, k in rep["by_kind"].items():
        assert k["requests"] > 0 and k["lost"] == 0, name
        assert (k["aborted"] if name == "abort" else k["ok"]) > 0, name
    assert set(rep["by_kind"]["abort"]["abort_stages"]) == set(mix.ABORT_STAGES)
    assert set(rep["by_kind"]["chat"]["providers"]) == {FAULTY, HEALTHY}  # fallback happened
    assert set(rep["faults"]["fired"]) == {f.name for f in schedule.FAULTS}
    assert {c["name"] for c in rep["checks"]} >= {
        "lost", "rss", "fds", "pool_bound", "pool_idle_at_rest", "pool_drained", "keepalive", "coverage",
        "gateway_alive", "gateway_exit", "gateway_log",
    }  # fmt: skip
    for end in ("start", "end"):
        snap = rep["gateway"][end]
        assert snap["rss_mb"] > 0 and snap["fds"] > 0 and snap["settled"] is True
        assert set(snap["pools"]) == {FAULTY, HEALTHY}
        assert all(p["open"] == 0 for p in snap["pools_after_idle_close"].values())
    assert rep["bounds"]["rss_growth_max_mb"] >= growth.RSS_SLACK_MB
    assert "lost =" in rep["lost_definition"]
    assert "[soak]" in done.stderr  # progress lines
    text = report.format_text(rep)
    for label in (r"Requests: \d+ \(\d+/s\)  ok \d+  errored \d+  aborted \d+  lost 0", r"Lost: 0",
                  r"Kind chat_stream: \d+ requests .*", r"Fault windows: \d+ on local-fast \(.*\)",
                  r"RSS: [\d.]+ MB -> [\d.]+ MB \(peak [\d.]+ MB\)", r"FDs: \d+ -> \d+ \(peak \d+\)",
                  r"Pools at rest: start .*; end .*", r"Bounds: RSS \+[\d.]+ MB .*", r"Verdict: PASS"):  # fmt: skip
        assert any(re.fullmatch(label, line) for line in text.splitlines()), (label, text)


@pytest.mark.timeout(60)
def test_interrupted_soak_stops_every_child() -> None:
    marker = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "sim", "--soak", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(marker), cwd="/")  # fmt: skip
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            if "gateway pid" in line:  # the stack is up, the clients start
                break
        assert len(marked_pids(marker)) >= 4  # 2 mocks, the gateway (+ sim itself)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        left = reap(marker)
    assert left == []


def test_soak_option() -> None:
    assert parse_args(["--soak", "0.2", "--json"]).soak == 0.2
    assert parse_args([]).soak is None
    for bad in (["--soak", "0"], ["--soak", "1", "--stream"], ["--soak", "1", "--scenario", "failover"],
                ["--soak", "1", "--requests", "10"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse_args(bad)


# answers


def openai_stream(text_parts: list[str], *, done: bool = True, error: bool = False, finish: bool = True) -> bytes:
    head = '{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
    events = [head % ('{"role":"assistant","content":""}', "null")]
    events += [head % (orjson.dumps({"content": t}).decode(), "null") for t in text_parts]
    if error:
        events.append('{"error":{"message":"provider closed the connection","type":"server_error"}}')
    elif finish:
        events.append(head % ("{}", '"stop"'))
        events.append('{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3}}')
    if done:
        events.append("[DONE]")
    return b"".join(b"data: " + e.encode() + b"\n\n" for e in events)


def anthropic_stream(text_parts: list[str], *, stop: bool = True, error: bool = False) -> bytes:
    events = [("message_start", {"type": "message_start", "message": {"role": "assistant", "content": []}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]  # fmt: skip
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": t}}) for t in text_parts]  # fmt: skip
    if error:
        events.append(("error", {"type": "error", "error": {"type": "api_error", "message": "cut"}}))
    elif stop:
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
                   ("message_stop", {"type": "message_stop"})]  # fmt: skip
    return b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for n, d in events)


def test_expected_text_is_the_mocks_answer() -> None:
    from mocks.content import prompt_seed, reply_tokens

    text = mix.expected_text("hello there")
    assert text == "".join(reply_tokens(prompt_seed(f"{mix.SYSTEM}\nhello there"), mix.TOKENS))
    assert text != mix.expected_text("hello there!") and len(text.split()) == mix.TOKENS


def test_openai_answers_are_checked_to_the_word() -> None:
    good = {"object": "chat.completion", "choices": [{"message": {"content": "Alpha beta"}, "finish_reason": "stop"}],
            "usage": {"completion_tokens": 2}}  # fmt: skip
    assert answers.check_openai_json(orjson.dumps(good), "Alpha beta") == "ok"
    assert answers.check_openai_json(orjson.dumps(good), "Alpha gamma") == "bad: wrong answer text"
    assert answers.check_openai_json(b'{"error": {"message": "x"}}', "Alpha").startswith("bad:")
    assert answers.check_openai_json(b"<html>", "Alpha").startswith("bad: not a chat completion")
    parts = ["Alpha", " beta"]
    assert answers.check_openai_stream(openai_stream(parts), "Alpha beta") == "ok"
    assert answers.check_openai_stream(openai_stream(parts), "Alpha beta gamma") == (
        "bad: answer cut short before the terminator")
    assert answers.check_openai_stream(openai_stream(["Alpha"], done=False, error=True), "Alpha beta") == "error_event"
    assert answers.check_openai_stream(openai_stream(["Gamma"], done=False, error=True), "Alpha beta") == (
        "bad: wrong answer text")  # an error event after the wrong words is still wrong
    assert answers.check_openai_stream(openai_stream(parts, done=False), "Alpha beta") == (
        "bad: stream ended without its terminator")  # a silent clean end that looks like success
    cut = openai_stream(["Alpha"], done=False, finish=False)
    assert answers.check_openai_stream(cut, "Alpha beta", cut=True) == "cut"
    assert answers.check_openai_stream(openai_stream(parts, finish=False), "Alpha beta").startswith("bad: no finish")
    extra = openai_stream(parts) + b"data: {}\n\n"
    assert answers.check_openai_stream(extra, "Alpha beta").startswith("bad: events after")
    assert answers.check_openai_stream(b"data: {not json\n\n", "Alpha").startswith("bad:")


def test_anthropic_answers_are_checked_to_the_word() -> None:
    good = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Alpha beta"}],
            "stop_reason": "end_turn", "usage": {"output_tokens": 2}}  # fmt: skip
    assert answers.check_anthropic_json(orjson.dumps(good), "Alpha beta") == "ok"
    assert answers.check_anthropic_json(orjson.dumps(good), "Beta") == "bad: wrong answer text"
    assert answers.check_anthropic_json(orjson.dumps({**good, "type": "error"}), "Alpha beta").startswith("bad:")
    parts = ["Alpha", " beta"]
    assert answers.check_anthropic_stream(anthropic_stream(parts), "Alpha beta") == "ok"
    assert answers.check_anthropic_stream(anthropic_stream(["Alpha"], error=True), "Alpha beta") == "error_event"
    assert answers.check_anthropic_stream(anthropic_stream(parts, stop=False), "Alpha beta") == (
        "bad: stream ended without its terminator")
    swapped = anthropic_stream(parts).replace(b"event: message_start", b"event: ping", 1)
    assert answers.check_anthropic_stream(swapped, "Alpha beta").startswith("bad:")


def test_check_body_dispatches_on_the_kind() -> None:
    assert answers.check_body(KIND["chat_stream"], openai_stream(["Alpha"]), "Alpha") == "ok"
    assert answers.check_body(KIND["messages_stream"], anthropic_stream(["Alpha"]), "Alpha") == "ok"
    assert answers.check_body(KIND["chat"], b"", "Alpha", cut=True) == "cut"


def test_reading_responses_tells_a_cut_from_a_whole_one() -> None:
    async def read(data: bytes, eof: bool = True) -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        status, headers = await answers.read_head(reader)
        return status, await answers.read_body(reader, headers)

    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nX-Cache: HIT\r\n\r\n"
    assert arun(lambda: read(head + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")) == (200, b"hello world")
    assert arun(lambda: read(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 2\r\n\r\n{}")) == (502, b"{}")
    assert arun(lambda: read(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")) == (200, b"until the end")
    with pytest.raises(answers.CutError, match="inside the body"):
        arun(lambda: read(head + b"5\r\nhello\r\n6\r\n wo"))
    with pytest.raises(answers.CutError, match="before a response head"):
        arun(lambda: read(b""))
    with pytest.raises(ValueError):
        arun(lambda: read(head + b"zz\r\nhello\r\n"))
    with pytest.raises(ValueError):
        arun(lambda: read(b"SSH-2.0-OpenSSH\r\n\r\n"))


# the lost-request classification


def result(**kw: object) -> Result:
    base: dict[str, object] = {"kind": "chat_stream", "t0": 10.0, "t1": 10.2, "status": 200, "provider": FAULTY,
                               "outcome": "ok"}  # fmt: skip
    base.update(kw)
    return Result(**base)  # type: ignore[arg-type]


MID = [(9.0, 12.0)]  # one mid-stream fault window


@pytest.mark.parametrize(("kw", "stream", "windows", "verdict"), [
    ({}, True, MID, "ok"),
    ({"outcome": "error_event"}, True, MID, "errored"),  # after the head: nobody could fall back
    ({"outcome": "cut"}, True, MID, "errored"),
    ({"outcome": "error_event"}, True, [], "lost"),  # no mid-stream fault then: avoidable
    ({"outcome": "error_event", "t0": 12.5, "t1": 12.6}, True, MID, "lost"),  # after the window closed
    ({"outcome": "error_event", "t0": 12.05, "t1": 12.06}, True, MID, "errored"),  # within the clock slack
    ({"outcome": "error_event", "provider": HEALTHY}, True, MID, "lost"),  # the healthy provider broke it
    ({"outcome": "error_event", "provider": ""}, True, MID, "lost"),
    ({"outcome": "cut"}, False, MID, "lost"),  # a non-streamed answer has no excuse
    ({"outcome": "bad: stream ended without its terminator"}, True, MID, "lost"),  # silent end
    ({"outcome": "bad: wrong answer text"}, False, MID, "lost"),
    ({"status": 502, "outcome": "status 502"}, False, MID, "lost"),  # a healthy route existed
    ({"status": 429, "outcome": "status 429"}, True, MID, "lost"),
    ({"status": 0, "outcome": "closed before a response head"}, True, MID, "lost"),  # no response
    ({"status": 0, "outcome": "timeout after 15 s"}, False, [], "lost"),
    ({"status": 200, "outcome": "timeout after 15 s"}, True, MID, "lost"),  # head, then nothing
    ({"kind": "abort", "status": 0, "outcome": "aborted"}, True, [], "aborted"),
    ({"kind": "abort", "status": 200, "outcome": "aborted"}, True, [], "aborted"),
    ({"kind": "abort", "status": 503, "outcome": "aborted"}, True, [], "lost"),  # answered wrong before we left
    ({"kind": "abort", "status": 0, "outcome": "timeout before the planned abort"}, True, [], "lost"),
])  # fmt: skip
def test_classify(kw: dict[str, object], stream: bool, windows: list[tuple[float, float]], verdict: str) -> None:
    assert classify(result(**kw), stream, FAULTY, windows) == verdict


def test_why_lost_names_the_reason() -> None:
    assert verdicts.why_lost(result(status=0, outcome="closed before a response head")).startswith("no response")
    assert verdicts.why_lost(result(status=502, outcome="status 502")) == "status 502"
    assert "outside a mid-stream fault" in verdicts.why_lost(result(outcome="error_event"))


def test_overlaps() -> None:
    assert verdicts.overlaps(1.0, 2.0, [(1.5, 1.6)])
    assert verdicts.overlaps(1.0, 2.0, [(0.0, 1.0)])
    assert not verdicts.overlaps(1.0, 2.0, [(2.2, 3.0)], slack=0.1)
    assert not verdicts.overlaps(1.0, 2.0, [])


# the growth checks


def snap(rss_mb: float = 31.0, fds: int = 14, open_: int = 5, idle: int = 5, drained: int = 0,
         settled: bool = True) -> Snapshot:  # fmt: skip
    pools = {FAULTY: {"open": open_, "idle": idle}, HEALTHY: {"open": 3, "idle": 3}}
    return Snapshot(int(rss_mb * 1024), fds, pools, {FAULTY: {"open": drained, "idle": drained},
                                                     HEALTHY: {"open": 0, "idle": 0}}, settled)  # fmt: skip


def failing(checks: list[dict[str, object]]) -> set[object]:
    return {c["name"] for c in checks if not c["ok"]}


def test_growth_within_bounds_passes() -> None:
    b = Bounds()
    checks = growth_checks(snap(), snap(rss_mb=31.0 + b.rss_slack_mb - 0.1, fds=14 + b.fd_slack),
                           {FAULTY: b.pool_open_max, HEALTHY: 3}, b)  # fmt: skip
    assert failing(checks) == set()
    assert {c["name"] for c in checks} == {"rss", "fds", "pool_bound", "pool_idle_at_rest", "pool_drained"}


@pytest.mark.parametrize(("end", "peak", "failed"), [
    (snap(rss_mb=31.0 + 8.2), 10, {"rss"}),  # 8 MB over a 31 MB start
    (snap(fds=14 + 5), 10, {"fds"}),
    (snap(), 10_000, {"pool_bound"}),
    (snap(open_=6, idle=5), 10, {"pool_idle_at_rest"}),  # one connection still leased at rest
    (snap(settled=False), 10, {"pool_idle_at_rest"}),
    (snap(drained=2), 10, {"pool_drained"}),  # the pool did not notice the provider's closes
])  # fmt: skip
def test_growth_past_a_bound_fails(end: Snapshot, peak: int, failed: set[str]) -> None:
    assert failing(growth_checks(snap(), end, {FAULTY: peak, HEALTHY: 1}, Bounds())) == failed


def test_a_leak_within_the_warm_up_fails_too() -> None:
    leaky = snap(fds=54, open_=20, idle=4, drained=16)  # leaked during the warm-up, no growth after
    assert failing(growth_checks(leaky, leaky, {FAULTY: 20}, Bounds(), boot_fds=14)) == {
        "fds", "pool_idle_at_rest", "pool_drained"}
    assert failing(growth_checks(snap(fds=16), snap(fds=17), {}, Bounds(), boot_fds=14)) == set()


def test_rss_bound_is_the_larger_of_the_slack_and_the_ratio() -> None:
    b = Bounds(rss_slack_mb=8.0, rss_slack_ratio=0.25)
    assert b.rss_limit_kb(20 * 1024) == 8 * 1024
    assert b.rss_limit_kb(100 * 1024) == 25 * 1024
    big = snap(rss_mb=100.0)
    assert failing(growth_checks(big, snap(rss_mb=124.0), {}, b)) == set()
    assert failing(growth_checks(big, snap(rss_mb=126.0), {}, b)) == {"rss"}


def test_pool_bound_is_twice_the_client_connections_under_max_connections() -> None:
    assert Bounds().pool_open_max == min(mix.POOL_MAX_CONNECTIONS, 2 * sum(k.conns for k in mix.KINDS))


def test_proc_readings() -> None:
    assert growth.parse_rss_kb("Name:\tpython\nVmPeak:\t 9 kB\nVmRSS:\t   31744 kB\nThreads: 1\n") == 31744
    with pytest.raises(ValueError):
        growth.parse_rss_kb("Name: kthreadd\n")
    assert growth.read_rss_kb(os.getpid()) > 1000
    assert growth.count_fds(os.getpid()) >= 3


def test_log_problems() -> None:
    log = ("2026-01-01 00:00:00,000 INFO llm_edge: serving\n"
           "2026-01-01 00:00:01,000 ERROR llm_edge.pipeline: unexpected error handling a request\n"
           "Traceback (most recent call last):\n  File \"x\", line 1\n")  # fmt: skip
    assert len(growth.log_problems(log)) == 2
    assert growth.log_problems("2026-01-01 INFO llm_edge: serving\n") == []


# the fault schedule


def test_schedule_cycles_every_fault_and_ends_healthy() -> None:
    windows = schedule.schedule(60.0)
    slot = 60.0 / 16
    assert len(windows) == 16
    assert [w.fault for w in windows] == [schedule.FAULTS[i % len(schedule.FAULTS)] for i in range(16)]
    for i, w in enumerate(windows):
        assert w.on == pytest.approx(i * slot) and w.off == pytest.approx(w.on + slot * schedule.FAULT_ON_SHARE)
    assert windows[-1].off < 60.0  # the run ends healthy
    assert {w.fault.name for w in schedule.schedule(12.0)} == {f.name for f in schedule.FAULTS}  # --soak 0.2: each once
    long = schedule.schedule(600.0)
    assert long[1].on - long[0].on == 10.0 and len(long) == 60


def test_only_midstream_faults_may_error_a_request() -> None:
    mid = {f.name for f in schedule.FAULTS if f.midstream}
    assert mid == {"stream_abort", "stream_error"}
    for f in schedule.FAULTS:
        assert set(f.changes) <= set(schedule.HEALTHY)  # every fault is undone by the healthy settings
    stall = next(f for f in schedule.FAULTS if f.name == "stall")
    assert stall.changes["ttft_ms"] / 1000 < mix.ATTEMPT_DEADLINE_S < mix.CLIENT_TIMEOUT_S
