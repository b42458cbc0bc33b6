# sim/engine.py: the load generator's hot path (one event loop, N keep-alive connections).
#
# Rules: no Task, Future or Handle per request on the warm path; requests are prebuilt bytes
# written with one transport.write; responses are parsed by one httptools parser per
# connection, reused across keep-alive responses; per-request state lives in slots on the
# connection. Tasks appear only on the cold path (connect, reconnect after a close or error).
#
# Theory of operation. A `_Run` owns the counters and histograms and decides what each
# connection does next. Closed loop: a connection that finishes a response immediately sends
# the next request while the budget (`requests`) and the clock (`duration`) allow, so
# in-flight == concurrency. Open loop: request i is due at t0 + i/rate; one self-rescheduling
# timer releases every due request to an idle connection or, when all are busy, appends its
# scheduled time to a FIFO that finishing connections drain. Latency is measured from the
# scheduled time, so a slow server cannot hide its queueing (no coordinated omission). One
# watchdog tick (every <=100 ms) enforces the per-request timeout, times out requests queued
# too long, emits progress and detects the end of the run.
#
# With `track`, each response's x-llm-edge-provider and x-cache headers are kept on the
# connection and counted when it completes (a few dict operations per response, off by
# default so pure throughput runs pay nothing), into time buckets for the simulator's timeline.
from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

import httptools

from sim.hist import Histogram
from sim.results import CACHE_TIMED, ERROR_KINDS, FROM_CACHE, NO_PROVIDER, TIMELINE_HZ, Progress, Results

_RETRY_DELAY = 0.01  # seconds before reopening a connection after a failed connect
_TICK_MAX = 0.1  # watchdog period ceiling (seconds)


class LoadgenError(Exception):
    """The run could not start (bad spec, or no connection to the target at all)."""


@dataclass(frozen=True)
class LoadSpec:
    """What to send, where, and how hard.

    ``payloads`` are complete HTTP/1.1 requests (head + body) sent in turn, cycling. Exactly
    one of the closed-loop or open-loop modes applies: without ``rate`` the run is closed loop
    with ``concurrency`` requests in flight; with ``rate`` (requests per second) it is open
    loop over at most ``connections`` (default ``concurrency``) connections. The run ends
    after ``requests`` requests or after ``duration`` seconds, whichever comes first (open
    loop: ``rate * duration`` requests); with neither, after ``len(payloads)`` requests.
    ``timeout`` bounds each request (seconds, from its latency start); ``connect_timeout``
    bounds each TCP connect. A 2xx response whose
    content-type is ``text/event-stream`` only succeeds if ``terminator`` appears in its body.
    """

    host: str
    port: int
    payloads: Sequence[bytes]
    concurrency: int = 32
    requests: int | None = None
    duration: float | None = None
    rate: float | None = None
    connections: int | None = None
    timeout: float = 10.0
    connect_timeout: float = 5.0
    terminator: bytes = b"data: [DONE]"
    progress_interval: float = 1.0
    loop: str = "uvloop"  # "uvloop" or "asyncio"
    track: bool = False  # count x-llm-edge-provider / x-cache per response (see module header)

    def validate(self) -> None:
        """Raise :class:`LoadgenError` if the spec cannot run."""
        if not self.payloads:
            raise LoadgenError("no payloads to send")
        if self.concurrency < 1 or (self.connections is not None and self.connections < 1):
            raise LoadgenError("concurrency and connections must be >= 1")
        if self.requests is not None and self.requests < 1:
            raise LoadgenError("requests must be >= 1")
        if self.duration is not None and self.duration <= 0:
            raise LoadgenError("duration must be > 0")
        if self.rate is not None and self.rate <= 0:
            raise LoadgenError("rate must be > 0")
        if self.timeout <= 0 or self.connect_timeout <= 0 or self.progress_interval <= 0:
            raise LoadgenError("timeouts and progress_interval must be > 0")
        if self.loop not in ("uvloop", "asyncio"):
            raise LoadgenError(f"unknown loop {self.loop!r}")

    def planned(self) -> int | None:
        """Number of requests the run will issue, or None when only the clock limits it."""
        if self.rate is not None:
            n = None if self.duration is None else max(1, int(self.rate * self.duration))
            if self.requests is not None:
                n = self.requests if n is None else min(n, self.requests)
            return len(self.payloads) if n is None else n
        if self.requests is not None:
            return self.requests
        return None if self.duration is not None else len(self.payloads)

    def slots(self) -> int:
        """Number of connections the run opens."""
        n = self.concurrency if self.rate is None or self.connections is None else self.connections
        planned = self.planned()
        return n if planned is None else max(1, min(n, planned))


