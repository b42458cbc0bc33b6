"""`python -m bench --quick`: it starts every target, measures, reports, and leaves no process behind.

nginx and wrk are system packages. Locally a test that needs them is skipped with the reason; in CI
(`CI` set) it fails instead, so a CI image that lacks them cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from matplotlib.image import imread

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("nginx", "wrk", "taskset")
OURS = (b"nginx", b"-m\x00proxy", b"-m\x00mocks", b"sim.loadgen", b"wrk")


def require_tools() -> None:
    missing = [t for t in TOOLS
               if shutil.which(t) is None and not (t == "nginx" and os.access("/usr/sbin/nginx", os.X_OK))]
    if not missing:
        return
    reason = f"the benchmark needs {', '.join(missing)} (apt-get install nginx wrk util-linux)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must provide them")
    pytest.skip(reason)


def survivors(pids: list[int]) -> list[str]:
    """Those of `pids` still running one of our programs (a reused pid running something else is fine)."""
    out = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(marker in cmdline for marker in OURS):
            out.append(f"{pid}: " + cmdline.replace(b"\x00", b" ").decode(errors="replace"))
    return out


def bench_argv(out: Path) -> list[str]:
    return [sys.executable, "-m", "bench", "--quick", "--out", str(out)]


def test_quick_comparison_measures_every_target_and_stops_them(tmp_path: Path) -> None:
    require_tools()
    proc = subprocess.run(bench_argv(tmp_path), cwd=ROOT, capture_output=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    doc = orjson.loads((tmp_path / "compare.json").read_bytes())

    assert {"direct", "llm-edge", "llm-edge-hit", "nginx"} <= set(doc["targets"])
    for name in ("direct", "llm-edge", "nginx"):
        assert doc["targets"][name]["available"], doc["targets"][name]
        for scenario in ("c1", "c32", "open200", "ttfb"):
            s = doc["summary"][name][scenario]
            assert s["rps"] > 0 and s["errors"] == 0, (name, scenario, s)
        if name != "direct":
            assert doc["summary"][name]["c32"]["cpu_us_per_req"] > 0
            assert doc["targets"][name]["rss_mib"] > 0
    hit = doc["targets"]["llm-edge-hit"]
    assert hit["available"] and not hit["note"], hit  # llm-edge serves cache hits: they must be measured
    assert doc["summary"]["llm-edge-hit"]["c32"]["rps"] > 0 and doc["summary"]["llm-edge-hit"]["c32"]["errors"] == 0
    assert [item["key"] for item in doc["bar"]] == ["added_p50_c1", "added_p99_c1", "rps_c32", "cpu_c32",
                                                    "hit_rps_c32", "streams"]
    assert {r["target"] for r in doc["streams"]["levels"]} >= {"direct", "llm-edge", "nginx"}

    text = proc.stdout.decode()
    assert re.search(r"^\| llm-edge +\| +\d+ \|", text, re.MULTILINE), text
    assert "The bar" in text
    assert imread(tmp_path / "compare.png").shape[1] > 600  # a real PNG, decoded
    assert (tmp_path / "compare.md").read_text().count("| nginx (proxy)") == 2

    pids = [p for group in doc["meta"]["pids"].values() for p in group]
    assert len(pids) >= 6  # upstream nginx (master + worker), mock, two gateways, proxy nginx (master + worker)
    assert survivors(pids) == []


def test_interrupted_comparison_stops_everything(tmp_path: Path) -> None:
    require_tools()
    proc = subprocess.Popen(bench_argv(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids: list[int] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            if b"] started: " in line:
                pids = [int(p) for p in re.findall(rb"\d+", line.split(b"started: ", 1)[1])]
                break
            assert time.monotonic() < deadline
        assert pids, "the benchmark never reported its processes"
        time.sleep(0.5)  # well inside the first measurement
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert survivors(pids) == []
