"""`--scenario` and `--repeat-ratio`: the pure pieces, the load generator's header tracking, and two
end-to-end smoke runs of `python -m sim` (a failover run and a cache run)."""
from __future__ import annotations

import asyncio
import re
import tomllib

import orjson
import pytest

from proxy import config
from sim import loadgen, report, scenario, workload
from sim.results import FROM_CACHE, NO_PROVIDER, Progress, Results
from sim.soak import mix as soak_mix
from sim.stack import DEFAULT_PROVIDERS, Provider, gateway_config
from tests.sim.sim_testing import MISSING, arun, sim

# workload: repeats


def test_repeats_are_deterministic_earlier_and_about_the_ratio() -> None:
    plan = workload.repeats(5000, 0.5, 64, seed=3)
    assert plan == workload.repeats(5000, 0.5, 64, seed=3)
    assert all(src == -1 for src in plan[:64])
    assert all(src <= n - 64 for n, src in enumerate(plan) if src >= 0)  # at least `gap` back
    share = sum(src >= 0 for src in plan) / len(plan)
    assert 0.47 <= share <= 0.53
    assert workload.repeats(100, 0.0, 10) == [-1] * 100
    assert workload.repeats(10, 0.9, 64) == [-1] * 10  # nothing to repeat yet


def test_repeat_workload_copies_earlier_requests_at_temperature_zero() -> None:
    w = workload.Workload(unique=400, repeat_ratio=0.5, repeat_gap=16)
    reqs = workload.build(w, "h:1")
    assert reqs == workload.build(w, "h:1")
    plan = workload.repeats(400, 0.5, 16, seed=w.seed)
    assert all(reqs[n] == reqs[src] for n, src in enumerate(plan) if src >= 0)
    assert len(set(reqs)) == sum(src < 0 for src in plan)  # every new prompt is distinct
    bodies = [orjson.loads(r.split(b"\r\n\r\n", 1)[1]) for r in reqs]
    assert {b["temperature"] for b in bodies} == {0.0}  # deterministic, so a cache may answer
    plain = orjson.loads(workload.build(workload.Workload(unique=1), "h:1")[0].split(b"\r\n\r\n", 1)[1])
    assert "temperature" not in plain  # without repeats the request is as before
    with pytest.raises(ValueError):
        workload.build(workload.Workload(repeat_ratio=1.0), "h:1")


# scenario: schedule and router settings


def test_scenarios_degrade_the_cheapest_provider_between_a_third_and_two_thirds() -> None:
    assert scenario.preferred(DEFAULT_PROVIDERS).name == "local-fast"
    dear_first = (
        Provider("dear", "local", "m", 1.0, 0.0, 5.0, 5.0),
        Provider("cheap", "local", "m", 9.0, 0.0, 1.0, 1.0),
    )
    fail, back = scenario.events("failover", dear_first)
    assert (fail.provider, fail.at, fail.changes["error_rate"]) == ("cheap", 1 / 3, 1.0)
    assert (back.provider, back.at, back.changes) == ("cheap", 2 / 3, {"error_rate": 0.0})
    slow, restored = scenario.events("slowdown", dear_first)
    assert slow.changes == {"ttft_ms": scenario.SLOW_TTFT_MS} and scenario.SLOW_TTFT_MS > scenario.SLA_MS
    assert restored.changes == {"ttft_ms": 9.0}  # back to its own configured TTFT
    assert scenario.events("steady", dear_first) == ()
    with pytest.raises(ValueError):
        scenario.events("meteor", dear_first)


def test_scenario_router_settings_are_a_valid_gateway_config() -> None:
    text = gateway_config("sim-model", DEFAULT_PROVIDERS, [("127.0.0.1", 1), ("127.0.0.1", 2)], scenario.ROUTER)
    table = tomllib.loads(text)
    settings = config.from_table(table, {"SIM_PROVIDER_KEY": "sk-x"})
    router = settings.models["sim-model"].router
    assert router.sla_ms == scenario.SLA_MS and router.breaker_failures == 3
    assert router.breaker_cooldown_max_s <= 1.0  # a recovered provider is probed again within a second
    assert "sla_ms" not in gateway_config("m", DEFAULT_PROVIDERS, [("h", 1), ("h", 2)])  # plain runs unchanged


