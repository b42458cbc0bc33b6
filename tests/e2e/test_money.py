"""Money and limits with real gateway processes, real signals and a real redis-server (issue 13).

The ledger, the fleet's leases, the keys API and prices (proxy/ledger.py, fleet.py, keys_admin.py,
prices.py), each as the gateway uses them from its request path and its tick.
"""

from __future__ import annotations

import http.client
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MockFactory
from tests.e2e.test_operations import GatewayProcess
from tests.harness import wait_for

TEAM_KEY = "sk-team-money-0123456789"
ADMIN_KEY = "adm-money-0123456789abcdef"
PROVIDER_KEY = "sk-provider-FAKE-MONEY-XYZZY"
ENV_NAME = "LLM_EDGE_TEST_ADMIN_KEY"


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def _key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else orjson.dumps(name).decode()


def write_config(path: Path, *, server: Any, key: dict[str, Any] | None = None, prices: dict[str, Any] | None = None,
                 sections: dict[str, dict[str, Any]] | None = None, route_prices: bool = True) -> Path:  # fmt: skip
    """A config with one mock provider, model "m", and optionally one gateway key."""
    route: dict[str, Any] = {"provider": "up", "model": "gpt-x"}
    if route_prices:
        route.update(input_per_mtok=2.0, output_per_mtok=8.0)
    lines = ["[[providers]]", 'name = "up"', 'kind = "openai"', f'base_url = "http://127.0.0.1:{server.port}/v1"',
             f'api_key = "{PROVIDER_KEY}"']  # fmt: skip
    if prices:
        lines += ["[providers.prices]", *(f"{_key(m)} = {toml_value(p)}" for m, p in prices.items())]
    lines += ["[[models]]", 'name = "m"', f"routes = [{toml_value(route)}]"]
    if key is not None:
        lines += ["[[auth.keys]]", *(f"{k} = {toml_value(v)}" for k, v in {"name": "team", "key": TEAM_KEY,
                                                                           **key}.items())]  # fmt: skip
    for name, table in (sections or {}).items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def request(port: int, method: str, path: str, body: Any = None, key: str = TEAM_KEY,
            model: str = "m") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        payload = None
        if body is not None or method == "POST":
            payload = orjson.dumps(body if body is not None else {
                "model": model, "messages": [{"role": "user", "content": "how much?"}]})  # fmt: skip
            headers["content-type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def chat(port: int, key: str = TEAM_KEY, model: str = "m") -> tuple[int, dict[str, str], bytes]:
    return request(port, "POST", "/v1/chat/completions", key=key, model=model)


def remaining_usd(port: int, key: str = "") -> float:
    """The team key's remaining budget, from /metrics (as Prometheus reads it)."""
    status, _, body = request(port, "GET", "/metrics", key=key)
    assert status == 200, body
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "llm_edge_key_budget_remaining_usd" and sample.labels.get("key") == "team":
                return sample.value
    raise AssertionError("no llm_edge_key_budget_remaining_usd for the key")


def stop(gw: GatewayProcess) -> str:
    code, log = gw.stop()
    assert PROVIDER_KEY not in log and TEAM_KEY not in log and ADMIN_KEY not in log
    return log


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NAME, ADMIN_KEY)  # the gateway processes inherit it


# -- what works end to end without the lead's wiring -------------------------------------------------


def test_workers_divide_a_key_s_rate_limit(mock_uv: MockFactory, tmp_path: Path) -> None:
    """`--workers 2` with rpm = 4: each worker enforces 2, so the gateway admits at most 4 (it admitted 8)."""
    path = write_config(tmp_path / "gw.toml", server=mock_uv(), key={"rpm": 4})
    gw = GatewayProcess(path, "--workers", "2")
    try:
        statuses = [chat(gw.port)[0] for _ in range(24)]  # a fresh connection each: both workers serve
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 429}
        assert 1 <= admitted <= 4 + 1  # + one refill of either bucket (1 per 30 s) during the run, at most
    finally:
        stop(gw)


