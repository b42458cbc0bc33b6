# bench/wrk.py: closed-loop load with wrk, one run at a time, results as a plain dict.
#
# Rules: wrk runs pinned (taskset) in its own session; the caller keeps the Popen in `live` while it
# runs, so an interrupted comparison can stop it by pid. Every request goes through the script's
# request() function, for every target alike: a miss-path run makes each body unique (a zero-padded
# counter, so the precomputed head and its content-length never change), a cache-hit run repeats one
# request. The script's done() prints one `BENCH {json}` line: counts, errors, and the latency at
# fixed percentiles (µs), which is all the report and the plot need.
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

# Percentiles wrk reports for each run (the plot draws through them).
PERCENTILES = (1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99)
COUNTER_DIGITS = 10


class WrkError(RuntimeError):
    """wrk failed, or printed no result line."""


def wrk_binary() -> str | None:
    """The wrk executable, or None."""
    return shutil.which("wrk")


def wrk_version() -> str:
    """wrk's version line, e.g. `wrk debian/4.1.0-3+b2 [epoll]`, or ""."""
    binary = wrk_binary()
    if binary is None:
        return ""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0].strip() if first else ""


def lua_string(value: bytes) -> str:
    """A Lua double-quoted literal of `value` (long brackets would turn CRLF into LF)."""
    out = ['"']
    for b in value:
        if b == 0x22 or b == 0x5C:
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    out.append('"')
    return "".join(out)


def script(host: str, path: str, body: bytes, unique: bool, headers: Sequence[tuple[str, str]] = ()) -> str:
    """The Lua script for one kind of traffic. `body` holds `%COUNTER%` where a unique run puts its counter."""
    marker = b"%COUNTER%"
    if unique:
        prefix, found, suffix = body.partition(marker)
        if not found:
            raise ValueError("a unique-body run needs %COUNTER% in the body")
        length = len(prefix) + COUNTER_DIGITS + len(suffix)
    else:
        prefix, suffix = body.replace(marker, b"0" * COUNTER_DIGITS), b""
        length = len(prefix)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {length}\r\n\r\n"
    ).encode("latin-1")
    if unique:
        request = (
            f"local head = {lua_string(head + prefix)}\nlocal suffix = {lua_string(suffix)}\nlocal n = 0\n"
            f'request = function()\n  n = n + 1\n'
            f'  return head .. string.format("%0{COUNTER_DIGITS}d", n) .. suffix\nend\n'
        )
    else:
        request = f"local fixed = {lua_string(head + prefix)}\nrequest = function()\n  return fixed\nend\n"
    plist = ", ".join(repr(p) for p in PERCENTILES)
    done = f"""
local P = {{{plist}}}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {{"requests":%d,"duration_us":%d,"bytes":%d,',
    summary.requests, summary.duration, summary.bytes))
  io.write(string.format('"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},',
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format('"min":%d,"max":%d,"mean":%.1f,"percentiles":[', latency.min, latency.max, latency.mean))
  for i, p in ipairs(P) do
    io.write(string.format('%s[%s,%d]', i > 1 and "," or "", tostring(p), latency:percentile(p)))
  end
  io.write("]}}\\n")
end
"""
    return "-- written by bench/wrk.py\n" + request + done


def run(
    script_path: Path,
    url: str,
    connections: int,
    duration_s: int,
    cpu: int | None,
    live: list[subprocess.Popen[bytes]],
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """One wrk run (one thread, `connections` connections); returns the parsed BENCH line plus `rps`."""
    binary = wrk_binary()
    if binary is None:
        raise WrkError("wrk is not installed")
    argv: Sequence[str] = [
        binary, "-t1", f"-c{connections}", f"-d{max(1, int(duration_s))}s", f"--timeout={timeout_s:g}s",
        "-s", str(script_path), url,
    ]  # fmt: skip
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    live.append(proc)
    try:
        out, err = proc.communicate(timeout=duration_s + timeout_s + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        live.remove(proc)
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("BENCH "):
            result: dict[str, Any] = orjson.loads(line[6:])
            seconds = result["duration_us"] / 1e6
            result["rps"] = result["requests"] / seconds if seconds > 0 else 0.0
            result["latency_us"] = {f"p{p:g}": float(v) for p, v in result["percentiles"]}
            return result
    raise WrkError(f"wrk exited with {proc.returncode} and no result: {err.decode('utf-8', 'replace')[-500:]}")