class _Conn(asyncio.Protocol):
    """One client connection: writes a request, parses its response, reports to the run."""

    __slots__ = ("run", "transport", "parser", "busy", "closed", "t0", "t_first", "sse", "seen_end", "tail",
                 "provider", "cache")

    def __init__(self, run: _Run) -> None:
        # per-connection state
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        # per-request state
        self.busy = False
        self.t0 = 0.0  # latency start: send time (closed loop) or scheduled time (open loop)
        self.t_first = 0.0
        self.sse = False
        self.seen_end = False
        self.tail = b""
        self.provider = b""  # x-llm-edge-provider of the response (tracked runs)
        self.cache = b""  # x-cache of the response (tracked runs)

    # asyncio.Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:  # noqa: D102
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            raise  # a bug in our callbacks: let the loop's exception handler see it
        except httptools.HttpParserError:
            self.run.fail(self, "parse")

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.run.lost(self)

    # parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:  # noqa: D102
        n = len(name)
        if n == 12:
            if name.lower() == b"content-type" and b"event-stream" in value:
                self.sse = self.run.need_end  # an event stream must end with the terminator
        elif self.run.track:
            if n == 19 and name.lower() == b"x-llm-edge-provider":
                self.provider = value
            elif n == 7 and name.lower() == b"x-cache":
                self.cache = value

    def on_body(self, body: bytes) -> None:  # noqa: D102
        if self.t_first == 0.0:
            self.t_first = perf_counter()
        if self.sse and not self.seen_end:
            buf = self.tail + body if self.tail else body
            if self.run.terminator in buf:
                self.seen_end = True
            else:
                self.tail = buf[-self.run.keep:]  # the terminator may straddle two reads

    def on_message_complete(self) -> None:  # noqa: D102
        if self.busy:
            self.run.complete(self)
        else:  # a response nobody asked for: the connection is out of step
            self.run.fail(self, "parse")

    # internal

    def send(self, payload: bytes, t0: float) -> None:
        """Start a request whose latency is counted from ``t0`` (a perf_counter time)."""
        self.busy = True
        self.t0 = t0
        self.t_first = 0.0
        self.sse = False
        self.seen_end = False
        self.tail = b""
        self.provider = self.cache = b""
        self.transport.write(payload)  # type: ignore[union-attr]


