"""Routing end to end: breakers, fallback, SLA, Retry-After, hedging and strategies, against real mocks.

Every test builds a gateway over two or three mock providers, changes a mock's behaviour while it
serves (`server.config.x = ...`: the next request sees it) and asserts on what clients and
providers observed: status codes, `x-llm-edge-provider` / `x-llm-edge-attempts`, the mocks'
request and disconnect counters and the gateway's `/stats` rows. Router timings are shortened in
the config (`FAST`) so state changes happen in tens of milliseconds; where the test must wait for
one (a cooldown ending) it polls with a deadline, never sleeps a guessed time.

Conventions: route `a` is listed first and is the cheapest, so cost-sla prefers it; `explore_ratio`
is 0 so no request is diverted to a non-best route at random.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import orjson
import pytest

from mocks.server import MockServer
from tests.e2e.conftest import GatewayFactory, MockFactory, provider
from tests.harness import LoopThread, RunningGateway, wait_for

MODEL = "m"

# Router settings that make the router react within a few requests and tens of milliseconds.
FAST: dict[str, Any] = {
    "explore_ratio": 0.0,
    "rerank_interval_s": 0.02,
    "breaker_failures": 3,
    "breaker_cooldown_s": 30.0,  # tests that want recovery shorten it
    "max_attempts": 3,
}


# Helpers


class Answer:
    """One response as the client saw it."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, complete: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.complete = complete  # False: the connection closed before the body's end

    @property
    def provider(self) -> str | None:
        return self.headers.get("x-llm-edge-provider")

    @property
    def attempts(self) -> int | None:
        value = self.headers.get("x-llm-edge-attempts")
        return int(value) if value is not None else None

    def __repr__(self) -> str:
        return f"<Answer {self.status} provider={self.provider} attempts={self.attempts} body={self.body[:120]!r}>"


