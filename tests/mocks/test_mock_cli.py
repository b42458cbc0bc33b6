"""`python -m mocks` as a subprocess: address on the first stdout line, HTTP control, exit 0 on signals."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def mock_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mocks", "--listen", "127.0.0.1:0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        host, _, port = line.rstrip("\n").rpartition(":")
        assert host == "127.0.0.1" and port.isdigit(), (line, proc.stderr.read() if proc.poll() is not None else "")
        yield proc, host, int(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


@pytest.mark.parametrize(("sig", "loop"), [(signal.SIGTERM, "uvloop"), (signal.SIGINT, "asyncio")])
def test_prints_address_serves_and_exits_0(sig: signal.Signals, loop: str) -> None:
    with mock_process("--tokens", "3", "--seed", "1", "--loop", loop) as (proc, host, port):
        conn = http.client.HTTPConnection(host, port, timeout=5)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        conn.request("POST", "/v1/chat/completions", json.dumps(body))
        r = json.loads(conn.getresponse().read())
        assert r["usage"]["completion_tokens"] == 3
        conn.request("POST", "/_mock/config", json.dumps({"error_rate": 1.0, "error_status": 429}))
        assert conn.getresponse().read()
        conn.request("POST", "/v1/chat/completions", json.dumps(body))
        resp = conn.getresponse()
        assert resp.status == 429 and resp.getheader("retry-after") == "1"
        resp.read()
        conn.request("GET", "/_mock/stats")
        stats = json.loads(conn.getresponse().read())
        assert stats["requests"] == 2 and stats["errors_injected"] == 1
        conn.close()
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout is not None and proc.stdout.read() == ""  # only the address line


def test_anthropic_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with mock_process(
        "--kind", "anthropic", "--tls-cert", str(cert_file), "--tls-key", str(key_file), "--require-key", "k"
    ) as (proc, host, port):
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        conn = http.client.HTTPSConnection(host, port, timeout=5, context=ctx)
        body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        conn.request("POST", "/v1/messages", json.dumps(body), {"x-api-key": "k", "anthropic-version": "2023-06-01"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("request-id", "").startswith("req_")
        assert json.loads(resp.read())["usage"]["output_tokens"] == 4
        conn.close()
        proc.terminate()
        assert proc.wait(timeout=5) == 0


def test_bad_arguments_exit_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mocks", "--error-rate", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert r.returncode == 2 and "error_rate" in r.stderr
