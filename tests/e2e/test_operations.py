"""Operating the gateway: metrics, keys and limits, spend, the access log, signals, reload and workers."""

from __future__ import annotations

import http.client
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import GatewayFactory, MockFactory, provider
from tests.e2e.test_gateway import Responses, post_bytes
from tests.harness import wait_for

TEAM_KEY = "sk-team-a-VERY-SECRET-1234"
PROVIDER_KEY = "sk-provider-FAKE-SECRET-XYZZY"


def one_route(server: Any, **model: Any) -> dict[str, Any]:
    return {
        "providers": [provider("up", server, kind="openai", api_key=PROVIDER_KEY)],
        "models": [{"name": "m", "routes": [{"provider": "up", "model": "gpt-x", "input_per_mtok": 2.0,
                                              "output_per_mtok": 8.0}], **model}],
    }  # fmt: skip


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# Observability


def test_metrics_parse_and_cover_the_gateway(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    gw = gateway_uv(one_route(mock_uv()))
    sdk = openai.OpenAI(base_url=gw.openai_base, api_key="x", max_retries=0)
    for i in range(3):
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}], temperature=0)
    sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "q0"}], temperature=0)  # a hit
    status, headers, body = get(gw.port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in ("llm_edge_requests", "llm_edge_overhead_seconds", "llm_edge_request_duration_seconds",
                 "llm_edge_cache_hits", "llm_edge_route_breaker_state", "llm_edge_route_in_flight",
                 "llm_edge_upstream_connections_open", "llm_edge_route_tokens", "llm_edge_route_spend_usd"):  # fmt: skip
        assert any(n.startswith(name) for n in families), f"{name} missing from /metrics"
    samples = [s for f in families.values() for s in f.samples]
    hits = [s.value for s in samples if s.name == "llm_edge_cache_hits_total"]
    assert hits == [1.0]
    assert PROVIDER_KEY.encode() not in body and PROVIDER_KEY.encode() not in get(gw.port, "/stats")[2]


def test_cost_header_and_spend(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    gw = gateway_uv(one_route(mock_uv()))
    raw = openai.OpenAI(base_url=gw.openai_base, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "price me"}]
    )
    usage = raw.parse().usage
    expected = (usage.prompt_tokens * 2.0 + usage.completion_tokens * 8.0) / 1e6
    cost = raw.headers["x-llm-edge-cost"]
    assert re.fullmatch(r"\d+\.\d{6}", cost) and abs(float(cost) - expected) < 1e-6
    row = next(r for r in gw.stats()["routes"] if r["model"] == "m")
    assert abs(row["spend_usd"] - expected) < 1e-9


def test_stream_usage_is_counted_but_never_shown_unasked(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv()
    gw = gateway_uv(one_route(upstream))
    sdk = openai.OpenAI(base_url=gw.openai_base, api_key="x", max_retries=0)
    chunks = list(sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}], stream=True))
    assert all(c.choices for c in chunks)  # no `choices: []` usage chunk reached a client that did not ask
    assert all(c.usage is None for c in chunks)
    assert orjson.loads(upstream.last_request.body)["stream_options"] == {"include_usage": True}  # we asked upstream
    row = next(r for r in gw.stats()["routes"] if r["model"] == "m")
    assert row["output_tokens"] > 0 and row["spend_usd"] > 0


