"""The benchmark's pure parts: the plot, wrk script, traffic, /proc readers, medians, ratios, the bar."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from matplotlib.image import imread

from bench import plot, procstat, report, traffic, wrk
from bench.measure import Measurer, scenarios
from bench.rounds import planned_s
from bench.settings import Settings
from bench.targets import Fleet, Target


def test_plot_draws_every_scenario_and_the_ladder(tmp_path: Path) -> None:
    pts = [[p, 10.0 + p] for p in wrk.PERCENTILES]
    summary = {name: {sc: {"percentiles": pts, "answered_rounds": 1} for sc in ("c1", "c32", "open500")}
               for name in ("direct", "nginx")}  # fmt: skip
    levels = [{"target": t, "streams": n, "stream_ms": {"p50": 900.0, "p99": 1000.0 + n + (500 if t == "nginx" else 0)},
               "held": not (t == "nginx" and n == 200)} for n in (100, 200) for t in ("direct", "nginx")]  # fmt: skip
    doc = {
        "summary": summary,
        "targets": {"direct": {"label": "direct", "available": True}, "nginx": {"label": "nginx", "available": True},
                    "litellm": {"label": "LiteLLM", "available": False}},
        "meta": {"settings": {"rates": [500.0], "rounds": 3}, "started": "today", "machine": {"cpu": "cpu"}},
        "streams": {"levels": levels},
    }  # fmt: skip
    fig = plot.figure(doc)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["c=1, wrk: serial latency", "c=32, wrk: saturation", "open loop, 500 req/s (sim.loadgen)",
                      "streams ladder: p99 stream time per level"]  # fmt: skip
    latency = fig.axes[0]
    assert [line.get_label() for line in latency.get_lines()] == ["direct", "nginx"]  # not the unavailable LiteLLM
    assert latency.get_yscale() == "log" and [t.get_text() for t in latency.get_xticklabels()][:3] == ["50", "90", "99"]
    ladder = fig.axes[3]
    assert [line.get_label() for line in ladder.get_lines()][:2] == ["direct", "nginx"]
    assert len(ladder.get_lines()) == 3  # the cross on nginx's level that was not held
    path = plot.save(fig, tmp_path / "p.png")
    height, width, _ = imread(path).shape  # a real PNG that decodes
    assert (width, height) == (1400, 900)
    assert plot.nines(90.0) == pytest.approx(1.0) and plot.nines(99.9) == pytest.approx(3.0)


def test_lua_string_escapes_what_lua_would_mangle() -> None:
    assert wrk.lua_string(b'a"b\\c\r\n\x00') == '"a\\"b\\\\c\\013\\010\\000"'


def test_wrk_script_unique_bodies_keep_a_fixed_content_length() -> None:
    body = traffic.miss_template("n1", 300)
    script = wrk.script("h:1", "/v1/chat/completions", body, True, [("authorization", "Bearer k")])
    length = len(body) - len(b"%COUNTER%") + wrk.COUNTER_DIGITS
    assert f"content-length: {length}\\013\\010" in script and "authorization: Bearer k" in script
    assert 'string.format("%010d", n)' in script and "done = function" in script
    fixed = wrk.script("h:1", "/p", traffic.hit_body(300), False)
    assert "local fixed" in fixed and "%010d" not in fixed
    with pytest.raises(ValueError):
        wrk.script("h:1", "/p", b"{}", True)


def test_traffic_bodies() -> None:
    misses = traffic.json_bodies("abc", 1024, 3, hit=False)
    assert len(set(misses)) == 3 and all(abs(len(b) - 1024) < 40 for b in misses)
    doc = orjson.loads(misses[0])
    assert doc["model"] == "bench" and doc["temperature"] == 0 and "stream" not in doc
    assert len(set(traffic.json_bodies("abc", 1024, 3, hit=True))) == 1
    streams = traffic.stream_bodies("abc", 200, 2)
    assert orjson.loads(streams[0])["stream"] is True and streams[0] != streams[1]
    req = traffic.requests_for("127.0.0.1", 9, misses[:1], "k")[0]
    assert req.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:9\r\n")
    assert b"authorization: Bearer k" in req


def test_procstat_reads_this_process() -> None:
    me = os.getpid()
    assert me in procstat.tree(me)
    meter = procstat.Meter(me, load_cpu=min(os.sched_getaffinity(0))).start()
    sum(i * i for i in range(300_000))
    cpu, busy = meter.stop()
    assert cpu > 0 and 0 <= busy <= 1.0 and meter.elapsed > 0
    rss, hwm = procstat.memory_kib([me])
    assert 0 < rss <= hwm


def run(target: str, scenario: str, rnd: int, p50: float, p99: float, rps: float = 1000.0,
        cpu: float | None = 10.0) -> dict[str, Any]:  # fmt: skip
    lat = {"p50": p50, "p90": p50, "p99": p99, "p99.9": p99}
    return {"target": target, "scenario": scenario, "round": rnd, "rps": rps, "requests": 100, "ok": 100, "errors": 0,
            "latency_us": lat,
            "percentiles": [[50.0, p50], [99.0, p99]], "cpu_us_per_req": cpu, "upstream_cpu_us_per_req": 5.0,
            "load_core_busy": 0.5}  # fmt: skip


def test_added_latency_is_the_median_of_same_round_differences() -> None:
    runs = [
        run("direct", "c1", 0, 10, 20), run("nginx", "c1", 0, 40, 80), run("llm-edge", "c1", 0, 70, 150),
        run("direct", "c1", 1, 100, 200), run("nginx", "c1", 1, 130, 260), run("llm-edge", "c1", 1, 160, 330),
        run("direct", "c1", 2, 12, 22), run("nginx", "c1", 2, 42, 82), run("llm-edge", "c1", 2, 72, 152),
        run("nginx", "c1", -1, 1e6, 1e6),  # warm-up runs (round -1) never count
    ]  # fmt: skip
    s = report.summarize(runs)
    assert s["nginx"]["c1"]["added_us"]["p50"] == 30 and s["llm-edge"]["c1"]["added_us"]["p50"] == 60
    assert s["llm-edge"]["c1"]["added_us"]["p99"] == 130 and s["llm-edge"]["c1"]["rounds"] == 3
    assert s["llm-edge"]["c1"]["latency_us"]["p50"] == 72  # a plain median over rounds
    assert report.ratios(s, "llm-edge")["added_p50_c1"] == 2.0


def test_unanswered_and_skipped_runs_give_no_figures() -> None:
    dead = {**run("litellm", "c1", 1, 0, 0), "ok": 0, "requests": 0, "errors": 0}
    runs = [run("direct", "c1", 0, 10, 20), run("direct", "c1", 1, 10, 20), run("litellm", "c1", 0, 5000, 9000), dead,
            {"target": "litellm", "scenario": "open2000", "round": 0, "skipped": "over capacity (35 req/s at c=32)"}]
    s = report.summarize(runs)
    assert s["litellm"]["c1"]["latency_us"]["p50"] == 5000 and s["litellm"]["c1"]["added_us"]["p50"] == 4990
    assert s["litellm"]["c1"]["answered_rounds"] == 1 and s["litellm"]["c1"]["rounds"] == 2
    assert s["litellm"]["open2000"] == {"skipped": "over capacity (35 req/s at c=32)"}
    assert report._status(s, "litellm", "open2000") == "over capacity" and report._status(s, "litellm", "c1") is None


def test_bar_verdicts_and_shortfalls() -> None:
    runs = [run("direct", "c1", 0, 10, 20), run("nginx", "c1", 0, 40, 80), run("llm-edge", "c1", 0, 50, 200),
            run("nginx", "c32", 0, 500, 900, rps=30000, cpu=16.0),
            run("llm-edge", "c32", 0, 900, 2000, rps=15000, cpu=30.0),
            run("llm-edge-hit", "c32", 0, 400, 700, rps=33000, cpu=9.0)]  # fmt: skip
    s = report.summarize(runs)
    targets = {"llm-edge-hit": {"available": True, "note": ""}}
    ladder = {"settings": {"levels": [500, 1000, 2000, 3000]}, "held": {"llm-edge": 1000}}
    items = {i["key"]: i for i in report.bar(s, ladder, targets)}
    assert items["added_p50_c1"]["ok"] is True and items["added_p50_c1"]["value"] == pytest.approx(40 / 30, abs=1e-3)
    assert items["added_p99_c1"]["ok"] is False and "180 µs against nginx's 60" in items["added_p99_c1"]["note"]
    assert items["rps_c32"]["ok"] is False and "needs 18000" in items["rps_c32"]["note"]
    assert items["cpu_c32"]["ok"] is False and "30.0 µs/req against nginx's 16.0" in items["cpu_c32"]["note"]
    assert items["hit_rps_c32"]["ok"] is True
    assert items["streams"]["ok"] is False and "1000 short" in items["streams"]["note"]
    items = {i["key"]: i for i in report.bar(s, {}, {"llm-edge-hit": {"available": False, "note": "n/a: no hits"}})}
    assert items["hit_rps_c32"]["ok"] is None and items["hit_rps_c32"]["note"] == "n/a: no hits"


def test_write_md_replaces_only_the_results_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## Notes\nkept\n")
    monkeypatch.setattr(report, "markdown", lambda doc, png: f"new results, plot at {png}\n")
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG any bytes: write_md only copies the file")
    report.write_md(md, {}, png, tmp_path / "plots" / "latest.png")
    text = md.read_text()
    assert "old" not in text and "intro" in text and "## Notes\nkept" in text
    assert f"{report.BEGIN}\nnew results, plot at plots/latest.png\n{report.END}" in text
    assert (tmp_path / "plots" / "latest.png").read_bytes() == png.read_bytes()


def test_scenarios_and_the_planned_time_of_a_comparison() -> None:
    s = Settings(rounds=2, duration=2, open_duration=1.5, rates=(500.0,), stream_levels=(10, 20), stream_duration=3.0,
                 warmup=False)  # fmt: skip
    assert [sc.key for sc in scenarios(s)] == ["c1", "c32", "open500", "ttfb"]
    fleet = Fleet(s)
    try:
        fleet.targets = [Target("direct", "direct", ("", 0), ("", 0)), Target("nginx", "nginx", ("", 0), ("", 0)),
                         Target("llm-edge-hit", "hits", ("", 0), ("", 0), hit=True),
                         Target("litellm", "LiteLLM", ("", 0), ("", 0), note="n/a")]  # fmt: skip
        per_round = 2 * (2 + 2 + 1.5) + 2 + 2 + 1.5 + 1.5 * 2  # two targets on all four, hits on all but ttfb
        ladder = 2 * 2 * 3.0  # two levels, direct and nginx (no hits, no n/a target)
        assert planned_s(Measurer(fleet)) == 2 * per_round + ladder
    finally:
        fleet.close()
