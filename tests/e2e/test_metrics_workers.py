"""`--workers 2`, real processes: every counter and histogram in `/metrics` and `/stats` is the whole
gateway's, whichever worker answers a scrape, so no scrape reads lower than the one before it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MockFactory
from tests.e2e.test_gateway import Responses, post_bytes
from tests.e2e.test_operations import GatewayProcess, get, one_route, write_config
from tests.harness import wait_for

REQUESTS = 40
SCRAPES = 20


def post(port: int, content: str, temperature: float = 1.0) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # a new connection: either worker
        sock.sendall(post_bytes({"model": "m", "messages": [{"role": "user", "content": content}],
                                 "temperature": temperature}))  # fmt: skip
        [(status, _, _)] = Responses(sock).read(1)
        return status


def series(body: bytes) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], set[str]]:
    """Every counter and histogram sample of one scrape, keyed by name and labels; and every family's name."""
    values = {}
    families = set()
    for family in text_string_to_metric_families(body.decode()):
        families.add(family.name)
        if family.type not in ("counter", "histogram"):
            continue
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values, families


def llm_requests(values: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    # Cache hits have no route; code="0" with no route is what admin pages count as until the
    # pipeline names them (see test_admin_pages_are_not_llm_requests).
    return sum(v for (name, labels), v in values.items()
               if name == "llm_edge_requests_total" and (dict(labels)["route"], dict(labels)["code"]) != ("", "0"))


@pytest.fixture
def two_workers(mock_uv: MockFactory, tmp_path: Path) -> Any:
    gw = GatewayProcess(write_config(tmp_path / "gw.toml", one_route(mock_uv())), "--workers", "2")
    yield gw
    code, log = gw.stop()
    assert code == 0, log


def test_every_family_is_monotonic_and_complete_whichever_worker_answers(two_workers: GatewayProcess) -> None:
    port = two_workers.port
    for i in range(REQUESTS):
        # Half repeat one deterministic request: cache hits and misses on both workers.
        assert post(port, f"q{i}" if i % 2 else "same", temperature=1.0 if i % 2 else 0.0) == 200
    # Each worker publishes its counters every 250 ms: wait until a scrape shows every request once.
    assert wait_for(lambda: llm_requests(series(get(port, "/metrics")[2])[0]) == REQUESTS, timeout=10)

    scrapes = []
    workers = set()
    for _ in range(SCRAPES):
        status, _, body = get(port, "/metrics")
        assert status == 200
        scrapes.append(series(body))
        workers.add(orjson.loads(get(port, "/stats")[2])["worker"])
    assert workers == {0, 1}, "every scrape was answered by the same worker: the test proved nothing"

    first_values, first_families = scrapes[0]
    for values, families in scrapes:
        assert families == first_families  # complete: no family comes and goes with the worker
        assert llm_requests(values) == REQUESTS  # the whole gateway's, never one worker's share
        assert values[("llm_edge_request_duration_seconds_count", ())] >= REQUESTS / 2  # the misses went upstream
    for (before, _), (after, _) in zip(scrapes, scrapes[1:]):
        assert set(before) <= set(after)
        for key, value in before.items():
            assert after[key] >= value, f"{key} went down from {value} to {after[key]}: read as a counter reset"
    hits = first_values[("llm_edge_cache_hits_total", ())]
    misses = first_values[("llm_edge_cache_misses_total", ())]
    assert hits + misses == REQUESTS / 2 and hits >= REQUESTS / 2 - 2  # one miss per worker at most


def test_stats_are_the_whole_gateways(two_workers: GatewayProcess) -> None:
    port = two_workers.port
    for i in range(REQUESTS):
        assert post(port, f"s{i}") == 200

    def complete() -> bool:
        stats = orjson.loads(get(port, "/stats")[2])
        return stats["latency_us"]["count"] == REQUESTS and stats["workers_reporting"] == 2

    assert wait_for(complete, timeout=10)
    seen = set()
    previous = 0
    for _ in range(SCRAPES):
        stats = orjson.loads(get(port, "/stats")[2])
        seen.add(stats["worker"])
        assert stats["latency_us"]["count"] == REQUESTS
        assert stats["by_status"]["200"] >= REQUESTS
        assert stats["routes"][0]["requests"] == REQUESTS
        assert sum(pool["opened_total"] for pool in stats["pools"]) >= 2  # both workers' pools
        assert stats["requests"] >= previous
        previous = stats["requests"]
    assert seen == {0, 1}
