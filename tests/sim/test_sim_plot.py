"""sim/plot.py and `python -m sim --plot`: the panels, the data behind them, and a real PNG."""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from matplotlib.image import imread

from sim import plot, plotting, report
from sim.results import Results
from tests.sim.sim_testing import env, reap

METRICS = """# HELP llm_edge_overhead_seconds The gateway's own share.
# TYPE llm_edge_overhead_seconds histogram
llm_edge_overhead_seconds_bucket{le="1e-05"} 0
llm_edge_overhead_seconds_bucket{le="0.0001"} 60
llm_edge_overhead_seconds_bucket{le="0.001"} 98
llm_edge_overhead_seconds_bucket{le="0.01"} 100
llm_edge_overhead_seconds_bucket{le="0.1"} 100
llm_edge_overhead_seconds_bucket{le="+Inf"} 100
llm_edge_overhead_seconds_bucket{worker="2",le="0.0001"} 5
llm_edge_overhead_seconds_count 100
"""


def failover_results() -> Results:
    """Three seconds at 100 answers a second: a takes nine in ten, then none from 1 s to 2 s, then again."""
    r = Results(mode="open", requests=300, ok=300, elapsed_s=3.0)
    for b in range(30):
        r.timeline[b] = {"a": 9, "b": 1} if not 10 <= b < 20 else {"b": 10}
    for us in range(1000, 31000, 100):
        r.latency.record(us)
    return r


def run_of(name: str, results: Results, events: list[dict[str, object]] | None = None) -> plot.PlotRun:
    rep = report.build(results, {"routes": [{"provider": "a", "requests": 200, "spend_usd": 0.5},
                                            {"provider": "b", "requests": 100, "spend_usd": 0.75}],
                                 "overhead_us": {"p50": 80.0, "p90": 150.0, "p99": 900.0}},
                       {"mode": "open", "track": True})  # fmt: skip
    if events is not None:
        rep["scenario"] = {"name": name, "events": events}
    return plot.PlotRun(name, rep, results, plot.overhead_buckets(METRICS), {"a": (0.1, 0.4), "b": (0.15, 0.6)})


def test_overhead_buckets_are_read_from_the_metrics_text() -> None:
    assert plot.overhead_buckets(METRICS) == [(10.0, 0), (100.0, 65), (1000.0, 98), (10000.0, 100), (100000.0, 100)]
    assert plot.overhead_buckets("llm_edge_requests_total 3\n") == []


def test_shares_over_time_switch_and_switch_back() -> None:
    times, series = plot.shares_over_time(failover_results(), smooth=1)
    assert set(series) == {"a", "b"} and len(times) == 30 and times[0] == pytest.approx(0.05)
    assert series["a"][0] == pytest.approx(0.9) and series["a"][15] == 0.0 and series["a"][25] == pytest.approx(0.9)
    assert all(a + b == pytest.approx(1.0) for a, b in zip(series["a"], series["b"]))
    assert plot.shares_over_time(Results(mode="closed")) == ([], {})


def test_the_figure_has_every_panel(tmp_path: Path) -> None:
    events = [{"at_s": 1.0, "provider": "a", "label": "fails"}, {"at_s": 2.0, "provider": "a", "label": "recovers"}]
    main = run_of("this run", failover_results())
    scen = [run_of("failover scenario", failover_results(), events), run_of("slowdown scenario", failover_results(),
                                                                            events)]  # fmt: skip
    fig = plot.figure(main, scen)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["(a) client latency distribution", "(b) the gateway's own overhead per request",
                      "(c) provider share over time: this run", "(d) cost per provider",
                      "(c) provider share over time: failover scenario",
                      "(c) provider share over time: slowdown scenario"]  # fmt: skip
    latency, overhead, _, cost, failover, _ = fig.axes
    assert latency.get_yscale() == "log" and latency.get_lines()[0].get_label() == "every answer (300)"
    assert [t.get_text() for t in overhead.get_xticklabels()] == ["50", "90", "99", "99.9", "99.99"]
    step = overhead.get_lines()[0]
    assert list(step.get_ydata()) == [100.0, 1000.0, 10000.0]  # stops at the first bound holding every request
    assert [p.get_height() for p in cost.patches] == [0.5, 0.75]
    assert "$0.15 in / $0.6 out per Mtok" in cost.texts[1].get_text().replace("\\$", "$")
    assert len(failover.collections) == 2  # one band per provider
    assert [line.get_xdata()[0] for line in failover.get_lines()] == [1.0, 2.0]  # the moments marked
    path = plotting.save(fig, tmp_path / "sim.png")
    height, width, _ = imread(path).shape  # a real PNG that decodes
    assert (width, height) == (1400, 1320)


@pytest.mark.timeout(120)
def test_python_m_sim_plot_writes_a_png(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    out = tmp_path / "plots" / "sim.png"
    try:
        done = subprocess.run([sys.executable, "-m", "sim", "--scenario", "failover", "--duration", "3", "--rate",
                               "300", "--plot", str(out), "--json"], capture_output=True, text=True, timeout=100,
                              env=env(marker), cwd="/", check=False)  # fmt: skip
    finally:
        left = reap(marker)
    assert left == []
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("{")  # stdout stays the one report
    assert f"wrote {out}" in done.stderr
    assert imread(out).shape[1] == 1400  # (a), (b), (c) for this scenario run, (d): two columns


def test_plot_is_refused_with_the_soak() -> None:
    from sim.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--soak", "1", "--plot", "x.png"])
    assert parse_args(["--plot", "x.png"]).plot == Path("x.png")
