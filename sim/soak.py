# sim/soak.py: `python -m sim --soak MINUTES`, a bounded soak test of the gateway.
#
# What runs. Two mock providers and one gateway (sim/stack.py), and, in this process, one event
# loop with clients of seven kinds side by side, each paced at its own rate over its own
# keep-alive connections: OpenAI chat non-streamed (`chat`) and streamed (`chat_stream`), both
# with prompts never seen before; the same at temperature 0 over a small fixed set of prompts
# that the cache answers (`cached`, `cached_stream`, both modes of the same prompts, so hits are
# replayed across modes); Anthropic `/v1/messages` non-streamed and streamed (translated by the
# gateway to the OpenAI-format mocks); and `abort`, a raw-socket client that sends a stream
# request on a fresh connection and leaves early: right after sending, after the response head,
# or after the first body bytes, by FIN or by RST, in turn. Mocks stream one token per
# millisecond, so an abort after the first bytes lands mid-stream.
#
# Faults. Only the preferred provider (`local-fast`, the cheapest) misbehaves; `cloud-cheap`
# stays healthy throughout, and the gateway may try 3 routes per request, so every fault below
# can be hidden from clients unless it strikes after the response head went out. The faults
# take turns in windows (`schedule`): on for 60% of a slot, then healthy for 40%, cycling
# through FAULTS; the slot is run/16, between 1.5 s and 10 s. They are set at runtime over the
# mock's `POST /_mock/config`: every request a 500; half of them a 429 and 30% a 503 (with
# Retry-After); a 200 ms stall (under the 0.5 s attempt deadline: slow, then answered); a 1.2 s
# stall (over it: the gateway must give up and fall back, well within the clients' 15 s);
# pooled connections closed by the provider after 20 ms idle (the gateway must retry a request
# that met a dead pooled connection); and two mid-stream faults: streams cut after 3 tokens, or
# ended by the provider's own error event after 3 tokens. (mocks/faults.py, the fault server,
# is being finished elsewhere; the regular mocks' runtime knobs cover what is needed here.)
#
# Lost requests. Every request gets exactly one verdict (`classify`):
#   ok       a 200 whose answer is right: non-streamed, a valid chat completion (OpenAI) or
#            message (Anthropic) whose text is exactly the deterministic answer the mocks give
#            that prompt (mocks/content.py: the same from either provider, so a mixed-up, stale
#            or cross-wired answer is caught); streamed, well-formed SSE carrying that same text
#            and ending with its terminator (`data: [DONE]` / `event: message_stop`).
#   errored  a streamed 200 from the faulty provider during a mid-stream fault window that ended
#            with an error event (`data: {"error": ...}` / `event: error`) or whose body was cut
#            (the connection closed or reset inside the chunked body), with the text before it a
#            prefix of the right answer. Not lost: once the head and tokens reached the client,
#            no gateway can fall back, and the client was told. Anything else a fault caused
#            could have been hidden, so it is lost.
#   aborted  an `abort` client left on purpose. Not judged, except that a response head it
#            read before leaving must be a 200, and one it waited for must come in time.
#   lost     everything else: no response (connect error, reset or close before a complete
#            response, no complete response within 15 s), or a wrong one (any status but 200:
#            a healthy route always existed; a body that is not a valid answer or not the right
#            text; a stream without its terminator, or with an error event or a cut outside the
#            accepted case above, a cached answer included). A request is only ever sent on a
#            connection that was open when it was written; one the gateway closed between two
#            responses is noticed before reuse (see the keep-alive check below).
#
# Resources. The gateway's RSS (VmRSS of /proc/PID/status), its open file descriptors (entries
# of /proc/PID/fd) and its pools (`/stats` `pools`: open and idle per provider) are measured at
# the start (after a 5 s warm-up that runs the whole mix and every fault once, so lazy imports,
# caches and the cache's entries are in place) and at the end (after the load stopped). At
# both points, in this order: the clients have closed their connections; we wait until every
# pooled connection is idle again (open == idle); the mocks close their idle connections
# (`POST /_mock/close_idle`) and we wait until the gateway's pools show none open; then RSS and
# fds are read (fds once two reads agree). So fds compare with no client and no pooled
# connection open at either end, and a leaked socket cannot hide as a pooled one. During the
# run they are sampled every second.
#
# Verdict (exit 1 on any failure, each check with its figures in the report):
#   lost == 0;
#   RSS growth <= max(RSS_SLACK_MB = 8 MB, RSS_SLACK_RATIO = 25% of the start). After the
#     warm-up the cache holds every entry it will hold (the cached prompts are few; the others
#     are not cacheable), histograms and route stats are preallocated and the access log is off,
#     so the only legitimate growth is allocator noise: measured, +0.2 to +0.6 MB over 1 and 10
#     minutes from ~31 MB. 8 MB is a leak of ~340 bytes per request in the 1-minute run (~24k
#     requests), ~35 bytes per request in the 10-minute one (~230k), far above the noise (a
#     2 KB-per-request leak planted in the gateway fails even `--soak 0.2`);
#   fd growth <= FD_SLACK = 4 (both ends measured with no connection open, see above: a leak of
#     one socket per fault window or per few thousand aborts shows), and neither end more than 4
#     above the count before any traffic (nothing open then either), for a leak that ran its
#     course within the warm-up;
#   pools: open <= min(max_connections 256, 2 x client connections) per provider in every sample
#     (each client connection has one exchange in flight at most, holding one upstream connection
#     at most, no hedging here, plus the one its previous exchange may still be closing); at rest,
#     at the start and the end, every pooled connection is idle again (none leaked as leased), and
#     none is left once the provider closed the idle ones (the pool forgets connections closed
#     under it);
#   keep-alive: the gateway closes a client connection without `connection: close` only after a
#     stream it had to end with an error (our clients check for such a close before reusing a
#     connection, as HTTP clients do, and count it by what the last response was);
#   the gateway stays up, exits 0 on SIGTERM at the end, logs no ERROR line or traceback; and
#     the run covered what it claims (every kind answered, cache hits, aborts, each fault fired).
from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sim.hist import Histogram
from sim.loadgen import new_loop, request_bytes
from sim.procs import ROOT
from sim.stack import Provider, Stack

try:
    from mocks.content import prompt_seed, reply_tokens
except ModuleNotFoundError:  # an install that lists only proxy and sim: the checkout has mocks/, as the
    sys.path.append(ROOT)  # children started with ROOT on PYTHONPATH do (sim.procs.child_env)
    from mocks.content import prompt_seed, reply_tokens

# the stack

