"""The gateway's own pages (health, stats, metrics, the model list), through the client protocol.

None of them ever shows a provider key."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy import admin
from tests import samples
from tests.unit.protocol_harness import connect_client, idle_upstream, make_gateway_with

SECRET = "sk-provider-SECRET-77"
TABLE: dict[str, Any] = {
    "providers": [
        {"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1", "models": ["extra"]},
        {"name": "oa", "kind": "openai", "base_url": "http://127.0.0.1:10/v1", "api_key": SECRET},
    ],
    "models": [
        {"name": "fast", "routes": [{"provider": "a", "model": "m1"}]},
        {"name": "smart", "routes": [{"provider": "oa", "model": "gpt-x"}]},
    ],
}


def get(path: bytes, extra: bytes = b"", table: dict[str, Any] | None = None) -> tuple[int, bytes, bytes, Any]:
    gw, loop = make_gateway_with(table or TABLE)
    proto, client = connect_client(gw, loop)
    proto.data_received(samples.get(path, extra))
    data = client.take()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(data.split(b" ", 2)[1]), head, body, gw


def test_healthz_ok() -> None:
    status, _, body, _ = get(b"/healthz")
    assert status == 200 and orjson.loads(body) == {"status": "ok"}


def test_healthz_while_draining_is_503() -> None:
    gw, loop = make_gateway_with(TABLE)
    gw.draining = True
    proto, client = connect_client(gw, loop)
    proto.data_received(samples.HEALTHZ)
    data = client.take()
    assert data.startswith(b"HTTP/1.1 503 ") and b"shutting down" in data


def test_healthz_detail_lists_providers_and_routes_without_keys() -> None:
    status, _, body, _ = get(b"/healthz?detail=1")
    detail = orjson.loads(body)
    assert status == 200 and detail["status"] == "ok" and detail["draining"] is False
    assert [p["name"] for p in detail["providers"]] == ["a", "oa"]
    assert {r["model"] for r in detail["routes"]} >= {"fast", "smart"}
    assert SECRET.encode() not in body


@pytest.mark.parametrize("query", [b"/healthz?detail=0", b"/healthz?detail=false", b"/healthz?other=1"])
def test_healthz_detail_off(query: bytes) -> None:
    assert get(query)[2] == b'{"status":"ok"}'


def test_stats_has_counters_and_routes_and_no_key() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, 1)
    proto, client = connect_client(gw, loop)
    body = b'{"model":"smart","messages":[{"role":"user","content":"x"}]}'
    proto.data_received(samples.post(b"/v1/chat/completions", body))
    conn.data_received(samples.UPSTREAM_OK)
    client.take()
    proto.data_received(samples.get(b"/stats"))
    data = client.take()
    stats = orjson.loads(data.partition(b"\r\n\r\n")[2])
    assert stats["requests"] >= 1 and "uptime_s" in stats
    smart = [r for r in stats["routes"] if r["model"] == "smart"][0]
    assert smart["successes"] == 1 and smart["in_flight"] == 0
    assert SECRET.encode() not in data


def test_metrics_is_prometheus_text_without_keys() -> None:
    status, head, body, _ = get(b"/metrics")
    assert status == 200 and b"content-type: text/plain" in head.lower()
    assert b"# TYPE llm_edge_build_info gauge\n" in body
    assert SECRET.encode() not in body
    assert b"content-length: %d" % len(body) in head


def test_models_lists_configured_and_direct_ids() -> None:
    status, _, body, _ = get(b"/v1/models")
    ids = [m["id"] for m in orjson.loads(body)["data"]]
    assert status == 200 and ids == ["fast", "smart", "a/extra"]


def test_models_in_anthropics_shape_for_an_anthropic_client() -> None:
    status, _, body, _ = get(b"/v1/models", b"anthropic-version: 2023-06-01\r\n")
    listing = orjson.loads(body)
    assert status == 200 and listing["first_id"] == "fast" and listing["data"][0]["type"] == "model"


@pytest.mark.parametrize("path,status", [(b"/v1/models/fast", 200), (b"/v1/models/oa%2Fgpt-4o", 200),
                                         (b"/v1/models/nope", 404), (b"/v1/models/nobody%2Fx", 404)])  # fmt: skip
def test_one_model(path: bytes, status: int) -> None:
    got, _, body, _ = get(path)
    assert got == status
    if status == 200:
        assert orjson.loads(body)["object"] == "model"
    else:
        assert orjson.loads(body)["error"]["code"] == "model_not_found"


ADMIN_TABLE = {**TABLE, "admin": {"key_env": "LLM_EDGE_ADMIN_KEY"}}


def admin_gateway() -> Any:
    from proxy import config
    from proxy.server import Gateway
    from tests.fakes import FakeLoop

    loop = FakeLoop()
    table = {**ADMIN_TABLE, "server": {"listen": "127.0.0.1:0"}}
    settings = config.from_table(table, env={"LLM_EDGE_ADMIN_KEY": "admin-key-0123456789abcdef"})
    return Gateway(settings, loop), loop  # type: ignore[arg-type]


@pytest.mark.parametrize("path", [b"/stats", b"/metrics"])
def test_admin_only_pages_need_the_admin_key(path: bytes) -> None:
    gw, loop = admin_gateway()
    proto, client = connect_client(gw, loop)
    proto.data_received(samples.get(path))
    refused = client.take()
    assert refused.startswith(b"HTTP/1.1 401 ")
    proto.data_received(samples.get(path, b"Authorization: Bearer admin-key-0123456789abcdef\r\n"))
    assert client.take().startswith(b"HTTP/1.1 200 ")


def test_every_page_the_router_names_has_a_builder() -> None:
    from proxy import endpoints

    pages = {page for _, page, _, _ in endpoints.ENDPOINTS.values() if page[0] != "/"} | {"model"}
    assert pages <= set(admin.PAGES)
    assert admin.ADMIN_ONLY >= {"stats", "metrics", "admin"}
