# bench/procstat.py: what a process tree costs, read from /proc: CPU time, resident memory, core busy time.
#
# Rules: read-only, Linux only, no third-party code. CPU time is user + system time from /proc
# (schedstat's nanoseconds per thread; /proc/PID/stat's utime + stime, in 10 ms ticks, where schedstat
# is missing), summed over the process and its descendants (nginx's worker, any helper a Python
# gateway forks), so "CPU per request" is (after - before) / requests served. A
# process that exits between two reads simply stops counting. Core busy time comes from /proc/stat
# and includes every process on that core, other people's too: it tells whether the load core was
# saturated, so a result can be flagged as limited by the harness rather than by the target.
from __future__ import annotations

import os
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the parenthesised command name), or None if gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """Direct children of `pid` (every thread's children file, else a scan of /proc)."""
    tasks = _PROC / str(pid) / "task"
    try:
        out: list[int] = []
        for task in tasks.iterdir():
            out.extend(int(c) for c in (task / "children").read_text().split())
        return out
    except FileNotFoundError:
        pass  # the process is gone, or the kernel has no children files: scan
    except OSError:
        return []
    found = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if _stat_fields(p) is None:
            continue
        out.append(p)
        todo.extend(children(p))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes (all threads), in seconds.

    From each thread's /proc/PID/task/TID/schedstat (nanoseconds on the CPU, user and system), so a
    run of a few hundred requests still measures; falls back to utime + stime of /proc/PID/stat
    (clock ticks) where schedstat is missing.
    """
    total = 0.0
    for pid in pids:
        ns = 0
        try:
            for task in (_PROC / str(pid) / "task").iterdir():
                ns += int((task / "schedstat").read_text().split()[0])
            total += ns / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        fields = _stat_fields(pid)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)
    return total


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(VmRSS, VmHWM) summed over these processes, in KiB: resident now, and its peak."""
    rss = hwm = 0
    for pid in pids:
        try:
            lines = (_PROC / str(pid) / "status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    return rss, hwm


def core_times(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one CPU since boot, from /proc/stat."""
    name = f"cpu{cpu} "
    with open(_PROC / "stat") as f:
        for line in f:
            if line.startswith(name):
                v = [int(x) for x in line.split()[1:]]
                total = sum(v[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
                return total - v[3] - v[4], total
    return 0, 0


class Meter:
    """CPU seconds used by a process tree between `start()` and `stop()`, plus the load core's busy share."""

    __slots__ = ("before", "core0", "elapsed", "load_cpu", "pid", "t0")

    def __init__(self, pid: int | None, load_cpu: int | None = None) -> None:
        self.pid = pid
        self.load_cpu = load_cpu
        self.before: dict[int, float] = {}
        self.core0 = (0, 0)
        self.t0 = 0.0
        self.elapsed = 0.0  # wall seconds between start() and stop()

    def start(self) -> Meter:
        """Take the 'before' reading."""
        if self.pid is not None:
            self.before = {p: cpu_seconds([p]) for p in tree(self.pid)}
        if self.load_cpu is not None:
            self.core0 = core_times(self.load_cpu)
        self.t0 = time.monotonic()
        return self

    def stop(self) -> tuple[float, float]:
        """(CPU seconds of the tree, busy fraction of the load core) since `start()`."""
        self.elapsed = time.monotonic() - self.t0
        cpu = 0.0
        if self.pid is not None:
            for p in tree(self.pid):  # a child forked meanwhile counts from zero
                cpu += cpu_seconds([p]) - self.before.get(p, 0.0)
        busy = 0.0
        if self.load_cpu is not None:
            b1, t1 = core_times(self.load_cpu)
            b0, t0 = self.core0
            busy = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        return max(cpu, 0.0), busy