TOKENS = 24  # completion tokens per answer
TOKEN_DELAY_MS = 1.0  # one token per ms: a stream lasts ~25 ms, so aborts land mid-stream
PROVIDERS = (
    Provider("local-fast", "local", "llama-3.1-8b-instruct", 2.0, TOKEN_DELAY_MS, 0.10, 0.40),
    Provider("cloud-cheap", "openai", "gpt-4o-mini", 8.0, TOKEN_DELAY_MS, 0.15, 0.60),
)
FAULTY = PROVIDERS[0]  # the cheapest: the router prefers it, so its faults force fallback
MODEL = "sim-model"
ATTEMPT_DEADLINE_S = 0.5
ROUTER: dict[str, Any] = {  # [[models]] settings: breakers that react (and recover) within a window
    "strategy": "cost-sla",
    "max_attempts": 3,
    "attempt_deadline_s": ATTEMPT_DEADLINE_S,
    "breaker_failures": 3,
    "breaker_cooldown_s": 0.3,
    "breaker_backoff": 1.5,
    "breaker_cooldown_max_s": 1.0,
    "ewma_half_life_s": 2.0,
    "explore_ratio": 0.05,
}
POOL_MAX_CONNECTIONS = 256  # the gateway's default `max_connections` per provider (sim.stack sets none)

# the clients

SYSTEM = "You are a concise assistant."
MAX_TOKENS = 64  # above TOKENS: every answer is whole (finish_reason "stop")
CLIENT_TIMEOUT_S = 15.0
CACHED_PROMPTS = 32
HEAD_LIMIT = 1 << 16


@dataclass(frozen=True)
class Kind:
    """One kind of client: what it sends, how often, over how many connections."""

    name: str
    api: str  # "openai" or "anthropic"
    stream: bool
    cached: bool  # temperature 0 over CACHED_PROMPTS: the cache answers
    rate: float  # requests per second, all its connections together
    conns: int


KINDS = (
    Kind("chat", "openai", False, False, 100.0, 10),
    Kind("chat_stream", "openai", True, False, 80.0, 12),
    Kind("cached", "openai", False, True, 80.0, 4),
    Kind("cached_stream", "openai", True, True, 40.0, 4),
    Kind("messages", "anthropic", False, False, 30.0, 4),
    Kind("messages_stream", "anthropic", True, False, 30.0, 6),
    Kind("abort", "openai", True, False, 25.0, 4),
)
CLIENT_CONNECTIONS = sum(k.conns for k in KINDS)
ABORT_STAGES = ("after_send", "after_head", "mid_body")

# the faults


@dataclass(frozen=True)
class Fault:
    """A misbehaviour of the faulty provider, as mock runtime settings."""

    name: str
    changes: dict[str, Any]
    midstream: bool  # strikes after the head: streams it hits are "errored", not lost
    label: str


FAULTS = (
    Fault("errors_500", {"error_rate": 1.0, "error_status": 500}, False, "every request a 500"),
    Fault("stall", {"ttft_ms": 200.0}, False, "first byte after 200 ms (under the 0.5 s attempt deadline)"),
    Fault("errors_429", {"error_rate": 0.5, "error_status": 429, "retry_after": 0.5}, False,
          "half the requests a 429 with retry-after 0.5"),
    Fault("stream_abort", {"stream_abort_after": 3}, True, "streams cut (connection closed) after 3 tokens"),
    Fault("idle_close", {"keepalive_timeout_s": 0.02}, False, "pooled connections closed after 20 ms idle"),
    Fault("errors_503", {"error_rate": 0.3, "error_status": 503, "retry_after": 0.5}, False,
          "30% of the requests a 503 with retry-after 0.5"),
    Fault("stall_past_deadline", {"ttft_ms": 1200.0}, False,
          "first byte after 1.2 s (past the 0.5 s attempt deadline: fall back)"),
    Fault("stream_error", {"stream_error_after": 3}, True,
          "streams end with the provider's error event after 3 tokens"),
)  # fmt: skip
HEALTHY: dict[str, Any] = {
    "error_rate": 0.0, "error_status": 500, "retry_after": 1.0, "ttft_ms": FAULTY.ttft_ms,
    "stream_abort_after": -1, "stream_error_after": -1, "keepalive_timeout_s": 75.0,
}  # fmt: skip
FAULT_ON_SHARE = 0.6
WARMUP_S = 5.0
WARMUP_SLOT_S = 0.5

# the bounds

RSS_SLACK_MB = 8.0
RSS_SLACK_RATIO = 0.25
FD_SLACK = 4
SETTLE_TIMEOUT_S = 5.0
SAMPLE_EVERY_S = 1.0
WINDOW_SLACK_S = 0.1  # clock slack when matching a request's time span to a fault window

LOST_DEFINITION = (
    "lost = no response (connect error, reset or close before a complete response, none within "
    f"{CLIENT_TIMEOUT_S:g} s) or a wrong one (status other than 200; a body that is not a valid chat "
    "completion / message or not the exact deterministic answer; a stream without its terminator, or with an "
    "error event or cut body unless the faulty provider served it during a mid-stream fault window: that is "
    "'errored', not lost). Intended client aborts are not lost unless they read a non-200 head or no head in time."
)


# schedule


@dataclass(frozen=True)
class Window:
    """A planned fault window, in seconds from its phase's start."""

    fault: Fault
    on: float
    off: float


def schedule(duration: float, slot: float | None = None, faults: Sequence[Fault] = FAULTS) -> list[Window]:
    """The fault windows of a phase of `duration` seconds: each slot starts with a fault (on for
    FAULT_ON_SHARE of it) and ends healthy; faults take turns; the phase always ends healthy."""
    if slot is None:
        slot = min(10.0, max(1.5, duration / 16))
    out = []
    i = 0
    while (i + 1) * slot <= duration + 1e-9:
        out.append(Window(faults[i % len(faults)], i * slot, i * slot + slot * FAULT_ON_SHARE))
        i += 1
    return out


# responses: reading and checking


class Cut(Exception):
    """The connection ended before the response did."""


@dataclass
class Result:
    """One request as the client saw it. `outcome`: ok | error_event | cut | timeout | no_response
    | bad: <why>; for aborts: aborted."""

    kind: str
    t0: float
    t1: float = 0.0
    status: int = 0  # 0: no response head
    provider: str = ""
    cache: str = ""
    outcome: str = ""
    stage: str = ""  # aborts: when it left


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read one response head: (status, lowercased headers)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Cut("closed before a response head" if not exc.partial else "closed inside the head") from None
    except asyncio.LimitOverrunError:
        raise ValueError(f"a response head over {HEAD_LIMIT} bytes") from None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """Read a body framed by chunked coding, content-length, or the close."""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    return b"".join(parts)
                data = await reader.readexactly(size + 2)
                if data[-2:] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                parts.append(data[:-2])
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        return await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise Cut(f"closed inside the body ({type(exc).__name__})") from None
    except asyncio.LimitOverrunError:
        raise ValueError("a chunk-size line too long") from None


