# bench/ab.py: `python -m bench.ab REV`: the micro benchmarks on two commits, interleaved, side by side.
#
# Side A is `REV` exported with `git archive` into a temp directory (the checkout is not touched: no
# worktree, no stash); side B is this working tree, or `--b REV2`. Both sides run the *same* benchmark
# files (this tree's bench/*.py are copied into A), so only the gateway code differs. The runs
# alternate A B A B (`--rounds`), each a full pytest-benchmark run writing JSON; a benchmark's figure is
# the median of its per-run medians. Benchmarks that fail on one side (an API the old commit lacks)
# are listed, not compared. Exit 0 unless a side could not run at all.
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = ("bench/micro_hotpath.py", "bench/micro_router.py", "bench/micro_cache.py")


def export(rev: str, dest: Path) -> Path:
    """`git archive rev` unpacked into `dest`, with this tree's benchmark code copied over its bench/."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"bench.ab: git archive {rev} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    (dest / "bench").mkdir(exist_ok=True)
    for f in (ROOT / "bench").glob("*.py"):
        shutil.copy2(f, dest / "bench" / f.name)
    return dest


def run_side(tree: Path, files: list[str], k: str | None, out: Path) -> dict[str, float]:
    """One pytest-benchmark run in `tree`; returns benchmark name -> median seconds."""
    env = dict(os.environ, PYTHONPATH=str(tree))  # ahead of the editable install's finder
    probe = subprocess.run([sys.executable, "-c", "import proxy; print(proxy.__file__)"], cwd=tree, env=env,
                           capture_output=True, text=True, check=False)  # fmt: skip
    if not probe.stdout.strip().startswith(str(tree)):
        raise SystemExit(f"bench.ab: `import proxy` in {tree} loads {probe.stdout.strip() or probe.stderr.strip()}")
    argv = [sys.executable, "-m", "pytest", *[f for f in files if (tree / f).exists()], "--benchmark-only", "-q",
            "-p", "no:cacheprovider", "-o", "testpaths=bench", f"--benchmark-json={out}"]  # fmt: skip
    if k:
        argv += ["-k", k]
    subprocess.run(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if not out.exists():
        return {}
    doc: dict[str, Any] = orjson.loads(out.read_bytes())
    return {b["fullname"].split("::", 1)[-1]: b["stats"]["median"] for b in doc.get("benchmarks", [])}


def main(argv: list[str] | None = None) -> int:
    """Parse options, run both sides interleaved, print the comparison."""
    p = argparse.ArgumentParser(prog="python -m bench.ab", description="Micro benchmarks: commit A against B.")
    p.add_argument("a", metavar="REV", help="side A: a git revision (e.g. HEAD~1, main, a sha)")
    p.add_argument("--b", metavar="REV2", help="side B: another revision (default: this working tree)")
    p.add_argument("--rounds", type=int, default=2, help="A B runs to interleave (default %(default)s)")
    p.add_argument("-k", help="pytest -k expression to select benchmarks")
    p.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="benchmark files (default: all micro_*)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llm-edge-ab-") as tmp:
        tmpdir = Path(tmp)
        side_a = export(a.a, tmpdir / "a")
        side_b = export(a.b, tmpdir / "b") if a.b else ROOT
        runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        for r in range(a.rounds):
            for name, tree in (("A", side_a), ("B", side_b)):
                print(f"[ab] round {r + 1}/{a.rounds}: side {name} ({tree})", file=sys.stderr, flush=True)
                runs[name].append(run_side(tree, a.files, a.k, tmpdir / f"{name}-{r}.json"))
    if not any(runs["A"]) or not any(runs["B"]):
        print("bench.ab: a side produced no results (see `python -m pytest ... --benchmark-only` in it)",
              file=sys.stderr)
        return 2
    med = {s: _medians(runs[s]) for s in runs}
    names = sorted(set(med["A"]) | set(med["B"]))
    width = max(len(n) for n in names)
    print(f"{'benchmark':<{width}}  {'A µs':>10}  {'B µs':>10}  {'B/A':>6}")
    for n in names:
        va, vb = med["A"].get(n), med["B"].get(n)
        if va is None or vb is None:
            print(f"{n:<{width}}  {'–' if va is None else f'{va * 1e6:10.3f}':>10}  "
                  f"{'–' if vb is None else f'{vb * 1e6:10.3f}':>10}  (only on one side)")  # fmt: skip
            continue
        print(f"{n:<{width}}  {va * 1e6:10.3f}  {vb * 1e6:10.3f}  {vb / va:6.2f}")
    print(f"\nA = {a.a}, B = {a.b or 'working tree'}; median of {a.rounds} interleaved runs per side")
    return 0


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    names = set().union(*runs) if runs else set()
    return {n: statistics.median([r[n] for r in runs if n in r]) for n in names}


if __name__ == "__main__":
    raise SystemExit(main())
