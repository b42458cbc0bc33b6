# sim/progressbar.py: a progress bar with the time left, for long runs of sim, the soak and bench.
#
# Rules: it writes to stderr only, so stdout stays one parseable report. On a terminal it redraws
# one line in place (`\r`) and clears it before any other line is written (`say`); when asked for
# without a terminal (`--progress` into a file or a pipe) it writes whole lines instead, at most
# one per `every_s`. Off, it writes nothing at all. The time left is extrapolated from the share
# done so far (elapsed / share - elapsed), which for a run bounded by the clock is exactly the
# remaining time.
from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30  # characters of bar


def wanted(asked: bool, quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Show a bar: when asked for, or when stderr is a terminal; never when quiet."""
    if quiet:
        return False
    return asked or (stream or sys.stderr).isatty()


def clock(seconds: float) -> str:
    """12s, 3m05s or 1h02m: short, and fixed in form."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render(label: str, share: float, elapsed_s: float, note: str = "", width: int = WIDTH) -> str:
    """One bar line: `label [#####.....]  42%  12s left  note`."""
    share = min(1.0, max(0.0, share))
    filled = int(share * width)
    left = f"{clock(elapsed_s / share - elapsed_s)} left" if share > 0 else "time left unknown"
    text = f"{label} [{'#' * filled}{'.' * (width - filled)}] {share * 100:3.0f}%  {left}"
    return f"{text}  {note}" if note else text


class ProgressBar:
    """See the module header. `update` as often as you like; `close` once at the end."""

    __slots__ = ("enabled", "every_s", "label", "last", "shown", "stream", "tty")

    def __init__(self, label: str, enabled: bool, stream: TextIO | None = None, every_s: float = 1.0) -> None:
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self.last = -1e9
        self.shown = ""  # the bar line now on the terminal

    def update(self, share: float, elapsed_s: float, note: str = "") -> None:
        if not self.enabled:
            return
        line = render(self.label, share, elapsed_s, note)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self.shown = line
        else:
            now = time.monotonic()
            if now - self.last < self.every_s and share < 1.0:
                return
            self.last = now
            self.stream.write(line + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """Write a line of its own, with the bar (if on a terminal) cleared first and drawn again after."""
        if self.shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        if self.shown:
            self.stream.write(self.shown)
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = ""