def expected_text(prompt: str) -> str:
    """The answer both mocks give `prompt` under SYSTEM (mocks/content.py), whichever API asked."""
    return "".join(reply_tokens(prompt_seed(f"{SYSTEM}\n{prompt}"), min(TOKENS, MAX_TOKENS)))


def check_openai_json(body: bytes, expected: str) -> str:
    """"ok", or "bad: why" for a non-streamed OpenAI answer."""
    try:
        doc = orjson.loads(body)
        if doc.get("object") != "chat.completion":
            return f"bad: object {doc.get('object')!r}"
        choice = doc["choices"][0]
        text = choice["message"]["content"]
        if choice.get("finish_reason") != "stop":
            return f"bad: finish_reason {choice.get('finish_reason')!r}"
        usage = doc["usage"]
        if not isinstance(usage.get("completion_tokens"), int):
            return "bad: no usage"
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return f"bad: not a chat completion ({type(exc).__name__})"
    return "ok" if text == expected else "bad: wrong answer text"


def check_anthropic_json(body: bytes, expected: str) -> str:
    """"ok", or "bad: why" for a non-streamed Anthropic answer."""
    try:
        doc = orjson.loads(body)
        if doc.get("type") != "message" or doc.get("role") != "assistant":
            return f"bad: type {doc.get('type')!r}"
        text = "".join(b["text"] for b in doc["content"] if b.get("type") == "text")
        if doc.get("stop_reason") != "end_turn":
            return f"bad: stop_reason {doc.get('stop_reason')!r}"
        if not isinstance(doc["usage"].get("output_tokens"), int):
            return "bad: no usage"
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        return f"bad: not a message ({type(exc).__name__})"
    return "ok" if text == expected else "bad: wrong answer text"


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """(event name, data) per SSE event; comments skipped, multi-line data joined."""
    out = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "", []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if name or data:
            out.append((name, "\n".join(data)))
    return out


def _stream_verdict(text: str, expected: str, ended: bool, error: bool, cut: bool, order: str) -> str:
    if order:
        return f"bad: {order}"
    if not expected.startswith(text):
        return "bad: wrong answer text"
    if ended and not error:
        return "ok" if text == expected else "bad: answer cut short before the terminator"
    if error:
        return "error_event"
    return "cut" if cut else "bad: stream ended without its terminator"


def check_openai_stream(body: bytes, expected: str, cut: bool = False) -> str:
    """"ok", "error_event", "cut" (the body was cut, text so far right) or "bad: why"."""
    text, ended, error, order, finished = [], False, False, "", False
    for _name, data in sse_events(body):
        if ended:
            order = "events after data: [DONE]"
            break
        if data == "[DONE]":
            ended = True
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            order = "an event that is not JSON"
            break
        if not isinstance(doc, dict):
            order = "an event that is not an object"
            break
        if "error" in doc:
            error = True
            continue
        if doc.get("object") != "chat.completion.chunk":
            order = f"a chunk of object {doc.get('object')!r}"
            break
        for choice in doc.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                text.append(content)
            if choice.get("finish_reason"):
                finished = True
    if ended and not error and not finished and not order:
        order = "no finish_reason before data: [DONE]"
    return _stream_verdict("".join(text), expected, ended, error, cut, order)


def check_anthropic_stream(body: bytes, expected: str, cut: bool = False) -> str:
    """Like check_openai_stream, for Anthropic's event stream (ends with message_stop)."""
    text, ended, error, order, started = [], False, False, "", False
    for name, data in sse_events(body):
        if ended:
            order = "events after message_stop"
            break
        if name == "error":
            error = True
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            order = "an event that is not JSON"
            break
        if not isinstance(doc, dict) or doc.get("type") != name:
            order = f"event {name!r} with data of another type"
            break
        if name == "message_start":
            started = True
        elif not started and name != "ping":
            order = f"{name} before message_start"
            break
        elif name == "content_block_delta":
            delta = doc.get("delta") or {}
            if delta.get("type") == "text_delta":
                text.append(delta.get("text", ""))
        elif name == "message_stop":
            ended = True
    return _stream_verdict("".join(text), expected, ended, error, cut, order)


def check_body(kind: Kind, body: bytes, expected: str, cut: bool = False) -> str:
    """The outcome of a 200 response of `kind` (see Result)."""
    if kind.stream:
        check = check_anthropic_stream if kind.api == "anthropic" else check_openai_stream
        return check(body, expected, cut)
    if cut:
        return "cut"
    return (check_anthropic_json if kind.api == "anthropic" else check_openai_json)(body, expected)


# classification


def overlaps(t0: float, t1: float, windows: Iterable[tuple[float, float]], slack: float = WINDOW_SLACK_S) -> bool:
    """Does [t0, t1] meet any (on, off) window?"""
    return any(t0 <= off + slack and t1 >= on - slack for on, off in windows)


def classify(r: Result, stream: bool, faulty: str, midstream_windows: Sequence[tuple[float, float]]) -> str:
    """ok | errored | aborted | lost (see the module header)."""
    if r.outcome == "aborted":
        return "aborted" if r.status in (0, 200) else "lost"
    if r.status != 200:
        return "lost"  # no response, or a wrong status
    if r.outcome == "ok":
        return "ok"
    if (r.outcome in ("error_event", "cut") and stream and r.provider == faulty
            and overlaps(r.t0, r.t1, midstream_windows)):  # fmt: skip
        return "errored"
    return "lost"


def why_lost(r: Result) -> str:
    """A short reason for a lost request."""
    if r.status == 0:
        return f"no response ({r.outcome})"
    if r.status != 200:
        return f"status {r.status}"
    return {"error_event": "error event outside a mid-stream fault", "cut": "cut outside a mid-stream fault"}.get(
        r.outcome, r.outcome)


# growth checks


