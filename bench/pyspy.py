# bench/pyspy.py: where llm-edge's time goes under load, by sampling it with py-spy.
#
# py-spy attaches to the running gateway by pid (no restart, no code change) and samples it while
# it is busy (idle samples, the loop waiting in epoll, are dropped by py-spy). It pauses the process
# for each sample (a few µs at 250 Hz, well under 1% of its time): --nonblocking reads a running
# process and gave torn stacks that credited cheap functions with 10% of the time. Samples are aggregated
# by function. Time spent in uvloop's C code or in the kernel shows as the own time of the Python
# frame that called into it (the loop's run_forever, transport.write); with `native=True` py-spy
# resolves those C frames too. The raw file is "frame;frame;... count" per line; we rank functions
# by own time (last frame) and by time including callees (any frame).
from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 250  # samples per second: enough for a ranking in ten seconds, cheap for the sampled process


class ProfileError(RuntimeError):
    """py-spy is missing or could not attach."""


def start(pid: int, out: Path, seconds: float, cpu: int | None, native: bool = False) -> subprocess.Popen[bytes]:
    """Start `py-spy record` on `pid` for `seconds`, writing raw stacks to `out`; returns the Popen."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise ProfileError("py-spy is not installed (pip install py-spy)")
    argv = [binary, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate", str(RATE),
            "--duration", str(max(1, int(seconds))), "--function"]  # fmt: skip
    if native:
        argv.append("--native")
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _short(frame: str) -> str:
    # "handle (proxy/pipeline.py:55)" stays as it is; site-packages paths are shortened by py-spy.
    return frame.strip()


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    """Rank functions by own and inclusive share of the samples in a raw py-spy file."""
    if not path.exists():
        return {"error": f"py-spy wrote no {path.name}"}
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text("utf-8", "replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    if not samples:
        return {"error": "no samples (was the gateway busy?)", "samples": 0}
    return {
        "samples": samples,
        "rate": RATE,
        "file": path.name,
        "self": [(f, round(100.0 * n / samples, 1)) for f, n in own.most_common(top)],
        "total": [(f, round(100.0 * n / samples, 1)) for f, n in total.most_common(top)],
    }
