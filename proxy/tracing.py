"""OpenTelemetry traces (and the access log as OTLP logs), built once per finished request.

Imported only when `[tracing] otlp_endpoint` is set: `pip install 'llm-edge[otel]'`. With tracing
off, nothing here is loaded and the request path pays one attribute check.

`Tracer.record(ex, attempts)` runs once, when an exchange has finished. It builds, from the
timestamps the exchange already holds and with explicit start and end times:
- one SERVER span for the request (the client's `traceparent` continued, see
  `proxy.tracecontext`), named `POST /v1/chat/completions`;
- one CLIENT span per upstream attempt under it, named `chat <upstream model>`, with the span
  id the attempt's upstream `traceparent` carried.
Attributes follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`, `server.*`,
`http.*`, `error.type`); the gateway's own facts are `llm_edge.*`. Prompts and completions are
recorded only with `capture_content = true`; provider keys never (nothing here sees one).

Export runs in the SDK's `BatchSpanProcessor` thread (OTLP/HTTP protobuf): a full queue drops
spans rather than blocking the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from proxy import __version__
from proxy.tracecontext import Attempt, TracingSettings, attempt_span_id, sampled, trace_ids

# The client API's endpoint -> gen_ai.operation.name
OPERATIONS = {"/chat/completions": "chat", "/messages": "chat", "/embeddings": "embeddings"}
PATHS = {"/chat/completions": "/v1/chat/completions", "/messages": "/v1/messages", "/embeddings": "/v1/embeddings"}
# gen_ai.provider.name's well-known values, by provider kind; a local server is named as configured
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic"}
# request parameters recorded as gen_ai.request.<name> (names as both APIs spell them)
_PARAMS = (("temperature", "temperature"), ("max_tokens", "max_tokens"), ("max_completion_tokens", "max_tokens"),
           ("top_p", "top_p"), ("top_k", "top_k"), ("frequency_penalty", "frequency_penalty"),
           ("presence_penalty", "presence_penalty"), ("seed", "seed"))  # fmt: skip


class Finished(Protocol):
    """What `record` reads of a finished exchange (`proxy.exchange.Exchange`)."""

    traceparent: bytes
    trace: Any
    endpoint: str
    model: str
    stream: bool
    payload: dict[str, Any] | None
    route: Any
    status: int
    tokens_in: int
    tokens_out: int
    cost_nusd: int
    cache_outcome: Any
    attempts: int
    t_start: float
    t_relayed: float
    t_end: float

    def overhead(self) -> float: ...


class _PresetIds(IdGenerator):
    """Hands the SDK the ids the request path already chose (a traceparent went upstream with them)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        span_id, self.span_id = self.span_id, 0
        return span_id or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        trace_id, self.trace_id = self.trace_id, 0
        return trace_id or self._random.generate_trace_id()


