"""W3C trace context and the `[tracing]` settings: what the request path needs of tracing, with no
OpenTelemetry import (that is `proxy.tracing`'s, loaded only when `[tracing] otlp_endpoint` is set).

- A client's `traceparent` is continued: its trace id becomes the request's, its span id the
  parent of the gateway's server span. Without one (or with a malformed one) the gateway
  starts a trace of its own, so every access-log line has a trace id to search for.
- Each attempt's client span id is derived from the server span id and the attempt number,
  so the `traceparent` sent upstream names the span `proxy.tracing.record` later builds, with
  nothing stored per attempt.
- Sampling is decided from the trace id as the OpenTelemetry SDK's `TraceIdRatioBased` does,
  under the client's sampled flag when it sent one (`ParentBased`): the flag sent upstream and
  the SDK's decision agree.

Pure: no I/O. Ids are ints (128-bit trace, 64-bit span), hex only when written.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import xxhash

from proxy.errors import ConfigError

_HEX = frozenset(b"0123456789abcdef")
_MASK64 = (1 << 64) - 1
SAMPLED = 1

TraceIds = tuple[int, int, int, int]  # (trace id, server span id, client's parent span id or 0, flags)


@dataclass(slots=True, frozen=True)
class TracingSettings:
    """The `[tracing]` table. Off unless `otlp_endpoint` is set."""

    otlp_endpoint: str | None = None  # OTLP/HTTP base, e.g. "http://127.0.0.1:4318" (/v1/traces is added)
    sample_ratio: float = 1.0  # share of traces started here that are recorded; a client's flag decides its own
    capture_content: bool = False  # record prompts (gen_ai.input.messages) and completions: off, they may be private
    service_name: str = "llm-edge"
    export_logs: bool = True  # the access log also goes out as OTLP logs (when [log] access_log is set)
    max_queue: int = 2048  # spans (and log records) held for export; more are dropped, never waited for
    export_timeout_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None

    def url(self, signal: str) -> str:
        """The OTLP/HTTP URL of a signal ("traces" or "logs")."""
        assert self.otlp_endpoint is not None
        base = self.otlp_endpoint.rstrip("/")
        for known in ("/v1/traces", "/v1/logs"):
            if base.endswith(known):
                base = base[: -len(known)]
        return f"{base}/v1/{signal}"

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None, where: str = "tracing") -> TracingSettings:
        """Validate the `[tracing]` table; ConfigError names the bad key."""
        if not table:
            return cls()
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table")
        allowed = set(cls.__dataclass_fields__)
        for name in table:
            if name not in allowed:
                raise ConfigError(f"{where}.{name}: unknown key")
        endpoint = table.get("otlp_endpoint")
        if endpoint is not None and (not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))):
            raise ConfigError(f"{where}.otlp_endpoint: expected an http:// or https:// URL (got {endpoint!r})")
        ratio = table.get("sample_ratio", 1.0)
        if type(ratio) not in (int, float) or not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"{where}.sample_ratio: expected a number from 0 to 1 (got {ratio!r})")
        for name in ("capture_content", "export_logs"):
            if type(table.get(name, False)) is not bool:
                raise ConfigError(f"{where}.{name}: expected true or false")
        service = table.get("service_name", "llm-edge")
        if not isinstance(service, str) or not service:
            raise ConfigError(f"{where}.service_name: expected a non-empty string")
        queue = table.get("max_queue", 2048)
        if type(queue) is not int or not 1 <= queue <= 1_000_000:
            raise ConfigError(f"{where}.max_queue: expected an integer from 1 to 1000000 (got {queue!r})")
        timeout = table.get("export_timeout_s", 10.0)
        if type(timeout) not in (int, float) or not 0 < timeout <= 300:
            raise ConfigError(f"{where}.export_timeout_s: expected seconds, more than 0 and at most 300")
        return cls(endpoint or None, float(ratio), table.get("capture_content", False), service,
                   table.get("export_logs", True), queue, float(timeout))  # fmt: skip


class Traced(Protocol):
    """What this module reads and writes of an exchange: the client's header, and the ids it leads to."""

    traceparent: bytes  # the client's `traceparent` header value, b"" if none
    trace: TraceIds | None  # set on first use