def ask(gw: RunningGateway, content: str = "hello", *, stream: bool = False, timeout: float = 10.0) -> Answer:
    """POST one chat completion on a fresh connection and read the whole response."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream}
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", orjson.dumps(body), {"content-type": "application/json"})
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            data, complete = response.read(), True
        except http.client.IncompleteRead as exc:
            data, complete = exc.partial, False
        return Answer(response.status, headers, data, complete)
    finally:
        conn.close()


def ask_many(gw: RunningGateway, n: int, **kwargs: Any) -> list[Answer]:
    return [ask(gw, f"request {i}", **kwargs) for i in range(n)]


def route(name: str, price: float = 1.0, weight: int = 1) -> dict[str, Any]:
    return {"provider": name, "model": f"{name}-model", "input_per_mtok": price, "output_per_mtok": 4 * price,
            "weight": weight}  # fmt: skip


def config(
    mocks: dict[str, MockServer], routes: list[dict[str, Any]], provider_extra: dict[str, Any] | None = None,
    **model: Any,
) -> dict[str, Any]:  # fmt: skip
    """One model `m` over `routes`, each provider a mock; `model` overrides FAST."""
    providers = [provider(name, server, **(provider_extra or {})) for name, server in mocks.items()]
    return {"providers": providers, "models": [{"name": MODEL, "routes": routes, **FAST, **model}]}


def rows(gw: RunningGateway) -> dict[str, dict[str, Any]]:
    """`/stats` route rows of model `m`, by provider name."""
    return {r["provider"]: r for r in gw.stats()["routes"] if r["model"] == MODEL}


def two(mock_uv: MockFactory, **a_options: Any) -> dict[str, MockServer]:
    return {"a": mock_uv(**a_options), "b": mock_uv()}


def warm_up(gw: RunningGateway, n: int = 4) -> None:
    """Measure every route once (unmeasured routes are probed first), then check all is well."""
    answers = ask_many(gw, n)
    assert all(x.status == 200 for x in answers), answers


# Breakers and fallback


def test_failing_provider_trips_its_breaker_and_clients_see_no_errors(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = two(mock_uv)
    a, b = mocks["a"], mocks["b"]
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)]))
    warm_up(gw)
    assert [x.provider for x in ask_many(gw, 3)] == ["a"] * 3  # the cheaper route serves

    a.config.error_rate = 1.0  # every request to `a` is now a 500
    a_before, b_before = a.requests, b.requests
    answers = ask_many(gw, 10)
    assert [x.status for x in answers] == [200] * 10, answers  # fallback hid every failure
    assert [x.provider for x in answers] == ["b"] * 10
    # `a` was tried exactly breaker_failures times, each time before `b` answered; then skipped.
    assert [x.attempts for x in answers] == [2, 2, 2] + [1] * 7
    assert a.requests - a_before == 3 and a.errors_injected == 3
    assert b.requests - b_before == 10
    row = rows(gw)["a"]
    assert row["breaker"] == "open" and row["consecutive_failures"] == 3 and row["errors"] == 3
    assert row["in_flight"] == 0 and rows(gw)["b"]["breaker"] == "closed"


def test_recovered_provider_is_probed_half_open_and_wins_traffic_back(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = two(mock_uv)
    a = mocks["a"]
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], breaker_cooldown_s=0.3))
    warm_up(gw)
    a.config.error_rate = 1.0
    assert all(x.status == 200 for x in ask_many(gw, 3))
    assert rows(gw)["a"]["breaker"] == "open"

    a.config.error_rate = 0.0  # recovered, but the gateway only learns it from a probe
    a.config.ttft_ms = 300.0  # a slow probe, so it can be watched while in flight
    assert wait_for(lambda: rows(gw)["a"]["blocked_for_s"] == 0.0, timeout=5.0)  # the cooldown is over
    probe: list[Answer] = []
    thread = threading.Thread(target=lambda: probe.append(ask(gw, "probe")))
    thread.start()
    try:
        assert wait_for(lambda: rows(gw)["a"]["in_flight"] == 1)
        assert rows(gw)["a"]["breaker"] == "half-open"
        during = ask(gw, "while the probe is out")  # half_open_probes = 1: no second probe
        assert (during.status, during.provider) == (200, "b")
    finally:
        thread.join(10)
    assert (probe[0].status, probe[0].provider, probe[0].attempts) == (200, "a", 1)
    row = rows(gw)["a"]
    assert row["breaker"] == "closed" and row["consecutive_failures"] == 0

    a.config.ttft_ms = 0.0
    assert [x.provider for x in ask_many(gw, 5)] == ["a"] * 5  # the cheaper route has its traffic back


def test_failed_probe_reopens_with_backed_off_cooldown(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    mocks = two(mock_uv)
    a = mocks["a"]
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], breaker_cooldown_s=0.2, breaker_backoff=3.0))
    warm_up(gw)
    a.config.error_rate = 1.0
    ask_many(gw, 3)
    assert rows(gw)["a"]["cooldown_s"] == pytest.approx(0.2)
    assert wait_for(lambda: rows(gw)["a"]["blocked_for_s"] == 0.0)
    tried = a.requests
    answer = ask(gw, "probe")  # the probe fails; the request falls back and still succeeds
    assert (answer.status, answer.provider, answer.attempts) == (200, "b", 2)
    assert a.requests == tried + 1
    row = rows(gw)["a"]
    assert row["breaker"] == "open" and row["cooldown_s"] == pytest.approx(0.6)  # 0.2 x breaker_backoff


def test_upstream_400_is_relayed_not_retried_and_trips_nothing(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = two(mock_uv)
    a, b = mocks["a"], mocks["b"]
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)]))
    warm_up(gw)
    a.config.error_status, a.config.error_rate = 400, 1.0
    b_before = b.requests
    answers = ask_many(gw, 6)  # twice breaker_failures
    assert [x.status for x in answers] == [400] * 6
    assert [x.attempts for x in answers] == [1] * 6 and {x.provider for x in answers} == {"a"}
    assert all(orjson.loads(x.body)["error"]["message"] for x in answers)  # the provider's own error body
    assert b.requests == b_before  # the request's fault: no other route is bothered
    row = rows(gw)["a"]
    assert row["breaker"] == "closed" and row["errors"] == 0 and row["consecutive_failures"] == 0
    assert row["in_flight"] == 0


# Latency SLA and cost


def test_slow_provider_loses_traffic_to_the_one_meeting_the_sla(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = two(mock_uv)
    a = mocks["a"]
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], sla_ms=100.0, ewma_half_life_s=0.2))
    warm_up(gw)
    assert ask(gw).provider == "a"  # both meet the SLA: the cheaper one

    a.config.ttft_ms = 250.0  # far above the SLA
    seen = [ask(gw, f"slow {i}").provider for i in range(12)]
    assert all(x == "b" for x in seen[-6:]), seen  # moved, and stayed
    moved_after = seen.index("b")
    assert 1 <= moved_after <= 5, seen  # it took a few slow answers to convince the EWMA, not more
    tried = a.requests
    assert [x.provider for x in ask_many(gw, 5)] == ["b"] * 5
    assert a.requests == tried
    row = rows(gw)["a"]
    assert row["latency_ms"] > 100.0 and row["breaker"] == "closed"  # slow is not broken


def test_slow_provider_that_recovers_wins_its_traffic_back_through_exploration(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = two(mock_uv, ttft_ms=250.0)
    a = mocks["a"]
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], sla_ms=100.0, ewma_half_life_s=0.2,
                           explore_ratio=0.25))  # fmt: skip
    warm_up(gw)
    assert [x.provider for x in ask_many(gw, 8)].count("a") <= 2  # only exploration reaches the slow route
    a.config.ttft_ms = 0.0
    recent: list[str | None] = []

    def won_back() -> bool:
        recent.append(ask(gw, "are you back").provider)
        return len(recent) >= 8 and recent[-8:].count("a") >= 5  # all but exploration of `b` (1 in 4)

    assert wait_for(won_back, timeout=10.0), recent  # exploration saw it recover; the cheaper route leads again


def test_cost_sla_picks_the_cheaper_route_when_both_meet_the_sla(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = {"dear": mock_uv(), "cheap": mock_uv(ttft_ms=20.0)}  # cheap is slower, but within the SLA
    gw = gateway_uv(config(mocks, [route("dear", 5.0), route("cheap", 0.5)], sla_ms=1000.0))
    warm_up(gw)
    answers = ask_many(gw, 8)
    assert [x.provider for x in answers] == ["cheap"] * 8
    r = rows(gw)
    assert r["cheap"]["latency_ms"] > r["dear"]["latency_ms"]  # it won on price, not speed
    assert r["cheap"]["spend_usd"] > 0


def test_without_an_sla_cost_sla_is_cheapest_first_whatever_the_speed(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = {"dear": mock_uv(), "cheap": mock_uv(ttft_ms=60.0)}
    gw = gateway_uv(config(mocks, [route("dear", 5.0), route("cheap", 0.5)]))
    warm_up(gw)
    assert [x.provider for x in ask_many(gw, 4)] == ["cheap"] * 4


def test_latency_strategy_prefers_the_faster_route_and_cost_weight_can_overrule_it(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    fast_dear = config({"slow": mock_uv(ttft_ms=30.0), "fast": mock_uv()}, [route("slow", 0.1), route("fast", 0.2)],
                       strategy="latency")  # fmt: skip
    gw = gateway_uv(fast_dear)
    warm_up(gw)
    assert [x.provider for x in ask_many(gw, 4)] == ["fast"] * 4
    # Scores are relative to the model's means (each term at most 2 with two routes): with cost
    # weighed twice as much as latency, a 100x price gap beats a ~30x latency gap.
    priced = config({"slow": mock_uv(ttft_ms=30.0), "fast": mock_uv()}, [route("slow", 0.1), route("fast", 10.0)],
                    strategy="latency", cost_weight=2.0)  # fmt: skip
    gw = gateway_uv(priced)
    warm_up(gw)
    assert [x.provider for x in ask_many(gw, 4)] == ["slow"] * 4


# Rate limits


def test_429_with_retry_after_cools_the_route_down_for_that_long(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = two(mock_uv)
    a = mocks["a"]
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], breaker_failures=100))
    warm_up(gw)
    a.config.error_status, a.config.retry_after, a.config.error_rate = 429, 0.4, 1.0
    first = ask(gw, "limited")
    assert (first.status, first.provider, first.attempts) == (200, "b", 2)
    blocked = rows(gw)["a"]["blocked_for_s"]
    assert 0.0 < blocked <= 0.4 + 0.002  # uvloop's clock ticks in milliseconds
    tried = a.requests
    answers = ask_many(gw, 5)
    assert [(x.status, x.provider, x.attempts) for x in answers] == [(200, "b", 1)] * 5  # `a` is skipped...
    assert a.requests == tried
    assert rows(gw)["a"]["breaker"] == "closed"  # ...but not broken

    a.config.error_rate = 0.0
    assert wait_for(lambda: rows(gw)["a"]["blocked_for_s"] == 0.0)  # ...only for as long as it asked
    assert ask(gw, "after the cooldown").provider == "a"


def test_every_route_rate_limited_gives_the_client_a_429_with_retry_after(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = {"a": mock_uv(error_status=429, error_rate=1.0, retry_after=7.0),
             "b": mock_uv(error_status=429, error_rate=1.0, retry_after=3.0)}  # fmt: skip
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], breaker_failures=100))
    answer = ask(gw)
    assert answer.status == 429, answer
    assert answer.headers["retry-after"] == "3"  # the soonest of the two
    assert orjson.loads(answer.body)["error"]["code"] == "rate_limit_exceeded"
    assert (mocks["a"].requests, mocks["b"].requests) == (1, 1)

    # While both routes cool down they are still the last ones standing: a Retry-After alone never
    # takes a model out of service (issue 11, defect 14). Each is tried once more, and the caller
    # again gets a 429 that says when to come back.
    again = ask(gw)
    assert again.status == 429 and 1 <= int(again.headers["retry-after"]) <= 7, again
    assert (mocks["a"].requests, mocks["b"].requests) == (2, 2)


class GatedProvider:
    """A minimal OpenAI-compatible provider whose answers can be held back until `gate` requests wait.

    `ok` answers a chat completion at once; after `limit(n, retry_after)` every request waits
    until n of them are in, then all get a 429 with that Retry-After together: one rate-limit
    event seen by n in-flight requests, as a real provider produces under concurrent load.
    """

    OK_BODY = orjson.dumps({
        "id": "chatcmpl-gated", "object": "chat.completion", "created": 0, "model": "a-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    })  # fmt: skip

    def __init__(self, io: LoopThread) -> None:
        self.io = io
        self.requests = 0
        self.gate = 0
        self.retry_after = ""
        self.waiting = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.released: asyncio.Event | None = None
        self.server: asyncio.Server | None = None
        self.port = 0

    def start(self) -> GatedProvider:
        async def start() -> None:
            self.released = asyncio.Event()
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

        self.io.run(start())
        return self

    def limit(self, n: int, retry_after: str) -> None:
        def change() -> None:
            self.gate, self.retry_after = n, retry_after

        self.io.call(change)

    def ok(self) -> None:
        self.io.call(lambda: setattr(self, "gate", 0))

    def close(self) -> None:
        async def close() -> None:
            assert self.server is not None
            self.server.close()
            for writer in list(self.writers):
                writer.close()
            await self.server.wait_closed()

        self.io.run(close())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                self.requests += 1
                if self.gate:
                    self.waiting += 1
                    if self.waiting >= self.gate:
                        self.released.set()  # type: ignore[union-attr]
                    await self.released.wait()  # type: ignore[union-attr]
                    body = b'{"error":{"message":"slow down","type":"rate_limit_error"}}'
                    writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                                 b"retry-after: %s\r\ncontent-length: %d\r\n\r\n%s"
                                 % (self.retry_after.encode(), len(body), body))  # fmt: skip
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(self.OK_BODY), self.OK_BODY))  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


def test_a_burst_of_429s_honours_retry_after_instead_of_opening_the_breaker(
    io_uv: LoopThread, mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    """Regression: one rate-limit event seen by N in-flight requests used to count as N consecutive
    failures and open the breaker for breaker_cooldown_s instead of the Retry-After asked for."""
    gated = GatedProvider(io_uv).start()
    try:
        b = mock_uv()
        providers = [{"name": "a", "kind": "local", "base_url": f"http://127.0.0.1:{gated.port}/v1"}, provider("b", b)]
        model = {"name": MODEL, "routes": [route("a", 0.1), route("b", 1.0)], **FAST}
        gw = gateway_uv({"providers": providers, "models": [model]})
        warm_up(gw)
        assert ask(gw).provider == "a"
        gated.limit(6, "0.3")  # twice breaker_failures, all in flight at once
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: ask(gw, f"burst {i}"), range(6)))
        assert [(x.status, x.provider, x.attempts) for x in answers] == [(200, "b", 2)] * 6  # fallback hid them
        gated.ok()
        assert rows(gw)["a"]["breaker"] == "closed"  # one rate-limit event, not six broken requests
        assert wait_for(lambda: rows(gw)["a"]["blocked_for_s"] == 0.0, timeout=2.0)  # ~0.3 s, as asked
        assert ask(gw, "after the retry-after").provider == "a"
    finally:
        gated.close()


# Streams


@pytest.mark.parametrize("fault", ["stream_error_after", "stream_abort_after"])
def test_mid_stream_failure_is_never_a_clean_end(mock_uv: MockFactory, gateway_uv: GatewayFactory, fault: str) -> None:
    mocks = {"a": mock_uv(tokens=12, token_delay_ms=2.0), "b": mock_uv()}
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)]))
    warm_up(gw)
    setattr(mocks["a"].config, fault, 3)
    b_before = mocks["b"].requests

    answer = ask(gw, "a long story", stream=True)
    assert (answer.status, answer.provider) == (200, "a")
    assert answer.body.count(b"data: {") >= 3  # the first tokens got through...
    assert b"[DONE]" not in answer.body  # ...but never a clean end
    assert not answer.complete or b'data: {"error"' in answer.body, answer.body[-300:]

    messages: Any = [{"role": "user", "content": "via the sdk"}]
    sdk = openai.OpenAI(base_url=gw.openai_base, api_key="sk-client", max_retries=0)
    with sdk, pytest.raises(openai.APIError):
        for _ in sdk.chat.completions.create(model=MODEL, messages=messages, stream=True):
            pass
    assert mocks["b"].requests == b_before  # bytes reached the client: no fallback possible


@pytest.mark.parametrize("upstream", ["local", "anthropic"], ids=["relayed", "translated"])
def test_provider_mid_stream_errors_count_against_the_route(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, upstream: str
) -> None:
    """Regression: a 200 stream ended by the provider's own error event (OpenAI `data: {"error"...}`,
    Anthropic `event: error`) used to be recorded as a success, so a route failing every stream looked
    healthy (and fast), never tripped its breaker and kept its traffic."""
    kind = {"local": "openai", "anthropic": "anthropic"}[upstream]
    mocks = {"a": mock_uv(kind=kind, tokens=8), "b": mock_uv()}
    extra = {"api_key": "sk-provider"} if upstream != "local" else {}
    table = config(mocks, [route("a", 0.1), route("b", 1.0)])
    table["providers"][0] = provider("a", mocks["a"], kind=upstream, **extra)
    gw = gateway_uv(table)
    warm_up(gw)
    mocks["a"].config.stream_error_after = 1  # from now on every stream from `a` fails after one token
    answers = ask_many(gw, 8, stream=True)
    assert all(x.status == 200 for x in answers)
    assert [b"[DONE]" in x.body for x in answers[:3]] == [False] * 3  # the clients saw the errors
    row = rows(gw)["a"]
    assert (row["errors"], row["breaker"]) == (3, "open"), row  # breaker_failures of them
    assert [x.provider for x in answers[-4:]] == ["b"] * 4


def test_stream_abort_counts_against_the_route(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    mocks = {"a": mock_uv(tokens=12, stream_abort_after=2), "b": mock_uv()}
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)]))
    ask(gw, "one", stream=True)
    assert wait_for(lambda: rows(gw)["a"]["in_flight"] == 0)
    row = rows(gw)["a"]
    assert row["errors"] == 1 and row["successes"] == 0 and row["consecutive_failures"] == 1


# Hedging


@pytest.mark.parametrize("stream", [False, True])
def test_hedge_beats_a_stalled_route_and_closes_its_connection(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, stream: bool
) -> None:
    mocks = two(mock_uv, ttft_ms=5000.0)  # `a` is listed first, but stalls
    a, b = mocks["a"], mocks["b"]
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], hedge_after_ms=50.0))
    answer = ask(gw, "hedge me", stream=stream)
    assert answer.status == 200 and answer.complete
    assert (answer.provider, answer.attempts) == ("b", 2)  # the hedge answered
    assert orjson.loads(b.last_request.body)["model"] == "b-model"
    if stream:
        assert answer.body.rstrip().endswith(b"data: [DONE]")
    else:
        assert orjson.loads(answer.body)["model"] == "b-model"
    assert a.requests == 1  # the stalled attempt did reach `a`...
    assert wait_for(lambda: a.client_disconnects == 1 and a.open_connections == 0)  # ...and was hung up on
    assert gw.pool(0).open == 0 and gw.pool(0).idle_count == 0  # closed, not pooled with a reply pending
    row = rows(gw)["a"]
    assert row["in_flight"] == 0 and row["errors"] == 0  # cancelled: neither a failure nor a success


def test_hedge_that_fails_leaves_the_first_attempt_running(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    mocks = {"a": mock_uv(ttft_ms=300.0), "b": mock_uv(error_rate=1.0)}
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], hedge_after_ms=30.0))
    answer = ask(gw, "hedge fails")
    assert (answer.status, answer.provider, answer.attempts) == (200, "a", 2)  # the slow first attempt answered
    assert mocks["b"].requests == 1 and mocks["a"].client_disconnects == 0
    r = rows(gw)
    assert (r["a"]["successes"], r["b"]["errors"]) == (1, 1)
    assert r["a"]["in_flight"] == r["b"]["in_flight"] == 0


def test_first_attempt_failing_hands_over_to_the_running_hedge(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    mocks = {"a": mock_uv(ttft_ms=2000.0), "b": mock_uv(ttft_ms=200.0)}
    table = config(mocks, [route("a", 0.1), route("b", 1.0)], hedge_after_ms=30.0)
    table["providers"][0]["first_byte_timeout_s"] = 0.1
    gw = gateway_uv(table)
    # `a` times out at 100 ms while the hedge on `b` (started at 30 ms) still waits for its head
    answer = ask(gw, "handover")
    assert (answer.status, answer.provider, answer.attempts) == (200, "b", 2)
    assert (mocks["a"].requests, mocks["b"].requests) == (1, 1)  # no third attempt
    r = rows(gw)
    assert (r["a"]["errors"], r["b"]["successes"]) == (1, 1)
    assert r["a"]["in_flight"] == r["b"]["in_flight"] == 0


def test_no_hedge_when_the_first_route_answers_in_time(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    mocks = two(mock_uv)
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], hedge_after_ms=2000.0))
    warm_up(gw, 2)
    b_before = mocks["b"].requests
    answers = ask_many(gw, 5)
    assert [(x.provider, x.attempts) for x in answers] == [("a", 1)] * 5
    assert mocks["b"].requests == b_before


# Attempt deadline


def test_attempt_deadline_moves_a_stalled_request_to_the_next_route(
    mock_uv: MockFactory, gateway_uv: GatewayFactory
) -> None:
    """Regression: attempt_deadline_s used to be an exchange deadline that only stopped *new* attempts;
    a stalled attempt held the client until the provider's first_byte_timeout_s (600 s by default)."""
    mocks = two(mock_uv, ttft_ms=1500.0)
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], attempt_deadline_s=0.2))
    answer = ask(gw, "stalled")
    assert (answer.status, answer.provider, answer.attempts) == (200, "b", 2)