class Tracer:
    """The SDK's tracer and logger providers, and the one call the request path makes."""

    def __init__(
        self,
        settings: TracingSettings,
        span_exporter: SpanExporter | None = None,
        log_exporter: LogRecordExporter | None = None,
    ) -> None:
        self.settings = settings
        self.ratio = settings.sample_ratio
        self.capture = settings.capture_content
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        self._ids = _PresetIds()
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)), resource=resource, id_generator=self._ids,
            shutdown_on_exit=False,
        )  # fmt: skip
        timeout = settings.export_timeout_s
        span_exporter = span_exporter or OTLPSpanExporter(endpoint=settings.url("traces"), timeout=timeout)
        self.provider.add_span_processor(
            BatchSpanProcessor(span_exporter, max_queue_size=settings.max_queue, schedule_delay_millis=500)
        )
        self.tracer = self.provider.get_tracer("llm_edge", __version__)
        self.logs: LoggerProvider | None = None
        self.logger: Any = None
        if settings.export_logs:
            self.logs = LoggerProvider(resource=resource, shutdown_on_exit=False)
            log_exporter = log_exporter or OTLPLogExporter(endpoint=settings.url("logs"), timeout=timeout)
            self.logs.add_log_record_processor(
                BatchLogRecordProcessor(log_exporter, max_queue_size=settings.max_queue, schedule_delay_millis=500)
            )
            self.logger = self.logs.get_logger("llm_edge.access", __version__)

    def __repr__(self) -> str:
        return f"<Tracer {self.settings.otlp_endpoint} ratio={self.ratio} capture={self.capture}>"

    # -- traces -----------------------------------------------------------------------------

    def record(self, ex: Finished, attempts: Sequence[Attempt] = (), completion: bytes = b"") -> None:
        """Build and queue the request's spans (once, after it finished). `completion`: the answer's
        body, recorded only with `capture_content` (pass it only then)."""
        ids = trace_ids(ex)
        if not sampled(ids, self.ratio):
            return  # not recorded: nothing built
        trace_id, span_id, parent_id, flags = ids
        to_ns = _clock()
        parent = None
        if parent_id:
            remote = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=TraceFlags(flags))
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        self._ids.trace_id, self._ids.span_id = trace_id, span_id
        endpoint = ex.endpoint or ""
        operation = OPERATIONS.get(endpoint, "chat")
        server = self.tracer.start_span(
            f"POST {PATHS.get(endpoint, endpoint)}", context=parent, kind=SpanKind.SERVER,
            attributes=self._server_attributes(ex, operation, endpoint, attempts, completion),
            start_time=to_ns(ex.t_start),
        )  # fmt: skip
        if ex.status >= 500 or ex.status == 0:
            server.set_status(Status(StatusCode.ERROR))
        under = trace.set_span_in_context(server)
        for number, attempt in enumerate(attempts, 1):
            self._ids.span_id = attempt_span_id(span_id, number)
            span = self.tracer.start_span(
                f"{operation} {attempt.upstream_model}", context=under, kind=SpanKind.CLIENT,
                attributes=_client_attributes(attempt, operation, ex.stream), start_time=to_ns(attempt.t_start),
            )  # fmt: skip
            if attempt.error_type:
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=to_ns(attempt.t_end))
        server.end(end_time=to_ns(ex.t_end))

    def _server_attributes(
        self, ex: Finished, operation: str, endpoint: str, attempts: Sequence[Attempt], completion: bytes
    ) -> dict[str, Any]:
        route = ex.route
        attrs: dict[str, Any] = {
            "http.request.method": "POST",
            "url.path": PATHS.get(endpoint, endpoint),
            "http.response.status_code": ex.status,
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": ex.model,
            "gen_ai.usage.input_tokens": ex.tokens_in,
            "gen_ai.usage.output_tokens": ex.tokens_out,
            "llm_edge.attempts": ex.attempts,
            "llm_edge.hedged": any(a.hedge for a in attempts),
            "llm_edge.cost_usd": ex.cost_nusd / 1e9,
            "llm_edge.overhead_us": int(ex.overhead() * 1e6),
            "llm_edge.stream": ex.stream,
        }
        outcome = _outcome(ex.cache_outcome)
        if outcome:
            attrs["llm_edge.cache"] = outcome
        if route is not None:
            upstream = route.upstream_model or ex.model.partition("/")[2]
            attrs["gen_ai.provider.name"] = PROVIDER_NAMES.get(route.provider.kind, route.provider.name)
            attrs["gen_ai.response.model"] = upstream
            attrs["llm_edge.route"] = f"{route.provider.name}/{route.upstream_model or '*'}"
        if ex.stream and ex.t_relayed:
            attrs["gen_ai.response.time_to_first_chunk"] = ex.t_relayed - ex.t_start
        if ex.status >= 400 or ex.status == 0:
            attrs["error.type"] = str(ex.status) if ex.status else "client_closed"
        payload = ex.payload
        if payload:
            for key, name in _PARAMS:
                value = payload.get(key)
                if type(value) in (int, float):
                    attrs[f"gen_ai.request.{name}"] = value
            if self.capture:
                attrs["gen_ai.input.messages"] = orjson.dumps(
                    {k: payload[k] for k in ("system", "messages", "input") if k in payload}
                ).decode()
        if self.capture and completion:
            attrs["gen_ai.output.messages"] = completion.decode("utf-8", "replace")
        return attrs

    # -- logs -------------------------------------------------------------------------------

    def emit_logs(self, lines: Sequence[dict[str, Any]], wall_offset: float) -> None:
        """The access log's lines (as `accesslog.AccessLog` formats them) as OTLP log records,
        each under its request's trace (called from the log's flush: off the request path)."""
        logger = self.logger
        if logger is None:
            return
        for line in lines:
            trace_hex = line.get("trace_id")
            ctx = None
            if trace_hex:
                trace_id = int(trace_hex, 16)
                span_hex = line.get("span_id")
                span_id = int(span_hex, 16) if span_hex else 1
                ctx = trace.set_span_in_context(
                    NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))),
                    otel_context.Context(),
                )  # fmt: skip
            status = line.get("status") or 0
            logger.emit(
                timestamp=int((line["t_end"] + wall_offset) * 1e9) if "t_end" in line else time.time_ns(),
                context=ctx, severity_number=SeverityNumber.ERROR if status >= 500 else SeverityNumber.INFO,
                severity_text="ERROR" if status >= 500 else "INFO", body="access",
                attributes={f"llm_edge.{k}": v for k, v in line.items() if v is not None and k != "t_end"},
                event_name="llm_edge.access",
            )  # fmt: skip

    def shutdown(self) -> None:
        """Flush what is queued and stop the export threads (at exit)."""
        self.provider.shutdown()
        if self.logs is not None:
            self.logs.shutdown()


def _client_attributes(attempt: Attempt, operation: str, stream: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER_NAMES.get(attempt.kind, attempt.provider),
        "gen_ai.request.model": attempt.upstream_model,
        "server.address": attempt.server_address,
        "server.port": attempt.server_port,
        "llm_edge.route": attempt.route,
        "llm_edge.hedge": attempt.hedge,
    }
    if attempt.status:
        attrs["http.response.status_code"] = attempt.status
    if attempt.error_type:
        attrs["error.type"] = attempt.error_type
    if stream and attempt.t_first_byte:
        attrs["gen_ai.response.time_to_first_chunk"] = attempt.t_first_byte - attempt.t_start
    return attrs


def _clock() -> Any:
    # perf_counter seconds -> Unix ns; the offset is read once per record (two clock reads)
    offset = time.time() - time.perf_counter()

    def to_ns(t: float) -> int:
        return int((t + offset) * 1e9)

    return to_ns


def _outcome(value: Any) -> str:
    if not value:
        return ""
    value = getattr(value, "value", value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).lower()