def test_driver_fires_each_event_once_in_order() -> None:
    applied: list[tuple[str, dict[str, object]]] = []
    events = scenario.events("failover", DEFAULT_PROVIDERS)
    d = scenario.Driver("failover", events, lambda name, changes: applied.append((name, changes)), duration=6.0)
    ticks = [Progress(t, int(t * 100), int(t * 100), 0, 1, 100.0) for t in (0.5, 1.9, 2.05, 2.1, 4.2, 5.9)]
    fired = [d.tick(p) for p in ticks]
    assert [len(f) for f in fired] == [0, 0, 1, 0, 1, 0]
    assert applied == [("local-fast", {"error_rate": 1.0, "error_status": 500}), ("local-fast", {"error_rate": 0.0})]
    assert [e["at_s"] for e in d.describe()["events"]] == [2.05, 4.2]
    by_count = scenario.Driver("x", events, lambda *_: None, requests=300)
    assert len(by_count.tick(Progress(9.0, 250, 250, 0, 0, 0.0))) == 2  # both due at once: both fire, in order


# report: timeline and cache


def tracked_results(elapsed: float = 1.0) -> Results:
    r = Results(mode="open", requests=100, ok=97, errors=3, elapsed_s=elapsed)
    for b in range(10):
        r.timeline[b] = {"a": 9, "b": 1} if b < 5 else {"b": 10}
    r.timeline[10] = {"b": 1}  # finished after the nominal end
    r.timeline_errors = {2: 2, 7: 1}
    return r


def test_timeline_slices_shares_and_errors() -> None:
    rows = report.timeline(tracked_results(1.0))
    assert len(rows) == 10 and rows[0]["from_s"] == 0.0 and rows[-1]["to_s"] == 1.0
    assert rows[0]["providers"] == {"a": 9, "b": 1} and rows[0]["shares"] == {"a": 0.9, "b": 0.1}
    assert rows[7]["providers"] == {"a": 0, "b": 10} and rows[7]["errors"] == 1
    assert rows[-1]["providers"]["b"] == 11  # the late answer is in the last slice
    assert sum(row["errors"] for row in rows) == 3
    two_s = report.timeline(tracked_results(2.0))  # 20 buckets: 10 slices of 2
    assert len(two_s) == 10 and two_s[1]["from_s"] == 0.2 and two_s[0]["providers"] == {"a": 18, "b": 2}
    short = report.timeline(tracked_results(0.3))  # shorter than 10 buckets: one slice per bucket
    assert len(short) == 3 and short[-1]["providers"]["b"] == 3 * 1 + 5 * 10 + 1  # buckets 2-10
    assert report.timeline(Results(mode="closed")) == []


def test_text_report_for_a_tracked_scenario_run() -> None:
    r = tracked_results()
    r.cache = {"HIT": 40, "MISS": 60}
    for kind, us in (("HIT", 800), ("MISS", 4000)):
        r.cache_latency[kind] = h = type(r.latency)()
        h.record(us)
    run = {"mode": "open", "rate": 100.0, "connections": 8, "stream": False, "track": True, "repeat_ratio": 0.4}
    rep = report.build(r, None, run)
    rep["scenario"] = {"name": "failover", "events": [
        {"at_s": 0.33, "provider": "a", "label": "fails", "changes": {"error_rate": 1.0}}]}  # fmt: skip
    lines = report.format_text(rep).splitlines()
    for expected in [
        "Scenario: failover", "Event at 0.33s: a fails (error_rate=1)", "Client Errors: 3",
        "Slice 0.0-0.1s: a 9 (90%), b 1 (10%), errors 0", "Slice 0.7-0.8s: a 0 (0%), b 10 (100%), errors 1",
        "Cache Hit Rate: 40.0% (HIT 40, MISS 60)", "Cache HIT latency p50/p99: 800 / 800 µs",
        "Cache MISS latency p50/p99: 4000 / 4000 µs",
    ]:
        assert expected in lines, (expected, lines)
    assert rep["answers_by_provider"] == {"a": 45, "b": 56}
    again = orjson.loads(orjson.dumps(rep))
    assert again["cache"]["hit_rate"] == 0.4 and again["timeline"][0]["shares"]["a"] == 0.9