class _Run:
    """Shared state of one load run inside one event loop (see module header)."""

    __slots__ = (
        "loop", "spec", "progress", "payloads", "n_payloads", "cursor", "open_loop", "limit",
        "deadline", "slots", "issued", "done", "ok", "latency", "ttfb", "send_lag", "status",
        "errors", "conns", "idle", "pending", "connecting", "tasks", "terminator", "need_end",
        "t_start", "t_end", "sched_i", "rate", "finished", "tick_handle", "sched_handle",
        "last_progress", "last_done", "all_closed", "keep",
        "track", "timeline", "timeline_errors", "cache", "cache_latency",
    )

    def __init__(self, spec: LoadSpec, loop: asyncio.AbstractEventLoop, progress: Callable[[Progress], None] | None):
        # config
        self.loop = loop
        self.spec = spec
        self.progress = progress
        self.payloads = list(spec.payloads)
        self.n_payloads = len(self.payloads)
        self.open_loop = spec.rate is not None
        self.rate = spec.rate or 0.0
        planned = spec.planned()
        self.limit = -1 if planned is None else planned
        self.deadline = float("inf")
        self.slots = spec.slots()
        self.terminator = spec.terminator
        self.need_end = bool(spec.terminator)
        self.keep = max(1, len(spec.terminator) - 1)
        # counters and recordings
        self.cursor = 0
        self.issued = 0  # requests that entered the system (sent, queued or failed to connect)
        self.done = 0  # requests finished, well or badly
        self.ok = 0
        self.latency = Histogram()
        self.ttfb = Histogram()
        self.send_lag = Histogram()
        self.status: dict[int, int] = {}
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.track = spec.track
        self.timeline: dict[int, dict[str, int]] = {}
        self.timeline_errors: dict[int, int] = {}
        self.cache: dict[str, int] = {}
        self.cache_latency: dict[str, Histogram] = {k: Histogram() for k in CACHE_TIMED} if spec.track else {}
        # connections
        self.conns: set[_Conn] = set()
        self.idle: list[_Conn] = []
        self.pending: deque[float] = deque()  # open loop: scheduled times waiting for a connection
        self.connecting = 0
        self.tasks: set[asyncio.Task[None]] = set()
        # clock
        self.t_start = 0.0
        self.t_end = 0.0
        self.sched_i = 0
        self.finished: asyncio.Future[None] = loop.create_future()
        self.all_closed: asyncio.Future[None] | None = None
        self.tick_handle: asyncio.TimerHandle | None = None
        self.sched_handle: asyncio.TimerHandle | None = None
        self.last_progress = 0.0
        self.last_done = 0

    # hot path: called by connections

    def complete(self, conn: _Conn) -> None:
        """A response finished: record it, then reuse the connection or let it go."""
        now = perf_counter()
        t0 = conn.t0
        latency_us = (now - t0) * 1e6
        self.latency.record(latency_us)
        self.ttfb.record(((conn.t_first or now) - t0) * 1e6)
        parser = conn.parser
        code = parser.get_status_code()
        st = self.status
        st[code] = st.get(code, 0) + 1
        conn.busy = False
        self.done += 1
        ok = False
        if 200 <= code < 300:
            if not conn.sse or conn.seen_end:
                self.ok += 1
                ok = True
            else:
                self.errors["stream"] += 1
        else:
            self.errors["http"] += 1
        if self.track:
            self._track(conn, now, ok, latency_us)
        if parser.should_keep_alive():
            self._dispatch(conn, now)
        else:
            conn.closed = True
            conn.transport.close()  # type: ignore[union-attr]  # lost() reopens a connection
            self._check_finish()

    def fail(self, conn: _Conn, kind: str) -> None:
        """Count the connection's current request (if any) as failed and drop the connection."""
        if conn.busy:
            conn.busy = False
            self.done += 1
            self.errors[kind] += 1
            if self.track:
                self._track_error(perf_counter())
        conn.closed = True
        if conn.transport is not None:
            conn.transport.abort()
        self._check_finish()

    def lost(self, conn: _Conn) -> None:
        """The connection is gone: fail its request if one was in flight, then replace it."""
        if conn.busy:
            conn.busy = False
            self.done += 1
            self.errors["reset"] += 1
            if self.track:
                self._track_error(perf_counter())
        conn.closed = True
        self.conns.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        if self.all_closed is not None:
            if not self.conns and not self.all_closed.done():
                self.all_closed.set_result(None)
            return
        self._replenish()
        self._check_finish()

    # tracking (only with spec.track)

    def _track(self, conn: _Conn, now: float, ok: bool, latency_us: float) -> None:
        if ok:
            b = int((now - self.t_start) * TIMELINE_HZ)
            per = self.timeline.get(b)
            if per is None:
                per = self.timeline[b] = {}
            if conn.provider:
                name = conn.provider.decode("latin-1")
            else:
                name = FROM_CACHE if conn.cache.strip().upper() == b"HIT" else NO_PROVIDER
            per[name] = per.get(name, 0) + 1
        else:
            self._track_error(now)
        if conn.cache:
            value = conn.cache.decode("latin-1").strip().upper()
            self.cache[value] = self.cache.get(value, 0) + 1
            hist = self.cache_latency.get(value)
            if hist is not None and ok:
                hist.record(latency_us)

    def _track_error(self, now: float) -> None:
        b = int((now - self.t_start) * TIMELINE_HZ) if self.t_start else 0
        self.timeline_errors[b] = self.timeline_errors.get(b, 0) + 1

    # internal: what a free connection does next

    def _dispatch(self, conn: _Conn, now: float) -> None:
        if self.open_loop:
            if self.pending:
                t = self.pending.popleft()
                self.send_lag.record((now - t) * 1e6)
                conn.send(self._next_payload(), t)
            else:
                self.idle.append(conn)
                self._check_finish()
        elif (self.limit < 0 or self.issued < self.limit) and now < self.deadline:
            self.issued += 1
            conn.send(self._next_payload(), now)
        else:
            self.idle.append(conn)
            self._check_finish()

    def _next_payload(self) -> bytes:
        i = self.cursor
        self.cursor = i + 1 if i + 1 < self.n_payloads else 0
        return self.payloads[i]

    def _more_to_issue(self) -> bool:
        if self.open_loop:
            return self.sched_i < self.limit
        return (self.limit < 0 or self.issued < self.limit) and perf_counter() < self.deadline

    def _check_finish(self) -> None:
        if self.finished.done() or self.t_start == 0.0:
            return
        if self.done < self.issued or self._more_to_issue():
            return
        self.t_end = perf_counter()
        self.finished.set_result(None)

    # open loop: the schedule

    def _release_due(self) -> None:
        self.sched_handle = None
        now = perf_counter()
        rate, t0, limit = self.rate, self.t_start, self.limit
        due = min(limit, int((now - t0) * rate) + 1)
        while self.sched_i < due:
            t = t0 + self.sched_i / rate
            self.sched_i += 1
            self.issued += 1
            if self.idle:
                self.send_lag.record((now - t) * 1e6)
                self.idle.pop().send(self._next_payload(), t)
            else:
                self.pending.append(t)
        if self.sched_i < limit:
            delay = t0 + self.sched_i / rate - perf_counter()
            self.sched_handle = self.loop.call_later(delay if delay > 0 else 0, self._release_due)

    # cold path: connections, watchdog, progress

    def _replenish(self) -> None:
        if self.finished.done() or not self._has_work():
            return
        while len(self.conns) + self.connecting < self.slots:
            self.connecting += 1
            task = self.loop.create_task(self._open())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _has_work(self) -> bool:
        return self._more_to_issue() or bool(self.pending)

    async def _open(self) -> None:
        conn = _Conn(self)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, self.spec.host, self.spec.port), self.spec.connect_timeout
            )
        except (OSError, asyncio.TimeoutError):
            self.connecting -= 1
            self._connect_failed()
            return
        self.connecting -= 1
        if conn.closed:  # lost before we got here, while still counted as connecting
            self._replenish()
            return
        if self.finished.done():
            conn.transport.close()  # type: ignore[union-attr]
            return
        self.conns.add(conn)
        if self.t_start == 0.0:
            self.idle.append(conn)
        else:
            self._dispatch(conn, perf_counter())

    def _connect_failed(self) -> None:
        if self.t_start == 0.0 or self.finished.done():
            return
        if self.open_loop:
            if self.pending:
                self.pending.popleft()
                self.done += 1
                self.errors["connect"] += 1
                if self.track:
                    self._track_error(perf_counter())
        elif self._more_to_issue():
            self.issued += 1
            self.done += 1
            self.errors["connect"] += 1
            if self.track:
                self._track_error(perf_counter())
        self._check_finish()
        if not self.finished.done():
            self.loop.call_later(_RETRY_DELAY, self._replenish)

    def _tick(self) -> None:
        now = perf_counter()
        timeout = self.spec.timeout
        for conn in tuple(self.conns):
            if conn.busy and now - conn.t0 > timeout:
                self.fail(conn, "timeout")
        pending = self.pending
        while pending and now - pending[0] > timeout:
            pending.popleft()
            self.done += 1
            self.errors["timeout"] += 1
            if self.track:
                self._track_error(now)
        if self.progress is not None and now - self.last_progress >= self.spec.progress_interval:
            self._emit_progress(now)
        self._check_finish()
        if not self.finished.done():
            self.tick_handle = self.loop.call_later(min(_TICK_MAX, timeout / 4), self._tick)

    def _emit_progress(self, now: float) -> None:
        interval = now - self.last_progress
        rps = (self.done - self.last_done) / interval if interval > 0 else 0.0
        self.last_progress, self.last_done = now, self.done
        in_flight = sum(1 for c in self.conns if c.busy) + len(self.pending)
        snap = Progress(round(now - self.t_start, 3), self.done, self.ok, self.done - self.ok, in_flight, round(rps, 1))
        try:
            self.progress(snap)  # type: ignore[misc]
        except Exception as exc:  # a broken callback must end the run, not hang it
            if not self.finished.done():
                self.finished.set_exception(exc)

    # the run itself

    async def run(self) -> Results:
        spec = self.spec
        self._replenish()  # open every slot's connection before the clock starts
        if self.tasks:
            await asyncio.wait(set(self.tasks))
        if not self.conns:
            raise LoadgenError(f"cannot connect to {spec.host}:{spec.port}")
        self.t_start = self.last_progress = perf_counter()
        if spec.duration is not None and not self.open_loop:
            self.deadline = self.t_start + spec.duration
        self.tick_handle = self.loop.call_later(min(_TICK_MAX, spec.timeout / 4), self._tick)
        if self.open_loop:
            self._release_due()
        else:
            for conn in self.idle[:]:
                self.idle.remove(conn)
                self._dispatch(conn, perf_counter())
        self._replenish()  # slots that failed their first connect get another try
        try:
            await self.finished
        finally:
            await self._shutdown()
        return self._results()

    async def _shutdown(self) -> None:
        for h in (self.tick_handle, self.sched_handle):
            if h is not None:
                h.cancel()
        for task in tuple(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks))
        self.all_closed = self.loop.create_future()
        if not self.conns:
            self.all_closed.set_result(None)
        for conn in tuple(self.conns):
            conn.transport.close()  # type: ignore[union-attr]
        await asyncio.wait_for(self.all_closed, 5.0)

    def _results(self) -> Results:
        end = self.t_end or perf_counter()
        return Results(
            mode="open" if self.open_loop else "closed",
            requests=self.done,
            ok=self.ok,
            errors=self.done - self.ok,
            elapsed_s=end - self.t_start,
            connections=self.slots,
            latency=self.latency,
            ttfb=self.ttfb,
            send_lag=self.send_lag,
            status=dict(self.status),
            error_kinds={k: v for k, v in self.errors.items() if v},
            timeline=self.timeline,
            timeline_errors=self.timeline_errors,
            cache=dict(self.cache),
            cache_latency={k: h for k, h in self.cache_latency.items() if h.n},
        )


async def run_async(spec: LoadSpec, progress: Callable[[Progress], None] | None = None) -> Results:
    """Run the load described by ``spec`` on the current event loop and return its results.

    Use this only where a loop already exists (tests); the load then shares the GIL with
    whatever else runs in this process. For measurements use ``sim.loadgen.run_process``.
    """
    spec.validate()
    return await _Run(spec, asyncio.get_running_loop(), progress).run()