def test_access_log_lines(mock_uv: MockFactory, gateway_uv: GatewayFactory, tmp_path: Path) -> None:
    log_path = tmp_path / "access.jsonl"
    table = one_route(mock_uv()) | {
        "log": {"access_log": str(log_path)},
        "auth": {"keys": [{"name": "team-a", "key": TEAM_KEY}]},
    }
    gw = gateway_uv(table)
    sdk = openai.OpenAI(base_url=gw.openai_base, api_key=TEAM_KEY, max_retries=0)
    sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "a very private prompt"}])
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert wait_for(lambda: log_path.exists() and log_path.read_text().count("\n") >= 2, timeout=5)
    text = log_path.read_text()
    lines = [orjson.loads(line) for line in text.splitlines()]
    ok = next(line for line in lines if line["status"] == 200)
    assert ok["model"] == "m" and ok["provider"] == "up" and ok["key"] == "team-a" and ok["tokens_out"] > 0
    assert ok["cost_usd"] > 0 and ok["latency_us"] > 0 and ok["overhead_us"] > 0
    assert {line["status"] for line in lines} == {200, 404}
    for secret in (TEAM_KEY, PROVIDER_KEY, "a very private prompt"):
        assert secret not in text


# Gateway keys and limits


def test_gateway_keys_401_in_each_sdk_shape(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv(kind="openai")
    gw = gateway_uv(one_route(upstream) | {"auth": {"keys": [{"name": "team-a", "key": TEAM_KEY}]}})
    with pytest.raises(openai.AuthenticationError) as no_key:
        openai.OpenAI(base_url=gw.openai_base, api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert no_key.value.status_code == 401 and "sk-wrong" not in str(no_key.value.body)
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        anthropic.Anthropic(base_url=gw.url, api_key="sk-wrong", max_retries=0).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert wrong.value.body["type"] == "error"
    assert upstream.requests == 0  # refused before any upstream contact
    answer = openai.OpenAI(base_url=gw.openai_base, api_key=TEAM_KEY, max_retries=0).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices
    legacy = anthropic.Anthropic(base_url=gw.url, api_key=TEAM_KEY, max_retries=0,
                                 default_headers={"x-api-key": TEAM_KEY, "anthropic-version": "2023-06-01"})  # fmt: skip
    assert legacy.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]).content
    assert get(gw.port, "/healthz")[0] == 200  # health needs no key


