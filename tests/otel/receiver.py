"""A real OTLP/HTTP receiver on a loopback port: accepts POST /v1/traces and /v1/logs (protobuf),
decodes them with the official definitions (opentelemetry-proto), and keeps what it got."""

from __future__ import annotations

import gzip
import http.server
import threading
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.harness import wait_for


def attributes(items: Any) -> dict[str, Any]:
    """An OTLP KeyValue list as a dict of plain values."""
    out = {}
    for kv in items:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


class Receiver:
    """Threaded HTTP server on 127.0.0.1:0. `spans` and `logs` are decoded protobuf messages."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.logs: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.raw = b""  # every body received, to search for what must never be sent
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    reply = ExportTraceServiceResponse().SerializeToString()
                    with receiver.lock:
                        receiver.raw += body
                        for rs in request.resource_spans:
                            receiver.resources.append(attributes(rs.resource.attributes))
                            for ss in rs.scope_spans:
                                receiver.spans.extend(ss.spans)
                elif self.path == "/v1/logs":
                    request = ExportLogsServiceRequest.FromString(body)
                    reply = ExportLogsServiceResponse().SerializeToString()
                    with receiver.lock:
                        receiver.raw += body
                        for rl in request.resource_logs:
                            for sl in rl.scope_logs:
                                receiver.logs.extend(sl.log_records)
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_spans(self, n: int, timeout: float = 10.0) -> list[Any]:
        assert wait_for(lambda: len(self.spans) >= n, timeout), f"got {len(self.spans)} spans, wanted {n}"
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