def test_no_cache_header_is_reported_as_zero_hits() -> None:
    r = tracked_results()
    rep = report.build(r, None, {"mode": "closed", "concurrency": 4, "track": True, "repeat_ratio": 0.5})
    assert rep["cache"]["hits"] == 0 and rep["cache"]["header_seen"] is False
    assert report.NO_CACHE_HEADER in report.format_text(rep).splitlines()
    plain = report.build(r, None, {"mode": "closed", "concurrency": 4, "track": True, "repeat_ratio": 0.0})
    assert "cache" not in report.format_text(plain).lower()  # nothing asked, nothing seen: no cache lines


def test_tracked_results_round_trip_and_merge() -> None:
    r = tracked_results()
    r.cache = {"HIT": 2}
    r.cache_latency["HIT"] = h = type(r.latency)()
    h.record(1234)
    back = Results.from_dict(orjson.loads(orjson.dumps(r.to_dict())))
    assert back.timeline == r.timeline and back.timeline_errors == r.timeline_errors
    assert back.cache == {"HIT": 2} and back.cache_latency["HIT"].max == 1234
    m = loadgen.merge([r, back])
    assert m.timeline[0] == {"a": 18, "b": 2} and m.timeline_errors == {2: 4, 7: 2}
    assert m.cache == {"HIT": 4} and m.cache_latency["HIT"].n == 2
    older = {k: v for k, v in Results(mode="closed").to_dict().items() if k not in ("timeline", "cache")}
    old = Results.from_dict(older)
    assert old.timeline == {} and old.cache == {}  # results from an older load process still load


# the load generator: counting headers per response


