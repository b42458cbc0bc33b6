"""--check-config --probe: one GET /models per provider against real HTTP servers on port 0, classified;
the table never shows a key."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from proxy import config, probe

SECRET = "sk-probe-SECRET-99"


class Answering(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        Answering.seen.append((self.path, self.headers.get("authorization", "")))
        body = b'{"data":[]}'
        self.send_response(type(self).status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def provider_port() -> Iterator[tuple[int, type[Answering]]]:
    class Handler(Answering):
        pass

    Answering.seen = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def provider(port: int, **extra: Any) -> config.Settings:
    entry = {"name": "p", "kind": "local", "base_url": f"http://127.0.0.1:{port}/v1", **extra}
    return config.from_table({"server": {"listen": "127.0.0.1:0"}, "providers": [entry]}, env={})


@pytest.mark.parametrize(
    "status,key,auth,ok",
    [(200, SECRET, "ok", True), (200, None, "not needed", True), (401, SECRET, "rejected", False),
     (401, None, "no key", False), (404, SECRET, "unknown", False), (500, SECRET, "unknown", False)],
)  # fmt: skip
def test_answers_are_classified(provider_port: tuple[int, type[Answering]], status: int, key: str | None,
                                auth: str, ok: bool) -> None:  # fmt: skip
    port, handler = provider_port
    handler.status = status
    settings = provider(port, **({"api_key": key} if key else {}))
    (result,) = probe.probe_all(settings, timeout_s=5)
    assert (result.reachable, result.auth, result.status, result.ok) == (True, auth, status, ok)
    assert Answering.seen[0][0] == "/v1/models"
    assert Answering.seen[0][1] == (f"Bearer {SECRET}" if key else "")
    assert SECRET not in probe.table([result])


def test_an_unreachable_provider() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (result,) = probe.probe_all(provider(port, api_key=SECRET), timeout_s=5)
    assert not result.reachable and result.auth == "-" and result.status == 0 and not result.ok
    assert result.detail.startswith("not reached: ")


def test_no_providers_no_probes() -> None:
    settings = config.from_table({"server": {"listen": "127.0.0.1:0"}, "providers": []}, env={})
    assert probe.probe_all(settings) == []


def test_the_table_is_aligned() -> None:
    rows = [probe.ProbeResult("a", "local", "http://x/v1", True, "ok", 200, "models listed", 1.5),
            probe.ProbeResult("longer-name", "openai", "https://api/v1", False, "-", 0, "not reached: refused", 10.0)]
    lines = probe.table(rows).splitlines()
    assert len(lines) == 3 and lines[0].startswith("provider ")
    assert lines[0].index("kind") == lines[1].index("local") == lines[2].index("openai")
