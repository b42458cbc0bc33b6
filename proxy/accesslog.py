# proxy/accesslog.py: the optional JSON-lines access log, one line per request.
#
# Rules for this file:
# 1. The hot path only appends a tuple of plain values (see `ROW`) to a bounded list: no
#    formatting, no clock read, no I/O. Over the bound, rows are dropped and counted.
# 2. `flush`, called from the gateway's 1 Hz tick and at shutdown, formats every pending
#    row with orjson and hands the batch to the sink as one write. It never raises: a row
#    that cannot be formatted or a failed write is counted, not propagated into the tick.
# 3. A line holds names, numbers and the key's *name*: never a key, a prompt, a completion
#    or any header value. `format_rows` writes exactly the fields of `FIELDS`.
# 4. The only I/O is in `FileSink` (open, write, close); everything else is testable with a
#    list as the sink and a fake clock.
"""JSON-lines access log.

Config (TOML)::

    [log]
    access_log = "/var/log/llm-edge/access.jsonl"  # or "-" for stderr; absent or "" = off
    access_log_buffer = 20000                      # rows held between flushes; more are dropped

A line (keys always present, null when not applicable)::

    {"time":"2026-08-01T12:00:00.123Z","request_id":"req_1","endpoint":"/v1/chat/completions",
     "model":"fast","provider":"openai","route":0,"status":200,"stream":true,"latency_us":812345,
     "overhead_us":41,"ttfb_us":95012,"tokens_in":120,"tokens_out":512,"cost_usd":0.004456,
     "cache":"miss","attempts":1,"key":"team-a","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",
     "span_id":"00f067aa0ba902b7"}

`trace_id` and `span_id` are the request's OpenTelemetry ids (the client's trace continued, or one
the gateway started), so a slow line leads to its trace. With `[tracing]` on, the same lines also
go out as OTLP log records under their trace (`otlp`, called with the batch at each flush).

Several workers may share one file: it is opened with O_APPEND and each flush is one
write(2), so batches do not interleave mid-line on a local file system.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import ConfigError

# What the hot path appends, position by position (a plain tuple; no names are checked):
ROW = (
    "t_end",  # float: when the response ended, on the monotonic clock passed to flush()
    "request_id",  # str or bytes (latin-1)
    "endpoint",  # str, e.g. "/v1/chat/completions"
    "model",  # str: the model the client asked for
    "provider",  # str: the provider of the route that answered; "" if none
    "route",  # int: route id; -1 if none
    "status",  # int: the status sent downstream; 0 if none was
    "stream",  # bool
    "latency_s",  # float: whole exchange
    "overhead_s",  # float: the gateway's own share (Exchange.overhead())
    "ttfb_s",  # float: time to the first relayed byte; 0.0 if not measured
    "tokens_in",  # int
    "tokens_out",  # int
    "cost_nusd",  # int: nano-dollars
    "cache",  # the cache outcome: str, bytes or an enum of either (Outcome.HIT); "" or None: no say
    "attempts",  # int: upstream attempts made
    "key",  # str: the gateway key's name (Keys.names[k]); "" if none
    "trace",  # tracecontext.trace_ids(ex): (trace id, span id, parent, flags); optional (None: no trace id)
)
# The keys of every line, in order.
FIELDS = (
    "time", "request_id", "endpoint", "model", "provider", "route", "status", "stream", "latency_us",
    "overhead_us", "ttfb_us", "tokens_in", "tokens_out", "cost_usd", "cache", "attempts", "key", "trace_id",
    "span_id",
)  # fmt: skip

DEFAULT_BUFFER = 20_000
_MAX_BUFFER = 10_000_000
_OPTS = orjson.OPT_APPEND_NEWLINE


@dataclass(slots=True, frozen=True)
class AccessLogSettings:
    """The access-log keys of the `[log]` table."""

    path: str | None = None  # None: off; "-": stderr
    max_pending: int = DEFAULT_BUFFER

    @property
    def enabled(self) -> bool:
        """True when an access log is configured."""
        return self.path is not None

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any] | None, where: str = "log", ignore: Collection[str] = ()
    ) -> AccessLogSettings:
        """Validate the `[log]` table's `access_log` and `access_log_buffer`.

        Keys in `ignore` (other `[log]` settings) are skipped; any other unknown key is an
        error. Raises ConfigError naming the key ("log.access_log: ...").
        """
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table")
        for name in table:
            if name not in ("access_log", "access_log_buffer") and name not in ignore:
                raise ConfigError(f"{where}.{name}: unknown key")
        path = table.get("access_log")
        if path is not None:
            if not isinstance(path, str):
                raise ConfigError(f'{where}.access_log: expected a file path or "-" for stderr')
            if not path:
                path = None
            elif path != "-":
                parent = os.path.dirname(os.path.abspath(path))
                if not os.path.isdir(parent):
                    raise ConfigError(f"{where}.access_log: no such directory: {parent}")
                if os.path.isdir(path):
                    raise ConfigError(f"{where}.access_log: is a directory: {path}")
        size = table.get("access_log_buffer", DEFAULT_BUFFER)
        if type(size) is not int or not 0 < size <= _MAX_BUFFER:
            raise ConfigError(f"{where}.access_log_buffer: expected an integer from 1 to {_MAX_BUFFER} (got {size!r})")
        return cls(path, size)


class FileSink:
    """Appends bytes to a file (O_APPEND) or to stderr ("-"), one write(2) per batch if it can."""

    __slots__ = ("fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.reopen()

    def __repr__(self) -> str:
        return f"<FileSink {self.path} fd={self.fd}>"

    def write(self, data: bytes) -> None:
        """Write all of `data`. Raises OSError (the log counts it)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def reopen(self) -> None:
        """(Re)open the file, e.g. after logrotate moved it (wire to SIGHUP)."""
        if self.path == "-":
            self.fd = 2
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        old, self.fd = self.fd, fd
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        """Close the file (never stderr)."""
        if self.fd > 2:
            os.close(self.fd)
        self.fd = -1