class Attempt(NamedTuple):
    """One upstream attempt, as `proxy.tracing.record` reads it (timestamps: `time.perf_counter()`)."""

    route: str  # "provider/upstream model"
    provider: str  # the provider's configured name
    kind: str  # openai | anthropic | local
    upstream_model: str
    server_address: str
    server_port: int
    t_start: float
    t_end: float
    t_first_byte: float  # 0.0: no response head came
    status: int  # the provider's status; 0 if none
    error_type: str  # "" on success, else e.g. "timeout", "connect", "500", "cancelled"
    hedge: bool = False


def parse_traceparent(value: bytes) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a W3C `traceparent` value, or None if it is not valid."""
    value = value.strip().lower()
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if version == b"ff" or not _HEX.issuperset(version):
        return None
    if version == b"00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55:56] != b"-":  # a later version may add fields, after a dash
        return None
    trace, parent, flags = value[3:35], value[36:52], value[53:55]
    if not (_HEX.issuperset(trace) and _HEX.issuperset(parent) and _HEX.issuperset(flags)):
        return None
    trace_id, parent_id = int(trace, 16), int(parent, 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, int(flags, 16)


def trace_ids(ex: Traced) -> TraceIds:
    """The exchange's trace ids, made on first use: the client's trace continued, or a new one."""
    ids = ex.trace
    if ids is None:
        parsed = parse_traceparent(ex.traceparent) if ex.traceparent else None
        span_id = random.getrandbits(64) or 1
        if parsed is None:
            ids = (random.getrandbits(128) or 1, span_id, 0, SAMPLED)
        else:
            ids = (parsed[0], span_id, parsed[1], parsed[2])
        ex.trace = ids
    return ids


def trace_id_hex(ex: Traced) -> str:
    """The trace id as the 32 hex digits trace back-ends search by (the access log's `trace_id`)."""
    return f"{trace_ids(ex)[0]:032x}"


def attempt_span_id(span_id: int, attempt: int) -> int:
    """The client span id of attempt number `attempt` (1, 2, ...) under server span `span_id`."""
    return xxhash.xxh3_64_intdigest(span_id.to_bytes(8, "big") + attempt.to_bytes(4, "big")) or 1


def sampled(ids: TraceIds, ratio: float) -> bool:
    """Whether this trace is recorded: the client's flag if it sent one, else by trace id and ratio."""
    if ids[2]:
        return bool(ids[3] & SAMPLED)
    return (ids[0] & _MASK64) < round(ratio * _MASK64)  # TraceIdRatioBased's rule


def upstream_traceparent(ex: Traced, attempt: int, ratio: float = 1.0) -> bytes:
    """The `traceparent` header line for attempt number `attempt` of the exchange's upstream request."""
    ids = trace_ids(ex)
    flags = SAMPLED if sampled(ids, ratio) else 0
    return b"traceparent: 00-%032x-%016x-%02x\r\n" % (ids[0], attempt_span_id(ids[1], attempt), flags)


class RouteLike(Protocol):
    """What `attempt_of` reads of a `config.Route`."""

    upstream_model: str | None
    provider: Any


def attempt_of(route: RouteLike, model: str, t_start: float, t_end: float, t_first_byte: float, status: int,
               error_type: str, hedge: bool = False) -> Attempt:  # fmt: skip
    """An `Attempt` from a route (`model`: the client's, for a direct route's upstream name). Cold: only
    while tracing is on, once per attempt as it ends."""
    p = route.provider
    upstream = route.upstream_model or model.partition("/")[2]
    return Attempt(f"{p.name}/{route.upstream_model or '*'}", p.name, p.kind, upstream, p.host, p.port, t_start,
                   t_end, t_first_byte, status, error_type, hedge)  # fmt: skip
