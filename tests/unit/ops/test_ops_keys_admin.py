"""The /admin/ keys API as request -> response functions, admin_allowed, and `llm-edge keys` over a real socket."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import config
from proxy.auth import Keys
from proxy.keys_admin import KeysAdmin, admin_allowed
from proxy.limits import DISABLED, NANO

ADMIN = "adm-0123456789abcdef"
ENV = {"LLM_EDGE_ADMIN_KEY": ADMIN}
T0 = 1_741_953_600.0


def settings(admin: bool = True) -> config.Settings:
    table: dict[str, Any] = {"auth": {"keys": [{"name": "from-file", "key": "sk-file-0123456789", "rpm": 5}]}}
    if admin:
        table["admin"] = {"key_env": "LLM_EDGE_ADMIN_KEY"}
    return config.from_table(table, ENV)


@pytest.fixture
def api() -> tuple[config.Settings, KeysAdmin, Keys]:
    s = settings()
    keys = Keys(s.auth)
    return s, KeysAdmin(keys.accounts, lambda name: [{"period_start": 0, "spent_nusd": 1}]), keys


def call(api: tuple[config.Settings, KeysAdmin, Keys], method: str, path: str, body: Any = None,
         key: str = ADMIN) -> tuple[int, Any]:  # fmt: skip
    s, admin, _ = api
    raw = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else b"")
    status, answer = admin.handle(s, method.encode(), path.encode(), raw, key.encode(), T0)
    return status, orjson.loads(answer)


def test_create_returns_the_secret_once_and_keeps_only_its_digest(api: Any) -> None:
    status, made = call(api, "POST", "/admin/keys", {"name": "ci", "rpm": 10, "budget_usd": 2.5,
                                                      "budget_period": "monthly"})  # fmt: skip
    assert status == 201
    secret = made["key"]
    assert secret.startswith("sk-edge-") and len(secret) > 40
    assert made["rpm"] == 10 and made["budget_usd"] == "2.500000000" and made["budget_period"] == "monthly"
    _, admin, keys = api
    state = admin.accounts.by_name["ci"]
    assert state.digest == hashlib.sha256(secret.encode()).digest() and state.budget == 2_500_000_000
    k = keys.authenticate(secret.encode())  # usable at once, by the generation already serving
    assert keys.names[k] == "ci" and keys.admit(k, 0.0, 0)[0]
    for status, shown in (call(api, "GET", "/admin/keys"), call(api, "GET", "/admin/keys/ci")):
        assert status == 200
        text = orjson.dumps(shown)
        assert secret.encode() not in text and state.digest.hex().encode() not in text
    _, listing = call(api, "GET", "/admin/keys")
    assert [(r["name"], r["origin"]) for r in listing["data"]] == [("from-file", "config"), ("ci", "admin")]
    assert call(api, "POST", "/admin/keys", {"name": "ci"})[0] == 409
    assert call(api, "POST", "/admin/keys", {"name": "from-file"})[0] == 409


def test_update_disable_enable_delete_and_spend(api: Any) -> None:
    _, made = call(api, "POST", "/admin/keys", {"name": "team", "budget_usd": 1})
    _, _, keys = api
    k = keys.authenticate(made["key"].encode())
    status, changed = call(api, "PATCH", "/admin/keys/team", {"rpm": 2, "budget_period": "1d"})
    assert status == 200 and changed["rpm"] == 2 and changed["budget_usd"] == "1.000000000"
    assert keys.states[k].budget == NANO and keys.states[k].period == "1d"
    assert call(api, "PATCH", "/admin/keys/team", {"rpm": None})[1]["rpm"] is None
    assert call(api, "POST", "/admin/keys/team/disable")[1]["disabled"] is True
    assert keys.admit(k, 0.0, 0) == (False, 0.0, DISABLED)
    assert keys.refusal(k, DISABLED, 0.0).status == 403
    assert call(api, "POST", "/admin/keys/team/enable")[1]["disabled"] is False
    assert keys.admit(k, 0.0, 0)[0]
    keys.charge(k, 0.0, (1, 0, 0, 1, 0), 1234, 0, False)
    status, spend = call(api, "GET", "/admin/keys/team/spend")
    assert status == 200 and spend["spent_nusd"] == 1234 and spend["remaining_usd"] == "0.999998766"
    assert spend["history"] == [{"period_start": 0, "spent_nusd": 1}]
    assert call(api, "DELETE", "/admin/keys/team") == (200, {"name": "team", "deleted": True})
    assert keys.authenticate(made["key"].encode()) == -1
    assert call(api, "GET", "/admin/keys/team")[0] == 404
    assert [r["name"] for r in call(api, "GET", "/admin/keys")[1]["data"]] == ["from-file"]


def test_configured_keys_are_read_only(api: Any) -> None:
    for method, path, body in (("PATCH", "/admin/keys/from-file", {"rpm": 1}),
                               ("DELETE", "/admin/keys/from-file", None),
                               ("POST", "/admin/keys/from-file/disable", None)):  # fmt: skip
        status, answer = call(api, method, path, body)
        assert status == 409 and answer["error"]["code"] == "configured_key"
    assert call(api, "GET", "/admin/keys/from-file/spend")[0] == 200


def test_the_admin_key_guards_everything(api: Any) -> None:
    for key in ("", "wrong-key-0123456789", ADMIN[:-1]):
        status, answer = call(api, "GET", "/admin/keys", key=key)
        assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    off = settings(admin=False)
    status, answer = KeysAdmin(Keys(off.auth).accounts).handle(off, b"GET", b"/admin/keys", b"", ADMIN.encode(), T0)
    assert status == 404 and b"admin_disabled" in answer
    assert admin_allowed(settings(), ADMIN.encode())
    assert not admin_allowed(settings(), b"") and not admin_allowed(settings(), b"sk-file-0123456789")
    assert admin_allowed(off, b"")  # no admin key: the info pages stay open


def test_bad_requests_are_refused_with_reasons(api: Any) -> None:
    cases = [
        ("POST", "/admin/keys", b"{not json", 400, "invalid_json"),
        ("POST", "/admin/keys", b"[1]", 400, "invalid_json"),
        ("POST", "/admin/keys", {"name": "x y"}, 400, "invalid_value"),
        ("POST", "/admin/keys", {"name": "ok", "rpm": 0}, 400, "invalid_value"),
        ("POST", "/admin/keys", {"name": "ok", "rpm": True}, 400, "invalid_value"),
        ("POST", "/admin/keys", {"name": "ok", "budget_usd": "lots"}, 400, "invalid_value"),
        ("POST", "/admin/keys", {"name": "ok", "budget_period": "1d"}, 400, "invalid_value"),
        ("POST", "/admin/keys", {"name": "ok", "colour": "red"}, 400, "unknown_parameter"),
        ("POST", "/admin/keys", b"{" + b" " * 70_000 + b"}", 413, "request_too_large"),
        ("PUT", "/admin/keys", None, 405, "method_not_allowed"),
        ("GET", "/admin/nothing", None, 404, "not_found"),
        ("GET", "/admin/keys/a/b/c", None, 404, "not_found"),
        ("GET", "/admin/keys/nobody", None, 404, "key_not_found"),
        ("POST", "/admin/keys/from-file/spend", None, 405, "method_not_allowed"),
    ]
    for method, path, body, status, code in cases:
        got, answer = call(api, method, path, body)
        assert (got, answer["error"]["code"]) == (status, code), (method, path, body)
    assert call(api, "GET", "/admin/")[0] == 200


@given(st.binary(max_size=300), st.sampled_from(["POST", "PATCH", "GET", "DELETE", "X"]),
       st.sampled_from(["/admin/keys", "/admin/keys/from-file", "/admin/keys/%ff%00", "/admin/keys/ci/spend"]))
def test_any_body_gets_a_json_answer(body: bytes, method: str, path: str) -> None:
    s = settings()
    admin = KeysAdmin(Keys(s.auth).accounts)
    status, answer = admin.handle(s, method.encode(), path.encode(), body, ADMIN.encode(), T0)
    assert 200 <= status < 500 and isinstance(orjson.loads(answer), dict)


# -- `llm-edge keys` against a real HTTP server serving handle() -------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[str, KeysAdmin]]:
    s = settings()
    admin = KeysAdmin(Keys(s.auth).accounts)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            presented = (self.headers.get("authorization") or "").removeprefix("Bearer ").encode()
            status, answer = admin.handle(s, self.command.encode(), self.path.encode(), body, presented, T0)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", admin
    finally:
        server.shutdown()
        server.server_close()


def cli(url: str, *args: str, key: str = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MY_ADMIN": key}
    return subprocess.run([sys.executable, "-m", "proxy", "keys", "--url", url, "--admin-key-env", "MY_ADMIN", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def test_the_cli_manages_keys(served: tuple[str, KeysAdmin]) -> None:
    url, admin = served
    made = cli(url, "create", "cli-key", "--rpm", "7", "--budget-usd", "3", "--budget-period", "7d")
    assert made.returncode == 0, made.stderr
    secret = orjson.loads(made.stdout)["key"]
    assert admin.accounts.by_name["cli-key"].digest == hashlib.sha256(secret.encode()).digest()
    listed = cli(url, "list")
    assert listed.returncode == 0 and "cli-key" in listed.stdout and secret not in listed.stdout
    assert orjson.loads(cli(url, "update", "cli-key", "--rpm", "none", "--tpm", "100").stdout)["tpm"] == 100
    assert orjson.loads(cli(url, "disable", "cli-key").stdout)["disabled"] is True
    assert orjson.loads(cli(url, "enable", "cli-key").stdout)["disabled"] is False
    assert orjson.loads(cli(url, "spend", "cli-key").stdout)["spent_nusd"] == 0
    assert orjson.loads(cli(url, "get", "cli-key").stdout)["name"] == "cli-key"
    assert cli(url, "delete", "cli-key").returncode == 0
    gone = cli(url, "get", "cli-key")
    assert gone.returncode == 1 and "404" in gone.stderr
    refused = cli(url, "list", key="not-the-admin-key")
    assert refused.returncode == 1 and "401" in refused.stderr
    bad = cli(url, "create", "x", "--rpm", "many")
    assert bad.returncode == 2 and "--rpm" in bad.stderr


def test_the_cli_without_a_key_or_a_gateway() -> None:
    no_key = subprocess.run([sys.executable, "-m", "proxy", "keys", "--admin-key-env", "UNSET_VAR_X", "list"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "UNSET_VAR_X": ""})
    assert no_key.returncode == 2 and "UNSET_VAR_X" in no_key.stderr
    down = cli("http://127.0.0.1:9", "list")
    assert down.returncode == 1 and "cannot reach" in down.stderr