# Static strategies


def test_weighted_spreads_traffic_by_weight(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    mocks = {"a": mock_uv(), "b": mock_uv()}
    gw = gateway_uv(config(mocks, [route("a", weight=3), route("b", weight=1)], strategy="weighted"))
    providers = [x.provider for x in ask_many(gw, 40)]
    assert providers.count("a") == 30 and providers.count("b") == 10
    assert max(len(run) for run in "".join(p or "?" for p in providers).split("b")) <= 3  # interleaved, not batched
    assert (mocks["a"].requests, mocks["b"].requests) == (30, 10)


def test_weighted_zero_weight_route_is_only_a_fallback(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    mocks = {"a": mock_uv(), "b": mock_uv()}
    gw = gateway_uv(config(mocks, [route("a", weight=1), route("b", weight=0)], strategy="weighted",
                           breaker_failures=100))  # fmt: skip
    assert [x.provider for x in ask_many(gw, 5)] == ["a"] * 5
    mocks["a"].config.error_rate = 1.0
    assert [(x.status, x.provider, x.attempts) for x in ask_many(gw, 3)] == [(200, "b", 2)] * 3


def test_round_robin_rotates_and_falls_back_in_rotation(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    mocks = {"a": mock_uv(), "b": mock_uv(), "c": mock_uv()}
    gw = gateway_uv(config(mocks, [route("a"), route("b"), route("c")], strategy="round-robin",
                           breaker_failures=100))  # fmt: skip
    assert [x.provider for x in ask_many(gw, 9)] == ["a", "b", "c"] * 3
    mocks["b"].config.error_rate = 1.0
    answers = ask_many(gw, 6)
    assert [x.status for x in answers] == [200] * 6
    # b's turn falls back to the next route in its rotation (c), with a second attempt
    assert [(x.provider, x.attempts) for x in answers] == [("a", 1), ("c", 2), ("c", 1)] * 2


# Every route failing: the status the router's summary gives


def _refused_port() -> tuple[socket.socket, int]:
    placeholder = socket.socket()
    placeholder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    return placeholder, placeholder.getsockname()[1]


@pytest.mark.parametrize(
    "a_options,b_options,status,retry_after",
    [
        ({"error_rate": 1.0}, {"error_rate": 1.0}, 502, None),  # both 500
        ({"error_rate": 1.0, "error_status": 503, "retry_after": 2.0},
         {"error_rate": 1.0, "error_status": 503, "retry_after": 5.0}, 503, "2"),
        ({"ttft_ms": 3000.0}, {"ttft_ms": 3000.0}, 504, None),  # both time out
        ({"error_rate": 1.0, "error_status": 504}, {"ttft_ms": 3000.0}, 504, None),  # a 504 and a timeout
        ({"error_rate": 1.0}, {"ttft_ms": 3000.0}, 502, None),  # mixed: a 500 and a timeout
        ({"error_rate": 1.0, "error_status": 429, "retry_after": 4.0}, {"error_rate": 1.0}, 503, "4"),
    ],
    ids=["all-500", "all-503", "all-timeout", "504-and-timeout", "500-and-timeout", "429-and-500"],
)
def test_every_route_failing_gives_the_summarized_status(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, a_options: dict[str, Any], b_options: dict[str, Any],
    status: int, retry_after: str | None,
) -> None:  # fmt: skip
    mocks = {"a": mock_uv(**a_options), "b": mock_uv(**b_options)}
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], {"first_byte_timeout_s": 0.2}))
    answer = ask(gw)
    assert answer.status == status, answer
    assert answer.headers.get("retry-after") == retry_after
    error = orjson.loads(answer.body)["error"]
    assert "all 2 attempts" in error["message"]
    assert (mocks["a"].requests, mocks["b"].requests) == (1, 1)
    assert all(row["in_flight"] == 0 for row in rows(gw).values())


