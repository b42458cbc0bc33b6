# bench/compare.py: `python -m bench`, llm-edge side by side with a direct call, nginx and LiteLLM.
#
# Phases: parse options -> start the upstreams and the targets (bench/targets.py) -> check each
# answers (and whether llm-edge serves cache hits yet) -> warm up -> R interleaved rounds of every
# scenario on every target (bench/rounds.py; each run measured by bench/measure.py) -> the streaming
# ladder (bench/streams.py) -> optional py-spy profile -> stop everything by pid -> medians, ratios,
# the bar (bench/report.py) -> table on stdout, JSON, PNG (bench/plot.py, when matplotlib is
# installed or --plot asks) and Markdown (+ BENCHMARKS.md with --write-md).
# Exit status: 0 done, 1 a required target misbehaved (errors), 2 could not start, 130/143 interrupted.
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

if __name__ == "__main__" and not __package__:  # `python bench/compare.py`: the checkout's packages, not bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import plot, report, servers, streams, wrk
from bench.measure import Measurer
from bench.rounds import Rounds
from bench.settings import Settings
from bench.targets import REQUIRED, Fleet
from sim import procs
from sim.progressbar import ProgressBar, wanted


def parse_args(argv: list[str] | None = None) -> Settings:
    """Parse and check the command line."""
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Start llm-edge, nginx and a direct path to one upstream, load them in turn, compare.",
    )
    p.add_argument("--quick", action="store_true", help="a few seconds in total: one short round (smoke test)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="interleaved repetitions (default %(default)s)")
    p.add_argument("--duration", type=int, default=d.duration, help="seconds per wrk run (default %(default)s)")
    p.add_argument("--open-duration", type=float, default=d.open_duration, help="seconds per open-loop/TTFB run")
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in d.rates), help="open-loop rates, req/s")
    p.add_argument("--body-bytes", type=int, default=d.body_bytes, help="request body size (default %(default)s)")
    p.add_argument("--no-warmup", action="store_true", help="skip the unrecorded warm-up runs")
    p.add_argument("--stream-levels", default=",".join(map(str, d.stream_levels)),
                   help="concurrent SSE streams to try, ascending; '' skips the ladder")  # fmt: skip
    p.add_argument("--stream-tokens", type=int, default=d.stream_tokens, help="tokens per stream")
    p.add_argument("--stream-delay-ms", type=float, default=d.stream_delay_ms, help="delay between tokens")
    p.add_argument("--stream-duration", type=float, default=d.stream_duration, help="seconds per ladder step")
    p.add_argument("--stall-ms", type=float, default=d.stall_ms,
                   help="a level is held when p99 stream time is within this of direct's "
                        "(default %(default)s)")  # fmt: skip
    p.add_argument("--proxy-cpu", type=int, help="core for the proxies (default: the first allowed)")
    p.add_argument("--load-cpu", type=int, help="core for load generator + upstreams (default: the second)")
    p.add_argument("--loop", choices=("uvloop", "asyncio", "both"), default=d.loop, help="llm-edge's event loop")
    p.add_argument("--with-litellm", action="store_true", help="also run LiteLLM's proxy (own virtualenv)")
    p.add_argument("--against", metavar="REV", help="also run llm-edge as of this git revision (A/B)")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="py-spy llm-edge under saturation for this long, and summarise")  # fmt: skip
    p.add_argument("--out", type=Path, default=d.out, help="directory for JSON, PNG and logs (default %(default)s)")
    p.add_argument("--write-md", type=Path, metavar="BENCHMARKS.md", help="replace the results section of this file")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="draw the latency distributions and the streams ladder here (default OUT/compare.png "
                        "when matplotlib is installed: pip install -e '.[plot]')")  # fmt: skip
    p.add_argument("--progress", action="store_true",
                   help="a progress bar with the time left on stderr even when it is not a terminal")  # fmt: skip
    a = p.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    proxy_cpu = a.proxy_cpu if a.proxy_cpu is not None else allowed[0]
    load_cpu = a.load_cpu if a.load_cpu is not None else (allowed[1] if len(allowed) > 1 else allowed[0])
    common: dict[str, Any] = {
        "proxy_cpu": proxy_cpu, "load_cpu": load_cpu, "loop": a.loop, "with_litellm": a.with_litellm,
        "against": a.against, "out": a.out, "write_md": a.write_md, "body_bytes": a.body_bytes,
        "stall_ms": a.stall_ms, "profile_s": a.profile, "plot": a.plot, "progress": a.progress,
    }  # fmt: skip
    if a.quick:
        return Settings(rounds=1, duration=1, open_duration=0.4, rates=(200.0,), warmup=False, stream_levels=(20,),
                        stream_tokens=5, stream_delay_ms=20.0, stream_duration=0.5, quick=True, **common)  # fmt: skip
    levels = tuple(int(x) for x in a.stream_levels.split(",") if x.strip())
    rates = tuple(float(x) for x in a.rates.split(",") if x.strip())
    return Settings(rounds=a.rounds, duration=a.duration, open_duration=a.open_duration, rates=rates,
                    warmup=not a.no_warmup, stream_levels=levels, stream_tokens=a.stream_tokens,
                    stream_delay_ms=a.stream_delay_ms, stream_duration=a.stream_duration, **common)  # fmt: skip