def test_the_ledger_and_seed_settings_are_checked(tmp_path: Path, mock_uv: MockFactory) -> None:
    server = mock_uv()
    good = write_config(tmp_path / "good.toml", server=server, key={"budget_usd": 1.0, "budget_period": "monthly"},
                        sections={"ledger": {"path": str(tmp_path / "spend.sqlite")},
                                  "cache": {"key_seed_env": "LLM_EDGE_TEST_SEED"},
                                  "limits": {"fail_closed": False, "lease_fraction": 0.1}})  # fmt: skip
    env = {**os.environ, "LLM_EDGE_TEST_SEED": "a secret seed"}
    ok = subprocess.run([sys.executable, "-m", "proxy", "--check-config", "--config", str(good)], capture_output=True,
                        env=env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    without = {k: v for k, v in env.items() if k != "LLM_EDGE_TEST_SEED"}
    unset = subprocess.run([sys.executable, "-m", "proxy", "--check-config", "--config", str(good)],
                           capture_output=True, env=without)  # fmt: skip
    assert unset.returncode == 2 and b"cache.key_seed_env" in unset.stderr and b"a secret seed" not in ok.stderr
    bad = write_config(tmp_path / "bad.toml", server=server, key={"budget_usd": 1.0, "budget_period": "weekly"})
    refused = subprocess.run([sys.executable, "-m", "proxy", "--check-config", "--config", str(bad)],
                             capture_output=True)  # fmt: skip
    assert refused.returncode == 2 and b"auth.keys[0].budget_period" in refused.stderr


# -- spend that survives restarts and reloads -------------------------



def test_spend_survives_sigkill_within_one_tick(mock_uv: MockFactory, tmp_path: Path) -> None:
    path = write_config(tmp_path / "gw.toml", server=mock_uv(), key={"budget_usd": 1.0},
                        sections={"ledger": {"path": str(tmp_path / "spend.sqlite")}})  # fmt: skip
    gw = GatewayProcess(path)
    try:
        costs = []
        for _ in range(5):
            status, headers, _ = chat(gw.port)
            assert status == 200
            costs.append(float(headers["x-llm-edge-cost"]))
        before = remaining_usd(gw.port)
        assert before == pytest.approx(1.0 - sum(costs), abs=1e-5)
        time.sleep(1.3)  # one tick: the ledger has it
        gw.proc.kill()  # SIGKILL: no drain, no last flush
        gw.proc.wait()
    finally:
        stop(gw)
    again = GatewayProcess(path)
    try:
        assert remaining_usd(again.port) == pytest.approx(before, abs=1e-9)
    finally:
        stop(again)


def test_sighup_carries_spend_over_and_a_removed_key_gets_it_back(mock_uv: MockFactory, tmp_path: Path) -> None:
    server = mock_uv()
    path = write_config(tmp_path / "gw.toml", server=server, key={"budget_usd": 1.0})
    gw = GatewayProcess(path)
    try:
        for _ in range(3):
            assert chat(gw.port)[0] == 200
        before = remaining_usd(gw.port)
        assert before < 1.0
        gw.signal(signal.SIGHUP)  # the same config
        time.sleep(0.5)
        assert remaining_usd(gw.port) == pytest.approx(before, abs=1e-9)
        write_config(path, server=server)  # the key removed
        gw.signal(signal.SIGHUP)
        assert wait_for(lambda: chat(gw.port, key="")[0] == 200)  # no key required any more
        write_config(path, server=server, key={"budget_usd": 1.0})  # and back
        gw.signal(signal.SIGHUP)
        assert wait_for(lambda: chat(gw.port, key="")[0] == 401)
        assert remaining_usd(gw.port) == pytest.approx(before, abs=1e-9)
    finally:
        stop(gw)


# -- every token priced (needs `keys.may_use` at pick time and prices.route_prices/cost_nusd in finish) ----


def test_a_key_with_a_budget_is_never_served_by_an_unpriced_route(mock_uv: MockFactory, tmp_path: Path) -> None:
    upstream = mock_uv()
    path = write_config(tmp_path / "gw.toml", server=upstream, key={"budget_usd": 1.0},
                        prices={"gpt-priced": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}})  # fmt: skip
    gw = GatewayProcess(path)
    try:
        status, headers, _ = chat(gw.port, model="up/gpt-priced")
        assert status == 200 and float(headers["x-llm-edge-cost"]) > 0  # direct addressing is no longer free
        before = upstream.requests
        status, _, body = chat(gw.port, model="up/gpt-unpriced")
        error = orjson.loads(body)["error"]
        assert status == 403 and error["code"] == "unpriced_model" and "no price" in error["message"]
        assert upstream.requests == before  # refused before any upstream contact
    finally:
        stop(gw)


# -- the info endpoints and the admin API (needs the admin routing) --------------------------------------



def test_info_endpoints_need_the_admin_key(mock_uv: MockFactory, tmp_path: Path, admin_env: None) -> None:
    path = write_config(tmp_path / "gw.toml", server=mock_uv(), key={"budget_usd": 1.0},
                        sections={"admin": {"key_env": ENV_NAME}})  # fmt: skip
    gw = GatewayProcess(path)
    try:
        assert request(gw.port, "GET", "/healthz", key="")[0] == 200
        for page in ("/stats", "/metrics", "/admin/keys"):
            assert request(gw.port, "GET", page, key="")[0] == 401, page
            assert request(gw.port, "GET", page, key=TEAM_KEY)[0] == 401, page  # a gateway key is not an admin key
            status, _, body = request(gw.port, "GET", page, key=ADMIN_KEY)
            assert status == 200, page
            assert b"team" in body or page != "/metrics"  # the key's name, spend and budget, for the admin only
        assert request(gw.port, "GET", "/v1/models/m", key="")[0] == 401
        assert request(gw.port, "GET", "/v1/models/m")[0] == 200
    finally:
        stop(gw)