@dataclass
class Snapshot:
    """The gateway at rest: RSS, fds and pools (before and after the providers closed idle ones)."""

    rss_kb: int
    fds: int
    pools: dict[str, dict[str, int]]  # provider -> {"open", "idle"} with every client gone
    pools_drained: dict[str, dict[str, int]]  # ...after the mocks closed their idle connections
    settled: bool  # every pooled connection was idle again within SETTLE_TIMEOUT_S

    def to_dict(self) -> dict[str, Any]:
        return {"rss_mb": round(self.rss_kb / 1024, 1), "fds": self.fds, "pools": self.pools,
                "pools_after_idle_close": self.pools_drained, "settled": self.settled}  # fmt: skip


@dataclass(frozen=True)
class Bounds:
    """What the end may differ from the start (see the module header)."""

    rss_slack_mb: float = RSS_SLACK_MB
    rss_slack_ratio: float = RSS_SLACK_RATIO
    fd_slack: int = FD_SLACK
    pool_open_max: int = min(POOL_MAX_CONNECTIONS, 2 * CLIENT_CONNECTIONS)

    def rss_limit_kb(self, start_kb: int) -> int:
        return int(max(self.rss_slack_mb * 1024, start_kb * self.rss_slack_ratio))

    def to_dict(self, start_kb: int = 0) -> dict[str, Any]:
        return {"rss_growth_max_mb": round(self.rss_limit_kb(start_kb) / 1024, 1),
                "rss_rule": f"max({self.rss_slack_mb:g} MB, {self.rss_slack_ratio:.0%} of start)",
                "fd_growth_max": self.fd_slack, "pool_open_max_per_provider": self.pool_open_max,
                "pool_rule": (f"min(max_connections {POOL_MAX_CONNECTIONS}, "
                              f"2 x {CLIENT_CONNECTIONS} client connections)"),
                "unannounced_closes_after_ok_max": 0}  # fmt: skip


def growth_checks(start: Snapshot, end: Snapshot, peak_open: dict[str, int], bounds: Bounds,
                  boot_fds: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The resource checks: [{"name", "ok", "detail"}]. `boot_fds`: the gateway's fds before any
    traffic (nothing open either), so a leak that ran its course in the warm-up shows too."""
    out = []

    def check(name: str, ok: bool, detail: str) -> None:
        out.append({"name": name, "ok": bool(ok), "detail": detail})

    grew = end.rss_kb - start.rss_kb
    limit = bounds.rss_limit_kb(start.rss_kb)
    check("rss", grew <= limit, f"RSS {start.rss_kb / 1024:.1f} -> {end.rss_kb / 1024:.1f} MB "
                                f"({grew / 1024:+.1f} MB, bound +{limit / 1024:.1f} MB)")  # fmt: skip
    boot = "" if boot_fds is None else f"; {boot_fds} before any traffic"
    fds_ok = end.fds - start.fds <= bounds.fd_slack
    if boot_fds is not None:
        fds_ok = fds_ok and max(start.fds, end.fds) - boot_fds <= bounds.fd_slack
    check("fds", fds_ok, f"fds {start.fds} -> {end.fds} ({end.fds - start.fds:+d}, bound +{bounds.fd_slack}{boot})")
    worst = max(peak_open.values(), default=0)
    check("pool_bound", worst <= bounds.pool_open_max,
          "peak open per provider " + ", ".join(f"{k} {v}" for k, v in peak_open.items())
          + f" (bound {bounds.pool_open_max})")
    busy = [f"{at}: {k} open {p['open']} idle {p['idle']}" for at, snap in (("start", start), ("end", end))
            for k, p in snap.pools.items() if p["open"] != p["idle"] or not snap.settled]  # fmt: skip
    check("pool_idle_at_rest", not busy, "every pooled connection idle at rest, at the start and the end" if not busy
          else "connections still leased at rest: " + ", ".join(busy))
    left = [f"{at}: {k} {p['open']}" for at, snap in (("start", start), ("end", end))
            for k, p in snap.pools_drained.items() if p["open"]]  # fmt: skip
    check("pool_drained", not left, "no connection left once the providers closed the idle ones" if not left
          else "still open after the providers closed idle connections: " + ", ".join(left))
    return out


def parse_rss_kb(status_text: str) -> int:
    """VmRSS in kB from the text of /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line")


def read_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return parse_rss_kb(f.read())


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# HTTP helpers (cold path)


async def http_call(host: str, port: int, method: str, path: str, body: bytes | None = None,
                    timeout: float = 5.0) -> tuple[int, bytes]:  # fmt: skip
    """One request on a fresh connection: (status, body)."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT)
        try:
            headers = [("connection", "close")]
            if body is not None:
                headers.append(("content-type", "application/json"))
            writer.write(request_bytes(method, path, f"{host}:{port}", headers, body or b""))
            status, head = await read_head(reader)
            return status, await read_body(reader, head)
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)


# the run


class ClientConn:
    """A client's keep-alive connection to the gateway, and how its last response went."""

    __slots__ = ("last", "reader", "writer")

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last = ""  # "ok", "error_event" or "other"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class KindTally:
    """Per-kind counters."""

    sent: int = 0
    ok: int = 0
    errored: int = 0
    aborted: int = 0
    lost: int = 0
    hits: int = 0
    providers: dict[str, int] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"requests": self.sent, "ok": self.ok, "errored": self.errored, "lost": self.lost}
        if self.aborted or self.stages:
            d["aborted"] = self.aborted
            d["abort_stages"] = dict(self.stages)
        if self.hits:
            d["cache_hits"] = self.hits
        d["providers"] = dict(self.providers)
        if self.latency.n:
            d["latency_ms"] = {k: round(self.latency.percentile(q) / 1000, 2) for k, q in (("p50", 50), ("p99", 99))}
            d["latency_ms"]["max"] = round(self.latency.max / 1000, 2)
        return d