def test_every_route_refusing_connections_is_a_502(gateway_uv: GatewayFactory) -> None:
    first, port_a = _refused_port()
    second, port_b = _refused_port()
    with first, second:
        table = {
            "providers": [{"name": n, "kind": "local", "base_url": f"http://127.0.0.1:{p}/v1"}
                          for n, p in (("a", port_a), ("b", port_b))],
            "models": [{"name": MODEL, "routes": [route("a", 0.1), route("b", 1.0)], **FAST}],
        }  # fmt: skip
        gw = gateway_uv(table)
        answer = ask(gw)
    assert answer.status == 502, answer
    assert answer.headers.get("x-should-retry") == "false"  # every route was tried already


def test_every_breaker_open_is_a_503_with_retry_after(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    mocks = {"a": mock_uv(error_rate=1.0), "b": mock_uv(error_rate=1.0)}
    gw = gateway_uv(config(mocks, [route("a", 0.1), route("b", 1.0)], breaker_failures=1, breaker_cooldown_s=5.0))
    assert ask(gw).status == 502  # both tried, both tripped
    assert {r["breaker"] for r in rows(gw).values()} == {"open"}
    answer = ask(gw)
    assert answer.status == 503, answer
    assert 4 <= int(answer.headers["retry-after"]) <= 6  # when the first cooldown ends
    assert (mocks["a"].requests, mocks["b"].requests) == (1, 1)  # nothing was sent upstream