def test_keys_made_at_run_time_work_and_survive_a_restart(mock_uv: MockFactory, tmp_path: Path,
                                                          admin_env: None) -> None:  # fmt: skip
    path = write_config(tmp_path / "gw.toml", server=mock_uv(), sections={"admin": {"key_env": ENV_NAME}})
    gw = GatewayProcess(path)

    def keys_cli(port: int, *args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "proxy", "keys", "--url", f"http://127.0.0.1:{port}",
                               "--admin-key-env", ENV_NAME, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)

    try:
        assert chat(gw.port, key="")[0] == 401  # with an admin key, keys are required before the first exists
        secret = keys_cli(gw.port, "create", "ci", "--budget-usd", "1", "--budget-period", "monthly")["key"]
        assert chat(gw.port, key=secret)[0] == 200
        spent = keys_cli(gw.port, "spend", "ci")["spent_nusd"]
        assert spent > 0
        keys_cli(gw.port, "disable", "ci")
        assert chat(gw.port, key=secret)[0] == 403
        keys_cli(gw.port, "enable", "ci")
        time.sleep(1.3)
    finally:
        stop(gw)
    again = GatewayProcess(path)
    try:
        assert chat(again.port, key=secret)[0] == 200
        assert keys_cli(again.port, "spend", "ci")["spent_nusd"] > spent
        assert secret.encode() not in (tmp_path / "gw.ledger.sqlite").read_bytes()
    finally:
        stop(again)


# -- the fleet: two gateways, two workers each, one redis-server (needs the Fleet on the tick) ------------



@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly",
                             "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert wait_for(sock.exists, timeout=10)
        yield f"unix://{sock}", proc
    finally:
        proc.kill()
        proc.wait()


def test_two_gateways_of_two_workers_share_one_rpm(mock_uv: MockFactory, tmp_path: Path,
                                                   redis_url: tuple[str, Any]) -> None:  # fmt: skip
    url, _ = redis_url
    server = mock_uv()
    gateways = []
    try:
        for i in range(2):
            path = write_config(tmp_path / f"gw{i}.toml", server=server, key={"rpm": 60},
                                sections={"limits": {"redis_url": url}, "ledger": {"path": ""}})  # fmt: skip
            gateways.append(GatewayProcess(path, "--workers", "2"))
        time.sleep(1.5)  # every worker has taken its first lease
        started = time.monotonic()
        admitted = 0
        for n in range(200):  # ~4 s: paced, so that leases refill between requests (a burst faster than
            status = chat(gateways[n % 2].port)[0]  # the 0.1 s refill gets only the leases held: README)
            assert status in (200, 429)
            admitted += status == 200
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        # the fleet's bound (README): GCRA's 60 + 60 * t / 60 in t seconds, plus the leases held by the 4
        # processes, each at most 2 * ceil(60 * lease_fraction / 4)
        assert admitted <= 60 + elapsed + 4 * 2 * math.ceil(60 * 0.1 / 4)
        # and the limit is usable: empty leases are refilled early (4 first leases alone would admit 8)
        assert admitted >= 40
    finally:
        for gw in gateways:
            stop(gw)


def test_redis_killed_mid_run_fails_no_request(mock_uv: MockFactory, tmp_path: Path,
                                               redis_url: tuple[str, Any]) -> None:  # fmt: skip
    url, proc = redis_url
    path = write_config(tmp_path / "gw.toml", server=mock_uv(), key={"rpm": 6000, "budget_usd": 10.0},
                        sections={"limits": {"redis_url": url, "redis_timeout_ms": 100}})  # fmt: skip
    gw = GatewayProcess(path, "--workers", "2")
    try:
        time.sleep(1.5)
        assert all(chat(gw.port)[0] == 200 for _ in range(20))
        proc.kill()
        proc.wait()
        assert all(chat(gw.port)[0] == 200 for _ in range(40))  # no request fails because Redis is gone
        time.sleep(1.5)
        assert all(chat(gw.port)[0] == 200 for _ in range(20))
        stats = orjson.loads(request(gw.port, "GET", "/stats")[2])
        assert stats["fleet"]["up"] is False
    finally:
        log = stop(gw)
    # logged once per worker per outage (a slow first connect at start-up may be one more, and its recovery)
    assert 2 <= log.count("Redis unreachable") <= 2 + log.count("Redis answers again")
