"""The command line: --check-config's verdicts and exit codes, and `llm-edge keys` against a real
HTTP server on port 0 that records what it was asked."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy import cli

GOOD = """
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "local"
kind = "local"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "fast"
routes = [{ provider = "local", model = "m" }]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "llm-edge.toml"
    path.write_text(text)
    return str(path)


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check-config", "--config", write(tmp_path, GOOD)]) == 0
    out = capsys.readouterr().out
    assert "ok (1 models, 1 providers)" in out


def test_check_config_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace('kind = "local"', 'kind = "azure"'))
    assert cli.main(["--check-config", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err and "providers[0].kind" in err and "'azure'" in err


def test_check_config_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check-config", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_check_config_bad_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check-config", "--config", write(tmp_path, "[server\n")]) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_listen_overrides_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check-config", "--config", write(tmp_path, GOOD), "--listen", "nonsense"]) == 2
    assert "--listen" in capsys.readouterr().err


def test_probe_needs_check_config(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--probe", "--config", write(tmp_path, GOOD)])
    assert caught.value.code == 2


# llm-edge keys


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str, bytes]] = []
    answer: tuple[int, bytes] = (200, b'{"ok":true}')

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        Recorder.seen.append((self.command, self.path, self.headers.get("authorization", ""), body))
        status, payload = Recorder.answer
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def admin_server() -> Iterator[str]:
    Recorder.seen = []
    Recorder.answer = (200, b'{"ok":true}')
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


ADMIN = "admin-key-0123456789"


@pytest.mark.parametrize(
    "args,method,path,body",
    [
        (["create", "team-a", "--rpm", "60", "--budget-usd", "2.5"], "POST", "/admin/keys",
         {"rpm": 60, "budget_usd": 2.5, "name": "team-a"}),
        (["list"], "GET", "/admin/keys", None),
        (["get", "a/b"], "GET", "/admin/keys/a%2Fb", None),
        (["update", "team-a", "--tpm", "none"], "PATCH", "/admin/keys/team-a", {"tpm": None}),
        (["disable", "team-a"], "POST", "/admin/keys/team-a/disable", None),
        (["enable", "team-a"], "POST", "/admin/keys/team-a/enable", None),
        (["delete", "team-a"], "DELETE", "/admin/keys/team-a", None),
        (["spend", "team-a"], "GET", "/admin/keys/team-a/spend", None),
    ],
)  # fmt: skip
def test_keys_commands_call_the_admin_api(
    admin_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], method: str, path: str, body: dict[str, Any] | None,
) -> None:  # fmt: skip
    monkeypatch.setenv("LLM_EDGE_ADMIN_KEY", ADMIN)
    assert cli.main(["keys", "--url", admin_server, *args]) == 0
    ((got_method, got_path, auth, got_body),) = Recorder.seen
    assert (got_method, got_path, auth) == (method, path, f"Bearer {ADMIN}")
    assert (orjson.loads(got_body) if got_body else None) == body
    assert orjson.loads(capsys.readouterr().out) == {"ok": True}


def test_keys_reports_an_error_answer(admin_server: str, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("LLM_EDGE_ADMIN_KEY", ADMIN)
    Recorder.answer = (404, b'{"error":"no such key"}')
    assert cli.main(["keys", "--url", admin_server, "get", "nobody"]) == 1
    assert "404" in capsys.readouterr().err


def test_keys_without_the_admin_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LLM_EDGE_ADMIN_KEY", raising=False)
    assert cli.main(["keys", "list"]) == 2
    assert "LLM_EDGE_ADMIN_KEY" in capsys.readouterr().err


def test_keys_with_a_bad_number(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLM_EDGE_ADMIN_KEY", ADMIN)
    assert cli.main(["keys", "create", "x", "--rpm", "lots"]) == 2
    assert "--rpm: expected an integer" in capsys.readouterr().err


def test_keys_when_the_gateway_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLM_EDGE_ADMIN_KEY", ADMIN)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli.main(["keys", "--url", f"http://127.0.0.1:{port}", "list"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err and ADMIN not in err