class Soak:
    """One soak run against a started stack (see the module header)."""

    def __init__(self, stack: Stack, minutes: float, say: Callable[[str], None], bounds: Bounds = Bounds()) -> None:
        self.stack = stack
        self.duration = minutes * 60.0
        self.say = say
        self.bounds = bounds
        self.host, self.port = stack.gateway_addr
        self.authority = f"{self.host}:{self.port}"
        assert stack.gateway is not None
        self.pid = stack.gateway.pid
        self.mocks = {p.name: addr for p, addr in zip(stack.providers, stack.mock_addrs)}
        self.kinds = {k.name: k for k in KINDS}
        self.tally = {k.name: KindTally() for k in KINDS}
        self.seq = 0
        self.rng = random.Random(7)
        self.cached_prompts = [f"Give a one-line answer about cached topic number {i}." for i in range(CACHED_PROMPTS)]
        self.pending: list[Result] = []  # not ok yet: classified once the fault windows are known
        self.windows: list[dict[str, Any]] = []  # fault windows as they really happened
        self.samples: list[dict[str, Any]] = []
        self.peak_open: dict[str, int] = {p.name: 0 for p in stack.providers}
        self.origin = 0.0
        self.phase = ""
        self.current_fault = ""
        self.lost_examples: list[dict[str, Any]] = []
        self.dead = False
        self.boot_fds: int | None = None
        self.closed_after: dict[str, int] = {}  # keep-alive connections the gateway closed unasked, by what
        # the last response on them was: "error_event" (a stream it had to end with an error) or "ok"

    # requests

    def _prompt(self, kind: Kind) -> str:
        if kind.cached:
            return self.rng.choice(self.cached_prompts)
        self.seq += 1
        return f"Soak {kind.name} request {self.seq}: summarize the notes on item {self.seq * 7919 % 100003}."

    def _request(self, kind: Kind, prompt: str) -> bytes:
        headers = [("content-type", "application/json"),
                   ("accept", "text/event-stream" if kind.stream else "application/json")]  # fmt: skip
        body: dict[str, Any] = {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": kind.stream}
        if kind.api == "anthropic":
            headers.append(("anthropic-version", "2023-06-01"))
            body.update(system=SYSTEM, messages=[{"role": "user", "content": prompt}])
            path = "/v1/messages"
        else:
            body["messages"] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
            if kind.stream:
                body["stream_options"] = {"include_usage": True}
            path = "/v1/chat/completions"
        if kind.cached:
            body["temperature"] = 0
        return request_bytes("POST", path, self.authority, headers, orjson.dumps(body))

    async def _exchange(self, kind: Kind, conn: ClientConn, r: Result, payload: bytes, expected: str) -> None:
        """Send one request on the worker's keep-alive connection (opened if needed) and judge it."""
        if conn.writer is not None and conn.reader is not None:
            await asyncio.sleep(0)  # let the loop take in a close that arrived with the last response
            if conn.reader.at_eof() or conn.reader.exception() is not None:
                # The gateway closed it between two responses (it does after a stream it had to
                # end with an error): as HTTP clients do, notice that before reusing it, not after.
                self.closed_after[conn.last] = self.closed_after.get(conn.last, 0) + 1
                conn.close()
        if conn.writer is None:
            try:
                conn.reader, conn.writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT)
            except OSError as exc:
                r.outcome = f"connect failed ({exc.strerror or type(exc).__name__})"
                return
        reader, writer = conn.reader, conn.writer
        assert reader is not None
        keep = False
        try:
            writer.write(payload)
            r.status, headers = await read_head(reader)
            r.provider = headers.get("x-llm-edge-provider", "")
            r.cache = headers.get("x-cache", "")
            keep = headers.get("connection", "").lower() != "close"
            try:
                body = await read_body(reader, headers)
                cut = False
            except Cut:
                body, cut = b"", True
                keep = False
            if r.status != 200:
                r.outcome = f"status {r.status}"
            elif cut:
                r.outcome = "cut"
            else:
                r.outcome = check_body(kind, body, expected)
        except Cut as exc:
            r.outcome = str(exc)
        except (ConnectionError, OSError) as exc:
            r.outcome = f"connection error ({type(exc).__name__})"
        except ValueError as exc:  # also a bad chunk size or content-length
            keep = False
            r.outcome = f"bad: malformed response ({exc})"
        finally:
            conn.last = "ok" if r.outcome == "ok" else "error_event" if r.outcome == "error_event" else "other"
            if not keep:
                conn.close()

    async def _one(self, kind: Kind, conn: ClientConn) -> Result:
        prompt = self._prompt(kind)
        payload = self._request(kind, prompt)
        r = Result(kind.name, time.monotonic())
        try:
            await asyncio.wait_for(self._exchange(kind, conn, r, payload, expected_text(prompt)), CLIENT_TIMEOUT_S)
        except TimeoutError:
            r.outcome = f"timeout after {CLIENT_TIMEOUT_S:g} s"
            conn.close()
        r.t1 = time.monotonic()
        return r

    async def _abort(self, n: int) -> Result:
        """A stream request on a fresh connection, left early (stage and FIN/RST by turn)."""
        kind = self.kinds["abort"]
        stage = ABORT_STAGES[n % len(ABORT_STAGES)]
        rst = (n // len(ABORT_STAGES)) % 2 == 1
        payload = self._request(kind, self._prompt(kind))
        r = Result("abort", time.monotonic(), outcome="aborted", stage=stage)
        writer = None
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT)
            writer.write(payload)
            if stage == "after_send":
                await asyncio.sleep(self.rng.random() * 0.004)  # somewhere between parsing and the first byte
            else:
                r.status, headers = await asyncio.wait_for(read_head(reader), CLIENT_TIMEOUT_S)
                r.provider = headers.get("x-llm-edge-provider", "")
                if stage == "mid_body":
                    await asyncio.wait_for(reader.read(512), CLIENT_TIMEOUT_S)
        except TimeoutError:
            r.outcome = "timeout before the planned abort"
        except (Cut, ConnectionError, OSError, ValueError) as exc:
            r.outcome = f"failed before the planned abort ({exc})"
        finally:
            if writer is not None:
                if rst:
                    sock = writer.get_extra_info("socket")
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    except (OSError, AttributeError):
                        pass
                    writer.transport.abort()
                else:
                    writer.close()
        r.t1 = time.monotonic()
        return r

    def _record(self, r: Result) -> None:
        t = self.tally[r.kind]
        t.sent += 1
        if r.provider:
            t.providers[r.provider] = t.providers.get(r.provider, 0) + 1
        if r.cache.upper() == "HIT":
            t.hits += 1
        if r.stage:
            t.stages[r.stage] = t.stages.get(r.stage, 0) + 1
        if r.outcome == "ok":
            t.ok += 1
            t.latency.record((r.t1 - r.t0) * 1e6)
        elif r.outcome == "aborted" and r.status in (0, 200):
            t.aborted += 1
        else:
            self.pending.append(r)  # errored or lost: decided against the fault windows at the end

    async def _worker(self, kind: Kind, stop_at: float, phase_shift: float) -> None:
        interval = kind.conns / kind.rate
        conn = ClientConn()
        next_t = time.monotonic() + phase_shift * interval
        n = 0
        try:
            while True:
                now = time.monotonic()
                if next_t >= stop_at or self.dead:
                    break
                if next_t > now:
                    await asyncio.sleep(next_t - now)
                if kind.name == "abort":
                    r = await self._abort(n)
                else:
                    r = await self._one(kind, conn)
                n += 1
                self._record(r)
                next_t = max(next_t + interval, time.monotonic() - interval)  # late: no burst to catch up
        finally:
            conn.close()

    # faults, sampling, settling

    async def _mock_config(self, name: str, changes: dict[str, Any]) -> None:
        host, port = self.mocks[name]
        status, body = await http_call(host, port, "POST", "/_mock/config", orjson.dumps(changes))
        if status != 200:
            raise RuntimeError(f"{name}: /_mock/config answered {status}: {body[:200]!r}")

    async def _faults(self, windows: Sequence[Window], t0: float) -> None:
        """Apply the windows on the faulty mock; record when each really was on (conservatively:
        from just before the change was sent to just after the recovery was confirmed)."""
        current: Window | None = None
        on = 0.0
        try:
            for w in windows:
                await asyncio.sleep(max(0.0, t0 + w.on - time.monotonic()))
                current, on = w, time.monotonic()
                self.current_fault = w.fault.name
                await self._mock_config(FAULTY.name, w.fault.changes)
                await asyncio.sleep(max(0.0, t0 + w.off - time.monotonic()))
                await self._mock_config(FAULTY.name, HEALTHY)
                self._window(w.fault, on, time.monotonic())
                current = None
        finally:
            if current is not None:  # stopped inside a window: record it, leave the provider healthy
                self._window(current.fault, on, time.monotonic() + 1.0)
                await asyncio.shield(self._mock_config(FAULTY.name, HEALTHY))

    def _window(self, fault: Fault, on: float, off: float) -> None:
        self.current_fault = ""
        self.windows.append({"phase": self.phase, "fault": fault.name, "midstream": fault.midstream, "on": on,
                             "off": off})  # fmt: skip

    async def _stats(self) -> dict[str, Any]:
        status, body = await http_call(self.host, self.port, "GET", "/stats")
        if status != 200:
            raise RuntimeError(f"GET /stats answered {status}")
        return orjson.loads(body)

    def _pools(self, stats: dict[str, Any]) -> dict[str, dict[str, int]]:
        pools = {p["provider"]: {"open": int(p["open"]), "idle": int(p["idle"])} for p in stats.get("pools") or ()}
        for name, p in pools.items():
            self.peak_open[name] = max(self.peak_open.get(name, 0), p["open"])
        return pools

    def _alive(self) -> bool:
        gw = self.stack.gateway
        if gw is None or not gw.alive():
            self.dead = True
        return not self.dead

    async def _sampler(self, stop_at: float) -> None:
        last_say = time.monotonic()
        while time.monotonic() < stop_at and self._alive():
            await asyncio.sleep(SAMPLE_EVERY_S)
            try:
                pools = self._pools(await self._stats())
                rss, fds = read_rss_kb(self.pid), count_fds(self.pid)
            except (TimeoutError, OSError, RuntimeError, ValueError):
                continue
            now = time.monotonic()
            self.samples.append({"phase": self.phase, "t": round(now - self.origin, 2), "rss_kb": rss, "fds": fds,
                                 "open": {k: p["open"] for k, p in pools.items()}})  # fmt: skip
            if now - last_say >= 5.0:
                last_say = now
                done = sum(t.sent for t in self.tally.values())
                self.say(f"{now - self.origin:6.1f}s  {self.phase}: requests {done}  pending verdicts "
                         f"{len(self.pending)}  rss {rss / 1024:.1f} MB  fds {fds}  pools "
                         + " ".join(f"{k} {p['open']}/{p['idle']}" for k, p in pools.items())
                         + (f"  fault: {self.current_fault}" if self.current_fault else ""))  # fmt: skip

    async def _phase(self, name: str, duration: float, windows: Sequence[Window]) -> None:
        self.phase = name
        t0 = time.monotonic()
        stop_at = t0 + duration
        workers = [asyncio.ensure_future(self._worker(k, stop_at, i / k.conns))
                   for k in KINDS for i in range(k.conns)]  # fmt: skip
        faults = asyncio.ensure_future(self._faults(windows, t0))
        sampler = asyncio.ensure_future(self._sampler(stop_at))
        try:
            await asyncio.gather(*workers)
        finally:
            for task in (faults, sampler, *workers):
                task.cancel()
            await asyncio.gather(faults, sampler, *workers, return_exceptions=True)
        if faults.done() and not faults.cancelled() and faults.exception() is not None:
            raise faults.exception()  # type: ignore[misc]

    async def _settle(self) -> Snapshot:
        """Measure the gateway at rest (see the module header)."""
        await asyncio.sleep(0.2)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            pools = self._pools(await self._stats())
            settled = all(p["open"] == p["idle"] for p in pools.values())
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        for host, port in self.mocks.values():
            await http_call(host, port, "POST", "/_mock/close_idle")
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            drained = self._pools(await self._stats())
            if not any(p["open"] for p in drained.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return Snapshot(read_rss_kb(self.pid), await self._stable_fds(), pools, drained, settled)

    async def _stable_fds(self) -> int:
        """The gateway's fd count once two reads 0.1 s apart agree (our last request's connection
        may still be closing on its side)."""
        fds = count_fds(self.pid)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            again = count_fds(self.pid)
            if again == fds:
                break
            fds = again
        return fds

    async def _prime(self) -> None:
        """Put every cached prompt in the cache (non-streamed; hits then replay in both modes)."""
        conn = ClientConn()
        kind = self.kinds["cached"]
        for prompt in self.cached_prompts:
            payload = self._request(kind, prompt)
            r = Result("cached", time.monotonic())
            await asyncio.wait_for(self._exchange(kind, conn, r, payload, expected_text(prompt)), CLIENT_TIMEOUT_S)
            r.t1 = time.monotonic()
            self._record(r)
        conn.close()

    async def run(self) -> dict[str, Any]:
        """Warm up, measure, soak, measure; return the report."""
        self.origin = time.monotonic()
        self.say(f"gateway pid {self.pid} at {self.authority}; faults on {FAULTY.name}; "
                 f"warm-up {WARMUP_S:g}s, then {self.duration:g}s of soak")  # fmt: skip
        await self._mock_config(FAULTY.name, HEALTHY)
        self.boot_fds = await self._stable_fds()  # nothing open yet, as at the measuring points
        self.phase = "prime"
        await self._prime()
        tour = [Window(f, i * WARMUP_SLOT_S, i * WARMUP_SLOT_S + WARMUP_SLOT_S * FAULT_ON_SHARE)
                for i, f in enumerate(FAULTS)]  # fmt: skip
        await self._phase("warm-up", WARMUP_S, tour)
        start = await self._settle()
        self.say(f"start: rss {start.rss_kb / 1024:.1f} MB, fds {start.fds}, pools {start.pools}")
        t_soak = time.monotonic()
        plan = schedule(self.duration)
        await self._phase("soak", self.duration, plan)
        soak_s = time.monotonic() - t_soak
        alive = self._alive()
        end = await self._settle() if alive else Snapshot(0, 0, {}, {}, False)
        if alive:
            self.say(f"end: rss {end.rss_kb / 1024:.1f} MB, fds {end.fds}, pools {end.pools}")
        stats = await self._stats() if alive else {}
        return self._report(start, end, soak_s, plan, stats, alive)

    # the report

    def _verdicts(self) -> dict[str, int]:
        """Classify every request that was not plainly ok; return errored streams by fault."""
        mid = [(w["on"], w["off"]) for w in self.windows if w["midstream"]]
        errored_by_fault: dict[str, int] = {}
        for r in self.pending:
            verdict = classify(r, self.kinds[r.kind].stream, FAULTY.name, mid)
            t = self.tally[r.kind]
            if verdict == "errored":
                t.errored += 1
                fault = next(w["fault"] for w in self.windows
                             if w["midstream"] and overlaps(r.t0, r.t1, [(w["on"], w["off"])]))  # fmt: skip
                errored_by_fault[fault] = errored_by_fault.get(fault, 0) + 1
            elif verdict == "aborted":
                t.aborted += 1
            else:
                t.lost += 1
                if len(self.lost_examples) < 20:
                    self.lost_examples.append({
                        "kind": r.kind, "at_s": round(r.t0 - self.origin, 3), "took_s": round(r.t1 - r.t0, 3),
                        "status": r.status, "provider": r.provider, "cache": r.cache, "reason": why_lost(r),
                    })  # fmt: skip
        self.pending = []
        return errored_by_fault

    def _checks(self, start: Snapshot, end: Snapshot, alive: bool, fired: dict[str, int]) -> list[dict[str, Any]]:
        tallies = self.tally.values()
        lost, total, hits = sum(t.lost for t in tallies), sum(t.sent for t in tallies), sum(t.hits for t in tallies)
        checks = [
            {"name": "lost", "ok": lost == 0, "detail": f"{lost} lost of {total} requests"},
            {"name": "gateway_alive", "ok": alive,
             "detail": "the gateway ran to the end" if alive else "the gateway died"},
        ]  # fmt: skip
        if alive:
            checks += growth_checks(start, end, self.peak_open, self.bounds, self.boot_fds)
        after_ok = self.closed_after.get("ok", 0)
        checks.append({
            "name": "keepalive", "ok": after_ok == 0,
            "detail": (f"the gateway closed keep-alive connections unannounced only after a stream it had to end "
                       f"with an error ({self.closed_after.get('error_event', 0)} times)") if after_ok == 0
            else f"the gateway closed {after_ok} keep-alive connections after a good response, unannounced",
        })  # fmt: skip
        missing = [k.name for k in KINDS if (self.tally[k.name].aborted if k.name == "abort"
                                             else self.tally[k.name].ok) == 0]  # fmt: skip
        unfired = [f.name for f in FAULTS if f.name not in fired]
        coverage = not missing and hits > 0 and not unfired
        checks.append({
            "name": "coverage", "ok": coverage,
            "detail": "every kind answered, cache hits, every fault fired" if coverage
            else f"no answers for {missing or '-'}; cache hits {hits}; faults that never fired {unfired or '-'}",
        })  # fmt: skip
        return checks

    def _report(self, start: Snapshot, end: Snapshot, soak_s: float, plan: Sequence[Window],
                stats: dict[str, Any], alive: bool) -> dict[str, Any]:  # fmt: skip
        errored_by_fault = self._verdicts()
        tallies = self.tally.values()
        total = sum(t.sent for t in tallies)
        lost = sum(t.lost for t in tallies)
        hits = sum(t.hits for t in tallies)
        cached_sent = sum(self.tally[k.name].sent for k in KINDS if k.cached)
        fired: dict[str, int] = {}
        for w in self.windows:
            if w["phase"] == "soak":
                fired[w["fault"]] = fired.get(w["fault"], 0) + 1
        checks = self._checks(start, end, alive, fired)
        rss_series = [s["rss_kb"] for s in self.samples if s["phase"] == "soak"]
        half = rss_series[len(rss_series) // 2 :]
        soak_info = {
            "minutes": round(self.duration / 60, 3), "duration_s": round(soak_s, 2), "warmup_s": WARMUP_S,
            "faulty_provider": FAULTY.name, "healthy_provider": PROVIDERS[1].name,
            "client_connections": CLIENT_CONNECTIONS, "rates": {k.name: k.rate for k in KINDS},
            "router": dict(ROUTER),
        }  # fmt: skip
        requests = {
            "total": total, "ok": sum(t.ok for t in tallies), "errored": sum(t.errored for t in tallies),
            "aborted": sum(t.aborted for t in tallies), "lost": lost, "rps": round(total / (soak_s + WARMUP_S), 1),
            "keepalive_closed_by_gateway": dict(self.closed_after),
        }  # fmt: skip
        faults = {
            "provider": FAULTY.name,
            "plan": {"slot_s": round(plan[1].on - plan[0].on, 2) if len(plan) > 1 else None,
                     "on_share": FAULT_ON_SHARE, "windows": len(plan)},
            "kinds": {f.name: f.label for f in FAULTS},
            "fired": fired,
            "errored_streams": errored_by_fault,
            "windows": [{"phase": w["phase"], "fault": w["fault"], "on_s": round(w["on"] - self.origin, 2),
                         "off_s": round(w["off"] - self.origin, 2)} for w in self.windows],
        }  # fmt: skip
        gateway = {
            "pid": self.pid,
            "fds_before_traffic": self.boot_fds,
            "start": start.to_dict(),
            "end": end.to_dict() if alive else None,
            "peak": {"rss_mb": round(max(rss_series, default=0) / 1024, 1),
                     "fds": max((s["fds"] for s in self.samples), default=0), "pool_open": dict(self.peak_open)},
            "rss_second_half_mb": [round(min(half) / 1024, 1), round(max(half) / 1024, 1)] if half else None,
            "samples": len(self.samples),
            "stats_requests": stats.get("requests"),
            "stats_by_status": stats.get("by_status"),
        }  # fmt: skip
        return {
            "soak": soak_info,
            "requests": requests,
            "lost": lost,
            "lost_definition": LOST_DEFINITION,
            "lost_examples": self.lost_examples,
            "by_kind": {name: t.to_dict() for name, t in self.tally.items()},
            "cache": {"hits": hits, "hit_rate": round(hits / cached_sent, 4) if cached_sent else 0.0},
            "faults": faults,
            "gateway": gateway,
            "bounds": self.bounds.to_dict(start.rss_kb),
            "checks": checks,
            "verdict": verdict_of(checks),
        }


def verdict_of(checks: Sequence[dict[str, Any]]) -> str:
    """PASS when every check passed."""
    return "PASS" if all(c["ok"] for c in checks) else "FAIL"


def format_text(rep: dict[str, Any]) -> str:
    """The report as labelled lines ("Requests:", "Lost:", "Kind NAME:", "Fault windows:", "RSS:", "FDs:",
    "Pools at rest:", "Bounds:", "Check NAME:", "Verdict:")."""
    s, req, gw, b = rep["soak"], rep["requests"], rep["gateway"], rep["bounds"]
    st, en = gw["start"], gw["end"] or {}

    def pools(p: dict[str, Any] | None) -> str:
        return ", ".join(f"{k} {v['open']} open/{v['idle']} idle" for k, v in (p or {}).items()) or "n/a"

    lines = [
        (f"llm-edge soak: {s['minutes']:g} min ({s['duration_s']:.1f}s after a {s['warmup_s']:g}s warm-up), "
         f"faults on {s['faulty_provider']}, {s['healthy_provider']} healthy"),
        (f"Requests: {req['total']} ({req['rps']:.0f}/s)  ok {req['ok']}  errored {req['errored']}  "
         f"aborted {req['aborted']}  lost {req['lost']}"),
        f"Lost: {rep['lost']}",
    ]  # fmt: skip
    for name, k in rep["by_kind"].items():
        extra = f"  aborted {k['aborted']} {k.get('abort_stages')}" if "aborted" in k else ""
        extra += f"  cache hits {k['cache_hits']}" if k.get("cache_hits") else ""
        lat = k.get("latency_ms")
        extra += f"  latency p50/p99 {lat['p50']}/{lat['p99']} ms" if lat else ""
        lines.append(f"Kind {name}: {k['requests']} requests  ok {k['ok']}  errored {k['errored']}  "
                     f"lost {k['lost']}{extra}")  # fmt: skip
    for ex in rep["lost_examples"]:
        lines.append(f"Lost {ex['kind']} at {ex['at_s']:.2f}s: {ex['reason']} (status {ex['status']}, "
                     f"provider {ex['provider'] or '-'}, cache {ex['cache'] or '-'})")  # fmt: skip
    f = rep["faults"]
    lines.append(f"Cache hits: {rep['cache']['hits']} ({rep['cache']['hit_rate'] * 100:.1f}% of cached requests)")
    fired = ", ".join(f"{k} {v}" for k, v in f["fired"].items())
    lines.append(f"Fault windows: {sum(f['fired'].values())} on {f['provider']} ({fired})")
    if f["errored_streams"]:
        lines.append("Errored streams: " + ", ".join(f"{k} {v}" for k, v in f["errored_streams"].items()))
    peak = gw["peak"]
    lines += [
        f"RSS: {st['rss_mb']:.1f} MB -> {en.get('rss_mb', 'n/a')} MB (peak {peak['rss_mb']:.1f} MB)",
        f"FDs: {st['fds']} -> {en.get('fds', 'n/a')} (peak {peak['fds']})",
        f"Pools at rest: start {pools(st['pools'])}; end {pools(en.get('pools'))}",
        "Pool peak open: " + ", ".join(f"{k} {v}" for k, v in peak["pool_open"].items()),
        (f"Bounds: RSS +{b['rss_growth_max_mb']:.1f} MB ({b['rss_rule']}), fds +{b['fd_growth_max']}, "
         f"pool open <= {b['pool_open_max_per_provider']} ({b['pool_rule']})"),
    ]  # fmt: skip
    lines += [f"Check {c['name']}: {'ok' if c['ok'] else 'FAIL'} ({c['detail']})" for c in rep["checks"]]
    lines.append(f"Verdict: {rep['verdict']}")
    return "\n".join(lines)


class SoakError(RuntimeError):
    """The soak could not be carried out (e.g. the gateway stopped answering its own /stats)."""


def log_problems(text: str) -> list[str]:
    """Lines of the gateway's log that only a bug writes (its ERROR lines, tracebacks)."""
    return [line for line in text.splitlines() if " ERROR " in line or line.startswith("Traceback")]


def run(minutes: float, *, quiet: bool = False, gateway_loop: str | None = None,
        gateway_cpus: Sequence[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Start the stack, soak it for `minutes`, stop it (SIGTERM: it must drain and exit 0); return the
    report. Raises StartError when the stack does not start, SoakError when the run cannot go on."""

    def say(line: str) -> None:
        if not quiet:
            print(f"[soak] {line}", file=sys.stderr, flush=True)

    with Stack(PROVIDERS, tokens=TOKENS, router=ROUTER, gateway_loop=gateway_loop, gateway_cpus=gateway_cpus) as stack:
        gw = stack.gateway
        assert gw is not None
        soak = Soak(stack, minutes, say)
        try:
            with asyncio.Runner(loop_factory=lambda: new_loop("uvloop")) as runner:
                rep = runner.run(soak.run())
        except (TimeoutError, OSError, RuntimeError, ValueError) as exc:
            state = "running" if gw.alive() else f"exited with {gw.proc.poll() if gw.proc else None}"
            raise SoakError(f"the soak could not go on ({exc!r}); the gateway is {state}; its log:\n"
                            f"{gw.log_tail(20)}") from exc  # fmt: skip
        code = gw.stop()  # SIGTERM: it drains and exits (the mocks stop with the stack)
        tail = gw.log_tail(20)
        problems = log_problems(gw.log_path.read_text("utf-8", "replace") if gw.log_path.exists() else "")
    rep["gateway"]["exit_code"] = code
    rep["gateway"]["log_problems"] = problems[:10]
    rep["checks"] += [
        {"name": "gateway_exit", "ok": code == 0, "detail": f"the gateway exited with {code} on SIGTERM"},
        {"name": "gateway_log", "ok": not problems,
         "detail": "no ERROR line or traceback in the gateway's log" if not problems
         else f"{len(problems)} ERROR lines or tracebacks in the gateway's log, first: {problems[0][:200]}"},
    ]  # fmt: skip
    rep["verdict"] = verdict_of(rep["checks"])
    if rep["verdict"] != "PASS":
        say(f"gateway log tail:\n{tail}")
    return rep