async def header_server() -> tuple[asyncio.Server, int]:
    """GET /p/NAME answers with x-llm-edge-provider: NAME; /hit with x-cache: HIT only; /miss/NAME with
    both (MISS); /fail with a 502 and a provider header."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                status, extra = b"200 OK", b""
                if path.startswith(b"/p/"):
                    extra = b"x-llm-edge-provider: " + path[3:] + b"\r\n"
                elif path == b"/hit":
                    extra = b"x-cache: HIT\r\n"
                elif path.startswith(b"/miss/"):
                    extra = b"x-llm-edge-provider: " + path[6:] + b"\r\nx-cache: MISS\r\n"
                elif path == b"/fail":
                    status, extra = b"502 Bad Gateway", b"x-llm-edge-provider: p\r\n"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n" + extra + b"\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def tracked_load(paths: list[str], track: bool) -> Results:
    server, port = await header_server()
    try:
        payloads = [loadgen.request_bytes("GET", p, "127.0.0.1") for p in paths]
        return await loadgen.run_async(loadgen.LoadSpec("127.0.0.1", port, payloads, requests=60, concurrency=2,
                                                        track=track))  # fmt: skip
    finally:
        server.close()
        await server.wait_closed()


def test_loadgen_counts_providers_cache_outcomes_and_errors_per_response() -> None:
    paths = ["/p/alpha", "/p/alpha", "/miss/beta", "/hit", "/fail", "/plain"]
    r = arun(lambda: tracked_load(paths, track=True))
    totals: dict[str, int] = {}
    for per in r.timeline.values():
        for name, n in per.items():
            totals[name] = totals.get(name, 0) + n
    assert totals == {"alpha": 20, "beta": 10, FROM_CACHE: 10, NO_PROVIDER: 10}
    assert sum(r.timeline_errors.values()) == 10 == r.errors  # the 502s, whoever sent them
    assert r.cache == {"MISS": 10, "HIT": 10}
    assert r.cache_latency["HIT"].n == 10 and r.cache_latency["MISS"].n == 10
    untracked = arun(lambda: tracked_load(paths, track=False))
    assert untracked.timeline == {} and untracked.cache == {} and untracked.ok == 50


def test_track_flag_reaches_the_load_process() -> None:
    spec = loadgen.LoadSpec("127.0.0.1", 1, [b"x"], requests=1, track=True)
    assert "--track" in loadgen.spec_argv(spec)
    assert "--track" not in loadgen.spec_argv(loadgen.LoadSpec("127.0.0.1", 1, [b"x"], requests=1))


# python -m sim, end to end

pytestmark_e2e = pytest.mark.skipif(bool(MISSING), reason="needs the real gateway and mock providers")


@pytestmark_e2e
@pytest.mark.timeout(90)
def test_failover_scenario_hides_the_failing_provider_from_clients() -> None:
    done, elapsed = sim("--scenario", "failover", "--json", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    rep = orjson.loads(done.stdout)
    assert rep["errors"] == 0 and rep["client_errors"] == 0 and rep["success"] == rep["total_requests"] > 0
    answers = rep["answers_by_provider"]
    assert answers.get("local-fast", 0) > 0 and answers.get("cloud-pricier", 0) > 0  # both providers served
    fail, back = rep["scenario"]["events"]
    assert (fail["provider"], back["provider"]) == ("local-fast", "local-fast")
    assert fail["at_fraction"] == pytest.approx(1 / 3, abs=0.05)
    assert back["at_fraction"] == pytest.approx(2 / 3, abs=0.05)

    def share(row: dict[str, object]) -> float:
        return row["shares"].get("local-fast", 0.0)  # type: ignore[attr-defined, no-any-return]

    rows = rep["timeline"]
    before = [r for r in rows if r["to_s"] <= fail["at_s"]]
    failing = [r for r in rows if r["from_s"] >= fail["at_s"] + 0.3 and r["to_s"] <= back["at_s"]]
    assert before and failing
    assert all(share(r) > 0.8 for r in before)  # preferred while healthy
    assert all(share(r) < 0.05 for r in failing)  # its breaker is open: the other provider serves
    assert share(rows[-1]) > 0.8  # recovered: half-open probes noticed and it won traffic back
    route = next(p for p in rep["providers"] if p["name"] == "local-fast")
    assert route["errors"] > 0  # the gateway did see the 500s; the clients did not
    assert elapsed < 15


@pytestmark_e2e
@pytest.mark.timeout(90)
def test_repeat_ratio_reports_the_cache_hit_rate() -> None:
    done, _ = sim("--repeat-ratio", "0.5", "--requests", "2000", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    hit_rate = [line for line in lines if line.startswith("Cache Hit Rate: ")]
    if not hit_rate:  # a gateway without the response cache
        assert report.NO_CACHE_HEADER in lines
        return
    rate = float(re.match(r"Cache Hit Rate: ([\d.]+)%", hit_rate[0]).group(1))  # type: ignore[union-attr]
    assert 35.0 <= rate <= 55.0, hit_rate  # about the repeated share (a few repeats race their original)
    assert any(line.startswith("Cache HIT latency p50/p99: ") for line in lines)
    assert any(line.startswith("Cache MISS latency p50/p99: ") for line in lines)
    assert any(line.startswith("Slice ") and FROM_CACHE in line for line in lines)  # hits answered by the gateway


@pytest.mark.parametrize("providers", [DEFAULT_PROVIDERS, soak_mix.PROVIDERS], ids=["sim", "soak"])
def test_provider_names_tell_the_truth(providers: tuple[Provider, ...]) -> None:
    """A name that says cheap, pricier, fast or slow must be so against the other providers."""

    def price(p: Provider) -> float:
        return p.input_per_mtok + p.output_per_mtok

    words = {"cheap": (price, min), "pricier": (price, max), "costly": (price, max), "fast": (lambda p: p.ttft_ms, min),
             "slow": (lambda p: p.ttft_ms, max)}  # fmt: skip
    claims = 0
    for p in providers:
        for word in p.name.split("-"):
            if word in words:
                key, best = words[word]
                others = [key(q) for q in providers if q is not p]
                assert key(p) == best([key(p), *others]) and key(p) not in others, (p.name, word)
                claims += 1
    assert claims >= 2  # both names say something checkable
    assert scenario.preferred(providers).name == "local-fast"  # the cheaper one, as its name says