def test_rate_limits_and_budget(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv()
    keys = [{"name": "slow", "key": "sk-slow", "rpm": 2}, {"name": "poor", "key": "sk-poor", "budget_usd": 0.000001}]
    gw = gateway_uv(one_route(upstream) | {"auth": {"keys": keys}})
    slow = openai.OpenAI(base_url=gw.openai_base, api_key="sk-slow", max_retries=0)
    for _ in range(2):
        slow.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as limited:
        slow.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    poor = openai.OpenAI(base_url=gw.openai_base, api_key="sk-poor", max_retries=0)
    poor.chat.completions.create(model="m", messages=[{"role": "user", "content": "spend it all"}])
    with pytest.raises(openai.RateLimitError) as broke:
        poor.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert broke.value.code == "insufficient_quota"
    assert broke.value.response.headers["x-should-retry"] == "false"
    assert upstream.requests == 3


# Real processes, real signals


class GatewayProcess:
    """`python -m proxy` as a child process, its address read from its first line."""

    def __init__(self, config_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--config", str(config_path), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        line = self.proc.stdout.readline().decode()  # type: ignore[union-attr]
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        assert match, f"gateway did not start: {line!r} {self.proc.stderr.read().decode()}"  # type: ignore[union-attr]
        self.port = int(match.group(1))
        self.log_read = b""  # what `wait_for_log` has read of stderr so far

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """Read stderr until `text` appears in it (True), or `timeout` passes (False)."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while text.encode() not in self.log_read:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            piece = os.read(fd, 65536)
            if not piece:
                return False
            self.log_read += piece
        return True

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, (self.log_read + err).decode()


def write_config(path: Path, table: dict[str, Any]) -> Path:
    lines = []
    for p in table["providers"]:
        lines += ["[[providers]]", *(f"{k} = {orjson.dumps(v).decode()}" for k, v in p.items())]
    for m in table.get("models", []):
        routes = ", ".join(
            "{ " + ", ".join(f"{k} = {orjson.dumps(v).decode()}" for k, v in r.items()) + " }" for r in m["routes"]
        )
        others = [f"{k} = {orjson.dumps(v).decode()}" for k, v in m.items() if k not in ("name", "routes")]
        lines += ["[[models]]", f'name = "{m["name"]}"', *others, f"routes = [{routes}]"]
    for section in ("server", "router"):
        if section in table:
            lines += [f"[{section}]", *(f"{k} = {orjson.dumps(v).decode()}" for k, v in table[section].items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sigterm_lets_a_stream_finish(mock_uv: MockFactory, tmp_path: Path) -> None:
    upstream = mock_uv(tokens=20, token_delay_ms=50)
    gw = GatewayProcess(write_config(tmp_path / "gw.toml", one_route(upstream)))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(post_bytes({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}))
        first = sock.recv(65536)
        assert b"200 OK" in first
        gw.signal(signal.SIGTERM)  # mid-stream
        data = first
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    assert b"data: [DONE]" in data and data.endswith(b"0\r\n\r\n")  # the stream completed
    code, log = gw.stop()
    assert code == 0, log
    assert PROVIDER_KEY not in log


def test_sighup_reloads_a_good_config_and_keeps_serving_on_a_bad_one(mock_uv: MockFactory, tmp_path: Path) -> None:
    upstream = mock_uv()
    path = write_config(tmp_path / "gw.toml", one_route(upstream))
    gw = GatewayProcess(path)
    try:
        assert [m["id"] for m in orjson.loads(get(gw.port, "/v1/models")[2])["data"]] == ["m"]
        table = one_route(upstream)
        table["models"].append({"name": "second", "routes": [{"provider": "up", "model": "gpt-y"}]})
        write_config(path, table)
        gw.signal(signal.SIGHUP)
        assert wait_for(lambda: len(orjson.loads(get(gw.port, "/v1/models")[2])["data"]) == 2)
        path.write_text(path.read_text() + "\n[server]\nbogus_key = 1\n")
        gw.signal(signal.SIGHUP)
        assert gw.wait_for_log("not reloaded")  # the bad file was read and refused...
        assert len(orjson.loads(get(gw.port, "/v1/models")[2])["data"]) == 2  # ...and the old config keeps serving
    finally:
        code, log = gw.stop()
    assert code == 0
    assert "server.bogus_key" in log and "not reloaded" in log


def test_check_config(tmp_path: Path, mock_uv: MockFactory) -> None:
    good = write_config(tmp_path / "good.toml", one_route(mock_uv()))
    ok = subprocess.run([sys.executable, "-m", "proxy", "--check-config", "--config", str(good)], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('kind = "openai"', 'kind = "azure"'))
    refused = subprocess.run([sys.executable, "-m", "proxy", "--check-config", "--config", str(bad)], capture_output=True)
    assert refused.returncode != 0 and b"providers[0].kind" in refused.stderr


def test_two_workers_share_a_breaker(mock_uv: MockFactory, tmp_path: Path) -> None:
    failing = mock_uv(error_rate=1.0, error_status=500)
    table = one_route(failing, breaker_failures=2, breaker_cooldown_s=60)
    gw = GatewayProcess(write_config(tmp_path / "gw.toml", table), "--workers", "2")
    try:
        def worker_of_stats() -> dict[str, Any]:
            return orjson.loads(get(gw.port, "/stats")[2])

        # Fail requests (each on a fresh connection, so on either worker) until some worker opens the breaker.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status, _, _ = post(gw.port)
            if status == 503:  # a worker refuses without asking the provider: its breaker (or a peer's) is open
                break
        else:
            pytest.fail("no breaker opened")
        time.sleep(0.2)  # one sharing interval is 50 ms
        seen_workers: set[int] = set()
        before = failing.requests
        while len(seen_workers) < 2 and time.monotonic() < deadline + 10:
            stats = worker_of_stats()
            seen_workers.add(stats["worker"])
            assert stats["routes"][0]["breaker"] == "open"  # whichever worker answers sees it
            status, _, _ = post(gw.port)
            assert status == 503
        assert seen_workers == {0, 1}
        assert failing.requests == before  # neither worker sent the failing provider anything more
    finally:
        code, log = gw.stop()
    assert code == 0, log


def post(port: int) -> tuple[int, dict[bytes, bytes], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(post_bytes({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        [response] = Responses(sock).read(1)
        return response


# No surprises for the people who run it (issue 17)


def raw_sdk(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.openai_base, api_key="x", max_retries=0)


def ask(sdk: openai.OpenAI, content: str = "hi") -> Any:
    return sdk.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": content}])


def test_priority_uses_the_listed_order_and_falls_back_in_turn(mock_uv: MockFactory,
                                                              gateway_uv: GatewayFactory) -> None:  # fmt: skip
    primary, second, third = mock_uv(), mock_uv(), mock_uv()
    table = {
        "providers": [provider("primary", primary), provider("second", second), provider("third", third)],
        "models": [{"name": "m", "strategy": "priority", "breaker_failures": 2, "breaker_cooldown_s": 60,
                    "routes": [{"provider": "primary", "model": "a", "input_per_mtok": 30.0, "output_per_mtok": 60.0},
                               {"provider": "second", "model": "b", "input_per_mtok": 1.0, "output_per_mtok": 2.0},
                               {"provider": "third", "model": "c"}]}],  # the free one, listed last
    }  # fmt: skip
    gw = gateway_uv(table)
    sdk = raw_sdk(gw)
    served = [ask(sdk, f"q{i}").headers["x-llm-edge-provider"] for i in range(8)]
    assert served == ["primary"] * 8  # neither price nor measured latency reorders them
    primary.config.error_rate = 1.0  # the primary breaks: each request tries it, then the second
    answers = [ask(sdk, f"f{i}") for i in range(2)]
    assert [(a.headers["x-llm-edge-provider"], a.headers["x-llm-edge-attempts"]) for a in answers] == [
        ("second", "2"), ("second", "2")]
    after = ask(sdk, "open")  # two failures opened its breaker: the second serves at once
    assert (after.headers["x-llm-edge-provider"], after.headers["x-llm-edge-attempts"]) == ("second", "1")
    assert third.requests == 0
    row = next(r for r in gw.stats()["routes"] if r["provider"] == "primary" and r["model"] == "m")
    assert row["breaker"] == "open" and row["state"] == "open"


def test_healthz_detail_lists_providers_and_routes(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    good, bad = mock_uv(), mock_uv(error_rate=1.0, error_status=500)
    table = {
        "providers": [provider("good", good), provider("bad", bad)],
        "models": [{"name": "m", "strategy": "priority", "breaker_failures": 1, "breaker_cooldown_s": 60,
                    "routes": [{"provider": "bad", "model": "x"}, {"provider": "good", "model": "y"}]}],
    }  # fmt: skip
    gw = gateway_uv(table)
    status, _, body = get(gw.port, "/healthz?detail=1")
    detail = orjson.loads(body)
    assert status == 200 and detail["status"] == "ok"
    assert [(p["name"], p["usable"], p["base_url"]) for p in detail["providers"]] == [
        ("good", True, f"http://127.0.0.1:{good.port}/v1"), ("bad", True, f"http://127.0.0.1:{bad.port}/v1")]
    assert {(r["model"], r["provider"], r["state"]) for r in detail["routes"]} == {
        ("m", "bad", "usable"), ("m", "good", "usable"), ("good/*", "good", "usable"), ("bad/*", "bad", "usable")}
    assert ask(raw_sdk(gw)).headers["x-llm-edge-provider"] == "good"  # the bad route failed once: open
    status, _, body = get(gw.port, "/healthz?detail=1")
    detail = orjson.loads(body)
    route = next(r for r in detail["routes"] if r["model"] == "m" and r["provider"] == "bad")
    assert status == 200 and detail["status"] == "degraded"
    assert route["state"] == "open" and route["detail"].startswith("breaker open for ")
    assert "last failure: server error" in route["detail"]
    assert detail["models"] == [{"name": "m", "usable": True}]
    assert get(gw.port, "/healthz") == (200, get(gw.port, "/healthz")[1], b'{"status":"ok"}')
    assert PROVIDER_KEY.encode() not in body


def test_healthz_is_503_only_when_no_model_has_a_usable_route(mock_uv: MockFactory,
                                                              gateway_uv: GatewayFactory) -> None:  # fmt: skip
    flaky = mock_uv()
    gw = gateway_uv(one_route(flaky, breaker_failures=1, breaker_cooldown_s=60))
    assert get(gw.port, "/healthz")[0] == 200
    flaky.config.error_rate = 1.0
    with pytest.raises(openai.InternalServerError):
        raw_sdk(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    status, _, body = get(gw.port, "/healthz")
    assert status == 503 and b"no model has a usable route" in body
    status, _, body = get(gw.port, "/healthz?detail=1")
    assert status == 503 and orjson.loads(body)["status"] == "unavailable"


def test_models_list_and_retrieve_direct_ids(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv()
    gw = gateway_uv({"providers": [provider("openai", upstream, kind="openai", api_key=PROVIDER_KEY,
                                            models=["gpt-4o-mini"])]})  # fmt: skip
    sdk = raw_sdk(gw)
    assert [m.id for m in sdk.models.list()] == ["openai/gpt-4o-mini"]
    assert sdk.models.retrieve("openai/gpt-4o-mini").id == "openai/gpt-4o-mini"  # sent as openai%2Fgpt-4o-mini
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nobody/gpt-4o-mini")
    listing = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0).models.list()
    assert [m.id for m in listing.data] == ["openai/gpt-4o-mini"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})})  # fmt: skip


def test_check_config_refuses_a_missing_key_and_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[[providers]]\nname = 'claude'\nkind = 'anthropic'\napi_key_env = 'ANTHROPIC_API_KEY'\n")
    refused = run_cli("--check-config", "--config", str(path))
    assert refused.returncode == 2
    assert "the environment variable ANTHROPIC_API_KEY is unset or empty" in refused.stderr
    path.write_text("[server]\nallow_missing_keys = true\n" + path.read_text())
    passed = run_cli("--check-config", "--config", str(path))
    assert passed.returncode == 0 and "provider 'claude' is unusable" in passed.stderr
    trimmed = run_cli("--check-config", "--config", str(path), env={"ANTHROPIC_API_KEY": "sk-ant-SECRET\n"})
    assert trimmed.returncode == 0 and "was trimmed" in trimmed.stderr and "SECRET" not in trimmed.stderr


def test_check_config_probe_prints_each_providers_reachability_and_auth(mock_uv: MockFactory,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    good = mock_uv(require_key="sk-good-key")
    wrong = mock_uv(require_key="sk-someone-else")
    claude = mock_uv(kind="anthropic", require_key="sk-ant-good")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]  # nothing listens there once closed
    path = tmp_path / "probe.toml"
    path.write_text(
        f"[[providers]]\nname = 'good'\nkind = 'openai'\nbase_url = 'http://127.0.0.1:{good.port}/v1'\n"
        "api_key_env = 'GOOD_KEY'\n"
        f"[[providers]]\nname = 'wrong'\nkind = 'openai'\nbase_url = 'http://127.0.0.1:{wrong.port}/v1'\n"
        "api_key_env = 'WRONG_KEY'\n"
        f"[[providers]]\nname = 'claude'\nkind = 'anthropic'\nbase_url = 'http://127.0.0.1:{claude.port}'\n"
        "api_key_env = 'CLAUDE_KEY'\n"
        f"[[providers]]\nname = 'dead'\nkind = 'local'\nbase_url = 'http://127.0.0.1:{dead_port}/v1'\n"
    )
    env = {"GOOD_KEY": "sk-good-key", "WRONG_KEY": "sk-wrong-VERY-SECRET", "CLAUDE_KEY": "sk-ant-good"}
    result = run_cli("--check-config", "--probe", "--config", str(path), env=env)
    assert result.returncode == 1, result.stderr  # one provider rejects its key, one is unreachable
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["provider"][:6] == ["provider", "kind", "base_url", "reachable", "auth", "status"]
    assert rows["good"][3:6] == ["yes", "ok", "200"]
    assert rows["wrong"][3:6] == ["yes", "rejected", "401"]
    assert rows["claude"][2] == f"http://127.0.0.1:{claude.port}/v1" and rows["claude"][3:6] == ["yes", "ok", "200"]
    assert rows["dead"][3:6] == ["no", "-", "-"]
    assert "has no version prefix" in result.stderr  # the anthropic base_url was corrected
    assert "sk-wrong-VERY-SECRET" not in result.stdout + result.stderr
    assert "sk-good-key" not in result.stdout + result.stderr


# Behaviours whose pure parts are above and in tests/unit, waiting for the request path to call them
# (see the issue 17 report). strict: each one fails loudly as soon as it passes, so its mark goes.



def test_a_provider_rejecting_the_gateways_key_falls_back_and_is_a_502(mock_uv: MockFactory,
                                                                       gateway_uv: GatewayFactory) -> None:  # fmt: skip
    locked, good = mock_uv(require_key="sk-the-right-one"), mock_uv()
    table = {
        "providers": [provider("locked", locked, kind="openai", api_key=PROVIDER_KEY), provider("good", good)],
        "models": [{"name": "m", "strategy": "priority", "routes": [{"provider": "locked", "model": "a"},
                                                                    {"provider": "good", "model": "b"}]},
                   {"name": "solo", "routes": [{"provider": "locked", "model": "a"}]}],
    }  # fmt: skip
    gw = gateway_uv(table)
    answer = ask(raw_sdk(gw))
    assert (answer.headers["x-llm-edge-provider"], answer.headers["x-llm-edge-attempts"]) == ("good", "2")
    with pytest.raises(openai.InternalServerError) as info:
        raw_sdk(gw).chat.completions.create(model="solo", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert "upstream authentication failed for provider 'locked'" in info.value.message



def test_allow_missing_keys_leaves_the_route_unusable_and_shows_it(mock_uv: MockFactory,
                                                                   gateway_uv: GatewayFactory) -> None:  # fmt: skip
    keyed, good = mock_uv(kind="anthropic", require_key="sk-ant-x"), mock_uv()
    table = {
        "server": {"allow_missing_keys": True},
        "providers": [provider("claude", keyed, kind="anthropic", api_key_env="NOT_SET_ANYWHERE"),
                      provider("good", good)],
        "models": [{"name": "m", "strategy": "priority", "routes": [{"provider": "claude", "model": "a"},
                                                                    {"provider": "good", "model": "b"}]}],
    }  # fmt: skip
    gw = gateway_uv(table)
    answer = ask(raw_sdk(gw))
    assert (answer.headers["x-llm-edge-provider"], answer.headers["x-llm-edge-attempts"]) == ("good", "1")
    assert keyed.requests == 0
    row = next(r for r in gw.stats()["routes"] if r["provider"] == "claude" and r["model"] == "m")
    assert row["unusable"] == "its key variable NOT_SET_ANYWHERE is unset or empty"



def test_no_route_available_says_why(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    flaky = mock_uv(error_rate=1.0, error_status=500)
    gw = gateway_uv(one_route(flaky, breaker_failures=1, breaker_cooldown_s=60))
    sdk = raw_sdk(gw)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    assert "route 0 (up/gpt-x): breaker open until" in info.value.message