def preflight_tools() -> str | None:
    """Why the comparison cannot run here, or None."""
    missing = [name for name, ok in (("nginx", servers.nginx_binary()), ("wrk", wrk.wrk_binary()),
                                      ("taskset", shutil.which("taskset"))) if not ok]  # fmt: skip
    return f"missing: {', '.join(missing)} (apt-get install nginx wrk util-linux)" if missing else None


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; see the module header for the exit status."""
    s = parse_args(argv)
    problem = preflight_tools()
    if s.plot is not None and not plot.available():
        problem = f"--plot needs matplotlib: {plot.INSTALL}"
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    s.out.mkdir(parents=True, exist_ok=True)
    if s.load_cpu is not None:
        os.sched_setaffinity(0, {s.load_cpu})  # this process never competes with the proxies
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "python -m bench" + "".join(" " + shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    started = time.time()
    bar = ProgressBar("[bench]", wanted(s.progress))
    fleet = Fleet(s, say=lambda msg: bar.say(f"[bench] {msg}"))
    m = Measurer(fleet)
    meta: dict[str, Any] = {"command": command, "settings": _jsonable(asdict(s)), "machine": report.machine(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))}  # fmt: skip
    try:
        try:
            fleet.start()
            fleet.say("started: " + ", ".join(f"{k}={v}" for k, v in fleet.pids().items()))
            fleet.preflight()
        except procs.StartError as exc:
            print(f"bench: could not start: {exc}", file=sys.stderr)
            return 2
        rounds = Rounds(m, bar)
        if s.warmup:
            rounds.warm_up()
        rounds.run()
        ladder = streams.ladder(m, rounds.tick) if s.stream_levels else {}
        prof = rounds.profile() if s.profile_s > 0 else {}
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        bar.close()
        meta["pids"] = fleet.pids()
        fleet.close()
    meta["elapsed_s"] = round(time.time() - started, 1)
    meta["versions"] = report.versions(fleet.versions)
    doc = report.build(meta, fleet.targets, rounds.runs, ladder, prof, rounds.gateway_stats)
    wrote = [s.out / "compare.json"]
    wrote[0].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    png = s.plot or s.out / "compare.png"
    if plot.available():
        plot.save(plot.figure(doc), png)
        wrote.append(png)
    else:
        print(f"bench: no plot drawn ({plot.INSTALL})", file=sys.stderr)
    print(report.text(doc))
    md = s.out / "compare.md"
    md.write_text(report.markdown(doc, os.path.relpath(png, s.out)))
    wrote.append(md)
    if s.write_md is not None:
        report.write_md(s.write_md, doc, png if png.exists() else None)
    print("\nwrote " + ", ".join(str(p) for p in wrote))
    return 1 if any(r.get("errors") for r in rounds.runs if r["target"] in REQUIRED) else 0


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


if __name__ == "__main__":  # `python bench/compare.py` as well as `python -m bench`
    raise SystemExit(main())