class AccessLog:
    """The bounded buffer of access-log rows and their flush.

    Hot path (only when configured):  `log.append((t_end, request_id, ..., key))`, a tuple
    laid out as `ROW`. Tick (1 Hz) and shutdown: `log.flush(time.time(), mono_now)`, where
    `mono_now` is read from the clock the rows' `t_end` came from. `sink` is any callable
    taking bytes (default: a `FileSink` on the configured path).
    """

    __slots__ = ("_prefix", "_sec", "dropped", "lines", "max_pending", "otlp", "pending", "sink", "write_errors")

    def __init__(
        self,
        settings: AccessLogSettings,
        sink: Callable[[bytes], object] | None = None,
        otlp: Callable[[list[dict[str, Any]], float], object] | None = None,
    ) -> None:
        # config
        self.max_pending = settings.max_pending
        if sink is None and settings.path is not None:
            sink = FileSink(settings.path).write
        if sink is None and otlp is None:
            raise ValueError("the access log is not configured")
        self.sink = sink  # None: OTLP only
        self.otlp = otlp  # `tracing.Tracer.emit_logs`: the lines as OTLP log records, with their `t_end`
        # state
        self.pending: list[tuple[Any, ...]] = []
        self._sec = -1  # the whole second `_prefix` was formatted for
        self._prefix = ""
        # counters
        self.lines = 0  # written
        self.dropped = 0  # buffer full, unformattable, or lost in a failed write
        self.write_errors = 0

    def __repr__(self) -> str:
        return (
            f"<AccessLog pending={len(self.pending)}/{self.max_pending} lines={self.lines} dropped={self.dropped} "
            f"write_errors={self.write_errors}>"
        )

    def append(self, row: tuple[Any, ...]) -> None:
        """Queue one request's row (laid out as `ROW`); dropped and counted when the buffer is full."""
        pending = self.pending
        if len(pending) < self.max_pending:
            pending.append(row)
        else:
            self.dropped += 1

    def flush(self, wall_now: float, mono_now: float, max_lines: int = 0) -> int:
        """Format the oldest pending rows (all, or at most `max_lines`) and write them in one write.

        Returns the lines written. `wall_now` is `time.time()`, `mono_now` the monotonic
        clock of the rows' `t_end`, both read now: a row's wall time is `t_end + (wall_now -
        mono_now)`. Formatting costs 3-7 us per line (CPython 3.11, 2-core VM) and blocks
        the loop while it runs: at high request rates pass `max_lines` (e.g. 1000, a few ms)
        and, while `pending` is not empty, call again with `loop.call_soon` so I/O runs between.
        """
        rows = self.pending
        if not rows:
            return 0
        if 0 < max_lines < len(rows):
            self.pending = rows[max_lines:]
            rows = rows[:max_lines]
        else:
            self.pending = []
        if self.otlp is not None:
            self._export(rows, wall_now - mono_now)
        if self.sink is None:
            self.lines += len(rows)
            return len(rows)
        data, count = self.format_rows(rows, wall_now - mono_now)
        self.dropped += len(rows) - count
        if not count:
            return 0
        try:
            self.sink(data)
        except OSError:
            self.write_errors += 1
            self.dropped += count
            return 0
        self.lines += count
        return count

    def format_rows(self, rows: list[tuple[Any, ...]], offset: float) -> tuple[bytes, int]:
        """(JSON lines, how many) for `rows`; a row that cannot be formatted is skipped."""
        out = []
        dumps = orjson.dumps
        for row in rows:
            try:
                out.append(dumps(self._line(row, offset), option=_OPTS))
            except (TypeError, ValueError, IndexError, orjson.JSONEncodeError):
                continue
        return b"".join(out), len(out)

    # -- internal -----------------------------------------------------------------------

    def _export(self, rows: list[tuple[Any, ...]], offset: float) -> None:
        lines = []
        for row in rows:
            try:
                line = self._line(row, offset)
            except (TypeError, ValueError, IndexError):
                continue
            line["t_end"] = row[0]
            lines.append(line)
        try:
            self.otlp(lines, offset)  # type: ignore[misc]
        except Exception:  # an exporter's failure never reaches the tick
            self.write_errors += 1

    def _line(self, row: tuple[Any, ...], offset: float) -> dict[str, Any]:
        (t_end, request_id, endpoint, model, provider, route, status, stream, latency_s, overhead_s, ttfb_s,
         tokens_in, tokens_out, cost_nusd, cache, attempts, key) = row[:17]  # fmt: skip
        trace = row[17] if len(row) > 17 else None
        if isinstance(request_id, bytes):
            request_id = request_id.decode("latin-1")
        return {
            "time": self._iso(t_end + offset),
            "request_id": request_id or None,
            "endpoint": endpoint or None,
            "model": model or None,
            "provider": provider or None,
            "route": route if route >= 0 else None,
            "status": status,
            "stream": bool(stream),
            # Whole microseconds, like the stats histograms: int(x * 1e6) 72 ns vs round(x * 1e3, 3) 245 ns (timeit).
            "latency_us": int(latency_s * 1e6),
            "overhead_us": int(overhead_s * 1e6),
            "ttfb_us": int(ttfb_s * 1e6) if ttfb_s > 0.0 else None,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost_usd": cost_nusd / 1e9,
            "cache": _outcome(cache),
            "attempts": attempts,
            "key": key or None,
            "trace_id": f"{trace[0]:032x}" if trace else None,
            "span_id": f"{trace[1]:016x}" if trace else None,
        }

    def _iso(self, wall: float) -> str:
        # The date part is formatted once per distinct second: rows of one flush share a few.
        # 0.52 us vs 1.7 us per line for datetime.fromtimestamp(..., utc).isoformat() (timeit, CPython 3.11).
        sec = int(wall)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        ms = int((wall - sec) * 1000.0)
        return f"{self._prefix}.{ms:03d}Z"


def _outcome(value: Any) -> str | None:
    # Written lowercase whatever the caller holds: "hit", not b"HIT" or Outcome.HIT.
    if not value:
        return None
    value = getattr(value, "value", value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).lower()
