"""CPU per request of tracing: `python -m bench.tracing [--requests N]`.

Measures, in this process's CPU time (every thread, so the SDK's batch export thread counts too):
- off: what the request path pays with tracing off (one attribute check);
- on at `sample_ratio` 1.0 and 0.01: `tracecontext.upstream_traceparent` for the attempt, then
  `tracing.Tracer.record` building a server span and one client span, queued, serialised and
  sent by the real OTLP/HTTP exporter to a sink in another process (its CPU is not counted).
Needs the `otel` extra (`pip install 'llm-edge[otel]'`).
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing
import time
from time import perf_counter
from typing import Any

from proxy import config
from proxy.tracecontext import Attempt, TracingSettings, upstream_traceparent

_SETTINGS = config.from_table({
    "providers": [{"name": "oa", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-bench"}],
    "models": [{"name": "fast", "routes": [{"provider": "oa", "model": "gpt-4o-mini"}]}],
}, {})  # fmt: skip
ROUTE = _SETTINGS.routes[0]


class Done:
    """A finished exchange, with what `Tracer.record` reads."""

    __slots__ = ("traceparent", "trace", "endpoint", "model", "stream", "payload", "route", "status", "tokens_in",
                 "tokens_out", "cost_nusd", "cache_outcome", "attempts", "t_start", "t_relayed", "t_end")  # fmt: skip

    def __init__(self) -> None:
        now = perf_counter()
        self.traceparent = b""  # a trace the gateway starts: sample_ratio decides
        self.trace = None
        self.endpoint, self.model, self.stream, self.route, self.status = "/chat/completions", "fast", True, ROUTE, 200
        self.payload = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
        self.tokens_in, self.tokens_out, self.cost_nusd, self.cache_outcome, self.attempts = 12, 40, 4200, "miss", 1
        self.t_start, self.t_relayed, self.t_end = now, now + 0.01, now + 0.05

    def overhead(self) -> float:
        return 0.00004


def _sink(port_out: Any) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


def measure(tracer: Any, n: int) -> tuple[float, float]:
    """CPU µs per request for `n` requests: on the event loop's thread (building the spans), and in
    all (with the export of what they queued)."""
    exchanges = [Done() for _ in range(n)]
    attempts = [Attempt("oa/gpt-4o-mini", "oa", "openai", "gpt-4o-mini", "127.0.0.1", 9, ex.t_start, ex.t_end,
                        ex.t_relayed, 200, "") for ex in exchanges]  # fmt: skip
    start = time.process_time()
    thread_start = time.thread_time()
    if tracer is None:
        for ex in exchanges:
            if tracer is not None:  # what the request path pays with tracing off
                tracer.record(ex, ())
    else:
        ratio = tracer.ratio
        for ex, attempt in zip(exchanges, attempts):
            upstream_traceparent(ex, 1, ratio)
            tracer.record(ex, (attempt,))
    on_loop = (time.thread_time() - thread_start) / n * 1e6
    if tracer is not None:
        tracer.provider.force_flush()
    return on_loop, (time.process_time() - start) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    from proxy.tracing import Tracer  # the otel extra

    ports: Any = multiprocessing.Queue()
    sink = multiprocessing.Process(target=_sink, args=(ports,), daemon=True)
    sink.start()
    try:
        endpoint = f"http://127.0.0.1:{ports.get(timeout=10)}"
        rows = [("off", measure(None, args.requests))]
        for ratio in (1.0, 0.01):
            # max_queue large enough that nothing is dropped: every span is really exported
            tracer = Tracer(TracingSettings(endpoint, ratio, export_logs=False, max_queue=args.requests * 2))
            measure(tracer, min(2000, args.requests))  # warm up: imports, connection, first batches
            rows.append((f"on, sample_ratio {ratio}", measure(tracer, args.requests)))
            tracer.shutdown()
    finally:
        sink.terminate()
        sink.join(5)
    print(f"tracing CPU per request ({args.requests} requests, one attempt each)")
    print(f"  {'':<24} {'loop thread':>12} {'all threads':>12}")
    for name, (on_loop, total) in rows:
        print(f"  {name:<24} {on_loop:9.2f} µs {total:9.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
